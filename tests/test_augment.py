"""The fast pipeline's batched augmentation draws from the S5 transforms' distribution."""

import math

import torch
import torchvision.transforms.functional as TF
from torchvision import transforms

from utils import IMAGE_SIZE, ROTATION_DEGREES, ZOOM_CROP, ZOOM_P, augment, get_data_loaders, sample_augmentation

N = 200_000


def test_angles_are_uniform_in_the_s5_range():
    angles, _ = sample_augmentation(N, torch.Generator().manual_seed(0))
    assert angles.min() >= -ROTATION_DEGREES and angles.max() <= ROTATION_DEGREES
    # torchvision's RandomRotation draws the same way: uniform over (-15, 15).
    reference = torch.tensor([transforms.RandomRotation.get_params([-15.0, 15.0]) for _ in range(20_000)])
    for q in (0.05, 0.25, 0.5, 0.75, 0.95):
        expected = -ROTATION_DEGREES + 2 * ROTATION_DEGREES * q
        assert abs(torch.quantile(angles, q).item() - expected) < 0.15
        assert abs(torch.quantile(reference, q).item() - expected) < 0.5


def test_zoom_rate_matches_random_apply_p():
    _, zoom = sample_augmentation(N, torch.Generator().manual_seed(1))
    sigma = math.sqrt(ZOOM_P * (1 - ZOOM_P) / N)
    assert abs(zoom.float().mean().item() - ZOOM_P) < 4 * sigma


def mnist_images(root, n=16):
    from torchvision import datasets

    return datasets.MNIST(root, train=True).data[:n, None].float() / 255


def test_rotation_is_torchvision_rotation_exactly(mnist_root):
    images = mnist_images(mnist_root)
    for angle in (90.0, 12.0, -7.5):
        ours = augment(images, torch.full((16,), angle), torch.zeros(16, dtype=torch.bool))
        assert torch.equal(ours, TF.rotate(images, angle)), angle  # nearest, fill 0, about the centre


def test_zoom_is_center_crop_then_resize(mnist_root):
    images = mnist_images(mnist_root)
    ours = augment(images, torch.zeros(16), torch.ones(16, dtype=torch.bool))
    reference = TF.resize(TF.center_crop(images, ZOOM_CROP), [IMAGE_SIZE, IMAGE_SIZE], antialias=False)
    assert (ours - reference).abs().mean() < 0.002 and (ours - reference).abs().max() < 0.05
    assert (ours - images).abs().mean() > 0.05


def test_zoom_then_rotation_as_in_s5(mnist_root):
    images = mnist_images(mnist_root)
    zoom = torch.arange(16) % 2 == 0
    ours = augment(images, torch.full((16,), 10.0), zoom)
    zoomed = TF.resize(TF.center_crop(images, ZOOM_CROP), [IMAGE_SIZE, IMAGE_SIZE], antialias=False)
    reference = TF.rotate(torch.where(zoom[:, None, None, None], zoomed, images), 10.0)
    assert (ours - reference).abs().mean() < 0.002  # the same but for rounding in the zoom


def test_each_image_is_augmented_as_if_alone(mnist_root):
    images = mnist_images(mnist_root)
    angles, zoom = torch.linspace(-15, 15, 16), torch.arange(16) % 3 == 0
    batch = augment(images, angles, zoom)
    for i in range(16):
        assert torch.equal(batch[i : i + 1], augment(images[i : i + 1], angles[i : i + 1], zoom[i : i + 1])), i


def test_training_batches_are_augmented_and_test_batches_are_not(mnist_root):
    train_loader, test_loader = get_data_loaders(64, mnist_root, "cpu", seed=3)
    first = next(iter(train_loader))[0]
    train_loader.set_epoch(0)
    assert torch.equal(first, next(iter(train_loader))[0])  # same epoch seed, same batch
    assert not torch.equal(first, next(iter(train_loader))[0])  # next epoch, new shuffle and angles
    assert torch.equal(next(iter(test_loader))[0], next(iter(test_loader))[0])
