"""predict.py: digits drawn the way users draw them come out the way MNIST looks."""

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from predict import load_image, preprocess
from utils import MNIST_MEAN, MNIST_STD

SEVEN = [(0.15, 0.1), (0.85, 0.1), (0.4, 0.9)]  # a seven as a stroke through three points
FOUR = [(0.6, 0.9), (0.6, 0.1), (0.1, 0.65), (0.8, 0.65)]


def draw(points, size, box, ink, paper, width, mode="RGB"):
    """Draw the stroke into `box` (left, top, side) of a `size` canvas."""
    image = Image.new(mode, size, paper)
    left, top, side = box
    ImageDraw.Draw(image).line([(left + x * side, top + y * side) for x, y in points], fill=ink, width=width,
                               joint="curve")
    return image


def pixels(tensor):
    return (tensor[0, 0] * MNIST_STD + MNIST_MEAN).numpy()


def mnist_style(points):
    """Light on dark, 28x28, already MNIST-sized: the reference."""
    return preprocess(np.asarray(draw(points, (28, 28), (4, 4, 20), 255, 0, 2, "L"), dtype=np.float32) / 255)


@pytest.mark.parametrize("points", [SEVEN, FOUR])
def test_a_photo_like_digit_matches_its_mnist_style_version(points, tmp_path):
    # Dark blue ink on off-white paper, large, far from the centre, saved as a JPEG like a phone photo.
    photo = draw(points, (900, 600), (520, 60, 300), (20, 30, 90), (235, 230, 220), 28)
    photo.save(tmp_path / "photo.jpg", quality=85)
    ours = pixels(preprocess(load_image(tmp_path / "photo.jpg")))
    reference = pixels(mnist_style(points))
    assert np.corrcoef(ours.ravel(), reference.ravel())[0, 1] > 0.8
    other = pixels(mnist_style(SEVEN if points is FOUR else FOUR))
    assert np.corrcoef(ours.ravel(), other.ravel())[0, 1] < 0.6


def test_output_follows_mnist_conventions(tmp_path):
    draw(SEVEN, (400, 300), (10, 20, 200), "black", "white", 16).save(tmp_path / "seven.png")
    image = preprocess(load_image(tmp_path / "seven.png"))
    assert image.shape == (1, 1, 28, 28) and image.dtype == torch.float32
    p = pixels(image)
    assert p.min() == pytest.approx(0, abs=1e-5) and p.max() > 0.9  # black background, bright ink
    rows, cols = np.nonzero(p > 0.05)
    assert max(np.ptp(rows), np.ptp(cols)) + 1 in (19, 20, 21)  # fitted into a 20x20 box
    ys, xs = np.indices(p.shape)
    assert abs((ys * p).sum() / p.sum() - 14) < 1 and abs((xs * p).sum() / p.sum() - 14) < 1


def test_a_blank_picture_is_an_error():
    with pytest.raises(ValueError, match="no ink"):
        preprocess(np.full((50, 50), 0.8, dtype=np.float32))
