"""Search the recipe's knobs with Optuna, on a validation split held out from the training set (never the test set).

    python benchmarks/tune.py                       # a worker: 20 trials (in all) into runs/tune.journal
    python benchmarks/tune.py --threads 1 &         # more workers on one machine: start it again,
    python benchmarks/tune.py --threads 1           #   each with a share of the cores
    python benchmarks/tune.py --storage postgresql://user:password@host/db   # workers on several machines
    python benchmarks/tune.py --serve 0.0.0.0:13000 # or serve the journal (or --storage) through Optuna's
    python benchmarks/tune.py --storage grpc://host:13000   # gRPC proxy, and point the workers at it

Each trial trains the Net with the fast path under OneCycleLR for the study's --epochs on the training set
less --validation images (a seeded draw, the same for every trial), reports validation accuracy after every
epoch, and is stopped early by a median pruner when it trails the other trials. The objective is the last
epoch's validation accuracy. The study keeps everything in its storage: start the command again and it
goes on where it stopped, until --trials trials are finished or pruned. Then it prints the best trial and
saves plots of the search beside the journal (or into --plots).

What it costs: a trial of 15 epochs (the default) takes about 6 minutes on a 2-core AMD EPYC with
AVX512-BF16 (23 s an epoch, both cores), and about 9 s on an H100; pruned trials stop sooner. The default
20 trials are about 2 hours on such a CPU, a few minutes on a GPU (docs/speed.md, benchmarks/README.md).
"""

import argparse
import contextlib
import fcntl
import json
import os
import random
import signal
import socket
import sys
import time
import warnings
from pathlib import Path

import optuna
import sqlalchemy.engine
import sqlalchemy.exc
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import utils  # noqa: E402
from s5.cpu_memory import keep_freed_memory  # noqa: E402
from s5.runs import train_recipe  # noqa: E402
from utils import (  # noqa: E402
    DeviceLoader,
    device_arg,
    get_device,
    get_mnist_datasets,
    get_recipe,
)

warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
optuna.logging.set_verbosity(optuna.logging.WARNING)

DEFAULT_JOURNAL = "runs/tune.journal"
# What every worker of a study must agree on: saved with the study, checked when a worker joins.
STUDY_SETTINGS = ("epochs", "validation", "seed")
COUNTED = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED, optuna.trial.TrialState.RUNNING)


def suggest_recipe(trial, epochs):
    """The search space: a OneCycle recipe of `epochs` epochs. Learning rate and weight decay have a range per
    optimizer (AdamW's decoupled decay works at a far larger scale than an L2 penalty)."""
    optimizer = trial.suggest_categorical("optimizer", ["sgd", "adam", "adamw"])
    lr_range, decay_range = {"sgd": ((0.02, 0.5), (1e-6, 1e-3)), "adam": ((5e-4, 1e-2), (1e-7, 1e-4)),
                             "adamw": ((5e-4, 1e-2), (1e-4, 0.3))}[optimizer]
    return get_recipe(
        "onecycle", epochs=epochs, optimizer=optimizer,
        lr=trial.suggest_float(f"{optimizer}_lr", *lr_range, log=True),
        weight_decay=trial.suggest_float(f"{optimizer}_weight_decay", *decay_range, log=True),
        batch_size=trial.suggest_categorical("batch_size", [128, 256, 512]),
        label_smoothing=trial.suggest_float("label_smoothing", 0.0, 0.2),
    )


def validation_split(data_dir, validation, seed):
    """(train images, train labels), (validation images, validation labels): a seeded draw of `validation`
    of the 60,000 training images is held out."""
    train_set, _ = get_mnist_datasets(data_dir, download=False)
    if not 0 < validation < len(train_set):
        raise ValueError(f"--validation must be between 1 and {len(train_set) - 1} (the training set has "
                         f"{len(train_set)} images), got {validation}")
    order = torch.randperm(len(train_set), generator=torch.Generator().manual_seed(seed))
    held, kept = order[:validation], order[validation:]
    return (train_set.data[kept], train_set.targets[kept]), (train_set.data[held], train_set.targets[held])


def objective(trial, split, device, epochs, seed):
    """Train one trial's recipe; report validation accuracy per epoch; return the last epoch's."""
    recipe = suggest_recipe(trial, epochs)
    (train_images, train_labels), (val_images, val_labels) = split
    train_loader = DeviceLoader(train_images, train_labels, recipe.batch_size, device, shuffle=True, augment=True,
                                seed=seed)
    val_loader = DeviceLoader(val_images, val_labels, 1024, device)

    def report(history):
        trial.report(history["test_acc"][-1], history["epoch"][-1])
        if trial.should_prune():
            raise optuna.TrialPruned(f"pruned after epoch {history['epoch'][-1]}")

    history = train_recipe(utils, recipe, device, train_loader, val_loader, seed=seed, on_epoch=report)
    return history["test_acc"][-1]


def is_journal(address):
    """Whether --storage names a journal file (anything but a URL)."""
    return "://" not in address


def open_storage(address, wait_s=10):
    """A journal file path, a database URL (postgresql://, mysql://, sqlite:///) or grpc://HOST:PORT (waiting
    up to `wait_s` seconds for the proxy: it may be starting on another machine)."""
    if address.startswith("grpc://"):
        host, _, port = address.removeprefix("grpc://").rpartition(":")
        if not host or not port.isdigit():
            raise ValueError(f"--storage {address}: write a gRPC proxy's address as grpc://HOST:PORT")
        storage = optuna.storages.GrpcStorageProxy(host=host, port=int(port))
        try:
            storage.wait_server_ready(timeout=wait_s)
        except ConnectionError:
            raise ConnectionError(f"no Optuna gRPC proxy answers at {host}:{port}; start one with "
                                  f"python benchmarks/tune.py --serve {host}:{port}") from None
        return storage
    if not is_journal(address):
        return open_database(address)
    check_journal(address)
    Path(address).parent.mkdir(parents=True, exist_ok=True)
    return optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(address))


def open_database(url, tries=10):
    """Optuna's storage in the database at url. Workers started at once on a new database race to create
    Optuna's tables (optuna/optuna#1092): the one that loses waits, then finds the tables made. An SQLite
    file's folder is made, as a journal's is."""
    parsed = sqlalchemy.engine.make_url(url)
    if parsed.get_backend_name() == "sqlite" and parsed.database and parsed.database != ":memory:":
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
    if parsed.drivername == "postgresql":  # no driver named: SQLAlchemy 2.1 takes psycopg, 2.0 (Python 3.10) psycopg2
        url = parsed.set(drivername="postgresql+psycopg").render_as_string(hide_password=False)  # requirements.txt's
    for attempt in range(tries):
        try:
            return optuna.storages.RDBStorage(url)
        except sqlalchemy.exc.DBAPIError as error:
            lost_race = isinstance(error, (sqlalchemy.exc.IntegrityError, sqlalchemy.exc.ProgrammingError)) or any(
                words in str(error) for words in ("already exists", "database is locked"))  # SQLite's words for it
            if not lost_race or attempt == tries - 1:
                raise
            time.sleep(0.2 + random.random())


def check_journal(path):
    """Refuse a --storage file that holds something other than an Optuna journal: Optuna would append
    the study to it (notes, a checkpoint: a mistyped path)."""
    path = Path(path)
    if not path.is_file() or path.stat().st_size == 0:
        return
    with open(path, "rb") as journal:
        first = journal.readline(1 << 16)
    try:
        record = json.loads(first)
    except ValueError:  # not JSON, or not UTF-8
        record = None
    if not (isinstance(record, dict) and "op_code" in record):
        raise ValueError(f"{path} is not an Optuna journal (its first line is no journal record); give the "
                         "study's journal, or a new file")


def load_study(storage, args):
    """The study named --study, made on first use with this worker's settings; a worker whose settings
    differ from the study's is refused, since its trials would not be comparable."""
    study = optuna.create_study(
        storage=storage, study_name=args.study, direction="maximize", load_if_exists=True,
        sampler=optuna.samplers.TPESampler(n_startup_trials=5, multivariate=True, group=True, constant_liar=True),
        pruner=optuna.pruners.MedianPruner(n_startup_trials=4, n_warmup_steps=max(1, args.epochs // 3)))
    settings = {key: getattr(args, key) for key in STUDY_SETTINGS}
    saved = study.user_attrs.get("settings")
    if saved is None:
        study.set_user_attr("settings", settings)
    elif saved != settings:
        differ = ", ".join(f"--{key} {settings[key]} (study: {saved[key]})" for key in settings
                           if settings[key] != saved[key])
        raise ValueError(f"study {args.study!r} was made with other settings: {differ}; use them, or name a "
                         f"new study with --study")
    return study


def worker_name():
    return f"{socket.gethostname()}:{os.getpid()}"


def is_stale(trial, locked=False):
    """A trial left running by a worker that no longer exists (killed mid-trial): one of this machine whose
    process is gone; or, seen under the journal's lock (`locked`), one with no worker named, whose worker
    was killed between asking for it and naming itself (both happen under that lock: see next_trial)."""
    if trial.state != optuna.trial.TrialState.RUNNING:
        return False
    if "worker" not in trial.user_attrs:
        return locked
    host, _, pid = trial.user_attrs["worker"].rpartition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        pass
    return False


@contextlib.contextmanager
def journal_lock(address):
    """Workers sharing a journal file take turns to count and start trials, so that the study ends with
    exactly --trials (across machines a database or proxy may start one extra per worker that raced)."""
    if not is_journal(address):
        yield
        return
    with open(address, "a") as journal:
        fcntl.flock(journal, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(journal, fcntl.LOCK_UN)


def next_trial(study, n_trials, address):
    """A new trial, or None once the study holds n_trials finished, pruned or running ones."""
    locked = is_journal(address)  # journal_lock holds a lock for journal files only
    with journal_lock(address):
        counted = [t for t in study.get_trials(deepcopy=False, states=COUNTED) if not is_stale(t, locked)]
        if len(counted) >= n_trials:
            return None
        trial = study.ask()
        trial.set_user_attr("worker", worker_name())
        return trial


def describe(params):
    return ", ".join(f"{key} {value:.3g}" if isinstance(value, float) else f"{key} {value}"
                     for key, value in params.items())


def run_trials(study, split, device, args):
    """Ask for trials and run them until the study has --trials; Ctrl-C or SIGTERM fails the trial underway."""
    done, began = 0, time.monotonic()
    while (trial := next_trial(study, args.trials, args.storage)) is not None:
        start = time.perf_counter()
        try:
            value = objective(trial, split, device, args.epochs, args.seed)
        except optuna.TrialPruned as pruned:
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
            print(f"trial {trial.number} {pruned} ({time.perf_counter() - start:.0f} s): {describe(trial.params)}",
                  flush=True)
        except BaseException:
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
            raise
        else:
            study.tell(trial, value)
            print(f"trial {trial.number}: validation accuracy {value:.2f}% ({time.perf_counter() - start:.0f} s): "
                  f"{describe(trial.params)}", flush=True)
        done += 1
        if args.timeout and time.monotonic() - began > args.timeout:
            print(f"--timeout {args.timeout} s reached: no new trial from this worker")
            break
    return done


def report_best(study, plots_dir):
    """Print the best trial as a recipe and save Optuna's plots of the search; return the plot paths."""
    complete = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    pruned = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.PRUNED,))
    print(f"study {study.study_name}: {len(complete)} trials finished, {len(pruned)} pruned")
    if not complete:
        return []
    best = study.best_trial
    recipe = suggest_recipe(optuna.trial.FixedTrial(best.params), study.user_attrs["settings"]["epochs"])
    print(f"best: trial {best.number}, validation accuracy {best.value:.2f}%: {describe(best.params)}")
    print(f"as a recipe: {recipe}")
    flags = ("epochs", "batch_size", "optimizer", "lr", "weight_decay", "label_smoothing")
    values = {key: getattr(recipe, key) for key in flags}
    print("train it: python train.py --recipe onecycle " + " ".join(
        f"--{key.replace('_', '-')} {f'{value:.3g}' if isinstance(value, float) else value}"
        for key, value in values.items()))
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from optuna.visualization import matplotlib as views

    Path(plots_dir).mkdir(parents=True, exist_ok=True)
    paths = []
    accuracies = [v for t in study.get_trials(deepcopy=False) for v in t.intermediate_values.values()]
    for name, view in (("history", views.plot_optimization_history), ("epochs", views.plot_intermediate_values)):
        ax = view(study)
        ax.set_ylabel("validation accuracy (%)")
        if name == "epochs":
            ax.set_xlabel("epoch")
            # The lowest tenth (the few diverging epochs) off the scale.
            low, high = sorted(accuracies)[len(accuracies) // 10], max(accuracies)
            if high > low:  # else one value (a study of one epoch): matplotlib's own scale
                ax.set_ylim(low, high + 0.1 * (high - low))
        figure = ax.get_figure()
        figure.tight_layout()
        path = Path(plots_dir) / f"{study.study_name}_{name}.png"
        figure.savefig(path, dpi=90)
        plt.close(figure)
        paths.append(path)
    print(f"plots: {', '.join(map(str, paths))}")
    return paths


def serve(address, storage):
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"--serve {address}: give HOST:PORT, e.g. 0.0.0.0:13000")
    print(f"Optuna gRPC proxy on {host}:{port}; workers: --storage grpc://{host}:{port}", flush=True)
    optuna.storages.run_grpc_proxy_server(storage, host=host, port=int(port))


def terminate(signum, frame):
    raise KeyboardInterrupt


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--study", default="onecycle", help="study name (default: onecycle)")
    p.add_argument("--storage", default=DEFAULT_JOURNAL,
                   help=f"journal file, database URL or grpc://HOST:PORT (default: {DEFAULT_JOURNAL})")
    p.add_argument("--trials", type=int, default=20, help="trials in the study, all workers together (default: 20)")
    p.add_argument("--timeout", type=int, help="seconds after which this worker starts no new trial")
    p.add_argument("--epochs", type=int, default=15, help="epochs per trial, fixed for the study (default: 15)")
    p.add_argument("--validation", type=int, default=10_000,
                   help="training images held out for validation (default: 10,000)")
    p.add_argument("--seed", type=int, default=1, help="seed of the validation draw and of every trial's run")
    p.add_argument("--data-dir", help="folder holding MNIST/raw/ (default: $MNIST_DATA_DIR or ./data)")
    p.add_argument("--device", type=device_arg, help="cpu, cuda, ... (default: the best available)")
    p.add_argument("--threads", type=int, help="CPU threads of this worker (default: torch's, all cores)")
    p.add_argument("--plots", help="folder for the search's plots (default: beside the journal, or runs/)")
    p.add_argument("--report", action="store_true", help="run no trial: print the best and save the plots")
    p.add_argument("--serve", metavar="HOST:PORT", help="serve --storage through Optuna's gRPC proxy; no training")
    args = p.parse_args(argv)
    for key in ("trials", "epochs", "threads", "timeout"):
        if getattr(args, key) is not None and getattr(args, key) <= 0:
            p.error(f"--{key} must be positive, got {getattr(args, key)}")
    return args


def main(argv=None):
    args = parse_args(argv)
    try:
        if args.report and is_journal(args.storage) and not Path(args.storage).is_file():
            raise ValueError(f"no journal file at {args.storage}; give the study's --storage")
        if not (args.serve or args.report):  # the data first: a worker without it makes no journal or folder
            split = validation_split(args.data_dir, args.validation, args.seed)
        try:
            storage = open_storage(args.storage)
        except (ValueError, ConnectionError):
            raise
        except ImportError as error:  # Optuna's own words name no driver; the import that failed does
            raise ValueError(f"cannot open --storage {args.storage}: no driver for this database is installed "
                             f"({error.__cause__ or error}); install the one SQLAlchemy names for it") from None
        except Exception as error:  # a database refusing, a URL SQLAlchemy cannot read: its first line says why
            raise ValueError(f"cannot open --storage {args.storage}: {str(error).splitlines()[0]}") from None
        if args.serve:
            return serve(args.serve, storage)
        if args.report:
            try:
                study = optuna.load_study(study_name=args.study, storage=storage)
            except KeyError:
                raise ValueError(f"no study {args.study!r} in {args.storage}") from None
            report_best(study, plots_dir(args))
            return 0
        study = load_study(storage, args)
        device = args.device or get_device()
    except (ValueError, OSError, RuntimeError) as error:
        sys.exit(f"error: {error}")
    except KeyboardInterrupt:
        return 130
    if args.threads:
        torch.set_num_threads(args.threads)
    if device.type == "cpu":
        keep_freed_memory()  # faster CPU steps (s5/cpu_memory.py)
    print(f"worker {worker_name()} on study {args.study!r} ({args.storage}), device {device}, "
          f"{len(split[0][1])} training / {len(split[1][1])} validation images", flush=True)
    signal.signal(signal.SIGTERM, terminate)
    try:
        done = run_trials(study, split, device, args)
    except KeyboardInterrupt:
        print("stopped: the trial underway is marked failed; start the command again to go on")
        return 130
    print(f"this worker ran {done} trials")
    report_best(study, plots_dir(args))
    return 0


def plots_dir(args):
    return Path(args.plots or (Path(args.storage).parent if is_journal(args.storage) else "runs"))


if __name__ == "__main__":
    sys.exit(main())
