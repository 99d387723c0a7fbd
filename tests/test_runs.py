"""What train.py makes is safe: a folder per run, outputs checked before the work, resumes that say
what they do, and failures during training reported in one line with the run's files kept."""

import json
import os
import re
import resource
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import ROOT, new_run, train_py, train_py_refusal, write_idx

import s5.files
from model import Net
from utils import IDX_LABELS_MAGIC, MNIST_FILES, fit, hold_run_folder, load_checkpoint, make_run_dir, new_history

SMALL = ["--batch-size", "128", "--device", "cpu"]


def train(*args, cwd, limits=None):
    """python train.py ARGS in cwd, a process of its own; `limits` (resource -> bytes) are applied to it, as
    `ulimit`. (train_py runs train.py in this process, where nothing needs a process of its own.)"""
    def apply_limits():
        for kind, value in (limits or {}).items():
            resource.setrlimit(kind, (value, resource.RLIM_INFINITY))
    return subprocess.run([sys.executable, str(ROOT / "train.py"), *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, env={**os.environ, "MPLBACKEND": "Agg"}, timeout=600,
                          preexec_fn=apply_limits if limits else None)


def one_line_error(result, text):
    """The run failed with exit code 1, and stderr ends in one line 'error: ...' holding `text` (above it
    only progress bars)."""
    assert result.returncode == 1, result.stderr
    lines = result.stderr.strip().splitlines()
    assert "Traceback" not in result.stderr and sum(line.startswith("error: ") for line in lines) == 1, result.stderr
    assert lines[-1].startswith("error: ") and text in lines[-1], result.stderr


def refused(text, *args):
    """train.py ARGS, run in this process, refused before training with one line 'error: ...' holding `text`."""
    message = train_py_refusal(*args)
    assert message.startswith("error: ") and text in message and "\n" not in message, message


def files(folder):
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


@pytest.fixture(scope="module")
def trained_run(mnist_root, tmp_path_factory):
    """The folder of one `python train.py --epochs 2` run (the S5 recipe, batch 128), made once; tests that
    need a finished run copy it (copy_run) rather than train one each."""
    cwd = tmp_path_factory.mktemp("trained")
    result = train_py("--data-dir", mnist_root, "--epochs", "2", *SMALL, cwd=cwd)
    assert result.returncode == 0, result.stderr
    return cwd / "runs" / "exp"


def copy_run(trained_run, cwd):
    """trained_run as cwd/runs/exp, as if train.py had run in cwd."""
    return Path(shutil.copytree(trained_run, cwd / "runs" / "exp"))


def test_each_run_gets_a_new_folder_and_never_replaces_an_earlier_one(mnist_root, trained_run, tmp_path):
    copy_run(trained_run, tmp_path)
    kept = {p: p.read_bytes() for p in (tmp_path / "runs" / "exp").iterdir()}
    assert sorted(p.name for p in kept) == ["best.pt", "history.json", "last.pt", "train_metrics.png"]
    second = train_py("--data-dir", mnist_root, "--epochs", "1", "--lr", "0.05", *SMALL, cwd=tmp_path)
    assert second.returncode == 0, second.stderr
    assert "run folder: runs/exp2" in second.stdout
    assert all(path.read_bytes() == data for path, data in kept.items())
    assert (tmp_path / "runs" / "exp2" / "best.pt").exists()


def test_an_existing_output_file_is_refused_unless_overwrite(mnist_root, tmp_path, monkeypatch):
    (tmp_path / "mine.pt").write_bytes(b"a model I care about")
    monkeypatch.chdir(tmp_path)
    refused("mine.pt already exists; give another path, or --overwrite to replace it",
            "--data-dir", mnist_root, "--epochs", "1", "--checkpoint", "mine.pt", *SMALL)
    assert (tmp_path / "mine.pt").read_bytes() == b"a model I care about"
    assert files(tmp_path) == ["mine.pt", "runs"]  # no training, and no run folder left behind
    replaced = train_py("--data-dir", mnist_root, "--epochs", "1", "--checkpoint", "mine.pt", "--overwrite",
                     "--history", "logs/2026/h.json", *SMALL, cwd=tmp_path)  # a missing folder is made
    assert replaced.returncode == 0, replaced.stderr
    assert load_checkpoint(tmp_path / "mine.pt", Net())[0] == 1
    assert json.loads((tmp_path / "logs" / "2026" / "h.json").read_text())["epoch"] == [1]


@pytest.mark.parametrize("flag, path, message", [
    ("--history", "notes.txt/history.json", "cannot write notes.txt/history.json: notes.txt is a file, not a folder"),
    ("--last", "/proc/last.pt", "cannot write /proc/last.pt"),  # a folder no one may write to, root included
    ("--plot", "metrics.jgp", "cannot save a plot as metrics.jgp: unknown file type"),
    ("--checkpoint", ".", "is a folder; give a file name"),
])
def test_an_output_that_cannot_be_written_fails_before_training(mnist_root, tmp_path, monkeypatch, capsys, flag,
                                                                path, message):
    (tmp_path / "notes.txt").write_text("a file, not a folder")
    monkeypatch.chdir(tmp_path)
    refused(message, "--data-dir", mnist_root, flag, path, *SMALL)
    assert "Epoch" not in capsys.readouterr().out and files(tmp_path) == ["notes.txt", "runs"]


def test_a_save_that_fails_is_one_line_and_keeps_the_last_checkpoint(mnist_root, trained_run, tmp_path):
    run = copy_run(trained_run, tmp_path)
    before = (run / "last.pt").read_bytes()
    # Files may grow to 1 MB: the 4.8 MB checkpoint cannot be written, as on a full disk.
    result = train("--resume", run, "--epochs", "3", "--data-dir", mnist_root, cwd=tmp_path,
                   limits={resource.RLIMIT_FSIZE: 1_000_000})
    one_line_error(result, f"cannot write {run / 'last.pt'}: File too large; any previous file is unchanged")
    assert "Epoch 3: train loss" in result.stdout
    assert (run / "last.pt").read_bytes() == before and load_checkpoint(run / "last.pt", Net())[0] == 2
    assert json.loads((run / "history.json").read_text())["epoch"] == [1, 2, 3]  # the history has epoch 3
    assert sorted(p.name for p in run.iterdir()) == ["best.pt", "history.json", "last.pt", "train_metrics.png"]


def test_a_plot_that_cannot_be_written_is_not_named_as_written(mnist_root, tmp_path, monkeypatch):
    import s5.analysis

    write = s5.analysis.atomic_write

    def full_disk_for_plots(path, data):  # the disk fills up as the plot is saved
        if str(path).endswith(".png"):
            raise OSError(f"cannot write {path}: No space left on device; any previous file is unchanged")
        write(path, data)

    monkeypatch.setattr(s5.analysis, "atomic_write", full_disk_for_plots)
    result = train_py("--data-dir", mnist_root, "--epochs", "1", "--runs-dir", tmp_path, *SMALL, cwd=tmp_path)
    code, out, err = result.returncode, result.stdout, result.stderr
    run = tmp_path / "exp"
    assert code == 1 and err == (f"error: cannot write {run / 'train_metrics.png'}: No space left on device; any "
                                 "previous file is unchanged\n")
    assert f"history: {run / 'history.json'}, best model: {run / 'best.pt'}" in out and "plot:" not in out


KILLED_BETWEEN_SAVES = """
import os, runpy, signal, sys
import s5.runs
saved, save = [], s5.runs.save_checkpoint

def save_then_die(path, *state):  # the process is killed right after the first of the last epoch's two saves
    save(path, *state)
    saved.append(state[3])
    if saved.count({epochs}) == 1:
        os.kill(os.getpid(), signal.SIGKILL)

s5.runs.save_checkpoint = save_then_die
sys.argv = ["train.py", *sys.argv[1:]]
runpy.run_path({train!r}, run_name="__main__")
"""


def test_a_kill_between_the_last_epochs_two_saves_loses_no_best_model(mnist_root, tmp_path):
    args = ["--data-dir", mnist_root, "--epochs", "2", "--lr", "0.002", *SMALL]
    killed = subprocess.run([sys.executable, "-c", KILLED_BETWEEN_SAVES.format(epochs=2, train=str(ROOT / "train.py")),
                             *map(str, args)], cwd=tmp_path, capture_output=True, text=True, timeout=600,
                            env={**os.environ, "MPLBACKEND": "Agg", "PYTHONPATH": str(ROOT)})
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    accuracies = re.findall(r"test loss \S+ acc (\S+)%", killed.stdout)
    assert len(accuracies) == 2 and float(accuracies[1]) > float(accuracies[0]), killed.stdout  # epoch 2 is the best
    run = tmp_path / "runs" / "exp"
    resumed = train_py("--resume", run, "--data-dir", mnist_root, cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    done, history = load_checkpoint(run / "last.pt", Net())
    best, _ = load_checkpoint(run / "best.pt", Net())
    assert done == 2 and best == 1 + max(range(done), key=history["test_acc"].__getitem__) == 2


KILLED_AT_FIRST_SAVE = """
import os, runpy, signal, sys
import s5.files, s5.runs
save, replace = s5.runs.save_checkpoint, os.replace

def die(*args):
    os.kill(os.getpid(), signal.SIGKILL)

def replace_then_die(source, target):  # the checkpoint written to its temporary file, not yet renamed
    if str(target).endswith(".pt"):
        die()
    replace(source, target)

if {during!r} == "save":
    s5.files.os.replace = replace_then_die
else:  # before it
    s5.runs.save_checkpoint = die
sys.argv = ["train.py", *sys.argv[1:]]
runpy.run_path({train!r}, run_name="__main__")
"""


def test_what_a_run_killed_at_its_first_save_leaves_is_swept_by_the_next_run(mnist_root, tmp_path):
    """kill -9 before the first save leaves an empty run folder; during it, the save's temporary file as well.
    The next run of the command removes the temporary file (its writer is gone) and the folder it leaves
    empty, and an empty folder once it is EMPTY_FOLDER_KEPT_S old (a younger one may be a notebook's)."""
    args = ["--data-dir", mnist_root, "--epochs", "1", *SMALL]
    for during in ("before", "save"):
        killed = subprocess.run([sys.executable, "-c", KILLED_AT_FIRST_SAVE.format(during=during, train=str(
            ROOT / "train.py")), *map(str, args)], cwd=tmp_path, capture_output=True, text=True, timeout=600,
            env={**os.environ, "MPLBACKEND": "Agg", "PYTHONPATH": str(ROOT)})
        assert killed.returncode == -signal.SIGKILL, killed.stderr
    runs = tmp_path / "runs"
    left = files(runs)  # the empty exp kept: it is young
    assert left[:2] == ["exp", "exp2"] and re.fullmatch(r"exp2/\.best\.pt\.\d+\.tmp", left[2]) and len(left) == 3, left
    stale = time.time() - s5.files.EMPTY_FOLDER_KEPT_S - 1
    os.utime(runs / "exp", (stale, stale))
    assert train_py(*args, cwd=tmp_path).returncode == 0
    assert files(runs) == ["exp3", "exp3/best.pt", "exp3/history.json", "exp3/last.pt", "exp3/train_metrics.png"]


def test_the_sweep_leaves_what_a_live_run_holds_or_writes(tmp_path):
    """What make_run_dir sweeps is only what dead writers left in folders no run holds: a held folder, a live
    writer's temporary file and a run's own files stay."""
    ended = subprocess.Popen([sys.executable, "-c", ""])
    ended.wait()
    writing = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        held, live, done = (make_run_dir(tmp_path) for _ in range(3))  # exp, exp2, exp3
        for folder, pid in ((held, ended.pid), (live, writing.pid), (done, ended.pid)):
            (folder / f".last.pt.{pid}.tmp").write_bytes(b"half a checkpoint")
        (done / "last.pt").write_bytes(b"a checkpoint")
        stale = time.time() - s5.files.EMPTY_FOLDER_KEPT_S - 1
        for folder in (held, live, done):
            os.utime(folder, (stale, stale))
        with hold_run_folder(held):
            assert make_run_dir(tmp_path).name == "exp4"
        assert files(tmp_path) == ["exp", f"exp/.last.pt.{ended.pid}.tmp", "exp2", f"exp2/.last.pt.{writing.pid}.tmp",
                                   "exp3", "exp3/last.pt", "exp4"]
    finally:
        writing.kill()
        writing.wait()


def test_running_out_of_memory_is_one_line_with_a_hint(mnist_root, tmp_path):
    # Run train.py in a process whose address space may grow by 300 MB once its modules are loaded:
    # a batch of 512 needs more.
    script = ("import resource, runpy, sys\n"
              "import matplotlib.pyplot, torch, torchvision, utils, model\n"
              "size = int(open('/proc/self/statm').read().split()[0]) * resource.getpagesize()\n"
              "resource.setrlimit(resource.RLIMIT_AS, (size + 300_000_000, resource.RLIM_INFINITY))\n"
              f"sys.argv = ['train.py', '--data-dir', {str(mnist_root)!r}, '--batch-size', '512', '--device', 'cpu']\n"
              f"runpy.run_path({str(ROOT / 'train.py')!r}, run_name='__main__')\n")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path,
                            env={**os.environ, "MPLBACKEND": "Agg", "PYTHONPATH": str(ROOT)}, timeout=600)
    one_line_error(result, "out of memory in epoch 1 with batch size 512; lower --batch-size")


def test_resume_refuses_changed_hyperparameters_and_says_why(mnist_root, trained_run, tmp_path):
    run = copy_run(trained_run, tmp_path)
    for flag, value, was in (("--lr", "0.1", "0.01"), ("--seed", "7", "1"), ("--recipe", "onecycle", "s5")):
        assert train_py_refusal("--resume", run, "--epochs", "3", flag, value, "--data-dir", mnist_root).startswith(
            f"error: {flag} {value} differs from the resumed run's {was}; a resumed run keeps its settings")
    assert train_py_refusal("--resume", run, "--data-dir", mnist_root) == (
        f"error: nothing left to train: {run / 'last.pt'} already holds epoch 2 of 2; --epochs above 2 trains it "
        "further")
    assert train_py_refusal("--resume", run, "--epochs", "1", "--data-dir", mnist_root) == (
        f"error: nothing left to train: {run / 'last.pt'} already holds epoch 2; --epochs 1 is below it; --epochs "
        "above 2 trains it further")  # not "epoch 2 of 1"
    assert train_py_refusal("--resume", run / "best.pt", "--epochs", "3", "--data-dir", mnist_root).startswith(
        f"error: {run / 'last.pt'} holds this run's latest epoch; resume from it")
    assert load_checkpoint(run / "last.pt", Net())[0] == 2  # nothing above changed the run

    # While another process trains the run (a second terminal, a notebook), neither a resume nor fit joins it.
    holder = subprocess.Popen([sys.executable, "-c", "import sys, s5.files\n"
                               "with s5.files.hold_run_folder(sys.argv[1]):\n"
                               "    print('holding', flush=True)\n    sys.stdin.read()", str(run)], cwd=ROOT,
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline() == "holding\n"
        files = {path: path.read_bytes() for path in run.iterdir()}
        busy = f"{run} is being trained by another process; wait for that run to end or stop it (two runs in one "
        assert train_py_refusal("--resume", run, "--epochs", "3", "--data-dir", mnist_root).startswith(f"error: {busy}")
        model, optimizer, scheduler = new_run()
        with pytest.raises(BlockingIOError, match=re.escape(busy)):
            fit(model, "cpu", [], [], optimizer, scheduler, 3, start_epoch=3, checkpoint_path=run / "last.pt")
        assert {path: path.read_bytes() for path in run.iterdir()} == files
        # A run of its own whose best model goes beside the other run's files (--checkpoint there): not held up.
        model, optimizer, scheduler = new_run()
        batches = [(torch.zeros(4, 1, 28, 28), torch.arange(4))]
        fit(model, "cpu", batches, batches, optimizer, scheduler, 1, checkpoint_path=tmp_path / "mine" / "last.pt",
            best_path=run / "mine.pt")
        assert (run / "mine.pt").exists()
    finally:
        holder.communicate("", timeout=60)
    with hold_run_folder(run):  # let go when that process ended
        pass


@pytest.mark.parametrize("field, value, message", [
    ("epoch", "2", "its epoch is '2', not a whole number >= 0"),
    ("config", "junk", "its config is 'junk', not a dict of the run's settings (run_config) or None"),
    ("config", {"seed": 1}, "its config is not a run's settings (run_config)"),
    ("rng_cpu", torch.zeros(7, dtype=torch.uint8), "its rng_cpu is a Tensor, not the CPU generator's state"),
    ("history", None, "its history is None, not a dict of lists"),
    ("history", {**new_history(), "epoch": [1], "test_acc": [50.0]}, "it is at epoch 2 but its history holds "
                                                                       "epochs 1-1, in lists of unequal length"),
])
def test_a_checkpoint_with_edited_fields_is_refused_before_anything_trains(mnist_root, trained_run, tmp_path, field,
                                                                            value, message):
    run = copy_run(trained_run, tmp_path)
    state = torch.load(run / "last.pt", weights_only=True)
    torch.save({**state, field: value}, run / "last.pt")
    kept = {path: path.read_bytes() for path in run.iterdir()}
    refusal = train_py_refusal("--resume", run, "--epochs", "3", "--data-dir", mnist_root, *SMALL)
    assert refusal.startswith(f"error: {run / 'last.pt'} is not a checkpoint as ") and message in refusal, refusal
    assert "\n" not in refusal and {path: path.read_bytes() for path in run.iterdir()} == kept


def test_two_runs_never_write_the_same_named_file(mnist_root, tmp_path, monkeypatch):
    """`train.py --checkpoint shared/mine.pt --seed 1` and `--seed 2`, started together: the second is refused at
    once, and the first run's file is its own."""
    first = subprocess.Popen([sys.executable, str(ROOT / "train.py"), "--checkpoint", "shared/mine.pt", "--seed", "1",
                              "--data-dir", str(mnist_root), "--epochs", "50", "--batch-size", "16", "--device", "cpu"],
                             cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                             env={**os.environ, "MPLBACKEND": "Agg"})
    try:
        while not (line := first.stdout.readline()).startswith("run folder:"):  # its outputs checked and held
            assert line, "the first run ended before training"
        monkeypatch.chdir(tmp_path)
        refused("shared/mine.pt is being written by another run; give this run another file, or wait for that run",
                "--checkpoint", "shared/mine.pt", "--seed", "2", "--data-dir", mnist_root, "--epochs", "1", *SMALL)
        assert not (tmp_path / "runs" / "exp2").exists()  # refused before its run folder was made
    finally:
        first.send_signal(signal.SIGTERM)
        first.communicate(timeout=60)
    assert first.returncode == 143 and sorted(p.name for p in (tmp_path / "shared").iterdir()) in ([], ["mine.pt"])


def test_a_onecycle_run_cannot_be_extended(mnist_root, tmp_path):
    assert train_py("--data-dir", mnist_root, "--recipe", "onecycle", "--epochs", "2", *SMALL,
                 cwd=tmp_path).returncode == 0
    run = tmp_path / "runs" / "exp"
    assert train_py_refusal("--resume", run, "--epochs", "4", "--data-dir", mnist_root) == (
        "error: a OneCycle run cannot be extended: its learning rate was laid out over 2 epochs; start a new run "
        "with --epochs 4")
    assert train_py_refusal("--resume", run, "--data-dir", mnist_root).startswith("error: nothing left to train")


def test_labels_out_of_range_are_refused_before_training(fresh_mnist_root, tmp_path, monkeypatch):
    labels = fresh_mnist_root / "MNIST" / "raw" / MNIST_FILES["train"][1]
    values = torch.arange(512) % 10
    values[17] = 255
    write_idx(labels, values, IDX_LABELS_MAGIC)
    monkeypatch.chdir(tmp_path)
    refused(f"{labels} holds label 255 at index 17; MNIST labels are 0-9", "--data-dir", fresh_mnist_root, *SMALL)
    assert not (tmp_path / "runs").exists()


def test_a_run_name_that_is_no_folder_name_is_refused(mnist_root, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for name in ("", "a/b", ".."):
        refused(f"run name {name!r} is not a folder name; give one such as 'exp'", "--data-dir", mnist_root,
                "--name", name)
    assert files(tmp_path) == []


def test_a_batch_larger_than_the_training_set_is_refused(mnist_root, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    refused("batch_size 100000 is larger than the 512 training images; use a smaller batch",
            "--data-dir", mnist_root, "--batch-size", "100000", "--device", "cpu")
    assert files(tmp_path) == []


def test_dry_run_ends_with_a_verdict_and_writes_nothing(mnist_root, tmp_path):
    result = train_py("--data-dir", mnist_root, "--dry-run", "--device", "cpu", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "dry run: data, model, one training and one test step work"
    assert files(tmp_path) == []


def test_resuming_from_weights_without_an_optimizer_is_refused_in_one_line(mnist_root, tmp_path):
    from utils import export_weights, new_history, save_checkpoint

    model, optimizer, scheduler = new_run()
    history = new_history()
    save_checkpoint(tmp_path / "run" / "last.pt", model, optimizer, scheduler, 1, history)
    shared = tmp_path / "shared"
    export_weights(tmp_path / "run" / "last.pt", shared / "weights.pt")
    result = train_py("--resume", shared / "weights.pt", "--epochs", "3", "--data-dir", mnist_root, *SMALL,
                      cwd=tmp_path)
    code, err = result.returncode, result.stderr
    assert code == 1 and err.startswith("error: ") and "no run resumes from it" in err and len(err.splitlines()) == 1
    assert files(shared) == ["weights.pt"]


def test_a_log_file_gets_one_line_per_epoch_and_no_frozen_bar(mnist_root, trained_run, tmp_path):
    run = copy_run(trained_run, tmp_path)
    # stdout and stderr not a terminal, as `> log`
    result = train_py("--resume", run, "--epochs", "4", "--data-dir", mnist_root, *SMALL, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "%|" not in result.stdout + result.stderr and "it/s" not in result.stderr
    assert [line.split(":")[0] for line in result.stdout.splitlines() if line.startswith("Epoch")] == ["Epoch 3",
                                                                                                   "Epoch 4"]


def test_a_terminal_gets_a_live_bar(mnist_root, tmp_path):
    import fcntl
    import pty
    import struct
    import termios
    import threading

    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))  # a terminal 100 columns wide
    seen = []

    def read():  # as a terminal does, while it runs: a full pty would block the writer
        while True:
            try:
                chunk = os.read(leader, 4096)
            except OSError:
                return
            if not chunk:
                return
            seen.append(chunk)

    reader = threading.Thread(target=read)
    reader.start()
    proc = subprocess.run([sys.executable, str(ROOT / "train.py"), "--data-dir", str(mnist_root), "--dry-run",
                           *SMALL], cwd=tmp_path, stdout=subprocess.PIPE, stderr=follower, text=True, timeout=600,
                          env={**os.environ, "MPLBACKEND": "Agg"})
    os.close(follower)
    reader.join(timeout=30)
    os.close(leader)
    assert proc.returncode == 0
    assert re.search(r"Epoch 1: +\d+%\|", b"".join(seen).decode(errors="replace"))


def test_a_notebook_run_headless_shows_no_frozen_bar(tmp_path):
    import nbformat

    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(
        f"import sys; sys.path.insert(0, {str(ROOT)!r})\nfrom s5.checks import progress_bar\n"
        "total = sum(progress_bar(range(200), 'Epoch 1'))\nprint('Epoch 1: done', total)")])
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(notebook, tmp_path / "bars.ipynb")
    result = subprocess.run([sys.executable, "-m", "papermill", "--log-output", "bars.ipynb", "out.ipynb"],
                            cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    log = result.stdout + result.stderr
    assert "Epoch 1: done 19900" in log and "0%|" not in log
    outputs = nbformat.read(tmp_path / "out.ipynb", as_version=4).cells[0].outputs
    assert [output.output_type for output in outputs] == ["stream"]  # the line, and no bar's widget


def test_a_resumed_run_may_name_its_own_files(mnist_root, trained_run, tmp_path):
    run = copy_run(trained_run, tmp_path)
    result = train_py("--resume", run, "--last", run / "last.pt", "--checkpoint", run / "best.pt", "--epochs", "3",
                   "--data-dir", mnist_root, *SMALL, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "Epoch 3:" in result.stdout and load_checkpoint(run / "last.pt", Net())[0] == 3
    assert sorted(path.name for path in run.iterdir()) == ["best.pt", "history.json", "last.pt", "train_metrics.png"]
