"""A learner's mistakes and interruptions: clear errors, nothing they made is lost."""

import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from conftest import ROOT, new_run, train_py, train_py_refusal

import utils
from model import Net
from utils import Recipe, fit, get_recipe, load_checkpoint, new_history


@pytest.mark.parametrize("field, value", [("epochs", 0), ("epochs", -3), ("batch_size", 0), ("lr", 0.0),
                                          ("lr", -0.01), ("lr", float("nan")), ("gamma", 0), ("epochs", 2.5)])
def test_nonsensical_hyperparameters_are_refused(field, value):
    with pytest.raises(ValueError, match=f"{field} must be a positive"):
        get_recipe("s5", **{field: value})


def test_unknown_recipe_and_schedule():
    with pytest.raises(ValueError, match="unknown recipe 'fast'; choose one of"):
        get_recipe("fast")
    with pytest.raises(ValueError, match="schedule must be"):
        Recipe(schedule="cosine")
    with pytest.raises(ValueError, match="optimizer must be 'sgd', 'adam' or 'adamw'"):
        get_recipe("s5", optimizer="lbfgs")


@pytest.mark.parametrize("field, value, message", [
    ("weight_decay", -1e-4, "weight_decay must be a number >= 0"),
    ("weight_decay", float("nan"), "weight_decay must be a number >= 0"),
    ("label_smoothing", 1.0, r"label_smoothing must be in \[0, 1\)"),
    ("label_smoothing", -0.1, r"label_smoothing must be in \[0, 1\)"),
])
def test_regularisation_out_of_range_is_refused(field, value, message):
    with pytest.raises(ValueError, match=message):
        get_recipe("onecycle", **{field: value})


@pytest.mark.parametrize("recipe, overrides, message", [
    ("onecycle", {"momentum": 0.8}, "momentum 0.8 would change nothing: OneCycle cycles the momentum itself"),
    ("onecycle", {"optimizer": "sgd", "momentum": 0.8}, "OneCycle cycles the momentum itself"),
    ("s5", {"optimizer": "adam", "momentum": 0.8}, "momentum 0.8 would change nothing: it is SGD's"),
    ("tuned", {"step_size": 5}, "step_size 5 would change nothing: it is StepLR's"),
    ("s5", {"schedule": "onecycle", "gamma": 0.5}, "gamma 0.5 would change nothing: it is StepLR's"),
])
def test_a_setting_the_recipe_would_ignore_is_refused(recipe, overrides, message):
    with pytest.raises(ValueError, match=message):
        get_recipe(recipe, **overrides)


def test_settings_the_recipe_uses_are_taken():
    assert get_recipe("s5", momentum=0.8, step_size=5, gamma=0.5).momentum == 0.8
    assert get_recipe("s5", optimizer="adam").optimizer == "adam"  # momentum left at its default: fine
    assert get_recipe("onecycle", optimizer="sgd", lr=0.05).lr == 0.05


class PoisonedLoader:
    """A user's loader whose batch 3 of epoch 2 holds a NaN."""

    def __init__(self):
        g = torch.Generator().manual_seed(0)
        self.batches = [(torch.randn(8, 1, 28, 28, generator=g), torch.randint(0, 10, (8,), generator=g))
                        for _ in range(4)]
        self.epoch = 1

    def set_epoch(self, epoch):
        self.epoch = epoch

    def __iter__(self):
        for i, (x, y) in enumerate(self.batches, start=1):
            if self.epoch == 2 and i == 3:
                x = x.clone()
                x[0, 0, 0, 0] = float("nan")
            yield x, y


def test_nan_loss_stops_fit_and_keeps_the_last_good_checkpoint(tmp_path):
    model, optimizer, scheduler = new_run()
    loader = PoisonedLoader()
    history = None
    with pytest.raises(FloatingPointError, match="epoch 2, batch 3"):
        history = fit(model, "cpu", loader, loader.batches, optimizer, scheduler, 3,
                      checkpoint_path=tmp_path / "last.pt")
    assert history is None
    epoch, saved = load_checkpoint(tmp_path / "last.pt", Net())
    assert epoch == 1 and saved["epoch"] == [1]
    for value in torch.load(tmp_path / "last.pt", weights_only=True)["model"].values():
        assert torch.isfinite(value).all()


@pytest.mark.parametrize("stop, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)],
                         ids=["ctrl-c", "sigterm"])  # Ctrl-C; kill, a scheduler
def test_a_stop_in_the_shell_keeps_history_and_checkpoint_and_resumes(mnist_root, tmp_path, stop, code):
    flags = ["--data-dir", str(mnist_root), "--batch-size", "16", "--device", "cpu"]
    shell = dict(cwd=tmp_path, text=True, env={**os.environ, "MPLBACKEND": "Agg"})
    # Ctrl-C's default handler, as a shell in the foreground gives it: a test suite started in the background
    # (`pytest &`, nohup) has SIGINT ignored, and a child would inherit that.
    proc = subprocess.Popen([sys.executable, str(ROOT / "train.py"), *flags, "--epochs", "50"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
                            **shell)
    try:
        deadline = time.monotonic() + 120
        while not (tmp_path / "runs" / "exp" / "last.pt").exists():
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
            time.sleep(0.05)
        time.sleep(0.5)  # now inside a later epoch
        proc.send_signal(stop)
        out, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == code, err
    assert "Interrupted in epoch" in out and "resume with: python train.py --resume runs/exp" in out
    assert "Traceback" not in err
    history = json.loads((tmp_path / "runs" / "exp" / "history.json").read_text())
    done, saved = load_checkpoint(tmp_path / "runs" / "exp" / "last.pt", Net())
    assert saved["epoch"] == list(range(1, done + 1))
    # The history file may hold one epoch more, when Ctrl-C came while that epoch's checkpoint was written.
    assert history["epoch"] in (saved["epoch"], saved["epoch"] + [done + 1])
    if stop == signal.SIGTERM:  # the files are those a Ctrl-C leaves, and resume as below
        return

    resumed = train_py(*flags, "--epochs", done + 1, "--resume", "runs/exp", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert json.loads((tmp_path / "runs" / "exp" / "history.json").read_text())["epoch"] == list(range(1, done + 2))


def train_py_with_a_stop(monkeypatch, where, stop, *args):
    """train.main(ARGS) in this process, with the signal `stop` sent to it as train.py calls `where` (one of
    its functions): as when Ctrl-C or a kill lands at that point. Returns its exit code."""
    import train as script

    called = getattr(script, where)

    def stopped_in(*a, **k):
        os.kill(os.getpid(), stop)
        return called(*a, **k)

    monkeypatch.setattr(script, where, stopped_in)
    handlers = {kind: signal.getsignal(kind) for kind in (signal.SIGINT, signal.SIGTERM)}
    signal.signal(signal.SIGINT, signal.default_int_handler)  # Ctrl-C as a foreground shell gives it
    try:
        return script.main([str(arg) for arg in args])
    finally:
        for kind, handler in handlers.items():
            signal.signal(kind, handler)


@pytest.mark.parametrize("stop, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
@pytest.mark.parametrize("where", ["get_data_loaders", "output_paths"])  # loading data; the run folder just made
def test_a_stop_during_setup_is_one_line_and_leaves_no_run_folder(mnist_root, tmp_path, monkeypatch, capsys, stop,
                                                                  code, where):
    assert train_py_with_a_stop(monkeypatch, where, stop, "--data-dir", mnist_root, "--runs-dir", tmp_path / "runs",
                                "--batch-size", "128", "--device", "cpu") == code
    out, err = capsys.readouterr()
    assert out == "Interrupted before training: nothing saved\n" and err == ""
    assert not (tmp_path / "runs" / "exp").exists()


@pytest.mark.parametrize("flags, code", [([], 143), (["--lr", "1e30"], 1)])  # a stop; a NaN loss in epoch 1
def test_a_run_that_ends_before_its_first_save_leaves_no_run_folder(mnist_root, tmp_path, monkeypatch, flags, code):
    stop = signal.SIGTERM if code == 143 else 0  # 0: no signal, only asks whether the process is there
    assert train_py_with_a_stop(monkeypatch, "train_recipe", stop, "--data-dir", mnist_root, "--runs-dir", tmp_path,
                                "--epochs", "1", "--batch-size", "128", "--device", "cpu", *flags) == code
    assert list(tmp_path.iterdir()) == []


def test_a_second_stop_while_the_plot_is_drawn_waits_for_it(mnist_root, tmp_path, monkeypatch, capsys):
    code = train_py_with_a_stop(monkeypatch, "plot_train_metrics", signal.SIGINT, "--data-dir", mnist_root,
                                "--runs-dir", tmp_path, "--epochs", "1", "--batch-size", "128", "--device", "cpu")
    assert code == 130
    out, err = capsys.readouterr()
    assert f"history: {tmp_path / 'exp' / 'history.json'}, plot: {tmp_path / 'exp' / 'train_metrics.png'}" in out
    assert (tmp_path / "exp" / "train_metrics.png").stat().st_size > 0 and err == ""


class InterruptedLoader(PoisonedLoader):
    """Ctrl-C (KeyboardInterrupt) arrives during batch 2 of epoch 3, as in a notebook's Interrupt."""

    def __iter__(self):
        for i, batch in enumerate(self.batches, start=1):
            if self.epoch == 3 and i == 2:
                raise KeyboardInterrupt
            yield batch


def test_interrupt_in_a_notebook_keeps_the_history_it_was_given(tmp_path, capsys):
    model, optimizer, scheduler = new_run()
    loader = InterruptedLoader()
    history = new_history()
    with pytest.raises(KeyboardInterrupt):
        fit(model, "cpu", loader, loader.batches, optimizer, scheduler, 5, history=history,
            checkpoint_path=tmp_path / "last.pt")
    assert history["epoch"] == [1, 2]
    assert load_checkpoint(tmp_path / "last.pt", Net())[0] == 2
    assert "Interrupted in epoch 3: history holds epochs 1-2" in capsys.readouterr().out


def test_test_on_nan_images_raises_as_train_does():
    torch.manual_seed(0)
    batches = [(torch.randn(8, 1, 28, 28), torch.randint(0, 10, (8,))) for _ in range(3)]
    batches[1][0][2, 0, 5, 5] = float("nan")
    with pytest.raises(FloatingPointError, match="loss became nan in batch 2; the test result is void"):
        utils.test(Net(), "cpu", batches)


def test_a_loader_of_numpy_arrays_is_named():
    batches = [(np.zeros((4, 1, 28, 28), dtype=np.float32), np.zeros(4, dtype=np.int64))]
    with pytest.raises(TypeError, match="yielded images as numpy.ndarray; a loader must yield .* torch tensors"):
        utils.test(Net(), "cpu", batches)


IMAGES, LABELS = torch.zeros(4, 1, 28, 28), torch.tensor([0, 1, 2, 3])


@pytest.mark.parametrize("batch, error, message", [
    ({"image": IMAGES, "label": LABELS}, TypeError, "a loader must yield (images, labels) pairs, got a dict with keys "
                                                    "['image', 'label']"),
    ((IMAGES, LABELS, LABELS), TypeError, "a loader must yield (images, labels) pairs, got 3 items"),
    ((IMAGES, torch.eye(10)[LABELS]), ValueError, "labels must be one class index per image, shape [N], got [4, 10]; "
                                                  "use labels.argmax(1) if they are one-hot"),
    ((IMAGES, LABELS[:, None]), ValueError, "got [4, 1]; use labels.view(-1)"),
    ((IMAGES, LABELS.float()), TypeError, "labels must be integer class indices, got torch.float32; convert with "
                                          "labels.long()"),
    ((IMAGES, LABELS[:3]), ValueError, "the loader yielded 4 images but 3 labels in one batch"),
    ((IMAGES, LABELS + 7), ValueError, "labels must be class indices 0-9 for this model's 10 outputs, got 10"),
    ((IMAGES, LABELS - 1), ValueError, "labels must be class indices 0-9 for this model's 10 outputs, got -1"),
])
def test_batches_that_are_not_images_and_class_indices_are_named(batch, error, message):
    model, optimizer, _ = new_run()
    for run in (lambda: utils.train(model, "cpu", [batch], optimizer), lambda: utils.test(model, "cpu", [batch])):
        with pytest.raises(error) as refusal:
            run()
        assert message in str(refusal.value) and "\n" not in str(refusal.value)
    for kind in (torch.uint8, torch.int16, torch.int32):  # class indices too (numpy's int32 labels, say)
        assert utils.train(model, "cpu", [(IMAGES, LABELS.to(kind))], optimizer)[0] > 0
        assert utils.test(model, "cpu", [(IMAGES, LABELS.to(kind))])[0] > 0


def test_an_epoch_scheduler_given_to_train_is_refused():
    model, optimizer, scheduler = new_run()  # the S5 recipe's StepLR(15, 0.1)
    with pytest.raises(ValueError, match="^StepLR steps once per epoch, but train.scheduler=.... steps it after "
                                         "every batch; call scheduler.step.. after each train.. .fit does."):
        utils.train(model, "cpu", [(IMAGES, LABELS)] * 20, optimizer, scheduler=scheduler)
    assert optimizer.param_groups[0]["lr"] == 0.01  # nothing stepped


@pytest.mark.parametrize("precision", ["auto", "fp32"])
def test_float64_images_are_named_under_autocast_too(precision):
    model, optimizer, _ = new_run()
    batches, named = [(IMAGES.double(), LABELS)], "^Net's weights are torch.float32 but the images are torch.float64; "
    with pytest.raises(ValueError, match=named):
        utils.train(model, "cpu", batches, optimizer, precision=precision)
    with pytest.raises(ValueError, match=named):
        utils.test(model, "cpu", batches, precision=precision)


def test_the_original_pipeline_trains_as_the_original_did():
    original = get_recipe("s5", "s5")
    assert (original.precision, original.channels_last) == ("fp32", False)
    assert (get_recipe("s5").precision, get_recipe("s5").channels_last) == ("auto", True)
    assert get_recipe("onecycle", "s5", precision="bf16").precision == "bf16"
    with pytest.raises(ValueError, match="precision must be 'auto', 'bf16', 'fp16' or 'fp32', got 'fp8'"):
        get_recipe("s5", precision="fp8")
    with pytest.raises(ValueError, match="pipeline must be one of"):
        get_recipe("s5", "pil")


def test_a_precision_the_cpu_would_emulate_gets_a_note():
    assert utils.precision_note("auto", "cpu") is None and utils.precision_note("fp32", "cpu") is None
    bf16 = utils.precision_note("bf16", "cpu")
    assert (bf16 is None) == (utils.autocast_dtype("cpu") == torch.bfloat16)  # auto picks bf16 where native
    if not getattr(torch.cpu, "_is_amx_fp16_supported", lambda: False)():  # all but the newest Xeons: emulated
        fp16 = utils.precision_note("fp16", "cpu")
        assert fp16.startswith("note: fp16 is slow on a CPU") and "--precision auto" in fp16 and "\n" not in fp16
        assert not re.search(r"\d+ ?x", fp16), fp16  # no ratio measured on another CPU (29x there, ~250x on a Xeon)
    with pytest.raises(ValueError, match="precision must be"):
        utils.precision_note("fp8", "cpu")


def test_a_nan_loss_stops_fp16_training_too():
    model, optimizer, scheduler = new_run()
    loader = PoisonedLoader()
    with pytest.raises(FloatingPointError, match="epoch 2, batch 3"):
        fit(model, "cpu", loader, loader.batches, optimizer, scheduler, 3, precision="fp16")


def test_train_py_refuses_settings_it_cannot_run_in_one_line(mnist_root, tmp_path):
    for flags, message in ((["--weight-decay", "-1"], "error: weight_decay must be a number >= 0, got -1.0"),
                           (["--recipe", "tuned", "--label-smoothing", "1"],
                            "error: label_smoothing must be in [0, 1), got 1.0"),
                           (["--device", "cpu", "--compile", "graphed"],
                            "error: compile mode 'graphed' replays CUDA graphs and needs a CUDA device, got cpu; "
                            "use compile mode 'off'")):
        assert train_py_refusal(*flags, "--data-dir", mnist_root, "--runs-dir", tmp_path) == message
    assert not list(tmp_path.iterdir())  # no run folder for a refused run


def test_a_setting_beyond_float32_is_refused_before_a_run_folder(mnist_root, tmp_path):
    for flag in ("--lr", "--gamma", "--weight-decay"):
        assert train_py_refusal(flag, "1e308", "--data-dir", mnist_root, "--runs-dir", tmp_path, "--device", "cpu") == (
            f"error: {flag[2:].replace('-', '_')} 1e+308 is beyond the largest number a float32 holds (3.4e+38), in "
            "which training computes; give a smaller one")
    assert not list(tmp_path.iterdir())


def test_an_optimizer_of_a_model_made_again_is_refused():
    old, optimizer, _ = new_run()  # then a notebook cell makes the model again, and train() gets the old optimizer
    model, before = Net(), {k: v.clone() for k, v in old.state_dict().items()}
    with pytest.raises(ValueError, match=r"^the optimizer holds none of this model's weights, so training would "
                                         r"change nothing \(was the model made again after it\?\); make it from "):
        utils.train(model, "cpu", [(IMAGES, LABELS)], optimizer)
    assert all(torch.equal(before[k], v) for k, v in old.state_dict().items())  # nothing stepped
    with pytest.raises(TypeError, match="^optimizer must be a torch.optim optimizer, got NoneType$"):
        utils.train(model, "cpu", [(IMAGES, LABELS)], None)
    head = torch.optim.SGD(model.fc2.parameters(), lr=0.1)  # some of the model's weights: fine-tuning, taken
    weights = model.fc2.weight.clone()
    utils.train(model, "cpu", [(IMAGES, LABELS)], head)
    assert not torch.equal(weights, model.fc2.weight)


def test_a_model_on_another_device_than_its_batches_is_refused():
    model = Net().to("meta")  # a model left behind, as one on the CPU with batches going to CUDA
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    moved = r"^the model is on meta \(conv1.weight\) but the batches go to cpu; move it there first: model.to\(device\)"
    for run in (lambda: utils.train(model, "cpu", [(IMAGES, LABELS)], optimizer),
                lambda: utils.test(model, "cpu", [(IMAGES, LABELS)]),
                lambda: utils.get_predictions(model, "cpu", [(IMAGES, LABELS)])):
        with pytest.raises(ValueError, match=moved):
            run()
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="^device cuda asked for, but CUDA is not available here; use cpu$"):
            utils.test(Net(), "cuda", [(IMAGES, LABELS)])


def test_fit_with_no_epoch_to_train_says_so():
    model, optimizer, scheduler = new_run()
    for epochs, start in ((0, 1), (3, 4)):
        with pytest.raises(ValueError, match=f"^nothing to train: epochs {epochs} is below start_epoch {start}; "):
            fit(model, "cpu", [(IMAGES, LABELS)], [(IMAGES, LABELS)], optimizer, scheduler, epochs, start_epoch=start)


def test_a_second_fit_into_the_same_run_replaces_nothing(tmp_path):
    """The notebook's training cell run twice, or the model's cell and the training cell run again in the
    same run folder: refused before any epoch, the first run's checkpoints byte for byte as they were."""
    model, optimizer, scheduler = new_run()
    batches, paths = [(IMAGES, LABELS)], {"checkpoint_path": tmp_path / "last.pt", "best_path": tmp_path / "best.pt"}
    history = fit(model, "cpu", batches, batches, optimizer, scheduler, 2, **paths)
    saved = {name: path.read_bytes() for name, path in paths.items()}
    with pytest.raises(ValueError, match=r"^history already holds epochs 1-2, and fit would train epoch 1 again into "
                                         r"it .*; for a new run make the model, optimizer and history again, or go on "
                                         r"with start_epoch=3$"):
        fit(model, "cpu", batches, batches, optimizer, scheduler, 2, history=history, **paths)
    model, optimizer, scheduler = new_run()
    with pytest.raises(FileExistsError, match=f"^{tmp_path / 'last.pt'} already exists, and fit starts a new run at "
                                              r"epoch 1: give the run a new folder \(make_run_dir\), continue that "):
        fit(model, "cpu", batches, batches, optimizer, scheduler, 2, **paths)
    assert history["epoch"] == [1, 2] and {name: path.read_bytes() for name, path in paths.items()} == saved
    done, history = load_checkpoint(paths["checkpoint_path"], model, optimizer, scheduler)  # continued: taken
    fit(model, "cpu", batches, batches, optimizer, scheduler, 3, history=history, start_epoch=done + 1, **paths)
    assert load_checkpoint(paths["checkpoint_path"], Net())[1]["epoch"] == [1, 2, 3]
    model, optimizer, scheduler = new_run()
    fit(model, "cpu", batches, batches, optimizer, scheduler, 1, overwrite=True, **paths)  # asked for: replaced
    assert load_checkpoint(paths["checkpoint_path"], Net())[1]["epoch"] == [1]


def test_fit_checks_its_checkpoint_can_be_written_before_training(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    model, optimizer, scheduler = new_run()
    weights = model.fc2.weight.clone()
    with pytest.raises(OSError, match="^cannot write .*notes.txt/last.pt: "):
        fit(model, "cpu", [(IMAGES, LABELS)], [(IMAGES, LABELS)], optimizer, scheduler, 1,
            checkpoint_path=tmp_path / "notes.txt" / "last.pt")
    assert torch.equal(weights, model.fc2.weight) and (tmp_path / "notes.txt").read_text() == "mine"


class RawScores(torch.nn.Module):
    """A model of the user's own whose forward ends without log_softmax (or with softmax)."""

    def __init__(self, softmax=False):
        super().__init__()
        self.linear, self.softmax = torch.nn.Linear(28 * 28, 10), softmax

    def forward(self, x):
        scores = self.linear(x.flatten(1))
        return scores.softmax(1) if self.softmax else scores


def test_outputs_that_are_not_log_probabilities_are_named_not_trained_on():
    """NLL (train's and test's default) of raw scores falls below 0 and on without bound; accuracy may
    still rise, so nothing else would show it."""
    torch.manual_seed(0)
    batches = [(torch.randn(32, 1, 28, 28), torch.randint(0, 10, (32,)))] * 20
    below = (r"^the loss is -[\d.]+ in batch \d+, below 0: F.nll_loss takes log-probabilities and the model's outputs "
             r"are not; end its forward with F.log_softmax\(x, dim=1\), or give train and test "
             r"criterion=F.cross_entropy, which takes raw scores$")
    for softmax in (False, True):
        model = RawScores(softmax)
        with pytest.raises(ValueError, match=below):
            utils.train(model, "cpu", batches, torch.optim.SGD(model.parameters(), lr=0.1))
        with pytest.raises(ValueError, match=below):
            utils.test(model, "cpu", batches)
    model = RawScores()  # with the loss that takes raw scores: trained
    loss, _ = utils.train(model, "cpu", batches, torch.optim.SGD(model.parameters(), lr=0.1),
                          criterion=torch.nn.functional.cross_entropy)
    assert 0 < utils.test(model, "cpu", batches, criterion=torch.nn.functional.cross_entropy)[0] < loss


def test_a_criterion_that_gives_one_loss_per_image_is_named():
    model, optimizer, _ = new_run()
    per_image = torch.nn.NLLLoss(reduction="none")
    for run in (lambda: utils.train(model, "cpu", [(IMAGES, LABELS)], optimizer, per_image),
                lambda: utils.test(model, "cpu", [(IMAGES, LABELS)], per_image)):
        with pytest.raises(ValueError, match=r"^criterion must return the batch's mean loss, one number; got shape "
                                             r"\[4\] \(reduction='none'\?\)$"):
            run()


def test_the_stop_test_passes_in_a_suite_started_in_the_background(tmp_path):
    """`python -m pytest &` from a script: bash starts the job with SIGINT ignored, which its children inherit."""
    test = "tests/test_reliability.py::test_a_stop_in_the_shell_keeps_history_and_checkpoint_and_resumes"
    suite = f"{shlex.quote(sys.executable)} -m pytest -q -p no:cacheprovider '{test}[ctrl-c]' & wait $!"
    result = subprocess.run(["bash", "-c", suite], cwd=ROOT, capture_output=True, text=True, timeout=300,
                            env={**os.environ, "MPLBACKEND": "Agg"})
    assert result.returncode == 0, result.stdout[-2000:]
    assert "1 passed" in result.stdout
