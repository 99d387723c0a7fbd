"""Shared fixtures: a small synthetic MNIST written as real IDX files, laid out as torchvision expects;
and a fresh run (model, optimizer, scheduler) for the checkpoint and interruption tests."""

import contextlib
import io
import os
import signal
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from model import Net  # noqa: E402
from utils import (  # noqa: E402
    IDX_IMAGES_MAGIC,
    IDX_LABELS_MAGIC,
    MNIST_FILES,
    get_recipe,
    make_optimizer,
    make_scheduler,
)

N_TRAIN, N_TEST = 512, 128


def refusal(main, *args):
    """The one line a script exits with when it refuses to run (`python train.py ARGS`, predict.py, app.py),
    from its main() in this process (no interpreter to start: seconds less per case); fails if it does not
    refuse."""
    handler = signal.getsignal(signal.SIGTERM)  # train.main makes SIGTERM stop a run: put pytest's back
    try:
        with pytest.raises(SystemExit) as exit:
            main([str(arg) for arg in args])
    finally:
        signal.signal(signal.SIGTERM, handler)
    return str(exit.value)


def run_in_process(main, *args, cwd):
    """`python SCRIPT ARGS` in the folder cwd, run by the script's main(ARGS) in this process, without a new
    interpreter's seconds of imports: a CompletedProcess with the exit code and what it printed, as the shell
    would see them. What a script changes for its whole process (SIGTERM's handler, torch's threads, the
    working folder) is put back. Tests that need a process of its own (a signal, a limit, a terminal) start one."""
    out, err = io.StringIO(), io.StringIO()
    handler, threads, here = signal.getsignal(signal.SIGTERM), torch.get_num_threads(), os.getcwd()
    os.chdir(cwd)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = main([str(arg) for arg in args])
            except SystemExit as exit:  # as the interpreter ends on it
                code = exit.code if isinstance(exit.code, int) else 0 if exit.code is None else 1
                if not isinstance(exit.code, int | None):
                    print(exit.code, file=sys.stderr)
    finally:
        os.chdir(here)
        signal.signal(signal.SIGTERM, handler)
        torch.set_num_threads(threads)
    return subprocess.CompletedProcess([main.__module__, *map(str, args)], code or 0, out.getvalue(), err.getvalue())


def train_py(*args, cwd):
    """run_in_process of `python train.py ARGS`."""
    import train

    return run_in_process(train.main, *args, cwd=cwd)


def train_py_refusal(*args):
    """refusal() of `python train.py ARGS`."""
    import train

    return refusal(train.main, *args)


def write_idx(path, tensor, magic):
    """Write a uint8 tensor as an IDX file: big-endian magic, one 4-byte size per dimension, the bytes."""
    header = magic.to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in tensor.shape)
    Path(path).write_bytes(header + tensor.to(torch.uint8).numpy().tobytes())


def png_claiming(path, width, height):
    """A tiny PNG whose header claims width x height pixels: a decompression bomb, or a broken file."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
                     + chunk(b"IEND", b""))
    return path


def new_run(seed=0):
    """A fresh Net (initial weights from `seed`) with the S5 recipe's SGD and StepLR."""
    torch.manual_seed(seed)
    model = Net()
    recipe = get_recipe("s5")
    optimizer = make_optimizer(model, recipe)
    return model, optimizer, make_scheduler(optimizer, recipe)


def synthetic_digits(n, seed):
    """n 28x28 uint8 images whose label is readable: a bright bar whose position encodes the digit."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % 10
    labels = labels[torch.randperm(n, generator=g)]
    images = (torch.rand(n, 28, 28, generator=g) * 40).to(torch.uint8)
    for i, label in enumerate(labels.tolist()):
        images[i, 4 + 2 * label: 6 + 2 * label, 6:22] = 255
    return images, labels


def make_mnist_root(root, n_train=N_TRAIN, n_test=N_TEST):
    raw = Path(root) / "MNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for (img_name, lbl_name), n, seed in ((MNIST_FILES["train"], n_train, 0), (MNIST_FILES["test"], n_test, 1)):
        images, labels = synthetic_digits(n, seed)
        write_idx(raw / img_name, images, IDX_IMAGES_MAGIC)
        write_idx(raw / lbl_name, labels, IDX_LABELS_MAGIC)
    return Path(root)


@pytest.fixture(scope="session")
def mnist_root(tmp_path_factory):
    """A data_dir holding MNIST/raw/ with 512 training and 128 test synthetic images."""
    return make_mnist_root(tmp_path_factory.mktemp("data"))


@pytest.fixture
def fresh_mnist_root(tmp_path):
    """A private copy the test may corrupt."""
    return make_mnist_root(tmp_path / "data")
