"""Train the S5 Net on MNIST from the shell: the notebook's job, one line per epoch.

    python train.py                          # the S5 recipe on the fast pipeline, into runs/exp (exp2, ...)
    python train.py --pipeline s5            # the original S5 torchvision pipeline
    python train.py --recipe onecycle        # the short recipe: 8 epochs of Adam under OneCycleLR
    python train.py --resume runs/exp        # continue that run, in its folder
    python train.py --resume runs/exp --epochs 30   # and train it further (StepLR runs only)
    python train.py --compile off            # on a GPU: eager, without the default CUDA graphs

Each run writes into a new folder of its own (best.pt, last.pt, history.json, train_metrics.png) and
never replaces a file of an earlier run.
"""

import argparse
import contextlib
import dataclasses
import signal
import sys
from pathlib import Path

import torch

import utils
from model import Net
from s5.checkpoints import check_history
from s5.cpu_memory import keep_freed_memory
from s5.files import hold_output
from s5.runs import ResumeRefused, train_recipe
from utils import (
    COMPILE_MODES,
    OPTIMIZERS,
    PIPELINES,
    PRECISIONS,
    RECIPES,
    Recipe,
    check_output,
    check_plot_path,
    check_resume,
    device_arg,
    get_data_loaders,
    get_device,
    get_recipe,
    hold_run_folder,
    make_run_dir,
    new_history,
    plot_train_metrics,
    precision_note,
    read_checkpoint,
    resolve_compile_mode,
    run_config,
    save_history,
)

# The flags that make a run (utils.run_config): saved in its checkpoints, so that --resume continues it.
RECIPE_FLAGS = ("epochs", "batch_size", "optimizer", "lr", "momentum", "step_size", "gamma", "weight_decay",
                "label_smoothing", "precision")
RUN_FLAGS = ("recipe", "seed", "pipeline")
DEFAULTS = {"recipe": "s5", "seed": 1, "pipeline": "fast"}
OUTPUTS = {"checkpoint": "best.pt", "last": "last.pt", "history": "history.json", "plot": "train_metrics.png"}


def positive(kind):
    def parse(text):
        try:
            value = kind(text)
        except ValueError:
            number = "whole number" if kind is int else "number"
            raise argparse.ArgumentTypeError(f"must be a {number}, got {text!r}") from None
        if not value > 0:
            raise argparse.ArgumentTypeError(f"must be positive, got {text}")
        return value
    return parse


def parse_args(argv=None):
    p = argparse.ArgumentParser(description="Train the S5 Net on MNIST.")
    p.add_argument("--recipe", choices=sorted(RECIPES),
                   help="hyperparameter set; the flags below override its values (default: s5)")
    p.add_argument("--epochs", type=positive(int), help="epochs to train (s5: 20)")
    p.add_argument("--batch-size", type=positive(int), help="batch size (s5: 512)")
    p.add_argument("--optimizer", choices=OPTIMIZERS, help="sgd (s5), adam (onecycle) or adamw")
    p.add_argument("--lr", type=positive(float), help="learning rate; OneCycle's peak (s5: 0.01)")
    p.add_argument("--momentum", type=float, help="SGD momentum, under StepLR (s5: 0.9)")
    p.add_argument("--step-size", type=positive(int), help="StepLR: epochs between decays (s5: 15)")
    p.add_argument("--gamma", type=positive(float), help="StepLR: decay factor (s5: 0.1)")
    p.add_argument("--weight-decay", type=float, help="weight decay (s5: 0)")
    p.add_argument("--label-smoothing", type=float, help="label smoothing of the training loss (s5: 0)")
    p.add_argument("--seed", type=int, help="random seed (default: 1)")
    p.add_argument("--data-dir", help="folder holding MNIST/raw/ (default: $MNIST_DATA_DIR or ./data)")
    p.add_argument("--device", type=device_arg, default=None,
                   help="cpu, cuda, cuda:1, mps (default: the best available)")
    p.add_argument("--pipeline", choices=PIPELINES,
                   help="fast (default): batched augmentation on the device; s5: the original torchvision pipeline")
    p.add_argument("--precision", choices=PRECISIONS,
                   help="auto (default): bf16 where the hardware does it natively, fp16 on CUDA GPUs without "
                   "it, else fp32; --pipeline s5: fp32")
    p.add_argument("--compile", choices=COMPILE_MODES, default="auto", dest="compile_mode",
                   help="auto (default): graphed on CUDA, else off; off: eager; graphed: forward and backward "
                   "captured once per batch shape and replayed as CUDA graphs (on GPUs, where launching kernels "
                   "bounds the step); cudagraphs, reduce-overhead: captured by torch.compile instead")
    p.add_argument("--runs-dir", default="runs", help="where run folders are made (default: runs)")
    p.add_argument("--name", default="exp", help="run folder name: runs/exp, then exp2, exp3, ... (default: exp)")
    p.add_argument("--resume", metavar="RUN", help="continue the run in this folder (or from this checkpoint)")
    p.add_argument("--checkpoint", help="where the best model is saved (default: <run folder>/best.pt)")
    p.add_argument("--last", help="where the latest epoch is saved (default: <run folder>/last.pt)")
    p.add_argument("--history", help="where the metric history is written (default: <run folder>/history.json)")
    p.add_argument("--plot", help="where the 2x2 metrics plot is saved (default: <run folder>/train_metrics.png)")
    p.add_argument("--overwrite", action="store_true", help="allow --checkpoint/--last/--history/--plot to "
                   "replace existing files")
    p.add_argument("--dry-run", action="store_true", help="one batch of train and test, for a quick check")
    args = p.parse_args(argv)
    if args.dry_run and args.resume:
        p.error("--dry-run starts afresh and saves nothing; leave out --resume")
    return args


def new_config(args):
    """The run's recipe and settings from the flags (a new run)."""
    run = {key: DEFAULTS[key] if getattr(args, key) is None else getattr(args, key) for key in RUN_FLAGS}
    recipe = get_recipe(run["recipe"], run["pipeline"], **{key: getattr(args, key) for key in RECIPE_FLAGS})
    return run_config(recipe, name=run["recipe"], seed=run["seed"], pipeline=run["pipeline"])


def resumed_config(args, path, saved, done):
    """The resumed run's config: the saved one, with more epochs if asked. A flag that would change
    anything else is refused (check_resume)."""
    given = {key: getattr(args, key) for key in (*RUN_FLAGS, *RECIPE_FLAGS) if getattr(args, key) is not None}
    hyperparameters = {**saved["hyperparameters"], **{k: v for k, v in given.items() if k in RECIPE_FLAGS}}
    config = {**saved, **{k: v for k, v in given.items() if k in RUN_FLAGS}, "hyperparameters": hyperparameters}
    check_resume(saved, config, done, path, name=lambda key: "--" + key.replace("_", "-"))
    return config


def resume_point(args):
    """(checkpoint path, its config or None, epochs done) for --resume RUN (a folder means its last.pt)."""
    path = Path(args.resume)
    if path.is_dir():
        path = path / OUTPUTS["last"]
    state = read_checkpoint(path)  # its fields checked: an edited checkpoint is refused before anything trains
    if "epoch" in state:
        check_history(state["history"], state["epoch"], path)
    config = state.get("config")
    if config is not None:
        fields = {field.name for field in dataclasses.fields(Recipe)}
        if not {*RUN_FLAGS, "hyperparameters"} <= config.keys() or not config["hyperparameters"].keys() <= fields:
            raise ValueError(f"{path} is not a checkpoint as train.py writes it: its config is not a run's settings "
                             "(run_config); resume from the run's own last.pt")
    return path, config, state.get("epoch", 0)


def output_paths(args, run_dir, holds):
    """The four output files, each checked writable (and free, unless it is the resumed run's own); those named
    by a flag held for this run in `holds` (an ExitStack; hold_output), as its folder holds the others."""
    paths = {key: Path(getattr(args, key) or run_dir / name) for key, name in OUTPUTS.items()}
    for key, path in paths.items():
        # The resumed run's own files (by default, or named: --last RUN/last.pt) are continued.
        own = args.resume and path.resolve() == (run_dir / OUTPUTS[key]).resolve()
        check = check_plot_path if key == "plot" else check_output
        check(path, overwrite=args.overwrite or own)  # its folder made
        if getattr(args, key) and not own:  # a file outside the run's folder, which that folder's lock leaves free
            holds.enter_context(hold_output(path))
    return paths


class Terminated(KeyboardInterrupt):
    """SIGTERM (kill, a job scheduler's stop): the run ends as on Ctrl-C, history and checkpoint kept."""


def terminate(signum, frame):
    raise Terminated


def stop_code(stop):
    """The exit code of a run stopped by `stop`: 143 for SIGTERM (128 + 15, as the shell reports it), 130 for
    Ctrl-C."""
    return 128 + signal.SIGTERM if isinstance(stop, Terminated) else 130


@contextlib.contextmanager
def signals_held():
    """Hold Ctrl-C and SIGTERM off while the run's last files are written (history, plot: a second Ctrl-C
    there would leave no plot, or a traceback from inside matplotlib's import). Yields the list of those that
    came meanwhile: the caller ends the run with their exit code once the files are written."""
    came = []
    try:
        handlers = {kind: signal.signal(kind, lambda signum, frame: came.append(signum))
                    for kind in (signal.SIGINT, signal.SIGTERM)}
    except ValueError:  # not the main thread: signals reach only the main thread's handlers anyway
        yield came
        return
    try:
        yield came
    finally:
        for kind, handler in handlers.items():
            signal.signal(kind, handler)


def remove_if_empty(folder):
    """Remove the run folder this run made when nothing was kept in it (a stop, a failure, a NaN loss before
    the first save): no empty folder is left behind."""
    if folder is not None:
        with contextlib.suppress(OSError):
            folder.rmdir()  # only an empty folder goes


def is_out_of_memory(error):
    return isinstance(error, (MemoryError, torch.OutOfMemoryError)) or "can't allocate memory" in str(error)


def main(argv=None):
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, terminate)
    # The run folder this run made; whether training began; the files it holds (hold_output) till it ends.
    progress = {"folder": None, "training": False, "holds": contextlib.ExitStack()}
    try:
        with progress["holds"]:
            return run(args, progress)
    except KeyboardInterrupt as stop:  # Ctrl-C or SIGTERM outside training's own handling (loading data, say)
        remove_if_empty(progress["folder"])
        if not progress["training"]:
            print("Interrupted before training: nothing saved")
        return stop_code(stop)


def run(args, progress):
    paths = run_dir = new_dir = None
    try:
        if args.resume:
            resume_from, saved, done = resume_point(args)
            if saved is None:  # a checkpoint from before configs were saved: the flags say what it was
                saved = new_config(args)
            config = resumed_config(args, resume_from, saved, done)
            run_dir = resume_from.parent
            with hold_run_folder(run_dir):  # another process trains this run: refused now, not after loading data
                pass
            if resume_from.name != OUTPUTS["last"] and (run_dir / OUTPUTS["last"]).exists() and not args.overwrite:
                raise ValueError(f"{run_dir / OUTPUTS['last']} holds this run's latest epoch; resume from it, or "
                                 f"copy {resume_from} into a new folder to branch off")
        else:
            config = new_config(args)
        recipe = Recipe(**config["hyperparameters"])
        if args.dry_run:
            recipe = dataclasses.replace(recipe, epochs=1)
        device = args.device or get_device()
        compile_mode = resolve_compile_mode(Net(), device, args.compile_mode)
        train_loader, test_loader = get_data_loaders(recipe.batch_size, args.data_dir, device, config["pipeline"],
                                                     seed=config["seed"])
        if not args.dry_run:
            if not args.resume and not all(getattr(args, key) for key in OUTPUTS):
                run_dir = new_dir = make_run_dir(args.runs_dir, args.name)
                progress["folder"] = new_dir
            paths = output_paths(args, run_dir, progress["holds"])
    except (ValueError, OSError) as error:
        remove_if_empty(new_dir)  # nothing was written to it
        sys.exit(f"error: {error}")
    print(f"device {device}, pipeline {config['pipeline']}, {recipe}")
    if compile_mode != "off":
        how = "replayed as CUDA graphs" if torch.device(device).type == "cuda" else "compiled by torch.compile"
        print(f"training step: {how} (--compile {compile_mode}; --compile off: eager)")
    note = precision_note(recipe.precision, device)
    if note:
        print(note)
    if paths and run_dir:
        print(f"run folder: {run_dir}")

    if device.type == "cpu" and config["pipeline"] == "fast":
        keep_freed_memory()  # glibc keeps freed memory for reuse: faster CPU steps (s5/cpu_memory.py)
    if args.dry_run:
        train_loader, test_loader = [next(iter(train_loader))], [next(iter(test_loader))]
    history = new_history()  # filled in place: what a stop keeps
    last, best = (paths["last"], paths["checkpoint"]) if paths else (None, None)
    code, error = 0, None
    progress["training"] = True
    try:
        train_recipe(utils, recipe, device, train_loader, test_loader, seed=config["seed"], config=config,
                     history=history, resume_from=resume_from if args.resume else None, last=last, best=best,
                     compile_mode=compile_mode, overwrite=args.overwrite)
    except KeyboardInterrupt as stop:
        if last and last.exists():
            print(f"resume with: python train.py --resume {last.parent if last.name == OUTPUTS['last'] else last}")
        code = stop_code(stop)
    except ResumeRefused as refusal:  # a checkpoint of another model, optimizer or schedule: nothing trained
        code, error = 1, str(refusal)
    except FloatingPointError as failure:
        code, error = 1, f"{failure}" + (f"; the last good checkpoint is {last}" if last and last.exists() else "")
    except BlockingIOError as failure:  # another process took the run folder since the check above
        code, error, paths = 1, str(failure), None  # and its files are that run's: nothing saved here
    except OSError as failure:  # a save that failed: full disk, permissions
        code, error = 1, str(failure)
    except (RuntimeError, MemoryError) as failure:
        if not is_out_of_memory(failure):
            raise
        epoch = history["epoch"][-1] + 1 if history["epoch"] else done + 1 if args.resume else 1
        code, error = 1, (f"out of memory in epoch {epoch} with batch size {recipe.batch_size}; "
                          "lower --batch-size")
    finally:
        with signals_held() as came:  # a second stop waits until the files below are written
            code, error = finish(args, paths, history, best, new_dir, code, error)
    if came and code == 0:  # a stop that came as the run ended: the files are written, the code says it stopped
        code = 128 + signal.SIGTERM if came[0] == signal.SIGTERM else 130
    return code


def finish(args, paths, history, best, new_dir, code, error):
    """The end of a run, however it ended: the history and plot written, what was written named, the error
    line; the run folder removed if nothing was kept in it. Returns (code, error)."""
    if paths and history["epoch"]:
        written = []  # what was written: only those are named
        try:
            save_history(paths["history"], history)
            written.append(f"history: {paths['history']}")
            import matplotlib.pyplot as plt  # loaded by the plot already

            plt.close(plot_train_metrics(history, save_path=paths["plot"]))  # a file, not a figure to show
            written.append(f"plot: {paths['plot']}")
        except OSError as failure:
            code, error = 1, error or str(failure)
        if best.exists():
            written.append(f"best model: {best}")
        if written:
            print(", ".join(written))
    if args.dry_run and code == 0:
        print("dry run: data, model, one training and one test step work")
    remove_if_empty(new_dir)
    if error:
        print(f"error: {error}", file=sys.stderr)
    return code, error


if __name__ == "__main__":
    sys.exit(main())
