"""The S5 lesson's helpers: transforms, MNIST loaders, the train and test loops, the optimizer, loss and
StepLR makers, fit (the epochs), and the course's two plots.

Read it top to bottom: this file is what S5 teaches. What it stands on lives beneath, in the package s5/,
one topic per module (recipes and devices, MNIST files, the fast loader, precision and CUDA graphs, input
checks, run folders and checkpoints, error analysis); every name this file exported before is still
importable from here, so old notebooks keep working.
"""

import functools
import math
import time

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader
from torchvision import transforms

from s5.accel import (
    autocast,
    compile_model,
    grad_scaler,
    quiet_graph_warnings,
    resolve_compile_mode,
    scaled_step,
    to_channels_last,
)
from s5.analysis import save_figure, show_grey
from s5.checkpoints import new_history
from s5.checks import Tally, batch_loss, check_device, check_training, forward_batch, progress_bar, unpack_batch
from s5.config import (
    IMAGE_SIZE,
    MNIST_MEAN,
    MNIST_STD,
    PIPELINES,
    ROTATION_DEGREES,
    ZOOM_CROP,
    ZOOM_P,
    check_batch_size,
    check_seed,
    resolve_device,
)
from s5.device_loader import DeviceLoader, EpochSeededDataLoader, default_num_workers
from s5.mnist_files import get_mnist_datasets
from s5.runs import RunRecord

# ----------------------------------------------------------------------------- data

# The S5 augmentation, per image (the original pipeline): with probability 0.1 a zoom (the central 22x22
# pixels resized back to 28x28), then a rotation by up to +-15 degrees; then to a tensor, normalised.
train_transforms = transforms.Compose([
    transforms.RandomApply([transforms.CenterCrop(ZOOM_CROP)], p=ZOOM_P),
    transforms.Resize((IMAGE_SIZE, IMAGE_SIZE)),
    transforms.RandomRotation((-ROTATION_DEGREES, ROTATION_DEGREES), fill=0),
    transforms.ToTensor(),
    transforms.Normalize((MNIST_MEAN,), (MNIST_STD,)),
])

test_transforms = transforms.Compose([
    transforms.ToTensor(),
    transforms.Normalize((MNIST_MEAN,), (MNIST_STD,)),
])


def get_data_loaders(batch_size=512, data_dir=None, device=None, pipeline="fast", seed=0,
                     num_workers=None, download=True):
    """(train_loader, test_loader) over MNIST.

    pipeline="fast" (default): DeviceLoaders holding the data on `device`, augmenting there in batches.
    pipeline="s5": the original S5 pipeline, torchvision PIL transforms per image in DataLoader workers.
    Both yield normalised [B, 1, 28, 28] float batches; the test loader is neither shuffled nor augmented.
    Epoch e of the training loader draws its shuffle and augmentation from seed + e (set_epoch).
    """
    if pipeline not in PIPELINES:
        raise ValueError(f"pipeline must be one of {PIPELINES}, got {pipeline!r}")
    check_batch_size(batch_size)
    check_seed(seed)
    device = resolve_device(device)
    fast = pipeline == "fast"
    per_image = (None, None) if fast else (train_transforms, test_transforms)  # the fast path augments in batches
    train_set, test_set = get_mnist_datasets(data_dir, download, *per_image)
    if batch_size > len(train_set):
        raise ValueError(f"batch_size {batch_size} is larger than the {len(train_set):,} training images; "
                         "use a smaller batch")
    if fast:
        return (
            DeviceLoader(train_set.data, train_set.targets, batch_size, device, shuffle=True, augment=True,
                         seed=seed),
            DeviceLoader(test_set.data, test_set.targets, batch_size, device),
        )
    workers = default_num_workers() if num_workers is None else num_workers
    common = dict(batch_size=batch_size, num_workers=workers, pin_memory=device.type == "cuda")
    return (
        EpochSeededDataLoader(train_set, shuffle=True, seed=seed, **common),
        DataLoader(test_set, shuffle=False, **common),
    )


# ----------------------------------------------------------------------------- training


def train(model, device, train_loader, optimizer, criterion=F.nll_loss, *, scheduler=None, epoch=None,
          precision="auto", channels_last=True, scaler=None, compile_mode="auto", log_every=10):
    """Train one epoch; return (mean loss, accuracy %) over the samples seen, as Python floats.

    `train_loader` is any iterable of (images, labels) batches. `scheduler`, if given, steps after every
    batch (OneCycleLR); step an epoch scheduler (StepLR) yourself. bf16 autocast where native
    (autocast_dtype), channels_last, loss in fp32; ORIGINAL_STEP turns these off (fp32, NCHW). In fp16 the
    loss is scaled by `scaler` (grad_scaler; one is made for this epoch when none is given). `compile_mode`
    (COMPILE_MODES): "auto" replays the forward and backward passes as CUDA graphs on CUDA (compile_model).
    The loss is checked every `log_every` batches (one device sync each): FloatingPointError names the
    batch where it stopped being finite, ValueError an NLL below 0 (outputs that are not log-probabilities).
    On a CPU, s5.cpu_memory.keep_freed_memory() makes every step faster; it changes the whole process, so
    it is yours to call.
    """
    check_training(model, device, optimizer, scheduler)
    model.train()
    mode = resolve_compile_mode(model, device, compile_mode)
    forward = compile_model(to_channels_last(model, channels_last), device, mode)  # on CUDA: graph replay
    amp = autocast(precision, device)  # bf16 where the hardware does it natively (fp16 on older GPUs), else off
    scaler = scaler or grad_scaler(precision, device)  # fp16 only, else None
    tally = Tally(device, criterion, "train_loader", "training stopped")
    bar = progress_bar(train_loader, f"Epoch {epoch}" if epoch is not None else "train")
    with quiet_graph_warnings(mode):
        for batch in bar:
            optimizer.zero_grad(set_to_none=True)                   # 1. clear the last step's gradients
            output, target = forward_batch(forward, batch, device, amp, channels_last)  # 2. forward pass
            loss = batch_loss(criterion, output, target)            # 3. the batch's mean loss, in fp32
            if scaler is None:
                loss.backward()                                     # 4. backward pass: the gradients
                optimizer.step()                                    # 5. move each weight against its gradient
            else:
                scaled_step(scaler, loss, optimizer)                # 4-5 in fp16, on a scaled loss
            if scheduler is not None:
                scheduler.step()
            tally.add(loss, output, target)
            if log_every and tally.batches % log_every == 0:
                tally.check(epoch)
                loss_so_far, acc_so_far = tally.means()
                bar.set_postfix(loss=f"{loss_so_far:.4f}", acc=f"{acc_so_far:.2f}%")
    loss, accuracy = tally.means()  # ValueError when it yielded no batches
    tally.check(epoch)
    return loss, accuracy


@torch.no_grad()
def test(model, device, test_loader, criterion=F.nll_loss, *, precision="auto", channels_last=True,
         compile_mode="auto"):
    """Evaluate; return (mean loss per sample, accuracy %) over the whole loader, as Python floats.

    Eval mode and no gradients. `criterion` must average over its batch (as F.nll_loss does); the batch
    means are weighted by batch size so the result is the exact per-sample mean over the set. A NaN loss
    raises, as in train. `compile_mode`: as in train.
    """
    check_device(model, device)
    model.eval()
    forward = compile_model(to_channels_last(model, channels_last), device, compile_mode)
    amp = autocast(precision, device)
    tally = Tally(device, criterion, "test_loader", "the test result is void")
    for batch in test_loader:
        output, target = forward_batch(forward, batch, device, amp, channels_last)
        tally.add(batch_loss(criterion, output, target), output, target)
    loss, accuracy = tally.means()  # ValueError when it yielded no batches
    tally.check()
    return loss, accuracy


def make_optimizer(model, recipe):
    """SGD (with momentum), Adam or AdamW, with the recipe's learning rate and weight decay."""
    if recipe.optimizer == "adam":
        return torch.optim.Adam(model.parameters(), lr=recipe.lr, weight_decay=recipe.weight_decay)
    if recipe.optimizer == "adamw":
        return torch.optim.AdamW(model.parameters(), lr=recipe.lr, weight_decay=recipe.weight_decay)
    return torch.optim.SGD(model.parameters(), lr=recipe.lr, momentum=recipe.momentum,
                           weight_decay=recipe.weight_decay)


def make_criterion(recipe):
    """The training loss on the Net's log-probabilities: NLL, or with label smoothing the cross-entropy
    against smoothed targets (cross_entropy's log_softmax leaves log-probabilities unchanged)."""
    if not recipe.label_smoothing:
        return F.nll_loss
    return functools.partial(F.cross_entropy, label_smoothing=recipe.label_smoothing)


def make_scheduler(optimizer, recipe, steps_per_epoch=None):
    """StepLR(step_size, gamma) for the "step" schedule (call .step() once per epoch: S5's rate is 0.01 for
    epochs 1-15, then 0.001); OneCycleLR peaking at recipe.lr for "onecycle" (stepped per batch: pass it
    to train/fit)."""
    if recipe.schedule == "onecycle":
        if not steps_per_epoch:
            raise ValueError("the onecycle schedule needs steps_per_epoch (len(train_loader))")
        return torch.optim.lr_scheduler.OneCycleLR(
            optimizer, max_lr=recipe.lr, epochs=recipe.epochs, steps_per_epoch=steps_per_epoch)
    return torch.optim.lr_scheduler.StepLR(optimizer, step_size=recipe.step_size, gamma=recipe.gamma)


def fit(model, device, train_loader, test_loader, optimizer, scheduler, epochs, *, history=None,
        start_epoch=1, checkpoint_path=None, best_path=None, config=None, precision="auto", channels_last=True,
        scaler=None, criterion=F.nll_loss, compile_mode="auto", on_epoch=None, overwrite=False):
    """Train epochs start_epoch..epochs, printing one line per epoch; return the metric history.

    Each epoch: train, step an epoch scheduler (StepLR; a OneCycleLR steps per batch inside train), test,
    then keep it (RunRecord): `history` (a new_history() dict, filled in place, so it survives an
    interrupt), the run saved to `checkpoint_path` and, when test accuracy is the best so far, to
    `best_path` (atomic, with `config`: see save_checkpoint). A new run (start_epoch 1) replaces neither
    file unless `overwrite`, and no run adds epochs that `history` holds already: both are refused before
    the first epoch. `precision`, `channels_last` and `compile_mode` go to train and test; in fp16, `scaler`
    (grad_scaler, made here when not given: pass one to resume its state) scales the loss all run long.
    `criterion` is the training loss (make_criterion); the test loss is always NLL. `on_epoch(history)`, if
    given, is called after each epoch is kept: a hyperparameter search reports there, and an exception it
    raises stops the run.
    """
    if epochs < start_epoch:
        raise ValueError(f"nothing to train: epochs {epochs!r} is below start_epoch {start_epoch}; "
                         "epochs is the last epoch to train, counted from 1")
    scaler = scaler or grad_scaler(precision, device)
    per_batch = isinstance(scheduler, torch.optim.lr_scheduler.OneCycleLR)
    step = {"precision": precision, "channels_last": channels_last, "compile_mode": compile_mode}
    run = RunRecord(model, optimizer, scheduler, history=history, start_epoch=start_epoch, last=checkpoint_path,
                    best=best_path, config=config, scaler=scaler, overwrite=overwrite)
    with run:
        for epoch in run.epochs(epochs):
            if hasattr(train_loader, "set_epoch"):
                train_loader.set_epoch(epoch)  # the epoch's shuffle and augmentation: seed + epoch
            lr = optimizer.param_groups[0]["lr"]
            start = time.perf_counter()
            train_loss, train_acc = train(model, device, train_loader, optimizer, criterion, epoch=epoch,
                                          scheduler=scheduler if per_batch else None, scaler=scaler, **step)
            if scheduler is not None and not per_batch:
                scheduler.step()
            test_loss, test_acc = test(model, device, test_loader, **step)
            run.record(epoch, lr, train_loss, train_acc, test_loss, test_acc, time.perf_counter() - start)
            if on_epoch is not None:
                on_epoch(run.history)
    return run.history


# ----------------------------------------------------------------------------- plots


def plot_sample_data(loader, n=12, save_path=None):
    """A grid of the first n images of the loader's first batch, with their labels; returns the Figure.
    Each image is shown scaled to its own range, so normalised images and raw [0, 1] ones look alike."""
    import matplotlib.pyplot as plt

    images, labels = unpack_batch(next(iter(loader)))
    if images.dim() == 4 and images.shape[1] == 1:
        images = images[:, 0]
    if images.dim() != 3:
        raise ValueError(f"plot_sample_data shows grey images, [N, 1, H, W] or [N, H, W]; got {list(images.shape)}")
    n = min(n, len(images))
    cols = min(n, 6)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(1.6 * cols, 1.8 * rows), squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i < n:
            show_grey(ax, images[i])
            ax.set_title(int(labels[i]))
    fig.tight_layout()
    return save_figure(fig, save_path)


def plot_train_metrics(history, save_path=None):
    """The 2x2 grid: train loss, train accuracy, test loss, test accuracy per epoch, with a dotted line
    where a step schedule (StepLR) cut the learning rate; each accuracy panel has an inset of its last epochs
    on their own scale (their differences are tenths of a point, flat beside epoch 1). Returns the Figure."""
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    missing = [key for key in new_history() if key != "seconds" and key not in history]
    if missing:
        raise ValueError(f"history lacks {', '.join(missing)}: plot_train_metrics plots a history as fit and "
                         "run.record fill it (new_history(), one list per metric)")
    fig, axes = plt.subplots(2, 2, figsize=(12, 8))
    epochs, lrs = history["epoch"], history["lr"]
    # Epochs that start with a rate at most half the one before: a step down (OneCycle's glide is not).
    drops = [epoch for epoch, before, now in zip(epochs[1:], lrs, lrs[1:], strict=False) if now <= before / 2]
    last = slice(len(epochs) // 2, None) if len(epochs) >= 6 else None  # what the insets show
    panels = (("train_loss", "Training loss"), ("train_acc", "Training accuracy (%)"),
              ("test_loss", "Test loss"), ("test_acc", "Test accuracy (%)"))
    for ax, (key, title) in zip(axes.flat, panels, strict=True):
        views = [ax]
        if key.endswith("acc") and last:
            inset = ax.inset_axes([0.4, 0.12, 0.56, 0.5], zorder=5, facecolor="white")
            inset.plot(epochs[last], history[key][last], marker="o", markersize=3)
            inset.set_title(f"epochs {epochs[last][0]}-{epochs[-1]}", fontsize=8)
            inset.tick_params(labelsize=7)
            views.append(inset)
        ax.plot(epochs, history[key], marker="o", markersize=3)
        for view in views:
            low, high = view.get_xlim()
            for epoch in drops:
                if low <= epoch - 0.5 <= high:
                    view.axvline(epoch - 0.5, color="grey", linestyle=":")
            view.xaxis.set_major_locator(MaxNLocator(integer=True))
            view.grid(alpha=0.3)
        ax.set_title(title)
        ax.set_xlabel("epoch")
    if drops:
        cut = plt.Line2D([], [], color="grey", linestyle=":")
        fig.legend([cut], ["learning rate cut"], loc="upper right", frameon=False)
    fig.tight_layout(rect=(0, 0, 1, 0.97) if drops else None)
    return save_figure(fig, save_path)


# ----------------------------------------------------------------------------- the machinery's names
# Re-exported, so that `from utils import load_checkpoint` (and every name utils.py had before the machinery
# moved into s5/) works as it always did.
from s5.accel import COMPILE_MODES, MAX_GRAPHED_SHAPES, autocast_dtype, precision_note  # noqa: E402, F401
from s5.analysis import (  # noqa: E402, F401
    confusion_matrix,
    feature_maps,
    get_predictions,
    plot_confusion_matrix,
    plot_conv_filters,
    plot_feature_maps,
    plot_misclassified,
)
from s5.checkpoints import (  # noqa: E402, F401
    check_resume,
    export_weights,
    load_checkpoint,
    read_checkpoint,
    save_checkpoint,
    save_history,
    save_weights,
)
from s5.config import (  # noqa: E402, F401
    NUM_CLASSES,
    OPTIMIZERS,
    ORIGINAL_STEP,
    PRECISIONS,
    RECIPES,
    Recipe,
    device_arg,
    get_device,
    get_recipe,
    run_config,
    set_seed,
)
from s5.device_loader import GPU_CHUNK, DeviceImages, augment, normalize, sample_augmentation  # noqa: E402, F401
from s5.files import atomic_write, check_output, check_plot_path, hold_run_folder, make_run_dir  # noqa: E402, F401
from s5.mnist_files import (  # noqa: E402, F401
    IDX_IMAGES_MAGIC,
    IDX_LABELS_MAGIC,
    MNIST_FILES,
    check_mnist_files,
    resolve_data_dir,  # noqa: E402, F401
)
from s5.runs import start_run  # noqa: E402, F401
