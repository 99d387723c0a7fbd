"""Data, training, checkpoint and plotting helpers for the S5 MNIST notebook.

Plain functions: each takes what it needs and returns values; no module-level state.
"""

import argparse
import contextlib
import dataclasses
import errno
import functools
import glob
import gzip
import io
import itertools
import json
import math
import os
import platform
import re
import shutil
import socket
import time
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader
from torchvision import datasets, transforms
from tqdm.auto import tqdm

from model import Net

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

# Images the fast loader augments per pass on a GPU (on the CPU: one batch): ~0.4 GB of temporaries.
GPU_CHUNK = 16384

# The four files torchvision's datasets.MNIST reads from <root>/MNIST/raw/, as (images, labels).
MNIST_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
IDX_IMAGES_MAGIC = 2051  # 0x00000803: unsigned bytes, 3 dimensions
IDX_LABELS_MAGIC = 2049  # 0x00000801: unsigned bytes, 1 dimension

PIPELINES = ("fast", "s5")
OPTIMIZERS = ("sgd", "adam", "adamw")
# auto: bf16 where the hardware does it natively; fp16 (with a gradient scaler) on CUDA GPUs without it (T4,
# V100); else fp32.
PRECISIONS = ("auto", "bf16", "fp16", "fp32")
# How train and test run the model: eagerly ("off"), its training step captured as CUDA graphs by
# torch.cuda.make_graphed_callables ("graphed"), or captured by torch.compile; "auto" is "graphed" for the
# Net on CUDA (an S5 run 1.6x as fast end to end on an H200) and "off" elsewhere. See compile_model.
COMPILE_MODES = ("auto", "off", "graphed", "cudagraphs", "reduce-overhead")
MAX_GRAPHED_SHAPES = 8  # "graphed": captures kept per model; batches of further shapes run eagerly


def _one_of(names):
    """("a", "b", "c") -> "'a', 'b' or 'c'", for error messages."""
    quoted = [repr(name) for name in names]
    return f"{', '.join(quoted[:-1])} or {quoted[-1]}" if len(quoted) > 1 else quoted[0]

train_transforms = transforms.Compose([
    transforms.RandomApply([transforms.CenterCrop(ZOOM_CROP)], p=ZOOM_P),
    transforms.Resize((IMAGE_SIZE, IMAGE_SIZE)),
    transforms.RandomRotation((-ROTATION_DEGREES, ROTATION_DEGREES), fill=0),
    transforms.ToTensor(),
    transforms.Normalize((MNIST_MEAN,), (MNIST_STD,)),
])

test_transforms = transforms.Compose([
    transforms.ToTensor(),
    transforms.Normalize((MNIST_MEAN,), (MNIST_STD,)),
])


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
        if self.schedule not in ("step", "onecycle"):
            raise ValueError(f"schedule must be 'step' or 'onecycle', got {self.schedule!r}")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be {_one_of(OPTIMIZERS)}, got {self.optimizer!r}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be {_one_of(PRECISIONS)}, got {self.precision!r}")
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


def _check_seed(seed):
    # Epoch e of a run draws from seed + e (DeviceLoader), which torch's generators must still take.
    if not isinstance(seed, int) or isinstance(seed, bool) or not 0 <= seed < 2**63:
        raise ValueError(f"seed must be a whole number from 0 to 2**63 - 1, got {seed!r}")


def set_seed(seed):
    """Seed every RNG the training uses (model init, shuffling, augmentation)."""
    _check_seed(seed)
    torch.manual_seed(seed)


# ----------------------------------------------------------------------------- data


def resolve_data_dir(data_dir=None):
    """`data_dir` if given, else $MNIST_DATA_DIR, else ./data. The MNIST files live in <it>/MNIST/raw/."""
    return Path(data_dir or os.environ.get("MNIST_DATA_DIR") or "data").expanduser()


def _missing_files(raw_dir):
    return [name for pair in MNIST_FILES.values() for name in pair if not (raw_dir / name).is_file()]


def _gunzip_official_files(raw_dir):
    """Uncompress the files MNIST is published as (train-images-idx3-ubyte.gz, ...) where raw_dir holds
    them without their uncompressed copies, as torchvision's download would."""
    for name in _missing_files(raw_dir):
        packed = raw_dir / f"{name}.gz"
        if packed.is_file():
            try:
                with gzip.open(packed) as file:
                    data = file.read()
            except (OSError, EOFError) as error:
                raise ValueError(f"{packed} is not a whole gzip file ({error}); download it again") from None
            atomic_write(raw_dir / name, data)


def _folder_holding_mnist(given):
    """The data_dir that was meant when `given` is the MNIST/ or MNIST/raw/ folder itself, else None."""
    for files, meant in ((given, given.parent.parent), (given / "raw", given.parent)):
        if not _missing_files(files):
            return meant
    return None


def _try_download(root):
    """Let torchvision download MNIST into root; True on success. Fails fast without a network, and then
    removes the folders it made (a mistyped data_dir leaves nothing behind)."""
    raw_dir = root / "MNIST" / "raw"
    print(f"MNIST not found in {raw_dir}; downloading ...")
    made = next((d for d in reversed([raw_dir, *raw_dir.parents]) if not d.exists()), None)
    old_timeout = socket.getdefaulttimeout()
    socket.setdefaulttimeout(10)
    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            datasets.MNIST(root, train=True, download=True)
        return True
    except Exception:
        if made is not None:
            shutil.rmtree(made, ignore_errors=True)
        return False
    finally:
        socket.setdefaulttimeout(old_timeout)


def _read_idx_header(path, magic, ndim):
    """Check one IDX file's magic number and length against its header; return its dimensions."""
    header_size = 4 + 4 * ndim
    size = path.stat().st_size
    with open(path, "rb") as f:
        header = f.read(header_size)
    redo = "delete it and download or copy MNIST again"
    if len(header) < header_size:
        raise ValueError(f"{path} is not an MNIST IDX file: only {size} bytes; {redo}")
    found = int.from_bytes(header[:4], "big")
    if found != magic:
        raise ValueError(f"{path} is not an MNIST IDX file: magic number {found}, expected {magic}; {redo}")
    dims = [int.from_bytes(header[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    expected = header_size + math.prod(dims)
    if size != expected:
        raise ValueError(f"{path} is truncated or corrupt: {size} bytes, its header says {expected}; {redo}")
    if dims[0] == 0:
        raise ValueError(f"{path} holds no {'images' if ndim == 3 else 'labels'}; {redo}")
    return dims


def check_mnist_files(raw_dir):
    """Validate the four IDX files in raw_dir: magic numbers, lengths, image and label counts agree."""
    raw_dir = Path(raw_dir)
    for image_name, label_name in MNIST_FILES.values():
        n_images, rows, cols = _read_idx_header(raw_dir / image_name, IDX_IMAGES_MAGIC, 3)
        (n_labels,) = _read_idx_header(raw_dir / label_name, IDX_LABELS_MAGIC, 1)
        if (rows, cols) != (IMAGE_SIZE, IMAGE_SIZE):
            raise ValueError(f"{raw_dir / image_name} holds {rows}x{cols} images, expected 28x28")
        if n_images != n_labels:
            raise ValueError(
                f"{raw_dir / image_name} has {n_images} images but {raw_dir / label_name} has "
                f"{n_labels} labels; the files come from different sets, copy MNIST again"
            )
        labels = (raw_dir / label_name).read_bytes()[8:]
        if max(labels) >= NUM_CLASSES:
            index = next(i for i, label in enumerate(labels) if label >= NUM_CLASSES)
            raise ValueError(f"{raw_dir / label_name} holds label {labels[index]} at index {index}; MNIST labels "
                             f"are 0-{NUM_CLASSES - 1}, so the file is corrupt: copy MNIST again")


def get_mnist_datasets(data_dir=None, download=True, train_transform=None, test_transform=None):
    """(train, test) torchvision MNIST datasets from <data_dir>/MNIST/raw/, checked before use.

    Uncompresses the files as MNIST is published (.gz) where only those are there; downloads when the
    files are missing and `download` is true; raises FileNotFoundError naming the folder and the four files
    when they are missing and cannot be downloaded, ValueError when data_dir is MNIST/ or MNIST/raw/ itself.
    """
    root = resolve_data_dir(data_dir)
    raw_dir = root / "MNIST" / "raw"
    _gunzip_official_files(raw_dir)
    if _missing_files(raw_dir):
        meant = _folder_holding_mnist(root)
        if meant is not None:  # rather than download a second copy inside it
            raise ValueError(f"{root} holds the MNIST files itself; give {meant}, the folder that holds MNIST/raw/, "
                             "as data_dir / MNIST_DATA_DIR")
        if not (download and _try_download(root) and not _missing_files(raw_dir)):
            raise FileNotFoundError(
                f"MNIST files missing in {raw_dir}: {', '.join(_missing_files(raw_dir))}. Download failed or was off "
                "(no network?); copy the four files there, or point data_dir / MNIST_DATA_DIR at the folder holding "
                "MNIST/raw/"
            )
    check_mnist_files(raw_dir)
    train_set = datasets.MNIST(root, train=True, download=False, transform=train_transform)
    test_set = datasets.MNIST(root, train=False, download=False, transform=test_transform)
    return train_set, test_set


def sample_augmentation(n, generator=None, device="cpu"):
    """Draw the S5 augmentation for n images: angles (degrees, uniform in +-15) and zoom flags (p=0.1)."""
    angles = (torch.rand(n, generator=generator, device=device) * 2 - 1) * ROTATION_DEGREES
    zoom = torch.rand(n, generator=generator, device=device) < ZOOM_P
    return angles, zoom


def _warp(images, angles, scale, mode):
    """Rotate by angles (degrees, counter-clockwise as PIL) and magnify by scale, about the centre."""
    radians = torch.deg2rad(angles.float())
    cos, sin = torch.cos(radians) / scale, torch.sin(radians) / scale
    zeros = torch.zeros_like(cos)
    # Maps output to input coordinates, normalised to [-1, 1]; y points down.
    theta = torch.stack([torch.stack([cos, -sin, zeros], 1), torch.stack([sin, cos, zeros], 1)], 1)
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    return F.grid_sample(images, grid, mode=mode, padding_mode="zeros", align_corners=False)


def augment(images, angles, zoom):
    """The S5 augmentation of a whole batch on its device: where zoom[i], crop the central 22x22 and
    resize it to 28x28 (bilinear, as Resize); then rotate by angles[i] degrees about the centre,
    nearest-pixel with fill 0 (as RandomRotation). `images`: [N, 1, 28, 28] floats, black = 0.
    """
    scale = IMAGE_SIZE / ZOOM_CROP
    if images.device.type == "cpu":  # warp only the ~10% drawn; on a GPU, finding them costs a device sync
        index = zoom.nonzero().squeeze(1)
        if len(index):
            zoomed = _warp(images[index], angles.new_zeros(len(index)), scale, "bilinear")
            images = images.index_copy(0, index, zoomed)
    else:
        zoomed = _warp(images, torch.zeros_like(angles), scale, "bilinear")
        images = torch.where(zoom[:, None, None, None], zoomed, images)
    return _warp(images, angles, 1.0, "nearest")


def normalize(images):
    """[N, 1, 28, 28] floats in [0, 1] -> normalised with the MNIST mean and std."""
    return (images - MNIST_MEAN) / MNIST_STD


def _check_batch_size(batch_size):
    if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size <= 0:
        raise ValueError(f"batch_size must be a positive whole number, got {batch_size!r}")


class DeviceImages(torch.utils.data.Dataset):
    """A DeviceLoader's `dataset`: its images one at a time as test_transforms makes them, (normalised
    [1, 28, 28], label), never augmented; `data` and `targets` as torchvision's MNIST has them. For loops
    written for a DataLoader: len(loader.dataset), loader.dataset.targets."""

    def __init__(self, images, labels):
        self.data, self.targets = images.reshape(-1, IMAGE_SIZE, IMAGE_SIZE), labels

    def __len__(self):
        return len(self.targets)

    def __getitem__(self, index):
        return normalize(self.data[index][None].float() / 255), int(self.targets[index])


class DeviceLoader:
    """Batches of MNIST held as one uint8 tensor on `device`, shuffled and augmented there.

    Yields (images, labels): images [B, 1, 28, 28] float32 normalised, labels [B] int64, both on
    `device`. With `augment=True` each batch gets the S5 augmentation in one batched operation.
    Epoch e draws its shuffle and augmentation from seed + e, so runs and resumes are reproducible.
    `dataset` (DeviceImages) is there for code written for a DataLoader.
    """

    def __init__(self, images, labels, batch_size, device="cpu", shuffle=False, augment=False, seed=0):
        _check_batch_size(batch_size)
        self.device = torch.device(device)
        self.images = images.to(self.device, torch.uint8).reshape(-1, 1, IMAGE_SIZE, IMAGE_SIZE)
        self.labels = labels.to(self.device, torch.int64)
        self.dataset = DeviceImages(self.images, self.labels)
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.augment = augment
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch):
        self.epoch = epoch

    def __len__(self):
        return math.ceil(len(self.labels) / self.batch_size)

    def __iter__(self):
        # One draw per epoch on the CPU, one copy to the device: the same numbers on every device, and
        # no host-device synchronisation.
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        self.epoch += 1
        n = len(self.labels)
        order = (torch.randperm(n, generator=generator) if self.shuffle else torch.arange(n)).to(self.device)
        if self.augment:
            angles, zoom = (t.to(self.device) for t in sample_augmentation(n, generator))
        # Each image is augmented as if alone, so the batches are the same whatever the chunk size.
        chunk = self.batch_size  # on the CPU batch by batch, in cache
        if self.device.type != "cpu":  # on a GPU a few large kernels instead of hundreds of small ones
            chunk *= max(1, GPU_CHUNK // self.batch_size)
        for first in range(0, n, chunk):
            part = slice(first, first + chunk)
            index = order[part]
            images = self.images[index].float().div_(255)
            if self.augment:
                images = augment(images, angles[part], zoom[part])
            images, labels = normalize(images), self.labels[index]
            for start in range(0, len(labels), self.batch_size):
                yield images[start:start + self.batch_size], labels[start:start + self.batch_size]


class EpochSeededDataLoader(DataLoader):
    """A DataLoader whose shuffle and worker seeds for epoch e come from seed + e (see set_epoch)."""

    def __init__(self, *args, seed=0, **kwargs):
        super().__init__(*args, generator=torch.Generator().manual_seed(seed), **kwargs)
        self.seed = seed

    def set_epoch(self, epoch):
        self.generator.manual_seed(self.seed + epoch)


def default_num_workers():
    """Worker processes for the S5 DataLoaders: 0 where workers are spawned (Windows, macOS), which
    hangs or crawls in notebooks; else up to 2, within the CPUs this process may use."""
    if platform.system() in ("Windows", "Darwin"):
        return 0
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return min(2, cpus)


def get_data_loaders(batch_size=512, data_dir=None, device=None, pipeline="fast", seed=0,
                     num_workers=None, download=True):
    """(train_loader, test_loader) over MNIST.

    pipeline="fast" (default): DeviceLoaders holding the data on `device`, augmenting there in batches.
    pipeline="s5": the original S5 pipeline, torchvision PIL transforms per image in DataLoader workers.
    Both yield normalised [B, 1, 28, 28] float batches; the test loader is neither shuffled nor augmented.
    """
    if pipeline not in PIPELINES:
        raise ValueError(f"pipeline must be one of {PIPELINES}, got {pipeline!r}")
    _check_batch_size(batch_size)
    _check_seed(seed)
    device = resolve_device(device)
    fast = pipeline == "fast"
    per_image = (None, None) if fast else (train_transforms, test_transforms)  # the fast path augments in batches
    train_set, test_set = get_mnist_datasets(data_dir, download, *per_image)
    if batch_size > len(train_set):
        raise ValueError(f"batch_size {batch_size} is larger than the {len(train_set):,} training images; "
                         "use a smaller batch")
    if fast:
        return (
            DeviceLoader(train_set.data, train_set.targets, batch_size, device, shuffle=True, augment=True,
                         seed=seed),
            DeviceLoader(test_set.data, test_set.targets, batch_size, device),
        )
    workers = default_num_workers() if num_workers is None else num_workers
    common = dict(batch_size=batch_size, num_workers=workers, pin_memory=device.type == "cuda")
    return (
        EpochSeededDataLoader(train_set, shuffle=True, seed=seed, **common),
        DataLoader(test_set, shuffle=False, **common),
    )


# ----------------------------------------------------------------------------- training


def _cpu_has(feature):
    """Whether this CPU has an instruction set feature, by torch's own probe (False where torch has none)."""
    return getattr(torch.cpu, f"_is_{feature}_supported", lambda: False)()


def autocast_dtype(device):
    """The autocast dtype precision="auto" picks: torch.bfloat16 where the device computes it natively
    (CUDA with bf16, CPUs with AVX512-BF16 or AMX); torch.float16 on CUDA GPUs without it, whose tensor
    cores do fp16 (trained with a gradient scaler, see grad_scaler); else None: fp32, since bf16 emulated in
    software is slower than fp32."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported(including_emulation=False) else torch.float16
    if device.type == "cpu":
        return torch.bfloat16 if _cpu_has("avx512_bf16") or _cpu_has("amx_tile") else None
    return None


def precision_note(precision, device):
    """A one-line note when `precision` makes `device` compute in a dtype it has no hardware for (slower
    than fp32, by far for fp16 on most CPUs), else None. train.py prints it before training."""
    device = torch.device(device)
    dtype = _precision_dtype(precision, device)
    if precision == "auto" or device.type not in ("cpu", "cuda"):
        return None
    if dtype == torch.bfloat16 and autocast_dtype(device) != torch.bfloat16:
        return (f"note: this {'GPU' if device.type == 'cuda' else 'CPU'} has no native bf16, so bf16 runs "
                "emulated in software, which is slow; --precision auto picks what is native")
    if dtype == torch.float16 and device.type == "cpu" and not _cpu_has("amx_fp16"):
        return ("note: fp16 is slow on a CPU without AMX-FP16 (a training step ran 29x slower than in fp32 on an "
                "AMD EPYC); it is meant for GPUs without bf16 (T4, V100); --precision auto picks what is native")
    return None


def _precision_dtype(precision, device):
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be {_one_of(PRECISIONS)}, got {precision!r}")
    return {"auto": autocast_dtype(device), "bf16": torch.bfloat16, "fp16": torch.float16, "fp32": None}[precision]


def _autocast(precision, device):
    """The autocast context for `precision` (one of PRECISIONS) on `device`; reusable across batches."""
    dtype = _precision_dtype(precision, device)
    return torch.autocast(torch.device(device).type, dtype=dtype or torch.float32, enabled=dtype is not None)


def grad_scaler(precision, device):
    """A torch.amp.GradScaler where `precision` trains in fp16 on `device` (small fp16 gradients would
    round to zero unscaled), else None. It skips the steps whose gradients overflow and adapts its scale;
    fit keeps one for the whole run and saves its state in the checkpoints."""
    if _precision_dtype(precision, device) != torch.float16:
        return None
    return torch.amp.GradScaler(torch.device(device).type)


def resolve_compile_mode(model, device, mode):
    """The mode that `mode` (COMPILE_MODES) stands for with this model on this device ("auto" resolved);
    ValueError for an unknown mode, or for "graphed" off CUDA."""
    if mode not in COMPILE_MODES:
        raise ValueError(f"compile mode must be {_one_of(COMPILE_MODES)}, got {mode!r}")
    if mode == "graphed" and torch.device(device).type != "cuda":
        raise ValueError(f"compile mode 'graphed' replays CUDA graphs and needs a CUDA device, got {device}; "
                         "use compile mode 'off'")
    if mode != "auto":
        return mode
    # A replay skips the forward's Python: only the Net, whose forward does none per call, is captured
    # unasked, and not with hooks on it (collecting activations, say). Other models: "graphed" by name.
    hooked = any(m._forward_hooks or m._forward_pre_hooks or m._backward_hooks or m._backward_pre_hooks
                 for m in model.modules())
    return "graphed" if torch.device(device).type == "cuda" and type(model) is Net and not hooked else "off"


@contextlib.contextmanager
def _quiet_graphed_backward():
    """make_graphed_callables makes the weights' gradient accumulators on its capture stream, and torch then
    warns that every backward joins two streams. The join is one event wait: replayed, an S5 epoch takes
    0.23 s against 0.40 s eager (H200), so the warning says nothing a user can act on."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The AccumulateGrad node's stream does not match")
        yield


def compile_model(model, device, mode="auto"):
    """`model` as train and test run it under `mode` (COMPILE_MODES): itself for "off", else a wrapper
    sharing its parameters (save and load `model`, not the wrapper).

    "auto" is "graphed" for the Net on CUDA, unless it has module hooks (a capture would run their Python
    only once, while capturing), and "off" for other models and elsewhere. Graphs replay the kernels
    recorded: a model whose forward does Python work per call (printing, collecting activations,
    branching on values) must stay "off"; another model can ask for "graphed" by name.

    "graphed" (CUDA only) captures the training forward and backward passes with
    torch.cuda.make_graphed_callables, once per batch shape on first use (a few warm-up steps, no compiler),
    and keeps the captures with the model, so later batches and epochs replay them; evaluation runs eagerly.

    "cudagraphs" and "reduce-overhead" capture with torch.compile instead, for comparison: "cudagraphs"
    traces forward and backward once per shape (train and eval) and replays the same kernels as CUDA graphs
    (the tracing took 5-9 s in a fresh process on an H200, so one S5 run was slower than eager);
    "reduce-overhead" replays inductor's fused kernels (tens of seconds to compile, cached on disk). Shapes
    are static (dynamic=False): an epoch's last, smaller batch is one more capture, made once; torch keeps
    the captures between calls, up to 8 (shapes x precisions x train/eval), then warns and runs eagerly
    (torch.compiler.reset() clears). Off CUDA "cudagraphs" runs the same traced graphs eagerly
    (aot_eager), so they are tested on any machine, and "reduce-overhead" is inductor's CPU code.
    """
    mode = resolve_compile_mode(model, device, mode)
    if mode == "off":
        return model
    if mode == "graphed":
        return functools.partial(_graphed_forward, model)
    if mode == "reduce-overhead":
        return functools.partial(_new_step, torch.compile(model, mode="reduce-overhead", dynamic=False))
    backend = "cudagraphs" if torch.device(device).type == "cuda" else "aot_eager"
    return functools.partial(_new_step, torch.compile(model, backend=backend, dynamic=False))


def _new_step(compiled, data):
    """compiled(data) as a new step: torch.compile's CUDA graphs may reuse the last step's output memory."""
    torch.compiler.cudagraph_mark_step_begin()
    return compiled(data)


class _Captures(dict):
    """A model's "graphed" captures, by batch shape and precision, and the weights' memory they were made
    for (`params`); never copied or saved with the model."""

    params = None

    def __deepcopy__(self, memo):
        return _Captures()

    def __reduce__(self):
        return _Captures, ()


class _Step(torch.nn.Module):
    """The model as make_graphed_callables takes it: it replaces the forward of the module it is given, so
    it gets this wrapper, one per capture, and the user's model stays as it was."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, data):
        return self.model(data)


def _graphed_forward(model, data):
    """model(data), in training replayed from a CUDA graph captured for this shape and precision."""
    if not model.training or not torch.is_grad_enabled():
        return model(data)
    captures = model.__dict__.setdefault("_graphed", _Captures())
    params = tuple((p.data_ptr(), p.requires_grad) for p in model.parameters())
    if captures.params != params:  # moved or replaced weights: the old graphs would read stale memory
        captures.clear()
        captures.params = params
    amp = torch.is_autocast_enabled("cuda") and torch.get_autocast_dtype("cuda")
    key = (tuple(data.shape), data.dtype, data.stride(), amp)
    step = captures.get(key)
    if step is None:
        if len(captures) >= MAX_GRAPHED_SHAPES:
            return model(data)
        # make_graphed_callables needs autocast's weight cache off: cached casts would be left out of the graph.
        with torch.autocast("cuda", dtype=amp or torch.float32, enabled=bool(amp), cache_enabled=False):
            step = torch.cuda.make_graphed_callables(_Step(model), (data.clone(memory_format=torch.preserve_format),))
        captures[key] = step
    return step(data)


def _prepare(model, channels_last):
    if channels_last:
        model.to(memory_format=torch.channels_last)


def _unpack(batch):
    """(images, labels) of one batch as the loader made it, checked where torch's own errors would be
    unclear: a pair of tensors, and labels that are one integer class index per image."""
    if isinstance(batch, dict) or not isinstance(batch, (tuple, list)) or len(batch) != 2:
        got = (f"a dict with keys {list(batch)}" if isinstance(batch, dict) else
               f"{len(batch)} items" if isinstance(batch, (tuple, list)) else type(batch).__name__)
        raise TypeError(f"a loader must yield (images, labels) pairs, got {got}")
    data, target = batch
    for name, value in (("images", data), ("labels", target)):
        if not isinstance(value, torch.Tensor):
            raise TypeError(f"the loader yielded {name} as {type(value).__module__}.{type(value).__name__}; a "
                            "loader must yield (images, labels) torch tensors (transforms.ToTensor, torch.from_numpy)")
    if target.dim() != 1:
        one_hot = target.dim() == 2 and target.shape[1] > 1
        hint = "labels.argmax(1) if they are one-hot" if one_hot else "labels.view(-1)"
        raise ValueError(f"labels must be one class index per image, shape [N], got {list(target.shape)}; use {hint}")
    if target.is_floating_point() or target.is_complex() or target.dtype == torch.bool:
        raise TypeError(f"labels must be integer class indices, got {target.dtype}; convert with labels.long()")
    if data.dim() and len(target) != len(data):
        raise ValueError(f"the loader yielded {len(data)} images but {len(target)} labels in one batch")
    return data, target


def _to_device(data, target, device, channels_last):
    data = data.to(device, non_blocking=True)
    if channels_last and data.dim() == 4:
        data = data.contiguous(memory_format=torch.channels_last)
    return data, target.to(device, torch.long, non_blocking=True)  # int32 labels too: the losses take int64


def _check_classes(target, classes):
    """Labels in 0..classes-1, checked where they are on the CPU (there it costs no device sync; on CUDA an
    index out of range would be a device-side assert, so loaders that put labels there check them first, as
    get_data_loaders does)."""
    if target.device.type == "cpu" and target.numel():
        low, high = target.min().item(), target.max().item()
        if low < 0 or high >= classes:
            raise ValueError(f"labels must be class indices 0-{classes - 1} for this model's {classes} outputs, "
                             f"got {low if low < 0 else high}")


def _check_device(model, device):
    """Refuse a model on another device than `device` before the first batch: torch would name tensor
    types, or fail inside a CUDA graph. `device` must exist here (resolve_device)."""
    device = resolve_device(device)
    for name, parameter in model.named_parameters():
        if parameter.device.type != device.type or device.index not in (None, parameter.device.index):
            raise ValueError(f"the model is on {parameter.device} ({name}) but the batches go to {device}; "
                             "move it there first: model.to(device)")


def _check_optimizer(model, optimizer):
    """Refuse an optimizer made for another model, as after a notebook cell that makes the model again: it
    would step the old model's weights while this one stays at its initial accuracy, silently."""
    if not hasattr(optimizer, "param_groups"):
        raise TypeError(f"optimizer must be a torch.optim optimizer, got {type(optimizer).__name__}")
    held = {id(p) for group in optimizer.param_groups for p in group["params"]}
    if not any(id(p) in held for p in model.parameters()):
        raise ValueError("the optimizer holds none of this model's weights, so training would change nothing (was "
                         "the model made again after it?); make it from this model: "
                         "torch.optim.SGD(model.parameters(), ...)")


def _forward(forward, batch, device, amp, channels_last):
    """One batch through the model, as train and test both run it: checked (_unpack), moved to `device`,
    run under `amp`; returns (output, labels on the device)."""
    images, labels = _unpack(batch)
    data, target = _to_device(images, labels, device, channels_last)
    with amp:
        output = forward(data)
    _check_classes(labels, output.shape[1])
    return output, target


def _batch_loss(criterion, output, target):
    """The criterion's loss of one batch, in fp32: one number, the batch's mean (test weights it by size)."""
    loss = criterion(output.float(), target)
    if not isinstance(loss, torch.Tensor) or loss.dim():
        got = f"shape {list(loss.shape)}" if isinstance(loss, torch.Tensor) else type(loss).__name__
        raise ValueError(f"criterion must return the batch's mean loss, one number; got {got} (reduction='none'?)")
    return loss


def train(model, device, train_loader, optimizer, criterion=F.nll_loss, *, scheduler=None, epoch=None,
          precision="auto", channels_last=True, scaler=None, compile_mode="auto", log_every=10):
    """Train one epoch; return (mean loss, accuracy %) over the samples seen, as Python floats.

    `train_loader` is any iterable of (data, target) batches. `scheduler`, if given, steps after every
    batch (OneCycleLR); step an epoch scheduler (StepLR) yourself. bf16 autocast where native (see
    autocast_dtype), channels_last, loss in fp32; **ORIGINAL_STEP turns these off (fp32, NCHW). Raises
    FloatingPointError naming the epoch and batch when the loss stops being finite, and ValueError when
    an NLL falls below 0 (outputs that are not log-probabilities), checked every `log_every` batches, one
    device sync each. In fp16 the loss is scaled by `scaler` (grad_scaler; one is made for this epoch when
    none is given). `compile_mode` (COMPILE_MODES, see compile_model): "auto" replays the forward and
    backward passes as CUDA graphs on CUDA; the loss, the optimizer and the scaler's step run eagerly. On a
    CPU, cpu_memory.keep_freed_memory() makes every step faster; it changes the whole process, so it is
    yours to call.
    """
    epoch_schedulers = (torch.optim.lr_scheduler.StepLR, torch.optim.lr_scheduler.MultiStepLR,
                        torch.optim.lr_scheduler.ExponentialLR)
    if isinstance(scheduler, epoch_schedulers):  # stepped per batch, S5's StepLR(15) would decay after 15 batches
        raise ValueError(f"{type(scheduler).__name__} steps once per epoch, but train(scheduler=...) steps it after "
                         "every batch; call scheduler.step() after each train() (fit does), and give train only "
                         "per-batch schedules such as OneCycleLR")
    _check_device(model, device)
    _check_optimizer(model, optimizer)
    model.train()
    _prepare(model, channels_last)
    mode = resolve_compile_mode(model, device, compile_mode)
    forward = compile_model(model, device, mode)
    quiet = _quiet_graphed_backward if mode == "graphed" else contextlib.nullcontext
    amp = _autocast(precision, device)
    scaler = scaler or grad_scaler(precision, device)
    bar = tqdm(train_loader, desc=f"Epoch {epoch}" if epoch is not None else "train", leave=False)
    loss_sum = torch.zeros((), device=device)
    correct = torch.zeros((), device=device, dtype=torch.int64)
    seen = 0
    pending = []  # per-batch losses not yet checked
    with quiet():  # for the epoch: a scope per batch would reset every once-only warning each batch
        for batch_idx, batch in enumerate(bar, start=1):
            optimizer.zero_grad(set_to_none=True)
            output, target = _forward(forward, batch, device, amp, channels_last)
            loss = _batch_loss(criterion, output, target)
            if scaler is None:
                loss.backward()
                optimizer.step()
            else:  # fp16: scale the loss up for the backward pass; skip the step if the gradients overflowed
                scaler.scale(loss).backward()
                scaler.step(optimizer)
                scaler.update()
            if scheduler is not None:
                scheduler.step()
            batch = loss.detach()
            loss_sum += batch * len(target)
            correct += (output.argmax(dim=1) == target).sum()
            seen += len(target)
            pending.append(batch)
            if len(pending) == log_every:
                _check_losses(pending, batch_idx, epoch, "training stopped", criterion)
                pending = []
                bar.set_postfix(loss=f"{loss_sum.item() / seen:.4f}", acc=f"{100 * correct.item() / seen:.2f}%")
    if seen == 0:
        raise ValueError("train_loader yielded no batches")
    _check_losses(pending, batch_idx, epoch, "training stopped", criterion)
    return loss_sum.item() / seen, 100.0 * correct.item() / seen


def _check_losses(losses, last_batch, epoch, outcome, criterion):
    """Raise FloatingPointError naming the first batch whose loss is NaN or infinite; and ValueError for a
    negative NLL, which only outputs that are not log-probabilities give (logits, or softmax's)."""
    if not losses:
        return
    values = torch.stack(losses).tolist()
    for offset, value in enumerate(values):
        if math.isfinite(value) and (value >= 0 or criterion is not F.nll_loss):
            continue
        batch = last_batch - len(values) + 1 + offset
        where = f"epoch {epoch}, batch {batch}" if epoch is not None else f"batch {batch}"
        if not math.isfinite(value):
            raise FloatingPointError(
                f"loss became {value} in {where}; {outcome} (lower the learning rate, check the data and weights)"
            )
        raise ValueError(f"the loss is {value:.4g} in {where}, below 0: F.nll_loss takes log-probabilities and "
                         "the model's outputs are not; end its forward with F.log_softmax(x, dim=1), or give train "
                         "and test criterion=F.cross_entropy, which takes raw scores")


@torch.no_grad()
def test(model, device, test_loader, criterion=F.nll_loss, *, precision="auto", channels_last=True,
         compile_mode="auto"):
    """Evaluate; return (mean loss per sample, accuracy %) over the whole loader, as Python floats.

    Eval mode and no gradients. `criterion` must average over its batch (as F.nll_loss does); the batch
    means are weighted by batch size so the result is the exact per-sample mean over the set.
    `compile_mode`: as in train.
    """
    _check_device(model, device)
    model.eval()
    _prepare(model, channels_last)
    forward = compile_model(model, device, compile_mode)
    amp = _autocast(precision, device)
    loss_sum = torch.zeros((), device=device)
    losses = []  # per batch, checked at the end: a NaN model or batch raises, as in train
    correct = torch.zeros((), device=device, dtype=torch.int64)
    seen = 0
    for batch in test_loader:
        output, target = _forward(forward, batch, device, amp, channels_last)
        losses.append(_batch_loss(criterion, output, target))
        loss_sum += losses[-1] * len(target)
        correct += (output.argmax(dim=1) == target).sum()
        seen += len(target)
    if seen == 0:
        raise ValueError("test_loader yielded no batches")
    _check_losses(losses, len(losses), None, "the test result is void", criterion)
    return loss_sum.item() / seen, 100.0 * correct.item() / seen


def make_optimizer(model, recipe):
    """SGD (with momentum), Adam or AdamW, with the recipe's learning rate and weight decay."""
    if recipe.optimizer == "adam":
        return torch.optim.Adam(model.parameters(), lr=recipe.lr, weight_decay=recipe.weight_decay)
    if recipe.optimizer == "adamw":
        return torch.optim.AdamW(model.parameters(), lr=recipe.lr, weight_decay=recipe.weight_decay)
    return torch.optim.SGD(model.parameters(), lr=recipe.lr, momentum=recipe.momentum,
                           weight_decay=recipe.weight_decay)


def make_criterion(recipe):
    """The training loss on the Net's log-probabilities: NLL, or with label smoothing the cross-entropy
    against smoothed targets (cross_entropy's log_softmax leaves log-probabilities unchanged)."""
    if not recipe.label_smoothing:
        return F.nll_loss
    return functools.partial(F.cross_entropy, label_smoothing=recipe.label_smoothing)


def make_scheduler(optimizer, recipe, steps_per_epoch=None):
    """StepLR(step_size, gamma) for the "step" schedule (call .step() once per epoch); OneCycleLR
    peaking at recipe.lr for "onecycle" (stepped per batch, pass it to train/fit)."""
    if recipe.schedule == "onecycle":
        if not steps_per_epoch:
            raise ValueError("the onecycle schedule needs steps_per_epoch (len(train_loader))")
        return torch.optim.lr_scheduler.OneCycleLR(
            optimizer, max_lr=recipe.lr, epochs=recipe.epochs, steps_per_epoch=steps_per_epoch)
    return torch.optim.lr_scheduler.StepLR(optimizer, step_size=recipe.step_size, gamma=recipe.gamma)


def new_history():
    """An empty metric history: one list per metric, one entry per epoch."""
    return {key: [] for key in ("epoch", "lr", "train_loss", "train_acc", "test_loss", "test_acc", "seconds")}


@contextlib.contextmanager
def _hold_outputs(checkpoint_path, best_path, start_epoch, overwrite):
    """fit's checkpoint files, checked writable (fail now, not after the first epoch) and, for a new run,
    not there already unless `overwrite`; the run's folder, where its last checkpoint is (what a resume
    continues), held while the block runs (hold_run_folder). A best_path elsewhere (--checkpoint mine.pt)
    leaves its folder to other runs."""
    paths = [Path(path) for path in (checkpoint_path, best_path) if path]
    for path in paths:
        check_output(path, overwrite=True)
    with hold_run_folder(paths[0].parent) if paths else contextlib.nullcontext():
        for path in paths:
            if start_epoch == 1 and not overwrite and path.exists():
                raise FileExistsError(f"{path} already exists, and fit starts a new run at epoch 1: give the run a "
                                      "new folder (make_run_dir), continue that one (load_checkpoint, then "
                                      "start_epoch), or pass overwrite=True")
        yield


def fit(model, device, train_loader, test_loader, optimizer, scheduler, epochs, *, history=None,
        start_epoch=1, checkpoint_path=None, best_path=None, config=None, precision="auto", channels_last=True,
        scaler=None, criterion=F.nll_loss, compile_mode="auto", on_epoch=None, overwrite=False):
    """Train epochs start_epoch..epochs, printing one line per epoch; return the metric history.

    `history` (a new_history() dict) is filled in place, so it survives an interrupt. After every epoch
    the run is saved to `checkpoint_path` and, when test accuracy is the best so far, to `best_path`
    (both atomic, with `config`: see save_checkpoint). A new run (start_epoch 1) replaces neither file if
    it exists unless `overwrite`, and no run adds epochs that `history` holds already: both are refused
    before the first epoch. A OneCycleLR steps per batch, any other scheduler once per epoch. `precision`
    and `channels_last` (a Recipe's) go to train and test; in fp16, `scaler` (grad_scaler, made here when
    not given: pass one to resume its state) scales the loss all run long. `criterion` is the training
    loss (make_criterion); the test loss is always NLL. `compile_mode` (COMPILE_MODES, see compile_model)
    goes to train and test. `on_epoch(history)`, if given, is called after each epoch is recorded and
    saved: a hyperparameter search reports there, and an exception it raises stops the run.
    """
    if epochs < start_epoch:
        raise ValueError(f"nothing to train: epochs {epochs!r} is below start_epoch {start_epoch}; "
                         "epochs is the last epoch to train, counted from 1")
    history = new_history() if history is None else history
    if history["epoch"] and history["epoch"][-1] >= start_epoch:  # the notebook's training cell, run twice
        raise ValueError(f"history already holds epochs {history['epoch'][0]}-{history['epoch'][-1]}, and fit would "
                         f"train epoch {start_epoch} again into it (and into its checkpoints); for a new run make the "
                         f"model, optimizer and history again, or go on with start_epoch={history['epoch'][-1] + 1}")
    with _hold_outputs(checkpoint_path, best_path, start_epoch, overwrite):
        scaler = scaler or grad_scaler(precision, device)
        per_batch = isinstance(scheduler, torch.optim.lr_scheduler.OneCycleLR)
        epoch, saved = start_epoch, None
        try:
            for epoch in range(start_epoch, epochs + 1):
                if hasattr(train_loader, "set_epoch"):
                    train_loader.set_epoch(epoch)
                lr = optimizer.param_groups[0]["lr"]
                start = time.perf_counter()
                train_loss, train_acc = train(model, device, train_loader, optimizer, criterion, epoch=epoch,
                                              scheduler=scheduler if per_batch else None, precision=precision,
                                              channels_last=channels_last, scaler=scaler, compile_mode=compile_mode)
                if scheduler is not None and not per_batch:
                    scheduler.step()
                test_loss, test_acc = test(model, device, test_loader, precision=precision, channels_last=channels_last,
                                           compile_mode=compile_mode)
                seconds = time.perf_counter() - start
                best = max(history["test_acc"], default=-1.0)
                row = (epoch, lr, train_loss, train_acc, test_loss, test_acc, seconds)
                for key, value in zip(new_history(), row, strict=True):
                    history[key].append(value)
                print(f"Epoch {epoch}: train loss {train_loss:.4f} acc {train_acc:.2f}% | "
                      f"test loss {test_loss:.4f} acc {test_acc:.2f}% | lr {lr:.3g} | {seconds:.1f}s")
                if checkpoint_path:
                    save_checkpoint(checkpoint_path, model, optimizer, scheduler, epoch, history, config, scaler)
                    saved = epoch
                if best_path and test_acc > best:
                    save_checkpoint(best_path, model, optimizer, scheduler, epoch, history, config, scaler)
                if on_epoch is not None:
                    on_epoch(history)
        except KeyboardInterrupt:
            done = history["epoch"]
            held = f"epochs {done[0]}-{done[-1]}" if done else "no epoch"
            note = f"; last checkpoint: {checkpoint_path} (epoch {saved})" if saved else ""
            print(f"Interrupted in epoch {epoch}: history holds {held}{note}")
            raise
        return history


# ----------------------------------------------------------------------------- run folders and files


def make_run_dir(root="runs", name="exp"):
    """A new, empty folder for one run: root/name, else root/name2, root/name3, ... (each made with one
    mkdir, so two runs started at once never share a folder). Returns its Path."""
    if name in ("", "..") or Path(name).name != name:  # "a/b", ".", "./x": a path, not a name
        raise ValueError(f"run name {name!r} is not a folder name; give one such as 'exp' (--runs-dir says where)")
    root = Path(root)
    try:
        _make_folder(root)
        for n in itertools.count(1):
            with contextlib.suppress(FileExistsError):
                path = root / (name if n == 1 else f"{name}{n}")
                path.mkdir()
                return path
    except OSError as error:
        raise OSError(f"cannot make a run folder in {root}: {error.strerror or error}") from error


def check_output(path, overwrite=False):
    """Check, before any work, that `path` can be written: its folder exists (made when missing) and takes
    new files, and `path` holds no earlier file unless `overwrite`. Returns the Path."""
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"{path} is a folder; give a file name")
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} already exists; give another path, or --overwrite to replace it")
    try:
        _make_folder(path.parent)
        _sweep_temporaries(path)
        os.close(os.open(_temporary(path), os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644))
        os.unlink(_temporary(path))
    except OSError as error:
        raise OSError(f"cannot write {path}: {error.strerror or error}") from error
    return path


def _make_folder(folder):
    """mkdir -p, with an error that names the file standing where a folder should be."""
    file = next((p for p in (folder, *folder.parents) if p.exists() and not p.is_dir()), None)
    if file is not None:
        raise NotADirectoryError(errno.ENOTDIR, f"{file} is a file, not a folder")
    folder.mkdir(parents=True, exist_ok=True)


@contextlib.contextmanager
def hold_run_folder(folder):
    """Hold `folder` for one training run while the block runs: a second process that asks for it (another
    train.py or notebook resuming the same run) gets BlockingIOError at once instead of mixing its epochs
    into this run's files. An advisory lock (flock) on the folder itself: nothing is written, and the
    system drops it when the process ends, however it ends. Where folders cannot be locked (Windows, some
    network file systems) it holds nothing."""
    try:
        import fcntl
        descriptor = os.open(folder, os.O_RDONLY)
    except (ImportError, OSError):
        yield
        return
    try:
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise BlockingIOError(f"{folder} is being trained by another process; wait for that run to end or "
                                  "stop it (two runs in one folder would mix their files)") from None
        except OSError:  # no locks on this file system
            pass
        yield
    finally:
        os.close(descriptor)


def _temporary(path, pid=None):
    """Where atomic_write puts path's bytes before the rename: named for the writing process."""
    return path.with_name(f".{path.name}.{pid or os.getpid()}.tmp")


def _sweep_temporaries(path):
    """Remove the temporary files of path that writers killed mid-write left behind (their process is gone)."""
    if os.name != "posix":  # os.kill(pid, 0) only asks on POSIX
        return
    for temporary in path.parent.glob(f".{glob.escape(path.name)}.*.tmp"):
        pid = temporary.name[len(path.name) + 2:-len(".tmp")]
        if pid.isdigit() and (int(pid) == os.getpid() or not _alive(int(pid))):
            with contextlib.suppress(FileNotFoundError):
                temporary.unlink()


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def atomic_write(path, data):
    """Write the bytes `data` to `path` whole or not at all: a crash, an interrupt or a full disk leaves the
    previous file as it was. The bytes go to a temporary file beside it, then os.replace; a temporary left
    by a process killed mid-write is removed by the next write to the same path."""
    path = Path(path)
    try:
        _make_folder(path.parent)
        _sweep_temporaries(path)
        try:
            with open(_temporary(path), "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(_temporary(path), path)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(_temporary(path))
    except OSError as error:
        raise OSError(f"cannot write {path}: {error.strerror or error}; any previous file is unchanged") from error


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
        unsafe = re.search(r"Unsupported global: GLOBAL (\S+)", str(error))
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
    broken = [k for k, v in state["model"].items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if broken:
        raise ValueError(f"{path} holds weights that are not finite (NaN or inf in {', '.join(broken[:3])}): "
                         "the run that wrote it diverged; use an earlier checkpoint")
    return state


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
        raise ValueError(f"nothing left to train: {path} already holds epoch {done} of {epochs}; {more}")


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


# ----------------------------------------------------------------------------- plots


def check_plot_path(path, overwrite=False):
    """check_output for a figure, whose file type (from its extension) matplotlib must know."""
    from matplotlib.backend_bases import FigureCanvasBase

    kinds = FigureCanvasBase.get_supported_filetypes()
    if Path(path).suffix.lower().lstrip(".") not in kinds:
        raise ValueError(f"cannot save a plot as {path}: unknown file type; end the name in "
                         f"{_one_of(['.' + kind for kind in ('png', 'pdf', 'svg', 'jpg')])} (or another of "
                         f"matplotlib's: {', '.join(sorted(kinds))})")
    return check_output(path, overwrite)


def _show_grey(ax, image):
    """A grey [H, W] image on ax, scaled to its own range: normalised and raw [0, 1] images look alike."""
    ax.imshow(image.detach().float().cpu().numpy(), cmap="gray")


def _save(fig, save_path):
    if save_path:
        buffer = io.BytesIO()
        fig.savefig(buffer, format=Path(save_path).suffix.lstrip(".").lower() or None, dpi=100, bbox_inches="tight")
        atomic_write(save_path, buffer.getvalue())
    return fig


def plot_sample_data(loader, n=12, save_path=None):
    """A grid of the first n images of the loader's first batch, with their labels; returns the Figure.
    Each image is shown scaled to its own range, so normalised images and raw [0, 1] ones look alike."""
    import matplotlib.pyplot as plt

    images, labels = _unpack(next(iter(loader)))
    if images.dim() == 4 and images.shape[1] == 1:
        images = images[:, 0]
    if images.dim() != 3:
        raise ValueError(f"plot_sample_data shows grey images, [N, 1, H, W] or [N, H, W]; got {list(images.shape)}")
    n = min(n, len(images))
    cols = min(n, 6)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(1.6 * cols, 1.8 * rows), squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i < n:
            _show_grey(ax, images[i])
            ax.set_title(int(labels[i]))
    fig.tight_layout()
    return _save(fig, save_path)


def plot_train_metrics(history, save_path=None):
    """The 2x2 grid: train loss, train accuracy, test loss, test accuracy per epoch, with a dotted line
    where a step schedule (StepLR) cut the learning rate; returns the Figure."""
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    missing = [key for key in new_history() if key != "seconds" and key not in history]
    if missing:
        raise ValueError(f"history lacks {', '.join(missing)}: plot_train_metrics plots a history as fit fills "
                         "it (new_history(), one list per metric)")
    fig, axes = plt.subplots(2, 2, figsize=(12, 8))
    epochs, lrs = history["epoch"], history["lr"]
    # Epochs that start with a rate at most half the one before: a step down (OneCycle's glide is not).
    drops = [epoch for epoch, before, now in zip(epochs[1:], lrs, lrs[1:], strict=False) if now <= before / 2]
    panels = (("train_loss", "Training loss"), ("train_acc", "Training accuracy (%)"),
              ("test_loss", "Test loss"), ("test_acc", "Test accuracy (%)"))
    for ax, (key, title) in zip(axes.flat, panels, strict=True):
        ax.plot(epochs, history[key], marker="o", markersize=3)
        for i, epoch in enumerate(drops):
            ax.axvline(epoch - 0.5, color="grey", linestyle=":", label=None if i else "learning rate cut")
        ax.set_title(title)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    if drops:
        axes[0, 0].legend()
    fig.tight_layout()
    return _save(fig, save_path)


# ----------------------------------------------------------------------------- error analysis


@torch.no_grad()
def get_predictions(model, device, loader, *, precision="auto"):
    """(images, targets, probabilities) over a whole loader, on the CPU, in loader order."""
    _check_device(model, device)
    model.eval()
    amp = _autocast(precision, device)
    images, targets, probs = [], [], []
    for batch in loader:
        data, target = _unpack(batch)
        with amp:
            output = model(data.to(device))
        images.append(data.cpu())
        targets.append(target.cpu())
        probs.append(output.float().exp().cpu())
    if not images:
        raise ValueError("loader yielded no batches")
    return torch.cat(images), torch.cat(targets), torch.cat(probs)


def confusion_matrix(targets, predictions, num_classes=10):
    """matrix[t, p] = how many samples of true class t were predicted as p."""
    targets, predictions = torch.as_tensor(targets), torch.as_tensor(predictions)
    for name, values in (("targets", targets), ("predictions", predictions)):
        if values.dim() != 1:
            raise ValueError(f"{name} must be one class index per image, shape [N], got {list(values.shape)}"
                             + ("; use probs.argmax(1)" if values.dim() == 2 else ""))
        if values.is_floating_point() or values.is_complex():
            raise TypeError(f"{name} must be integer class indices, got {values.dtype}")
        low, high = (values.min().item(), values.max().item()) if len(values) else (0, 0)
        if low < 0 or high >= num_classes:
            raise ValueError(f"{name} must be class indices 0-{num_classes - 1}, got {low if low < 0 else high}")
    if len(targets) != len(predictions):
        raise ValueError(f"{len(targets)} targets but {len(predictions)} predictions; give one of each per image")
    flat = targets.long() * num_classes + predictions.long()
    return torch.bincount(flat, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def plot_misclassified(images, targets, probs, n=24, save_path=None):
    """The n most confident mistakes: image (scaled to its own range), true and predicted label, confidence;
    returns the Figure."""
    import matplotlib.pyplot as plt

    if not len(images) == len(targets) == len(probs):
        raise ValueError(f"{len(images)} images, {len(targets)} targets and {len(probs)} rows of probabilities; give "
                         "one of each per image")
    if probs.dim() != 2 or len(probs) and not 0 <= probs.min() <= probs.max() <= 1:
        raise ValueError("probs must be probabilities, [N, classes] in [0, 1]; the Net's outputs are "
                         "log-probabilities: give output.exp() (get_predictions does)")
    confidence, predicted = probs.max(dim=1)
    wrong = (predicted != targets).nonzero().flatten()
    wrong = wrong[confidence[wrong].argsort(descending=True)][:n]
    cols = 8
    rows = max(1, math.ceil(len(wrong) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(1.7 * cols, 2.2 * rows + 0.4), squeeze=False, layout="constrained")
    for ax in axes.flat:
        ax.axis("off")
    for ax, i in zip(axes.flat, wrong.tolist(), strict=False):
        _show_grey(ax, images[i, 0])
        ax.set_title(f"true {int(targets[i])} pred {int(predicted[i])}\n{100 * confidence[i]:.0f}%", fontsize=9)
    fig.suptitle(f"{len(wrong)} most confident of {int((probs.argmax(1) != targets).sum())} misclassified")
    return _save(fig, save_path)


def plot_confusion_matrix(matrix, save_path=None):
    """The confusion matrix (counts) beside each digit's error rate (an axis from 0); returns the Figure."""
    import matplotlib.pyplot as plt

    matrix = torch.as_tensor(matrix).cpu()
    errors = 100 - 100 * matrix.diag().float() / matrix.sum(dim=1).clamp(min=1).float()
    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 5.5), gridspec_kw={"width_ratios": [1.2, 1]})
    off_diagonal = matrix - torch.diag(matrix.diag())
    left.imshow(off_diagonal.numpy(), cmap="Reds")
    for t in range(matrix.shape[0]):
        for p in range(matrix.shape[1]):
            left.text(p, t, int(matrix[t, p]), ha="center", va="center", fontsize=8,
                      color="black" if t != p else "tab:blue")
    left.set(xlabel="predicted", ylabel="true", title="Confusion matrix (colour: mistakes only)",
             xticks=range(10), yticks=range(10))
    right.bar(range(len(errors)), errors.tolist(), color="tab:red")
    right.set(xlabel="digit", ylabel="test images misclassified (%)", title="Error rate per digit", xticks=range(10),
              ylim=(0, max(1.0, float(errors.max()) * 1.15)))
    for digit, error in enumerate(errors.tolist()):
        right.text(digit, error, f"{error:.2f}", ha="center", va="bottom", fontsize=8)
    fig.tight_layout()
    return _save(fig, save_path)


# ----------------------------------------------------------------------------- what the network learned


def plot_conv_filters(conv, save_path=None):
    """The 3x3 kernels of a one-input-channel convolution (conv1) as small images, each scaled to its own
    range (light: weights that respond to ink); returns the Figure."""
    import matplotlib.pyplot as plt

    if conv.weight.shape[1] != 1:
        raise ValueError(f"plot_conv_filters shows the kernels of a convolution with one input channel (conv1); "
                         f"this one has {conv.weight.shape[1]}, each kernel {conv.weight.shape[1]} images")
    kernels = conv.weight.detach().float().cpu()[:, 0]
    cols = 8
    rows = math.ceil(len(kernels) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(1.2 * cols, 1.2 * rows + 0.4), squeeze=False, layout="constrained")
    for ax in axes.flat:
        ax.axis("off")
    for i, (ax, kernel) in enumerate(zip(axes.flat, kernels, strict=False)):
        ax.imshow(kernel.numpy(), cmap="gray")
        ax.set_title(i, fontsize=8)
    fig.suptitle(f"{len(kernels)} filters of {kernels.shape[-2]}x{kernels.shape[-1]} pixels")
    return _save(fig, save_path)


@torch.no_grad()
def feature_maps(model, image, layers=("conv1", "conv2", "conv3", "conv4")):
    """{layer: its output for one image, after the ReLU, [channels, H, W]}, caught with forward hooks as
    the model runs. `image`: [1, 28, 28] or [1, 1, 28, 28], normalised."""
    model.eval()
    maps = {}
    hooks = [getattr(model, name).register_forward_hook(
        lambda module, inputs, output, name=name: maps.__setitem__(name, F.relu(output)[0].float().cpu()))
        for name in layers]
    try:
        model(image.reshape(1, 1, IMAGE_SIZE, IMAGE_SIZE).to(next(model.parameters()).device))
    finally:
        for hook in hooks:
            hook.remove()
    return maps


def plot_feature_maps(maps, image, per_layer=8, save_path=None):
    """One row per layer: the input digit, then the `per_layer` most active channels of each layer in
    `maps` (from feature_maps), each titled with its size; returns the Figure."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(maps), per_layer + 1, figsize=(1.3 * (per_layer + 1), 1.45 * len(maps)),
                             squeeze=False, layout="constrained")
    for ax in axes.flat:
        ax.axis("off")
    for row, (name, output) in zip(axes, maps.items(), strict=True):
        _show_grey(row[0], image.reshape(IMAGE_SIZE, IMAGE_SIZE))
        row[0].set_title("input", fontsize=8)
        strongest = output.flatten(1).mean(1).argsort(descending=True)[:per_layer]
        for ax, channel in zip(row[1:], strongest.tolist(), strict=False):
            ax.imshow(output[channel].numpy(), cmap="magma")
            ax.set_title(f"{name} #{channel}\n{output.shape[1]}x{output.shape[2]}", fontsize=7)
    return _save(fig, save_path)

