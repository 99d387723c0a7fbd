"""The fast loader: MNIST held as one uint8 tensor on the device, shuffled and augmented there in batches
(DeviceLoader), beside the original pipeline's DataLoader seeded per epoch (EpochSeededDataLoader)."""

import math
import os
import platform

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from s5.config import IMAGE_SIZE, MNIST_MEAN, MNIST_STD, ROTATION_DEGREES, ZOOM_CROP, ZOOM_P, check_batch_size

# Images the fast loader augments per pass on a GPU (on the CPU: one batch): ~0.4 GB of temporaries.
GPU_CHUNK = 16384


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
        check_batch_size(batch_size)
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
