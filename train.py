"""Train the S5 Net on MNIST from the shell: the notebook's job, one line per epoch.

    python train.py                          # the S5 recipe on the fast pipeline
    python train.py --pipeline s5            # the original S5 torchvision pipeline
    python train.py --recipe onecycle        # the short recipe: 8 epochs of Adam under OneCycleLR
    python train.py --resume checkpoints/last.pt
"""

import argparse
import json
import os
import sys
from pathlib import Path

from model import Net
from utils import (
    ORIGINAL_STEP,
    PIPELINES,
    PRECISIONS,
    RECIPES,
    fit,
    get_data_loaders,
    get_device,
    get_recipe,
    load_checkpoint,
    make_optimizer,
    make_scheduler,
    new_history,
    plot_train_metrics,
    resolve_device,
    set_seed,
)


def positive(kind):
    def parse(text):
        value = kind(text)
        if not value > 0:
            raise argparse.ArgumentTypeError(f"must be positive, got {text}")
        return value
    return parse


def device_arg(text):
    try:
        return resolve_device(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def parse_args(argv=None):
    p = argparse.ArgumentParser(description="Train the S5 Net on MNIST.")
    p.add_argument("--recipe", choices=sorted(RECIPES), default="s5",
                   help="hyperparameter set; the flags below override its values (default: s5)")
    p.add_argument("--epochs", type=positive(int), help="epochs to train (s5: 20)")
    p.add_argument("--batch-size", type=positive(int), help="batch size (s5: 512)")
    p.add_argument("--lr", type=positive(float), help="learning rate; OneCycle's peak (s5: 0.01)")
    p.add_argument("--momentum", type=float, help="SGD momentum (s5: 0.9; Adam ignores it)")
    p.add_argument("--step-size", type=positive(int), help="StepLR: epochs between decays (s5: 15)")
    p.add_argument("--gamma", type=positive(float), help="StepLR: decay factor (s5: 0.1)")
    p.add_argument("--seed", type=int, default=1, help="random seed (default: 1)")
    p.add_argument("--data-dir", help="folder holding MNIST/raw/ (default: $MNIST_DATA_DIR or ./data)")
    p.add_argument("--device", type=device_arg, default=None,
                   help="cpu, cuda, cuda:1, mps (default: the best available)")
    p.add_argument("--pipeline", choices=PIPELINES, default="fast",
                   help="fast: batched augmentation on the device; s5: the original torchvision pipeline")
    p.add_argument("--precision", choices=PRECISIONS,
                   help="auto: bf16 where the hardware does it natively (default; --pipeline s5: fp32)")
    p.add_argument("--checkpoint", default="checkpoints/best.pt", help="where the best model is saved")
    p.add_argument("--last", default="checkpoints/last.pt", help="where the latest epoch is saved")
    p.add_argument("--resume", metavar="PATH", help="continue the run saved in this checkpoint")
    p.add_argument("--history", default="history.json", help="where the metric history is written")
    p.add_argument("--plot", default="img/train_metrics.png", help="where the 2x2 metrics plot is saved")
    p.add_argument("--dry-run", action="store_true", help="one batch of train and test, for a quick check")
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    try:
        recipe = get_recipe(args.recipe, epochs=1 if args.dry_run else args.epochs, batch_size=args.batch_size,
                            lr=args.lr, momentum=args.momentum, step_size=args.step_size, gamma=args.gamma)
        device = args.device or get_device()
        set_seed(args.seed)
        train_loader, test_loader = get_data_loaders(recipe.batch_size, args.data_dir, device, args.pipeline,
                                                     seed=args.seed)
    except (ValueError, FileNotFoundError, RuntimeError) as error:
        sys.exit(f"error: {error}")
    print(f"device {device}, pipeline {args.pipeline}, {recipe}")

    model = Net().to(device)
    optimizer = make_optimizer(model, recipe)
    if args.dry_run:
        train_loader, test_loader = [next(iter(train_loader))], [next(iter(test_loader))]
    scheduler = make_scheduler(optimizer, recipe, len(train_loader))
    history, start_epoch = new_history(), 1
    if args.resume:
        try:
            done, history = load_checkpoint(args.resume, model, optimizer, scheduler)
        except (ValueError, FileNotFoundError) as error:
            sys.exit(f"error: {error}")
        start_epoch = done + 1
        print(f"resumed from {args.resume} after epoch {done}")

    dry = args.dry_run
    step = dict(ORIGINAL_STEP) if args.pipeline == "s5" else {}  # the original S5 training step too
    if args.precision:
        step["precision"] = args.precision
    try:
        fit(model, device, train_loader, test_loader, optimizer, scheduler, recipe.epochs, history=history,
            start_epoch=start_epoch, checkpoint_path=None if dry else args.last,
            best_path=None if dry else args.checkpoint, **step)
    except KeyboardInterrupt:
        print(f"resume with: python train.py --resume {args.last}")
        code = 130
    except FloatingPointError as error:
        sys.exit(f"error: {error}; the last good checkpoint is {args.last}")
    else:
        code = 0
    finally:
        if not dry and history["epoch"]:
            tmp = Path(f"{args.history}.tmp")  # written whole, then renamed: never half a file
            tmp.write_text(json.dumps(history, indent=1))
            os.replace(tmp, args.history)
            plot_train_metrics(history, save_path=args.plot)
            print(f"history: {args.history}, plot: {args.plot}, best model: {args.checkpoint}")
    return code


if __name__ == "__main__":
    sys.exit(main())
