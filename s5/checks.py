"""Checks on what a user hands train and test (loaders, labels, model, optimizer, scheduler, criterion), each
failing in one line that says what to do; an epoch's running loss and accuracy (Tally), checked as it goes,
and its progress bar."""

import math
import os
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

from s5.config import resolve_device


def unpack_batch(batch):
    """(images, labels) of one batch as the loader made it, checked where torch's own errors would be
    unclear: a pair of tensors, and labels that are one integer class index per image."""
    if isinstance(batch, dict) or not isinstance(batch, (tuple, list)) or len(batch) != 2:
        got = (f"a dict with keys {list(batch)}" if isinstance(batch, dict) else
               f"{len(batch)} items" if isinstance(batch, (tuple, list)) else type(batch).__name__)
        raise TypeError(f"a loader must yield (images, labels) pairs, got {got}")
    data, target = batch
    for name, value in (("images", data), ("labels", target)):
        if not isinstance(value, torch.Tensor):
            raise TypeError(f"the loader yielded {name} as {type(value).__module__}.{type(value).__name__}; a "
                            "loader must yield (images, labels) torch tensors (transforms.ToTensor, torch.from_numpy)")
    if target.dim() != 1:
        one_hot = target.dim() == 2 and target.shape[1] > 1
        hint = "labels.argmax(1) if they are one-hot" if one_hot else "labels.view(-1)"
        raise ValueError(f"labels must be one class index per image, shape [N], got {list(target.shape)}; use {hint}")
    if target.is_floating_point() or target.is_complex() or target.dtype == torch.bool:
        raise TypeError(f"labels must be integer class indices, got {target.dtype}; convert with labels.long()")
    if data.dim() and len(target) != len(data):
        raise ValueError(f"the loader yielded {len(data)} images but {len(target)} labels in one batch")
    return data, target


def _to_device(data, target, device, channels_last):
    data = data.to(device, non_blocking=True)
    if channels_last and data.dim() == 4:
        data = data.contiguous(memory_format=torch.channels_last)
    return data, target.to(device, torch.long, non_blocking=True)  # int32 labels too: the losses take int64


def check_classes(target, classes):
    """Labels in 0..classes-1, checked where they are on the CPU (there it costs no device sync; on CUDA an
    index out of range would be a device-side assert, so loaders that put labels there check them first, as
    get_data_loaders does)."""
    if target.device.type == "cpu" and target.numel():
        low, high = target.min().item(), target.max().item()
        if low < 0 or high >= classes:
            raise ValueError(f"labels must be class indices 0-{classes - 1} for this model's {classes} outputs, "
                             f"got {low if low < 0 else high}")


EPOCH_SCHEDULERS = (torch.optim.lr_scheduler.StepLR, torch.optim.lr_scheduler.MultiStepLR,
                    torch.optim.lr_scheduler.ExponentialLR)


def check_training(model, device, optimizer, scheduler):
    """train's arguments, refused before the first batch: a model on another device, an optimizer of another
    model, or a per-epoch scheduler given to be stepped per batch."""
    if isinstance(scheduler, EPOCH_SCHEDULERS):  # stepped per batch, S5's StepLR(15) would decay after 15 batches
        raise ValueError(f"{type(scheduler).__name__} steps once per epoch, but train(scheduler=...) steps it after "
                         "every batch; call scheduler.step() after each train() (fit does), and give train only "
                         "per-batch schedules such as OneCycleLR")
    check_device(model, device)
    check_optimizer(model, optimizer)


def check_device(model, device):
    """Refuse a model on another device than `device` before the first batch: torch would name tensor
    types, or fail inside a CUDA graph. `device` must exist here (resolve_device)."""
    device = resolve_device(device)
    for name, parameter in model.named_parameters():
        if parameter.device.type != device.type or device.index not in (None, parameter.device.index):
            raise ValueError(f"the model is on {parameter.device} ({name}) but the batches go to {device}; "
                             "move it there first: model.to(device)")


def check_optimizer(model, optimizer):
    """Refuse an optimizer made for another model, as after a notebook cell that makes the model again: it
    would step the old model's weights while this one stays at its initial accuracy, silently."""
    if not hasattr(optimizer, "param_groups"):
        raise TypeError(f"optimizer must be a torch.optim optimizer, got {type(optimizer).__name__}")
    held = {id(p) for group in optimizer.param_groups for p in group["params"]}
    if not any(id(p) in held for p in model.parameters()):
        raise ValueError("the optimizer holds none of this model's weights, so training would change nothing (was "
                         "the model made again after it?); make it from this model: "
                         "torch.optim.SGD(model.parameters(), ...)")


def forward_batch(forward, batch, device, amp, channels_last):
    """One batch through the model, as train and test both run it: checked (unpack_batch), moved to `device`,
    run under `amp`; returns (output, labels on the device)."""
    images, labels = unpack_batch(batch)
    data, target = _to_device(images, labels, device, channels_last)
    with amp:
        output = forward(data)
    check_classes(labels, output.shape[1])
    return output, target


def batch_loss(criterion, output, target):
    """The criterion's loss of one batch, in fp32: one number, the batch's mean (test weights it by size)."""
    loss = criterion(output.float(), target)
    if not isinstance(loss, torch.Tensor) or loss.dim():
        got = f"shape {list(loss.shape)}" if isinstance(loss, torch.Tensor) else type(loss).__name__
        raise ValueError(f"criterion must return the batch's mean loss, one number; got {got} (reduction='none'?)")
    return loss


def check_losses(losses, last_batch, epoch, outcome, criterion):
    """Raise FloatingPointError naming the first batch whose loss is NaN or infinite; and ValueError for a
    negative NLL, which only outputs that are not log-probabilities give (logits, or softmax's)."""
    if not losses:
        return
    values = torch.stack(losses).tolist()
    for offset, value in enumerate(values):
        if math.isfinite(value) and (value >= 0 or criterion is not F.nll_loss):
            continue
        batch = last_batch - len(values) + 1 + offset
        where = f"epoch {epoch}, batch {batch}" if epoch is not None else f"batch {batch}"
        if not math.isfinite(value):
            raise FloatingPointError(
                f"loss became {value} in {where}; {outcome} (lower the learning rate, check the data and weights)"
            )
        raise ValueError(f"the loss is {value:.4g} in {where}, below 0: F.nll_loss takes log-probabilities and "
                         "the model's outputs are not; end its forward with F.log_softmax(x, dim=1), or give train "
                         "and test criterion=F.cross_entropy, which takes raw scores")


class Tally:
    """An epoch's loss and accuracy, summed on the device (no sync per batch). The batch losses are checked
    (check_losses) when `check` is called, so a NaN names its batch; `loader` and `outcome` word the errors
    ("train_loader", "training stopped")."""

    def __init__(self, device, criterion, loader, outcome):
        self.criterion, self.loader, self.outcome = criterion, loader, outcome
        self.loss_sum = torch.zeros((), device=device)
        self.correct = torch.zeros((), device=device, dtype=torch.int64)
        self.seen = self.batches = 0
        self.pending = []  # batch losses not yet checked

    def add(self, loss, output, target):
        loss = loss.detach()
        self.loss_sum += loss * len(target)
        self.correct += (output.argmax(dim=1) == target).sum()
        self.seen += len(target)
        self.batches += 1
        self.pending.append(loss)

    def check(self, epoch=None):
        check_losses(self.pending, self.batches, epoch, self.outcome, self.criterion)
        self.pending = []

    def means(self):
        """(mean loss per sample, accuracy %) as Python floats; ValueError when the loader yielded nothing."""
        if self.seen == 0:
            raise ValueError(f"{self.loader} yielded no batches")
        return self.loss_sum.item() / self.seen, 100.0 * self.correct.item() / self.seen


def progress_bar(batches, desc):
    """tqdm's bar over an epoch's batches, gone when the epoch ends: a live widget in Jupyter, a line in a
    terminal. None where nobody watches it live: output to a file or a pipe (train.py > log), a notebook run
    headless (papermill, nbconvert), or TQDM_DISABLE=1; there a bar would stay frozen at its first frame,
    and each epoch's line says it all."""
    from tqdm.auto import tqdm
    from tqdm.notebook import tqdm as notebook_tqdm

    live = not _run_headless() if issubclass(tqdm, notebook_tqdm) else sys.stderr.isatty()
    return tqdm(batches, desc=desc, leave=False, **({} if live else {"disable": True}))


def _run_headless():
    """Whether this Jupyter kernel was started by a headless runner (papermill, nbconvert): its parent."""
    try:
        parent = Path(f"/proc/{os.getppid()}/cmdline").read_bytes()
    except OSError:  # no /proc (macOS, Windows): the bar shows
        return False
    return b"papermill" in parent or b"nbconvert" in parent
