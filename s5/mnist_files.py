"""The MNIST files: where they are, gunzipped or downloaded when missing, checked before use."""

import contextlib
import gzip
import io
import math
import os
import shutil
import socket
from pathlib import Path

from torchvision import datasets

from s5.config import IMAGE_SIZE, NUM_CLASSES
from s5.files import atomic_write

# The four files torchvision's datasets.MNIST reads from <root>/MNIST/raw/, as (images, labels).
MNIST_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
IDX_IMAGES_MAGIC = 2051  # 0x00000803: unsigned bytes, 3 dimensions
IDX_LABELS_MAGIC = 2049  # 0x00000801: unsigned bytes, 1 dimension


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
