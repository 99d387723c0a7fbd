"""What a run is made of: MNIST's constants, the recipes (Recipe, RECIPES, get_recipe), devices and seeds."""

import argparse
import dataclasses
import math

import torch

# Mean and standard deviation of the 60,000 MNIST training pixels, scaled to [0, 1].
MNIST_MEAN = 0.1307
MNIST_STD = 0.3081
IMAGE_SIZE = 28
NUM_CLASSES = 10

# The S5 augmentation: rotate by an angle drawn uniformly from +-ROTATION_DEGREES, and with
# probability ZOOM_P first crop the central ZOOM_CROP x ZOOM_CROP pixels and resize them back to 28.
ROTATION_DEGREES = 15.0
ZOOM_P = 0.1
ZOOM_CROP = 22

PIPELINES = ("fast", "s5")
OPTIMIZERS = ("sgd", "adam", "adamw")
# auto: bf16 where the hardware does it natively; fp16 (with a gradient scaler) on CUDA GPUs without it (T4,
# V100); else fp32.
PRECISIONS = ("auto", "bf16", "fp16", "fp32")
# The largest number a float32 holds: optimizers keep their settings in fp32 tensors too, where a larger one
# (--lr 1e308) fails mid-step ("value cannot be converted to type float without overflow").
FLOAT32_MAX = float(torch.finfo(torch.float32).max)


def one_of(names):
    """("a", "b", "c") -> "'a', 'b' or 'c'", for error messages."""
    quoted = [repr(name) for name in names]
    return f"{', '.join(quoted[:-1])} or {quoted[-1]}" if len(quoted) > 1 else quoted[0]


@dataclasses.dataclass(frozen=True)
class Recipe:
    """How a run trains: everything but where (device, data). `optimizer` is "sgd" (with `momentum`),
    "adam" or "adamw", with `weight_decay` (L2 for sgd and adam, decoupled for adamw); `label_smoothing`
    spreads that much of each target over all classes in the training loss (0: plain NLL).
    `schedule` is "step" (StepLR, stepped per epoch) or "onecycle" (OneCycleLR, stepped per batch;
    `lr` is its peak). `precision` (PRECISIONS; "auto": bf16 where native, fp16 on CUDA GPUs without it)
    and `channels_last` are the training step's: the original S5 step is fp32 and NCHW
    (get_recipe(..., pipeline="s5"))."""

    epochs: int = 20
    batch_size: int = 512
    lr: float = 0.01
    momentum: float = 0.9
    step_size: int = 15
    gamma: float = 0.1
    weight_decay: float = 0.0
    label_smoothing: float = 0.0
    schedule: str = "step"
    optimizer: str = "sgd"
    precision: str = "auto"
    channels_last: bool = True

    def __post_init__(self):
        for name in ("epochs", "batch_size", "step_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"{name} must be a positive whole number, got {value!r}")
        for name in ("lr", "gamma"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
                raise ValueError(f"{name} must be a positive number, got {value!r}")
        if not 0 <= self.momentum < 1:
            raise ValueError(f"momentum must be in [0, 1), got {self.momentum!r}")
        if not (isinstance(self.weight_decay, (int, float)) and 0 <= self.weight_decay < math.inf):
            raise ValueError(f"weight_decay must be a number >= 0, got {self.weight_decay!r}")
        if not (isinstance(self.label_smoothing, (int, float)) and 0 <= self.label_smoothing < 1):
            raise ValueError(f"label_smoothing must be in [0, 1), got {self.label_smoothing!r}")
        for name in ("lr", "gamma", "weight_decay"):
            if getattr(self, name) > FLOAT32_MAX:
                raise ValueError(f"{name} {getattr(self, name)!r} is beyond the largest number a float32 holds "
                                 f"({FLOAT32_MAX:.3g}), in which training computes; give a smaller one")
        if self.schedule not in ("step", "onecycle"):
            raise ValueError(f"schedule must be 'step' or 'onecycle', got {self.schedule!r}")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be {one_of(OPTIMIZERS)}, got {self.optimizer!r}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be {one_of(PRECISIONS)}, got {self.precision!r}")
        if not isinstance(self.channels_last, bool):
            raise ValueError(f"channels_last must be True or False, got {self.channels_last!r}")


# "s5": the course's recipe. "onecycle": 8 epochs of Adam under OneCycleLR, chosen on a validation split
# held out from the training set. "tuned": the best of an Optuna search on that split (benchmarks/tune.py,
# 13 trials of 15 epochs; benchmarks/README.md has the search and the test results over 5 seeds).
RECIPES = {
    "s5": Recipe(),
    "onecycle": Recipe(epochs=8, batch_size=512, lr=0.003, schedule="onecycle", optimizer="adam"),
    "tuned": Recipe(epochs=15, batch_size=256, lr=0.00493, weight_decay=8.98e-6, label_smoothing=0.0714,
                    schedule="onecycle", optimizer="adam"),
}


# The original S5 training step, which the original pipeline's recipes take: fp32, NCHW.
ORIGINAL_STEP = {"precision": "fp32", "channels_last": False}


def get_recipe(name="s5", pipeline="fast", **overrides):
    """The named recipe for `pipeline` (the original "s5" pipeline trains with ORIGINAL_STEP), with any
    non-None overrides applied (validated). An override the recipe would train without (momentum with Adam
    or under OneCycle, StepLR's step_size and gamma under OneCycle) is refused, not silently dropped."""
    if name not in RECIPES:
        raise ValueError(f"unknown recipe {name!r}; choose one of {sorted(RECIPES)}")
    if pipeline not in PIPELINES:
        raise ValueError(f"pipeline must be one of {PIPELINES}, got {pipeline!r}")
    step = ORIGINAL_STEP if pipeline == "s5" else {}
    given = {k: v for k, v in overrides.items() if v is not None}
    recipe = dataclasses.replace(RECIPES[name], **{**step, **given})
    for key, why in _unused_settings(recipe).items():
        if key in given:
            raise ValueError(f"{key} {given[key]} would change nothing: {why}; leave it out")
    return recipe


def _unused_settings(recipe):
    """The settings `recipe` trains without, each with the reason."""
    unused = {}
    if recipe.schedule == "onecycle":
        unused["momentum"] = "OneCycle cycles the momentum itself (SGD's, or Adam's beta1: 0.95 to 0.85 and back)"
        for key in ("step_size", "gamma"):
            unused[key] = "it is StepLR's, and this recipe schedules with OneCycle"
    elif recipe.optimizer != "sgd":
        unused["momentum"] = f"it is SGD's, and {recipe.optimizer} keeps its own betas (0.9, 0.999)"
    return unused


def run_config(recipe, *, name="s5", seed=1, pipeline="fast"):
    """What a run is made of, as plain data saved in its checkpoints, so that a resume continues it as it
    was: the recipe's name and values, the seed and the pipeline."""
    return {"recipe": name, "seed": seed, "pipeline": pipeline, "hyperparameters": dataclasses.asdict(recipe)}


def get_device():
    """CUDA if available, else Apple's MPS, else the CPU."""
    if torch.cuda.is_available():
        return torch.device("cuda")
    if torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def resolve_device(device=None):
    """torch.device for `device` ("cpu", "cuda", "cuda:1", "mps", a torch.device), checked to exist here;
    None picks the best available (get_device)."""
    if device is None:
        return get_device()
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(f"unknown device {device!r}; use cpu, cuda, cuda:N or mps") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device} asked for, but CUDA is not available here; use cpu")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"device {device} asked for, but MPS is not available here; use cpu")
    return device


def device_arg(text):
    """resolve_device for argparse (`type=device_arg`): a device that exists here, or a usage error."""
    try:
        return resolve_device(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def check_seed(seed):
    # Epoch e of a run draws from seed + e (DeviceLoader), which torch's generators must still take.
    if not isinstance(seed, int) or isinstance(seed, bool) or not 0 <= seed < 2**63:
        raise ValueError(f"seed must be a whole number from 0 to 2**63 - 1, got {seed!r}")


def check_batch_size(batch_size):
    if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size <= 0:
        raise ValueError(f"batch_size must be a positive whole number, got {batch_size!r}")


def set_seed(seed):
    """Seed every RNG the training uses (model init, shuffling, augmentation)."""
    check_seed(seed)
    torch.manual_seed(seed)
