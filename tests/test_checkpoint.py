import os
import signal
import subprocess
import sys
import time

import pytest
import torch
import torch.nn as nn
from conftest import ROOT, new_run

from model import Net
from utils import (
    export_weights,
    get_recipe,
    load_checkpoint,
    make_optimizer,
    make_scheduler,
    new_history,
    run_config,
    save_checkpoint,
)


def test_round_trip_restores_everything(tmp_path):
    model, optimizer, scheduler = new_run(0)
    model(torch.randn(2, 1, 28, 28)).sum().backward()
    optimizer.step()
    scheduler.step()
    history = new_history()
    history["test_acc"].append(97.5)
    save_checkpoint(tmp_path / "run.pt", model, optimizer, scheduler, 3, history)

    other, other_opt, other_sched = new_run(1)
    epoch, loaded_history = load_checkpoint(tmp_path / "run.pt", other, other_opt, other_sched)
    assert epoch == 3 and loaded_history == history
    for a, b in zip(model.state_dict().values(), other.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    assert other_sched.state_dict() == scheduler.state_dict()
    assert torch.equal(other_opt.state_dict()["state"][0]["momentum_buffer"],
                       optimizer.state_dict()["state"][0]["momentum_buffer"])


def test_a_plain_state_dict_loads_as_weights(tmp_path):
    model, _, _ = new_run(0)
    torch.save(model.state_dict(), tmp_path / "weights.pt")
    other, _, _ = new_run(1)
    assert load_checkpoint(tmp_path / "weights.pt", other)[0] == 0
    assert torch.equal(other.fc2.weight, model.fc2.weight)


@pytest.mark.parametrize("layout", ["tutorial", "compiled", "DataParallel"])
def test_weights_saved_the_usual_other_ways_load(tmp_path, layout):
    model, optimizer, _ = new_run(0)
    saved = {"tutorial": lambda: {"model_state_dict": model.state_dict(), "epoch": 3, "loss": 0.1,
                                  "optimizer_state_dict": optimizer.state_dict()},  # PyTorch's tutorial
             "compiled": lambda: torch.compile(model).state_dict(),
             "DataParallel": lambda: nn.DataParallel(model).state_dict()}[layout]()
    torch.save(saved, tmp_path / "weights.pt")
    other, _, _ = new_run(1)
    assert load_checkpoint(tmp_path / "weights.pt", other)[0] == 0
    for mine, theirs in zip(other.state_dict().values(), model.state_dict().values(), strict=True):
        assert torch.equal(mine, theirs)


def test_a_whole_pickled_model_is_refused_with_what_to_save_instead(tmp_path):
    model, _, _ = new_run(0)
    torch.save(model, tmp_path / "model.pt")
    with pytest.raises(ValueError, match=r"pickled Python object \(model.Net\).*save model.state_dict\(\) instead"):
        load_checkpoint(tmp_path / "model.pt", Net())


class Payload:
    """Unpickling this runs code: it would create the marker file."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_a_pickled_payload_is_refused_and_never_runs(tmp_path):
    marker = tmp_path / "payload-ran"
    model, _, _ = new_run(0)
    torch.save({"model": model.state_dict(), "epoch": 1, "history": new_history(), "evil": Payload(str(marker))},
               tmp_path / "evil.pt")
    with pytest.raises(ValueError, match="refused to load .*evil.pt.*could run code") as info:
        load_checkpoint(tmp_path / "evil.pt", model)
    assert "\n" not in str(info.value)
    assert not marker.exists()


class ShellPayload:
    """Unpickling this would run a shell command (os.system): one that creates the marker file."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_a_pickle_that_would_run_a_shell_command_is_refused_as_such(tmp_path):
    """torch words its refusal differently from version to version (2.14: "unsupported GLOBAL posix.system
    whose module posix is blocked"); the refusal is named for what it is in each."""
    marker = tmp_path / "shell-ran"
    model, _, _ = new_run(0)
    torch.save({"model": model.state_dict(), "epoch": 1, "history": new_history(), "evil": ShellPayload(marker)},
               tmp_path / "shell.pt")
    with pytest.raises(ValueError, match=r"^refused to load .*shell.pt: it holds a pickled Python object "
                                         r"\((posix|nt|os)\.system\) that could run code") as info:
        load_checkpoint(tmp_path / "shell.pt", model)
    assert "\n" not in str(info.value)
    assert not marker.exists()


def test_a_different_architecture_is_a_clear_error(tmp_path):
    torch.save(nn.Linear(4, 2).state_dict(), tmp_path / "linear.pt")
    with pytest.raises(ValueError, match="different model.*missing conv1.weight"):
        load_checkpoint(tmp_path / "linear.pt", Net())
    wide = Net()
    wide.fc2 = nn.Linear(50, 12)
    model, optimizer, scheduler = new_run(0)
    save_checkpoint(tmp_path / "wide.pt", wide, None, None, 1, new_history())
    with pytest.raises(ValueError, match="different model.*wrong shape fc2.weight"):
        load_checkpoint(tmp_path / "wide.pt", model)


def test_diverged_weights_are_refused(tmp_path):
    model, optimizer, scheduler = new_run(0)
    with torch.no_grad():
        model.conv3.bias[5] = float("inf")
    save_checkpoint(tmp_path / "diverged.pt", model, optimizer, scheduler, 4, new_history())
    with pytest.raises(ValueError, match="diverged.pt holds weights that are not finite .*conv3.bias"):
        load_checkpoint(tmp_path / "diverged.pt", Net())


def test_folders_pipes_and_unreadable_files_are_named(tmp_path):
    with pytest.raises(IsADirectoryError, match="is a folder; it holds no checkpoint"):
        load_checkpoint(tmp_path, Net())
    model, optimizer, scheduler = new_run(0)
    (tmp_path / "runs" / "exp").mkdir(parents=True)
    for name in ("last.pt", "best.pt"):
        save_checkpoint(tmp_path / "runs" / "exp" / name, model, optimizer, scheduler, 1, new_history())
    for folder, named in (("runs", "runs/exp/best.pt"), ("runs/exp", "runs/exp/best.pt")):  # the runs, or one run
        with pytest.raises(IsADirectoryError, match=f"is a folder; give a checkpoint file, such as .*/{named}$"):
            load_checkpoint(tmp_path / folder, Net())
    os.mkfifo(tmp_path / "pipe.pt")
    with pytest.raises(ValueError, match="pipe.pt is not a regular file"):
        load_checkpoint(tmp_path / "pipe.pt", Net())  # reading it would wait for a writer forever
    with pytest.raises(OSError, match="cannot read checkpoint /proc/self/mem: Input/output error"):
        load_checkpoint("/proc/self/mem", Net())  # a regular file whose first bytes no one can read


def test_a_temporary_file_left_by_a_killed_save_is_removed_by_the_next_save(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    left = tmp_path / f".last.pt.{int(dead.stdout)}.tmp"
    left.write_bytes(b"half a checkpoint")
    model, optimizer, scheduler = new_run(0)
    save_checkpoint(tmp_path / "last.pt", model, optimizer, scheduler, 1, new_history())
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]


def test_not_a_checkpoint_and_missing_file(tmp_path):
    (tmp_path / "notes.txt").write_text("not a checkpoint")
    with pytest.raises(ValueError, match="notes.txt is not a PyTorch checkpoint"):
        load_checkpoint(tmp_path / "notes.txt", Net())
    torch.save({"weights": [1, 2, 3]}, tmp_path / "dict.pt")
    with pytest.raises(ValueError, match="neither a checkpoint of train.py or the notebook nor a model's state_dict"):
        load_checkpoint(tmp_path / "dict.pt", Net())
    with pytest.raises(FileNotFoundError, match="nothing.pt does not exist"):
        load_checkpoint(tmp_path / "nothing.pt", Net())


SAVE_FOREVER = """
import sys, torch.nn as nn
sys.path.insert(0, {root!r})
from utils import save_checkpoint, new_history
big = nn.Linear(4096, 4096)  # 64 MB of weights: each save takes a while
for epoch in range(3, 10**9):
    save_checkpoint({path!r}, big, None, None, epoch, new_history())
"""


def test_saves_killed_midway_leave_a_whole_checkpoint_and_no_temporary_file(tmp_path):
    path = tmp_path / "last.pt"
    save_checkpoint(path, nn.Linear(4096, 4096), None, None, 2, new_history())
    for delay in (0.3, 0.7, 1.1, 1.6):  # kills land at different points of a save
        proc = subprocess.Popen([sys.executable, "-c", SAVE_FOREVER.format(root=str(ROOT), path=str(path))])
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        assert load_checkpoint(path, nn.Linear(4096, 4096))[0] >= 2  # the last whole save
    save_checkpoint(path, nn.Linear(4096, 4096), None, None, 99, new_history())  # sweeps what the kills left
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]
    assert load_checkpoint(path, nn.Linear(4096, 4096))[0] == 99


def test_resuming_with_another_recipe_is_refused(tmp_path):
    model, optimizer, scheduler = new_run(0)
    save_checkpoint(tmp_path / "run.pt", model, optimizer, scheduler, 1, new_history())
    other = Net()
    recipe = get_recipe("onecycle")
    other_opt = make_optimizer(other, recipe)
    with pytest.raises(ValueError, match="saved by a run with SGD and StepLR, not Adam and OneCycleLR"):
        load_checkpoint(tmp_path / "run.pt", other, other_opt, make_scheduler(other_opt, recipe, 10))
    assert load_checkpoint(tmp_path / "run.pt", Net())[0] == 1  # the weights alone still load


def test_continuing_a_run_with_other_settings_is_refused_before_anything_loads(tmp_path):
    """What the notebook does with `resume`: its parameters must be the run's, but for more epochs."""
    model, optimizer, scheduler = new_run(0)
    config = run_config(get_recipe("s5", epochs=2), name="s5", seed=1)
    save_checkpoint(tmp_path / "last.pt", model, optimizer, scheduler, 2, new_history(), config)

    def resume(**changes):
        other, other_opt, other_sched = new_run(1)
        hyperparameters = {**config["hyperparameters"], **{k: v for k, v in changes.items() if k != "seed"}}
        asked = {**config, "seed": changes.get("seed", 1), "hyperparameters": hyperparameters}
        done, _ = load_checkpoint(tmp_path / "last.pt", other, other_opt, other_sched, config=asked)
        return done, other

    for change, message in (({"lr": 0.1}, "lr 0.1 differs from the resumed run's 0.01; a resumed run keeps its"),
                            ({"seed": 2}, "seed 2 differs from the resumed run's 1"),
                            ({"epochs": 2}, "nothing left to train: .*last.pt already holds epoch 2 of 2; epochs "
                                            "above 2 trains it further")):
        with pytest.raises(ValueError, match=message):
            resume(**change)
    done, other = resume(epochs=3)  # more epochs: the one change a run takes
    assert done == 2 and torch.equal(other.fc1.weight, model.fc1.weight)

    onecycle = run_config(get_recipe("onecycle", epochs=2), name="onecycle")
    save_checkpoint(tmp_path / "onecycle.pt", model, optimizer, scheduler, 1, new_history(), onecycle)
    longer = {**onecycle, "hyperparameters": {**onecycle["hyperparameters"], "epochs": 4}}
    with pytest.raises(ValueError, match="a OneCycle run cannot be extended: .* over 2 epochs; start a new run "
                                         "with epochs 4"):
        load_checkpoint(tmp_path / "onecycle.pt", Net(), config=longer)


def test_exported_weights_load_alone_but_resume_nothing(tmp_path):
    model, optimizer, scheduler = new_run(0)
    model(torch.randn(2, 1, 28, 28)).sum().backward()
    optimizer.step()  # SGD's momentum: as much state as the weights themselves
    save_checkpoint(tmp_path / "last.pt", model, optimizer, scheduler, 5, new_history(), {"seed": 0})
    export_weights(tmp_path / "last.pt", tmp_path / "weights.pt")
    assert (tmp_path / "weights.pt").stat().st_size < (tmp_path / "last.pt").stat().st_size / 1.5
    other = Net()
    assert load_checkpoint(tmp_path / "weights.pt", other)[0] == 5
    assert torch.equal(other.fc1.weight, model.fc1.weight)
    _, other_opt, other_sched = new_run(1)
    with pytest.raises(ValueError, match="holds weights without an optimizer's state .*no run resumes from it"):
        load_checkpoint(tmp_path / "weights.pt", Net(), other_opt, other_sched)


def test_a_bare_state_dict_exported_loads(tmp_path):
    model = new_run(0)[0]
    torch.save(model.state_dict(), tmp_path / "mine.pt")
    export_weights(tmp_path / "mine.pt", tmp_path / "weights.pt")
    other = Net()
    assert load_checkpoint(tmp_path / "weights.pt", other)[0] == 0
    assert torch.equal(other.fc1.weight, model.fc1.weight)


def test_exporting_onto_a_file_needs_overwrite(tmp_path):
    model, optimizer, scheduler = new_run(0)
    save_checkpoint(tmp_path / "last.pt", model, optimizer, scheduler, 5, new_history(), {"seed": 0})
    before = (tmp_path / "last.pt").read_bytes()
    with pytest.raises(FileExistsError, match="last.pt already exists; give another path, or overwrite=True"):
        export_weights(tmp_path / "last.pt", tmp_path / "last.pt")  # the run would no longer resume
    assert (tmp_path / "last.pt").read_bytes() == before
    export_weights(tmp_path / "last.pt", tmp_path / "weights.pt")
    export_weights(tmp_path / "last.pt", tmp_path / "weights.pt", overwrite=True)  # on purpose: replaced
    assert load_checkpoint(tmp_path / "weights.pt", Net())[0] == 5
