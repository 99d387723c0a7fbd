"""Error analysis and what the network learned: predictions over a loader, the confusion matrix, the most
confident mistakes, conv1's filters and the feature maps, each a matplotlib Figure (saved whole when asked)."""

import io
import math
from pathlib import Path

import torch
import torch.nn.functional as F

from s5.accel import autocast
from s5.checks import check_device, unpack_batch
from s5.config import IMAGE_SIZE
from s5.files import atomic_write


def show_grey(ax, image):
    """A grey [H, W] image on ax, scaled to its own range: normalised and raw [0, 1] images look alike."""
    ax.imshow(image.detach().float().cpu().numpy(), cmap="gray")


def save_figure(fig, save_path):
    """fig, and written whole to save_path when one is given (its type from the extension)."""
    if save_path:
        buffer = io.BytesIO()
        fig.savefig(buffer, format=Path(save_path).suffix.lstrip(".").lower() or None, dpi=100, bbox_inches="tight")
        atomic_write(save_path, buffer.getvalue())
    return fig


@torch.no_grad()
def get_predictions(model, device, loader, *, precision="auto"):
    """(images, targets, probabilities) over a whole loader, on the CPU, in loader order."""
    check_device(model, device)
    model.eval()
    amp = autocast(precision, device)
    images, targets, probs = [], [], []
    for batch in loader:
        data, target = unpack_batch(batch)
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
        show_grey(ax, images[i, 0])
        ax.set_title(f"true {int(targets[i])} pred {int(predicted[i])}\n{100 * confidence[i]:.0f}%", fontsize=9)
    fig.suptitle(f"{len(wrong)} most confident of {int((probs.argmax(1) != targets).sum())} misclassified")
    return save_figure(fig, save_path)


def plot_confusion_matrix(matrix, save_path=None):
    """The confusion matrix (counts) beside each digit's error rate (an axis from 0); returns the Figure."""
    import matplotlib.pyplot as plt

    matrix = torch.as_tensor(matrix).cpu()
    errors = 100 - 100 * matrix.diag().float() / matrix.sum(dim=1).clamp(min=1).float()
    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 5.5), gridspec_kw={"width_ratios": [1.2, 1]})
    off_diagonal = matrix - torch.diag(matrix.diag())
    left.imshow(off_diagonal.numpy(), cmap="Reds", vmin=0, vmax=max(1, int(off_diagonal.max())))
    dark = off_diagonal.max() / 2  # cells darker than this get white counts
    for t in range(matrix.shape[0]):
        for p in range(matrix.shape[1]):
            count = int(matrix[t, p])
            style = ({"fontsize": 9, "fontweight": "bold", "color": "black"} if t == p else
                     {"fontsize": 9, "color": "white" if count > dark else "black" if count else "0.6"})
            left.text(p, t, count, ha="center", va="center", **style)
    left.set(xlabel="predicted", ylabel="true", title="Confusion matrix (colour: mistakes only)",
             xticks=range(10), yticks=range(10))
    right.bar(range(len(errors)), errors.tolist(), color="tab:red")
    right.set(xlabel="digit", ylabel="test images misclassified (%)", title="Error rate per digit", xticks=range(10),
              ylim=(0, max(1.0, float(errors.max()) * 1.15)))
    for digit, error in enumerate(errors.tolist()):
        right.text(digit, error, f"{error:.2f}", ha="center", va="bottom", fontsize=8)
    fig.tight_layout()
    return save_figure(fig, save_path)


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
    return save_figure(fig, save_path)


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
    `maps` (from feature_maps), each titled with its size, on one colour scale per layer (0, black: no
    response; a colour bar at the row's end); returns the Figure."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(maps), per_layer + 1, figsize=(1.3 * (per_layer + 1) + 0.6, 1.45 * len(maps) + 0.4),
                             squeeze=False, layout="constrained")
    for ax in axes.flat:
        ax.axis("off")
    for row, (name, output) in zip(axes, maps.items(), strict=True):
        show_grey(row[0], image.reshape(IMAGE_SIZE, IMAGE_SIZE))
        row[0].set_title("input", fontsize=8)
        strongest = output.flatten(1).mean(1).argsort(descending=True)[:per_layer]
        scale = {"cmap": "magma", "vmin": 0, "vmax": max(float(output[strongest].max()), 1e-6)}
        for ax, channel in zip(row[1:], strongest.tolist(), strict=False):
            shown = ax.imshow(output[channel].numpy(), **scale)
            ax.set_title(f"{name} #{channel}\n{output.shape[1]}x{output.shape[2]}", fontsize=7)
        fig.colorbar(shown, ax=row[-1], fraction=0.1, pad=0.04).ax.tick_params(labelsize=6)
    fig.suptitle("Each layer's most active channels after the ReLU: bright where the channel responds strongly, "
                 "black where not at all (one colour scale per row)", fontsize=8)
    return save_figure(fig, save_path)
