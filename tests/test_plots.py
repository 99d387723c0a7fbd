"""The plotting helpers on what users hand them: this repository's loaders and history, and their own."""

import matplotlib
import pytest
import torch
from conftest import synthetic_digits

from model import Net
from utils import (
    confusion_matrix,
    get_predictions,
    normalize,
    plot_confusion_matrix,
    plot_conv_filters,
    plot_misclassified,
    plot_sample_data,
    plot_train_metrics,
)

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


def test_confusion_matrix_counts_and_refuses_what_is_not_one_class_per_image():
    targets, predictions = torch.tensor([0, 1, 1, 9, 9, 9]), torch.tensor([0, 1, 7, 9, 9, 4])
    matrix = confusion_matrix(targets, predictions)
    assert matrix.sum() == 6 and matrix[1, 7] == 1 and matrix[9, 9] == 2 and matrix[9, 4] == 1 and matrix.trace() == 4
    for given, error, message in [
        ((targets, predictions[:5]), ValueError, "^6 targets but 5 predictions; give one of each per image$"),
        ((targets, torch.rand(6, 10)), ValueError, r"^predictions must be one class index per image, shape \[N\], "
                                                   r"got \[6, 10\]; use probs.argmax\(1\)$"),
        ((targets + 1, predictions), ValueError, "^targets must be class indices 0-9, got 10$"),
        ((targets, predictions - 1), ValueError, "^predictions must be class indices 0-9, got -1$"),
        ((targets.float() + 0.5, predictions), TypeError, "^targets must be integer class indices, got torch.float32$"),
    ]:
        with pytest.raises(error, match=message):
            confusion_matrix(*given)


def test_predictions_of_a_loader_of_the_users_own():
    images, labels = synthetic_digits(8, seed=0)
    batches = [(normalize(images[:, None].float() / 255), labels)] * 2
    got_images, got_targets, probs = get_predictions(Net(), "cpu", batches)
    assert got_images.shape == (16, 1, 28, 28) and torch.equal(got_targets, labels.repeat(2))
    assert probs.shape == (16, 10) and torch.allclose(probs.sum(1), torch.ones(16), atol=1e-2)
    with pytest.raises(ValueError, match="^loader yielded no batches$"):
        get_predictions(Net(), "cpu", [])
    with pytest.raises(TypeError, match=r"^a loader must yield \(images, labels\) pairs, got a dict with keys "):
        get_predictions(Net(), "cpu", [{"image": images, "label": labels}])


def test_analysis_plots_name_what_they_cannot_show():
    images, labels = synthetic_digits(6, seed=0)
    images = normalize(images[:, None].float() / 255)
    log_probs = Net()(images).detach()  # the Net's output as it comes: log-probabilities
    with pytest.raises(ValueError, match=r"^probs must be probabilities, .*: give output.exp\(\) "):
        plot_misclassified(images, labels, log_probs)
    with pytest.raises(ValueError, match="^6 images, 3 targets and 6 rows of probabilities; give one of each"):
        plot_misclassified(images, labels[:3], log_probs.exp())
    assert len(shown(plot_misclassified(images, labels, log_probs.exp()))) == int((log_probs.argmax(1) != labels).sum())
    with pytest.raises(ValueError, match="^plot_conv_filters shows the kernels of a convolution with one input channel "
                                         r"\(conv1\); this one has 32"):
        plot_conv_filters(Net().conv2)
    assert len(shown(plot_conv_filters(Net().conv1))) == 32
    figure = plot_confusion_matrix([[5, 1], [0, 4]])  # a plain list, as from sklearn's tolist()
    assert [text.get_text() for text in figure.axes[1].texts] == ["16.67", "0.00"]


def s5_history(epochs=20):
    """A history shaped like an S5 run's: accuracy from ~77% to ~99.3%, the rate cut after epoch 15."""
    history = {"epoch": list(range(1, epochs + 1)), "lr": [0.01 if e <= 15 else 0.001 for e in range(1, epochs + 1)],
               "seconds": [1.0] * epochs}
    for key, first, last in (("train_acc", 77.0, 99.2), ("test_acc", 93.0, 99.3)):
        history[key] = [last - (last - first) * 0.5 ** (e - 1) for e in range(1, epochs + 1)]
    for key in ("train_loss", "test_loss"):
        history[key] = [1.0 / e for e in range(1, epochs + 1)]
    return history


def test_training_curves_zoom_on_the_last_epochs_and_name_the_rate_cut_once():
    history = s5_history()
    figure = plot_train_metrics(history)
    insets = [inset for ax in figure.axes for inset in ax.child_axes]
    assert len(insets) == 2  # one per accuracy panel
    for inset, key in zip(insets, ("train_acc", "test_acc"), strict=True):
        low, high = inset.get_ylim()
        last = history[key][10:]
        assert low <= min(last) and max(last) <= high and high - low < 1.0  # tenths of a point, legible
    assert not any(ax.get_legend() for ax in figure.axes)
    assert [text.get_text() for legend in figure.legends for text in legend.get_texts()] == ["learning rate cut"]


def test_confusion_matrix_counts_stand_out_on_every_cell():
    matrix = torch.full((10, 10), 0)
    matrix.fill_diagonal_(980)
    matrix[2, 7], matrix[4, 9] = 9, 1
    figure = plot_confusion_matrix(matrix)
    texts = {text.get_text(): text for text in figure.axes[0].texts}
    assert matplotlib.colors.to_rgb(texts["9"].get_color()) == (1.0, 1.0, 1.0)  # white on the darkest red
    assert matplotlib.colors.to_rgb(texts["1"].get_color()) == (0.0, 0.0, 0.0)  # black on pale red
    assert texts["980"].get_fontweight() == "bold"


def test_feature_maps_have_a_colour_scale_and_say_what_it_means():
    from utils import feature_maps, plot_feature_maps

    torch.manual_seed(0)
    image = torch.randn(1, 28, 28)
    maps = feature_maps(Net(), image)
    figure = plot_feature_maps(maps, image)
    colourbars = [ax for ax in figure.axes if ax.get_label() == "<colorbar>"]
    assert len(colourbars) == len(maps)
    assert "black where not at all" in figure.get_suptitle()
    for ax in figure.axes:
        for picture in ax.images:
            if picture.get_cmap().name == "magma":
                assert picture.norm.vmin == 0  # 0, no response, is black on every map
