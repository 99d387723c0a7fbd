"""Checkpoints and the metric history: saved whole (atomic_write), read with weights_only and checked, loaded
for an exact resume (check_resume refuses changed settings), exported as weights to share."""

import io
import json
import re
from pathlib import Path

import torch

from s5.files import atomic_write


def new_history():
    """An empty metric history: one list per metric, one entry per epoch."""
    return {key: [] for key in ("epoch", "lr", "train_loss", "train_acc", "test_loss", "test_acc", "seconds")}


def save_history(path, history):
    """Write the metric history as JSON, atomically."""
    atomic_write(path, json.dumps(history, indent=1).encode())


def save_checkpoint(path, model, optimizer, scheduler, epoch, history, config=None, scaler=None):
    """Save what an exact resume needs: weights, optimizer, scheduler and gradient scaler state, epoch,
    history, RNGs, and `config` (a dict of plain values: the recipe and settings of the run), atomically."""
    state = {
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict() if optimizer is not None else None,
        "scheduler": scheduler.state_dict() if scheduler is not None else None,
        "kinds": [type(x).__name__ for x in (optimizer, scheduler) if x is not None],
        "epoch": epoch,
        "history": history,
        "config": config,
        "scaler": scaler.state_dict() if scaler is not None else None,
        "rng_cpu": torch.get_rng_state(),
        "rng_cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }
    buffer = io.BytesIO()  # serialised in memory, so a failed write is a plain OSError
    torch.save(state, buffer)
    atomic_write(path, buffer.getvalue())


def _load_weights(model, weights, path):
    own = model.state_dict()
    missing = [k for k in own if k not in weights]
    unexpected = [k for k in weights if k not in own]
    mismatched = [k for k in own if k in weights and tuple(weights[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or mismatched:
        parts = [f"{label} {', '.join(keys[:3])}{' ...' if len(keys) > 3 else ''}" for label, keys in
                 (("missing", missing), ("unexpected", unexpected), ("wrong shape", mismatched)) if keys]
        raise ValueError(f"{path} holds weights for a different model ({'; '.join(parts)})")
    model.load_state_dict(weights)


def _without_wrapper_prefix(weights):
    """A state_dict saved from a wrapped model, keys without the wrapper's prefix: "module." for
    DataParallel and DistributedDataParallel, "_orig_mod." for torch.compile."""
    for prefix in ("module.", "_orig_mod."):
        if all(key.startswith(prefix) for key in weights):
            weights = {key.removeprefix(prefix): value for key, value in weights.items()}
    return weights


# weights_only's refusal of a pickled object, by what it says in every wording since torch 2.6: the unpickler
# met a GLOBAL (a class or function to import and call) it does not allow. "Unsupported global: GLOBAL
# model.Net was not an allowed global by default" (2.6-2.13); "unsupported GLOBAL posix.system whose module
# posix is blocked" (2.14).
_UNSAFE_GLOBAL = re.compile(r"unsupported global\b\W*(?:GLOBAL\s+)?([\w.]+)", re.IGNORECASE)


def read_checkpoint(path):
    """The checkpoint at path as a dict ("model": the weights; "epoch", "history", "config", ... when
    save_checkpoint wrote it), loaded with weights_only=True and checked: weights that are not all finite
    are refused. load_checkpoint loads it into a model; this is for reading what it holds."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"checkpoint {path} does not exist; check the path or train first")
    if path.is_dir():  # a run folder (runs/exp), or the folder of runs (runs): name a checkpoint that is there
        inside = sorted(path.glob("*.pt"), key=lambda p: (p.name != "best.pt", p.name)) + sorted(path.glob("*/best.pt"))
        hint = f"give a checkpoint file, such as {inside[0]}" if inside else "it holds no checkpoint (.pt)"
        raise IsADirectoryError(f"checkpoint {path} is a folder; {hint}")
    if not path.is_file():
        raise ValueError(f"checkpoint {path} is not a regular file (a pipe or device?); give a checkpoint file")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except OSError as error:
        raise OSError(f"cannot read checkpoint {path}: {error.strerror or error}") from None
    except Exception as error:
        unsafe = _UNSAFE_GLOBAL.search(str(error))
        if unsafe:
            raise ValueError(f"refused to load {path}: it holds a pickled Python object ({unsafe.group(1)}) that "
                             "could run code; only checkpoints of tensors and plain data load (a whole model: "
                             "save model.state_dict() instead)") from None
        raise ValueError(f"{path} is not a PyTorch checkpoint ({type(error).__name__}); "
                         "pass a file written by save_checkpoint") from None
    if isinstance(state, dict) and "model" not in state and isinstance(state.get("model_state_dict"), dict):
        state = state["model_state_dict"]  # PyTorch's tutorial layout ("Saving a general checkpoint"): its weights
    if isinstance(state, dict) and state and all(isinstance(v, torch.Tensor) for v in state.values()):
        state = {"model": _without_wrapper_prefix(state)}
    elif not isinstance(state, dict) or not {"model", "epoch", "history"} <= state.keys():
        raise ValueError(f"{path} is neither a checkpoint of train.py or the notebook nor a model's state_dict "
                         "(no model/epoch/history); save model.state_dict() and give that file")
    _check_fields(state, path)
    broken = [k for k, v in state["model"].items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if broken:
        raise ValueError(f"{path} holds weights that are not finite (NaN or inf in {', '.join(broken[:3])}): "
                         "the run that wrote it diverged; use an earlier checkpoint")
    return state


def _check_fields(state, path):
    """Refuse a checkpoint whose fields are not what save_checkpoint writes (a file edited, or written by other
    code), naming the first such field: caught here, before anything loads, trains or is saved again."""
    def wrong(field, value, expected):
        shown = repr(value) if len(repr(value)) <= 40 else f"a {type(value).__name__}"
        raise ValueError(f"{path} is not a checkpoint as save_checkpoint writes it: its {field} is {shown}, not "
                         f"{expected}; resume from the run's own last.pt, or load its weights alone")

    def is_whole(value):
        return isinstance(value, int) and not isinstance(value, bool)

    if not isinstance(state["model"], dict) or not all(isinstance(v, torch.Tensor) for v in state["model"].values()):
        wrong("model", state["model"], "a state_dict of tensors")
    if "epoch" not in state:
        return
    if not is_whole(state["epoch"]) or state["epoch"] < 0:
        wrong("epoch", state["epoch"], "a whole number >= 0")
    history = state["history"]
    if not isinstance(history, dict):
        wrong("history", history, "a dict of lists (new_history())")
    for key in new_history():
        if key != "seconds" or key in history:  # a history saved before the seconds were kept: read as it is
            values = history.get(key)
            if not isinstance(values, list) or not all(isinstance(v, (int, float)) for v in values):
                wrong(f"history[{key!r}]", values, "a list of numbers")
    config = state.get("config")
    if not (config is None or isinstance(config, dict) and isinstance(config.get("hyperparameters", {}), dict)):
        wrong("config", config, "a dict of the run's settings (run_config) or None")
    for key in ("optimizer", "scheduler", "scaler"):
        if not (state.get(key) is None or isinstance(state[key], dict)):
            wrong(key, state[key], "a state_dict or None")
    kinds = state.get("kinds", [])
    if not isinstance(kinds, list) or not all(isinstance(kind, str) for kind in kinds):
        wrong("kinds", kinds, "a list of class names")
    size = torch.get_rng_state().shape
    rng = state.get("rng_cpu", torch.get_rng_state())
    if not (isinstance(rng, torch.Tensor) and rng.dtype == torch.uint8 and rng.shape == size):
        wrong("rng_cpu", rng, f"the CPU generator's state (torch.uint8, {size[0]} bytes)")
    cuda = state.get("rng_cuda", [])
    if not (isinstance(cuda, (list, tuple)) and all(isinstance(t, torch.Tensor) and t.dtype == torch.uint8
                                                    for t in cuda)):
        wrong("rng_cuda", cuda, "a list of CUDA generator states")


def check_history(history, epoch, path):
    """Refuse to continue a run whose saved history is not that of its epochs up to `epoch` (what a run's own
    last.pt holds), or has lists of unequal length: its epochs would be numbered and plotted wrong. For a
    resume; a checkpoint saved with another history still loads (load_checkpoint)."""
    lengths = {len(values) for values in history.values()}
    ran = history["epoch"]  # empty in a checkpoint saved by hand (save_checkpoint with new_history()): taken
    if len(lengths) > 1 or ran and ran != list(range(ran[0], epoch + 1)):
        epochs = f"epochs {history['epoch'][0]}-{history['epoch'][-1]}" if history["epoch"] else "no epoch"
        unequal = ", in lists of unequal length" if len(lengths) > 1 else ""
        raise ValueError(f"{path} is not a checkpoint as save_checkpoint writes it for a run: it is at epoch {epoch} "
                         f"but its history holds {epochs}{unequal}; resume from the run's own last.pt")


def export_weights(checkpoint_path, path, overwrite=False):
    """Save a checkpoint's weights, epoch, history and settings, without the optimizer's state (a third
    of the size), to path: a model to share, which load_checkpoint loads (but no run resumes from).
    Refuses a path that holds a file unless `overwrite` (onto the run's own last.pt, say, it would end
    the run's resumability)."""
    if Path(path).exists() and not overwrite:
        raise FileExistsError(f"{path} already exists; give another path, or overwrite=True to replace it")
    save_weights(path, read_checkpoint(checkpoint_path))


def save_weights(path, state):
    """Write `state` (a checkpoint as read_checkpoint reads it, changed as you like) to path as weights to
    share: without the optimizer's, scheduler's and scaler's state; load_checkpoint loads it, no run
    resumes from it. Whole or not at all (atomic_write)."""
    buffer = io.BytesIO()
    torch.save({"epoch": 0, "history": new_history(), **state, "optimizer": None, "scheduler": None, "scaler": None,
                "kinds": []}, buffer)
    atomic_write(path, buffer.getvalue())


def check_resume(saved, config, done, path, name=str):
    """Refuse to continue the run saved at `path` (its run_config `saved`, `done` epochs in) as `config` when
    anything but the number of epochs differs: the optimizer and schedule go on from their saved state, so
    a changed value would not be what trains, and the run's record would say it was. A OneCycle run keeps
    its epochs too (its rate was laid out over them); a run must have epochs left. `name(key)` is how the
    caller spells a setting in the error: the key itself in Python, "--key" for a command line."""
    was_hyper, hyper = saved.get("hyperparameters", {}), config["hyperparameters"]
    pairs = [(key, config.get(key), was) for key, was in saved.items() if key != "hyperparameters"]
    pairs += [(key, hyper.get(key), was) for key, was in was_hyper.items()]
    for key, value, was in pairs:  # what the run saved (a run saved before a setting existed: not that one)
        if key != "epochs" and value != was:
            raise ValueError(f"{name(key)} {value} differs from the resumed run's {was}; a resumed run keeps its "
                             "settings (start a new run to change them)")
    onecycle, epochs = was_hyper.get("schedule") == "onecycle", hyper["epochs"]
    if onecycle and epochs != was_hyper["epochs"]:
        raise ValueError(f"a OneCycle run cannot be extended: its learning rate was laid out over "
                         f"{was_hyper['epochs']} epochs; start a new run with {name('epochs')} {epochs}")
    if epochs <= done:
        more = "start a new run with more epochs" if onecycle else f"{name('epochs')} above {done} trains it further"
        held = f"epoch {done} of {epochs}" if epochs == done else f"epoch {done}; {name('epochs')} {epochs} is below it"
        raise ValueError(f"nothing left to train: {path} already holds {held}; {more}")


def load_checkpoint(path, model, optimizer=None, scheduler=None, scaler=None, config=None):
    """Load a checkpoint into model (and optimizer, scheduler, gradient scaler, RNGs when given); return
    (epoch, history). With `config` (the run_config of the run to continue), a run saved with other
    settings is refused first (check_resume).

    Loads with weights_only=True: tensors and plain data only, never arbitrary pickled objects. Refuses
    weights that are not all finite. Also accepts a bare state_dict (torch.save(model.state_dict(), path)),
    also of a compiled or DataParallel model, or PyTorch's tutorial layout ({"model_state_dict": ...}); then
    returns (0, new_history()).
    """
    state = read_checkpoint(path)
    if config is not None and state.get("config") is not None:
        check_resume(state["config"], config, state["epoch"], path)
    _load_weights(model, state["model"], path)
    if "epoch" not in state:
        return 0, new_history()
    asked = [type(x).__name__ for x in (optimizer, scheduler) if x is not None]
    if asked and state.get("kinds") == []:
        raise ValueError(f"{path} holds weights without an optimizer's state (export_weights): no run resumes "
                         "from it; start a new run, or load it into a model alone")
    if "kinds" in state and any(kind not in state["kinds"] for kind in asked):
        raise ValueError(f"{path} was saved by a run with {' and '.join(state['kinds']) or 'no optimizer'}, not "
                         f"{' and '.join(asked)}; resume with the recipe that made it")
    if optimizer is not None and state.get("optimizer") is not None:
        optimizer.load_state_dict(state["optimizer"])
    if scheduler is not None and state.get("scheduler") is not None:
        scheduler.load_state_dict(state["scheduler"])
    if scaler is not None and state.get("scaler") is not None:
        scaler.load_state_dict(state["scaler"])
    if optimizer is not None:
        torch.set_rng_state(state["rng_cpu"])
        if torch.cuda.is_available() and state["rng_cuda"]:
            torch.cuda.set_rng_state_all(state["rng_cuda"])
    return state["epoch"], state["history"]
