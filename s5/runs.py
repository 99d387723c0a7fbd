"""Keeping a run while it trains (RunRecord: the epoch line, last/best checkpoints, the history, the run
folder held) and the one way the scripts assemble and train a run from a Recipe (train_recipe)."""

import contextlib
from pathlib import Path

from model import Net
from s5.accel import grad_scaler
from s5.checkpoints import load_checkpoint, new_history, save_checkpoint, save_history
from s5.config import run_config, set_seed
from s5.files import check_output, hold_run_folder


class ResumeRefused(ValueError):
    """A checkpoint that a run cannot continue from (other weights, optimizer or schedule): refused before
    anything trains."""


class RunRecord:
    """What a run keeps after each epoch, in one call (`record`): the epoch's line, the run saved to `last`
    and, when its test accuracy is the best so far, to `best` (both atomic, with `config`: see
    save_checkpoint), and the history (filled in place, so it survives an interrupt; written to
    `history_path` when given). Use it as a context manager around the epochs: entering refuses to train
    epochs that `history` holds already, or to replace a run's files with a new run (start_epoch 1) unless
    `overwrite`, and holds the run's folder (hold_run_folder); an interrupt says what was kept."""

    def __init__(self, model, optimizer, scheduler, *, history=None, start_epoch=1, last=None, best=None,
                 config=None, scaler=None, overwrite=False, history_path=None):
        self.model, self.optimizer, self.scheduler, self.scaler = model, optimizer, scheduler, scaler
        self.history = new_history() if history is None else history
        self.start_epoch, self.config, self.overwrite = start_epoch, config, overwrite
        self.last, self.best, self.history_path = last, best, history_path
        self.saved = None  # the epoch last written to `last`
        self.epoch = None  # the epoch being trained, where the loop says (epochs)
        self._held = contextlib.ExitStack()

    def __enter__(self):
        done = self.history["epoch"]
        if done and done[-1] >= self.start_epoch:  # the notebook's training cell, run twice
            raise ValueError(f"history already holds epochs {done[0]}-{done[-1]}, and fit would train epoch "
                             f"{self.start_epoch} again into it (and into its checkpoints); for a new run make the "
                             f"model, optimizer and history again, or go on with start_epoch={done[-1] + 1}")
        paths = [Path(path) for path in (self.last, self.best) if path]
        for path in paths:  # writable: fail now, not after the first epoch
            check_output(path, overwrite=True)
        if paths:  # where the last checkpoint is (what a resume continues); a best elsewhere leaves its folder
            self._held.enter_context(hold_run_folder(paths[0].parent))
        for path in paths:
            if self.start_epoch == 1 and not self.overwrite and path.exists():
                self._held.close()
                raise FileExistsError(f"{path} already exists, and fit starts a new run at epoch 1: give the run a "
                                      "new folder (make_run_dir), continue that one (load_checkpoint, then "
                                      "start_epoch), or pass overwrite=True")
        return self

    def __exit__(self, kind, error, traceback):
        self._held.close()
        if kind is not None and issubclass(kind, KeyboardInterrupt):
            done = self.history["epoch"]
            held = f"epochs {done[0]}-{done[-1]}" if done else "no epoch"
            note = f"; last checkpoint: {self.last} (epoch {self.saved})" if self.saved else ""
            epoch = self.epoch or (done[-1] + 1 if done else self.start_epoch)
            print(f"Interrupted in epoch {epoch}: history holds {held}{note}")
        return False

    def epochs(self, last):
        """start_epoch..last, for a loop that keeps each (fit): an interrupt then names the epoch it stopped."""
        for epoch in range(self.start_epoch, last + 1):
            self.epoch = epoch
            yield epoch

    def record(self, epoch, lr, train_loss, train_acc, test_loss, test_acc, seconds):
        """Keep one finished epoch: its history row, its line, its checkpoints."""
        best = max(self.history["test_acc"], default=-1.0)
        row = (epoch, lr, train_loss, train_acc, test_loss, test_acc, seconds)
        for key, value in zip(new_history(), row, strict=True):
            self.history[key].append(value)
        print(f"Epoch {epoch}: train loss {train_loss:.4f} acc {train_acc:.2f}% | "
              f"test loss {test_loss:.4f} acc {test_acc:.2f}% | lr {lr:.3g} | {seconds:.1f}s")
        state = (self.model, self.optimizer, self.scheduler, epoch, self.history, self.config, self.scaler)
        # The best first: a kill between the two saves leaves `best` ahead of `last`, whose resume trains the
        # epoch again (the same way: its RNGs are saved) and writes both. The other way round, `last` would hold
        # the epoch as done and its best model would be lost.
        if self.best and test_acc > best:
            save_checkpoint(self.best, *state)
        if self.last:
            save_checkpoint(self.last, *state)
            self.saved = epoch
        if self.history_path:
            save_history(self.history_path, self.history)


def start_run(run_dir, model, optimizer, scheduler, device, recipe, *, name="s5", seed=1, pipeline="fast",
              resume=False):
    """The notebook's RunRecord for `run_dir` (last.pt, best.pt, history.json there), with the fp16 gradient
    scaler the recipe needs (`.scaler`; None otherwise) and the run's settings saved with it. With `resume`,
    the run in run_dir is loaded into model, optimizer, scheduler and scaler first, refused if its settings
    differ but for more epochs (check_resume); `.start_epoch` is the epoch to train next."""
    run_dir = Path(run_dir)
    config = run_config(recipe, name=name, seed=seed, pipeline=pipeline)
    scaler = grad_scaler(recipe.precision, device)
    history, start_epoch = new_history(), 1
    if resume:
        done, history = load_checkpoint(run_dir / "last.pt", model, optimizer, scheduler, scaler, config=config)
        start_epoch = done + 1
        print(f"resuming after epoch {done}")
    return RunRecord(model, optimizer, scheduler, history=history, start_epoch=start_epoch, last=run_dir / "last.pt",
                     best=run_dir / "best.pt", config=config, scaler=scaler, history_path=run_dir / "history.json")


def train_recipe(lesson, recipe, device, train_loader, test_loader, *, seed, config=None, history=None,
                 resume_from=None, last=None, best=None, compile_mode="auto", overwrite=False, on_epoch=None):
    """Assemble a run from `recipe` and train it: seed, model, optimizer, scheduler, fp16 scaler, criterion,
    then `recipe.epochs` epochs (lesson.fit) saved to `last` and `best`. `lesson` is the module that holds
    the course's makers and epoch loop (utils): the machinery never imports it, so the scripts hand it in.

    With `resume_from` (a checkpoint of the same run), its weights, optimizer, scheduler, scaler and RNGs are
    loaded first and training goes on after its epoch. `history` (new_history(), filled in place) keeps the
    finished epochs when training stops on an exception. Returns the history; ResumeRefused when
    `resume_from` cannot be continued. (The notebook assembles its run in the open instead, and keeps it with
    start_run.)"""
    set_seed(seed)  # right before the model: its initial weights depend on the seed alone
    model = Net().to(device)
    optimizer = lesson.make_optimizer(model, recipe)
    scheduler = lesson.make_scheduler(optimizer, recipe, len(train_loader))
    scaler = grad_scaler(recipe.precision, device)  # fp16 only: None otherwise
    history = new_history() if history is None else history
    start_epoch = 1
    if resume_from:
        try:
            done, saved = load_checkpoint(resume_from, model, optimizer, scheduler, scaler)
        except ValueError as error:
            raise ResumeRefused(str(error)) from None
        history.update(saved)
        start_epoch = done + 1
        print(f"resumed from {resume_from} after epoch {done}")
    return lesson.fit(model, device, train_loader, test_loader, optimizer, scheduler, recipe.epochs, history=history,
                      start_epoch=start_epoch, checkpoint_path=last, best_path=best, config=config,
                      precision=recipe.precision, channels_last=recipe.channels_last, scaler=scaler,
                      criterion=lesson.make_criterion(recipe), compile_mode=compile_mode, on_epoch=on_epoch,
                      overwrite=overwrite)
