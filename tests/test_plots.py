"""The plotting helpers on what users hand them: this repository's loaders and history, and their own."""

import matplotlib
import pytest
import torch
from conftest import synthetic_digits

from utils import normalize, plot_misclassified, plot_sample_data, plot_train_metrics

matplotlib.use("Agg")


def shown(figure):
    """Each panel's picture as the viewer sees it: the image through its colour scale, in [0, 1]."""
    return [torch.tensor(ax.images[0].norm(ax.images[0].get_array()).filled(0)) for ax in figure.axes if ax.images]


def test_sample_data_looks_the_same_normalised_or_not():
    images, labels = synthetic_digits(8, seed=0)
    raw = images[:, None].float() / 255  # transforms.ToTensor() alone
    for batch in ([(normalize(raw), labels)], [(raw, labels)], [(raw[:, 0], labels)]):
        panels = shown(plot_sample_data(batch, n=8))
        assert len(panels) == 8
        for panel, image in zip(panels, raw[:, 0], strict=True):
            expected = (image - image.min()) / (image.max() - image.min())
            assert torch.allclose(panel.float(), expected, atol=1e-5)


def test_mistakes_look_the_same_normalised_or_not():
    images, labels = synthetic_digits(8, seed=0)
    raw = images[:, None].float() / 255
    sure = torch.linspace(0.9, 0.5, 8)[:, None]  # every one wrong, the first the surest: shown in this order
    probs = torch.nn.functional.one_hot((labels + 1) % 10, 10).float() * sure
    for given in (normalize(raw), raw):
        panels = shown(plot_misclassified(given, labels, probs, n=8))
        assert len(panels) == 8
        for panel, image in zip(panels, raw[:, 0], strict=True):
            assert torch.allclose(panel.float(), (image - image.min()) / (image.max() - image.min()), atol=1e-5)


def test_sample_data_of_colour_images_is_one_line():
    images, labels = synthetic_digits(4, seed=0)
    with pytest.raises(ValueError, match=r"shows grey images, \[N, 1, H, W\] or \[N, H, W\]; got \[4, 3, 28, 28\]"):
        plot_sample_data([(images[:, None].float().repeat(1, 3, 1, 1), labels)])


def test_train_metrics_of_a_history_of_the_users_own_is_one_line():
    with pytest.raises(ValueError, match="^history lacks epoch, lr, train_acc, test_loss, test_acc: "):
        plot_train_metrics({"train_loss": [0.5, 0.3]})
    history = {"epoch": [1, 2, 3], "lr": [0.1, 0.1, 0.01], "train_loss": [0.9, 0.5, 0.4], "train_acc": [70, 85, 88],
               "test_loss": [0.6, 0.4, 0.35], "test_acc": [80, 86, 89]}  # no "seconds": not plotted
    figure = plot_train_metrics(history)
    assert [line.get_ydata().tolist() for line in (ax.lines[0] for ax in figure.axes)] == [
        history[key] for key in ("train_loss", "train_acc", "test_loss", "test_acc")]
    assert all(ax.lines[1].get_xdata()[0] == 2.5 for ax in figure.axes)  # the rate was cut before epoch 3
