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


def asymmetric_images(n=8):
    g = torch.Generator().manual_seed(0)
    images = torch.zeros(n, 1, IMAGE_SIZE, IMAGE_SIZE)
    images[:, :, 5:20, 8:12] = 1.0  # an off-centre bar, smoothed so interpolation stays meaningful
    images[:, :, 3:7, 14:25] = torch.rand(n, 1, 4, 11, generator=g)
    return images


def test_rotation_matches_torchvision_direction_and_centre():
    images = asymmetric_images()
    ours = augment(images, torch.full((8,), 90.0), torch.zeros(8, dtype=torch.bool))
    assert torch.allclose(ours, TF.rotate(images, 90.0), atol=1e-5)
    ours = augment(images, torch.full((8,), 12.0), torch.zeros(8, dtype=torch.bool))
    reference = TF.rotate(images, 12.0, interpolation=transforms.InterpolationMode.BILINEAR)
    assert (ours - reference).abs().mean() < 0.01


def test_zoom_matches_center_crop_then_resize():
    images = asymmetric_images()
    ours = augment(images, torch.zeros(8), torch.ones(8, dtype=torch.bool))
    reference = TF.resize(TF.center_crop(images, ZOOM_CROP), [IMAGE_SIZE, IMAGE_SIZE], antialias=False)
    assert (ours - reference).abs().mean() < 0.01
    assert not torch.allclose(ours, images, atol=0.1)


def test_training_batches_are_augmented_and_test_batches_are_not(mnist_root):
    train_loader, test_loader = get_data_loaders(64, mnist_root, "cpu", seed=3)
    first = next(iter(train_loader))[0]
    train_loader.set_epoch(0)
    assert torch.equal(first, next(iter(train_loader))[0])  # same epoch seed, same batch
    assert not torch.equal(first, next(iter(train_loader))[0])  # next epoch, new shuffle and angles
    assert torch.equal(next(iter(test_loader))[0], next(iter(test_loader))[0])
