"""On the real MNIST, when MNIST_DATA_DIR points at it (CI sets it)."""

import os

import pytest
import torch

from utils import get_data_loaders, get_mnist_datasets

pytestmark = pytest.mark.skipif(not os.environ.get("MNIST_DATA_DIR"), reason="MNIST_DATA_DIR is not set")

# The published class counts of MNIST's 60,000 training and 10,000 test labels, digits 0-9.
TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


def test_sizes_and_class_counts():
    train_set, test_set = get_mnist_datasets(download=False)
    assert len(train_set) == 60_000 and len(test_set) == 10_000
    assert torch.bincount(train_set.targets).tolist() == TRAIN_COUNTS
    assert torch.bincount(test_set.targets).tolist() == TEST_COUNTS


def test_normalisation_constants_match_the_training_set():
    train_set, _ = get_mnist_datasets(download=False)
    pixels = train_set.data.float() / 255
    assert pixels.mean().item() == pytest.approx(0.1307, abs=5e-5)
    assert pixels.std().item() == pytest.approx(0.3081, abs=5e-5)


def test_fast_loader_covers_the_whole_set():
    train_loader, test_loader = get_data_loaders(512, device="cpu", download=False)
    assert len(train_loader) == 118 and len(test_loader) == 20
    seen = torch.cat([labels for _, labels in train_loader])
    assert torch.bincount(seen).tolist() == TRAIN_COUNTS
