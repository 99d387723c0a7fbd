"""The recipe search (benchmarks/tune.py) on Optuna, as users start it: one worker, two sharing a journal,
two sharing a PostgreSQL database, a worker behind a gRPC proxy, a study resumed after its worker was killed;
and bench.py's seed runs."""

import glob
import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import optuna
import pytest
import torch
from conftest import N_TRAIN, ROOT, make_mnist_root, run_in_process

sys.path.insert(0, str(ROOT / "benchmarks"))

import bench  # noqa: E402
import tune  # noqa: E402

from utils import get_mnist_datasets  # noqa: E402

N_SEARCH = 192  # training images in the search's data: trials of a second or two
TINY = ("--epochs", 2, "--validation", 64, "--threads", 1)


@pytest.fixture(scope="module")
def search_root(tmp_path_factory):
    """A data_dir of N_SEARCH synthetic training images (and 64 test images) for the search's workers."""
    return make_mnist_root(tmp_path_factory.mktemp("search"), N_SEARCH, 64)


def start(script, *args, cwd):
    """Start a benchmarks/ script; its output goes to files (progress bars would fill a pipe and stall it)."""
    logs = [open(cwd / f"{script}.{os.urandom(4).hex()}.{name}", "w+") for name in ("out", "err")]
    process = subprocess.Popen([sys.executable, str(ROOT / "benchmarks" / script), *map(str, args)], cwd=cwd,
                               stdout=logs[0], stderr=logs[1], env={**os.environ, "MPLBACKEND": "Agg"})
    process.logs = logs
    return process


def finish(process, timeout=300):
    """(exit code, stdout, stderr) of a started script, once it ends."""
    code = process.wait(timeout=timeout)
    texts = []
    for log in process.logs:
        log.seek(0)
        texts.append(log.read())
        log.close()
    return code, *texts


def run(script, *args, cwd):
    return finish(start(script, *args, cwd=cwd))


def in_process(script, *args, cwd):
    """run(), by the script's main() in this process (conftest.run_in_process)."""
    result = run_in_process({"tune.py": tune.main, "bench.py": bench.main}[script], *args, cwd=cwd)
    return result.returncode, result.stdout, result.stderr


def load(journal, study="onecycle"):
    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(journal)))
    return optuna.load_study(study_name=study, storage=storage)


def trials(journal, study="onecycle", missing_ok=False):
    """The study's trials; with missing_ok, [] while a worker has yet to write the journal or the study."""
    if missing_ok and not journal.exists():
        return []
    try:
        return load(journal, study).get_trials()
    except KeyError:
        if missing_ok:
            return []
        raise


def finished(all_trials):
    states = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    return [t for t in all_trials if t.state in states]


def test_validation_split_holds_out_training_images_only(mnist_root):
    (train_images, train_labels), (val_images, val_labels) = tune.validation_split(mnist_root, 100, seed=3)
    assert len(train_labels) == N_TRAIN - 100 and len(val_labels) == 100
    train_set, test_set = get_mnist_datasets(mnist_root, download=False)
    rows = {bytes(image.numpy()) for image in train_set.data}
    held = {bytes(image.numpy()) for image in val_images}
    kept = {bytes(image.numpy()) for image in train_images}
    assert held <= rows and kept <= rows and not held & kept
    assert not held & {bytes(image.numpy()) for image in test_set.data}
    again = tune.validation_split(mnist_root, 100, seed=3)[1][0]
    assert torch.equal(again, val_images)  # the same draw for every trial and worker
    with pytest.raises(ValueError, match="--validation must be between 1 and"):
        tune.validation_split(mnist_root, N_TRAIN, seed=3)


def test_tiny_study_reports_every_epoch_prints_the_best_and_resumes(search_root, tmp_path, capsys):
    journal = tmp_path / "tune.journal"
    code, out, err = run("tune.py", "--data-dir", search_root, "--storage", journal, "--trials", 2, *TINY, cwd=tmp_path)
    assert code == 0, err
    first = trials(journal)
    assert [t.number for t in first] == [0, 1] and len(finished(first)) == 2
    for trial in first:
        assert 0 <= trial.value <= 100
        assert list(trial.intermediate_values) == ([1, 2] if trial.state.name == "COMPLETE" else [1])
        assert trial.params["optimizer"] in ("sgd", "adam", "adamw")
        assert 0 <= trial.params["label_smoothing"] <= 0.2
    best = max(finished(first), key=lambda t: t.value)
    assert f"best: trial {best.number}, validation accuracy {best.value:.2f}%" in out
    assert "as a recipe: Recipe(epochs=2" in out
    for name in ("history", "epochs"):
        assert (tmp_path / f"onecycle_{name}.png").stat().st_size > 0
    # The same command with more trials goes on with the same study (tune.main in this process: no new Python).
    code, out, err = in_process("tune.py", "--data-dir", search_root, "--storage", journal, "--trials", 3, *TINY,
                                cwd=tmp_path)
    assert code == 0, err
    after = trials(journal)
    assert [t.number for t in after] == [0, 1, 2]
    assert [t.params for t in after[:2]] == [t.params for t in first]
    assert "this worker ran 1 trials" in out
    # --report: no training, the best and the plots from what the storage holds.
    assert tune.main(["--storage", str(journal), "--report", "--plots", str(tmp_path / "report")]) == 0
    best = max(finished(after), key=lambda t: t.value)
    assert f"best: trial {best.number}, validation accuracy {best.value:.2f}%" in capsys.readouterr().out
    assert (tmp_path / "report" / "onecycle_epochs.png").exists() and len(trials(journal)) == 3


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def postgres_bin(program):
    """A PostgreSQL program: on the PATH, else from Debian's /usr/lib/postgresql/<version>/bin."""
    found = glob.glob(f"/usr/lib/postgresql/*/bin/{program}")
    return shutil.which(program) or (max(found, key=lambda path: int(Path(path).parts[4])) if found else None)


def has_user(name):
    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True


@pytest.fixture
def postgres():
    """The URL of a throwaway PostgreSQL server on loopback (Debian's postgresql package), with a database
    that workers on other machines would reach the same way."""
    if not (postgres_bin("initdb") and postgres_bin("pg_ctl")):
        pytest.skip("no PostgreSQL here: apt-get install postgresql (.ci/run does)")
    if os.geteuid() == 0 and not (shutil.which("runuser") and has_user("postgres")):
        pytest.skip("PostgreSQL refuses to run as root, and there is no postgres user to run it as")
    folder, port = Path(tempfile.mkdtemp()), free_port()
    as_owner = []
    if os.geteuid() == 0:  # PostgreSQL refuses to run as root: as the package's own user
        shutil.chown(folder, "postgres")
        as_owner = ["runuser", "-u", "postgres", "--"]
    data = folder / "data"
    pg_ctl = [*as_owner, postgres_bin("pg_ctl"), "-D", data]
    subprocess.run([*as_owner, postgres_bin("initdb"), "-D", data, "-A", "trust", "-U", "tune"], check=True,
                   capture_output=True)
    subprocess.run([*pg_ctl, "-l", folder / "log", "-w", "start", "-o",
                    f"-p {port} -k {folder} -c listen_addresses=127.0.0.1"], check=True, capture_output=True)
    try:
        yield f"postgresql://tune@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run([*pg_ctl, "-m", "immediate", "stop"], capture_output=True)
        shutil.rmtree(folder, ignore_errors=True)


@pytest.mark.parametrize("storage", ["journal", "postgresql", "sqlite"])
def test_two_workers_share_a_study_without_losing_or_repeating_trials(search_root, tmp_path, storage, request):
    address = {"journal": lambda: tmp_path / "tune.journal", "sqlite": lambda: f"sqlite:///{tmp_path}/new/tune.db",
               "postgresql": lambda: request.getfixturevalue("postgres")}[storage]()
    args = ("--data-dir", search_root, "--storage", address, "--trials", 6, *TINY)
    workers = [start("tune.py", *args, cwd=tmp_path) for _ in range(2)]
    results = [finish(worker) for worker in workers]
    for code, _, err in results:
        assert code == 0, err
    done = optuna.load_study(study_name="onecycle", storage=tune.open_storage(str(address))).get_trials()
    # None lost, none twice. Under a journal's lock none extra; on a database one more when both workers
    # counted five at once (benchmarks/README.md says so).
    assert [t.number for t in done] == list(range(len(done)))
    assert len(done) == 6 if storage == "journal" else len(done) in (6, 7)
    assert len(finished(done)) == len(done)
    assert len({t.user_attrs["worker"] for t in done}) == 2  # both workers ran trials
    ran = [int(out.split("this worker ran ")[1].split()[0]) for _, out, _ in results]
    assert sum(ran) == len(done)
    params = [tuple(sorted(t.params.items())) for t in done]
    assert len(set(params)) == len(done)  # each trial its own draw




def test_a_worker_through_the_grpc_proxy(search_root, tmp_path):
    journal, port = tmp_path / "tune.journal", free_port()
    proxy = start("tune.py", "--serve", f"127.0.0.1:{port}", "--storage", journal, cwd=tmp_path)
    try:
        code, out, err = run("tune.py", "--data-dir", search_root, "--storage", f"grpc://127.0.0.1:{port}",
                             "--trials", 2, *TINY, cwd=tmp_path)
        assert code == 0, err
        assert f"grpc://127.0.0.1:{port}" in out
    finally:
        proxy.send_signal(signal.SIGTERM)
        finish(proxy, timeout=30)
    assert len(finished(trials(journal))) == 2  # the proxy wrote them into its journal
    assert (tmp_path / "runs" / "onecycle_history.png").exists()


def test_a_killed_worker_leaves_a_study_that_goes_on(search_root, tmp_path):
    journal = tmp_path / "tune.journal"
    args = ("--data-dir", search_root, "--storage", journal, "--trials", 1, "--epochs", 4, "--validation", 64,
            "--threads", 1)
    worker = start("tune.py", *args, cwd=tmp_path)
    deadline = time.monotonic() + 120
    while not any(t.state.name == "RUNNING" for t in trials(journal, missing_ok=True)):
        assert worker.poll() is None and time.monotonic() < deadline
        time.sleep(0.2)
    worker.kill()
    finish(worker)
    assert [t.state.name for t in trials(journal)] == ["RUNNING"]  # left behind by the killed worker
    # As a worker killed between asking for its trial and writing its name into it leaves the study:
    load(journal).ask()
    code, out, err = run("tune.py", *args, cwd=tmp_path)
    assert code == 0, err
    states = [t.state.name for t in trials(journal)]
    assert states[:2] == ["RUNNING", "RUNNING"] and len(finished(trials(journal))) == 1


def test_refusals_are_one_line(search_root, tmp_path):
    journal = tmp_path / "tune.journal"
    common = ["--data-dir", str(search_root), "--storage", str(journal), "--trials", "1", "--validation", "64"]
    assert in_process("tune.py", *common, "--epochs", 1, "--threads", 1, cwd=tmp_path)[0] == 0
    refusals = {
        ("--epochs", "3"): "study 'onecycle' was made with other settings: --epochs 3 (study: 1)",
        ("--epochs", "1", "--storage", "grpc://nowhere"): "write a gRPC proxy's address as grpc://HOST:PORT",
        ("--epochs", "1", "--storage", "postgresql://u@127.0.0.1:1/db"): "cannot open --storage postgresql://",
        ("--epochs", "1", "--storage", "mysql+mysqldb://u@127.0.0.1:1/db"):
            "no driver for this database is installed (No module named 'MySQLdb')",
        ("--epochs", "1", "--validation", str(N_SEARCH)): "--validation must be between 1 and",
    }
    for extra, message in refusals.items():
        with pytest.raises(SystemExit) as exit:
            tune.main(common + list(extra))
        assert str(exit.value).startswith("error: ") and message in str(exit.value)
        assert "\n" not in str(exit.value)
    assert len(trials(journal)) == 1  # nothing was added by a refused worker
    with pytest.raises(SystemExit, match="^error: MNIST files missing in "):  # no data: no journal, no folder
        tune.main(["--data-dir", str(tmp_path / "no_data"), "--storage", str(tmp_path / "new" / "tune.journal")])
    assert not (tmp_path / "new").exists() and not (tmp_path / "no_data").exists()
    port = free_port()  # nothing listens there: refused after the wait (10 s from the shell)
    with pytest.raises(ConnectionError, match=f"^no Optuna gRPC proxy answers at 127.0.0.1:{port}; start one with "
                                              f"python benchmarks/tune.py --serve 127.0.0.1:{port}$"):
        tune.open_storage(f"grpc://127.0.0.1:{port}", wait_s=0.5)
    (tmp_path / "notes.txt").write_text("my notes\n")
    for mistyped in (tmp_path / "notes.txt", ROOT / "weights" / "s5_tuned.pt"):
        before = mistyped.read_bytes()
        for extra in (["--epochs", "1"], ["--report"]):
            with pytest.raises(SystemExit) as exit:
                tune.main(common[:2] + ["--validation", "64", "--storage", str(mistyped)] + extra)
            assert str(exit.value) == (f"error: {mistyped} is not an Optuna journal (its first line is no journal "
                                       "record); give the study's journal, or a new file")
        assert mistyped.read_bytes() == before  # not a byte appended
    with pytest.raises(SystemExit, match="error: no journal file at .*missing.journal; give the study's --storage"):
        tune.main(["--storage", str(tmp_path / "missing.journal"), "--report"])
    assert not (tmp_path / "missing.journal").exists()


def test_bench_seeds_summarise_every_run(mnist_root, tmp_path):
    out = tmp_path / "onecycle.json"
    code, stdout, err = run("bench.py", "--mode", "full", "--recipe", "tuned", "--epochs", 1, "--seeds", 3,
                            "--first-seed", 4, "--precision", "fp32", "--compile", "off",
                            "--data-dir", mnist_root, "--out", out, cwd=tmp_path)
    assert code == 0, err
    result = json.loads(out.read_text())
    assert result["hyperparameters"]["precision"] == "fp32" and result["compile"] == "off"
    assert [run["seed"] for run in result["runs"]] == [4, 5, 6]
    for key in ("final_test_acc", "best_test_acc", "seconds"):
        values = torch.tensor([run[key] for run in result["runs"]], dtype=torch.float64)
        summary = result["summary"][key]
        assert summary["mean"] == pytest.approx(values.mean().item())
        assert summary["sd"] == pytest.approx(values.std().item())  # the sample sd
        assert (summary["min"], summary["max"]) == (values.min().item(), values.max().item())
    assert f"final_test_acc over 3 seeds: {result['summary']['final_test_acc']['mean']:.2f}" in stdout
    before = out.read_bytes()
    code, _, err = in_process("bench.py", "--mode", "full", "--seeds", 1, "--data-dir", mnist_root, "--out", out,
                              cwd=tmp_path)
    assert code != 0 and "already exists" in err and out.read_bytes() == before


def test_bench_throughput_times_the_precision_asked_for(mnist_root, tmp_path):
    tiny = ("--batch-size", 64, "--batches", 2, "--repeats", 1, "--matmul-size", 64, "--data-dir", mnist_root)
    code, stdout, err = in_process("bench.py", *tiny, "--precision", "fp32", cwd=tmp_path)
    assert code == 0, err
    assert "device cpu, precision fp32" in stdout  # the header names the precision timed
    assert "original S5 pipeline: median" in stdout and "fast path, fp32: median" in stdout
    assert "ratio fast / original" in stdout and "matmul rate" not in stdout  # the limit is the default's


def test_bench_profile_says_where_a_step_goes(mnist_root, tmp_path):
    code, stdout, err = in_process("bench.py", "--mode", "profile", "--batch-size", 32, "--batches", 2, "--repeats",
                                   1, "--precision", "fp32", "--data-dir", mnist_root, cwd=tmp_path)
    assert code == 0, err
    assert "step (--compile auto): median" in stdout and "ms over 1 runs of 2 batches of 32" in stdout
    # On a CPU each op is timed directly: the busiest first, with its share of the step's time in ops.
    by_op = stdout.split("by op and the shape of its first argument:\n")[1].splitlines()
    ms = [float(line.split()[0]) for line in by_op]
    assert ms == sorted(ms, reverse=True) and any("convolution_backward [32, " in line for line in by_op)
    in_ops = float(stdout.split("timed op by op: ")[1].split()[0])
    assert 0 < sum(ms) <= in_ops + 0.01 * len(ms)


def test_training_flops_per_image_match_the_net():
    # Multiply-accumulates of one forward pass, layer by layer (model.Net's docstring has the shapes).
    macs = 26 * 26 * 32 * 9 + 24 * 24 * 64 * 32 * 9 + 10 * 10 * 128 * 64 * 9 + 8 * 8 * 256 * 128 * 9 + 4096 * 50 + 500
    conv1_input_grad = 2 * 26 * 26 * 32 * 9  # not computed: the images need no gradient
    assert bench.training_flops_per_image(torch.device("cpu")) == 3 * 2 * macs - conv1_input_grad


@pytest.mark.parametrize("args, message", [
    (["--device", "gpu"], "argument --device: unknown device 'gpu'; use cpu, cuda, cuda:N or mps"),
    (["--batches", "0"], "argument --batches: must be a positive whole number, got 0"),
    (["--repeats", "0"], "argument --repeats: must be a positive whole number, got 0"),
    (["--mode", "full", "--epochs", "-2"], "argument --epochs: must be a positive whole number, got -2"),
])
def test_bench_refuses_settings_it_cannot_run_in_one_line(args, message, capsys):
    with pytest.raises(SystemExit) as exit:
        bench.main(args)
    assert exit.value.code == 2 and capsys.readouterr().err.strip().splitlines()[-1].endswith(f": error: {message}")
