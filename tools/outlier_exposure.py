"""Teach a trained Net to say "not a digit": outlier exposure with letters drawn in strokes.

    python tools/outlier_exposure.py runs/exp/best.pt weights/mine.pt    # about 5 minutes on 2 cores
    python predict.py letter_a.png --checkpoint weights/mine.pt          # "not a digit ..."

A Net trained on MNIST knows ten classes and nothing else, so a letter is read as the digit it most
resembles, often confidently. This fine-tunes the model for a few epochs on MNIST with letters mixed into
every batch, each letter's target spread evenly over the ten digits (outlier exposure: Hendrycks, Mazeika
and Dietterich, ICLR 2019), then saves it with `min_confidence`: the top probability that all but
--refuse of MNIST's training digits reach, augmented as in training. predict.py and app.py answer "not a
digit" below it. The file holds weights to share (utils.save_weights): no run resumes from it.

The letters are drawn in Hershey's stroke fonts (each with its own slant, rotation, size and pen) and made
into 28x28 pictures by s5.pictures.preprocess, as a drawn digit is. Letters that a digit may look like (O, l, S,
Z, B, g, ...) are left out: an O may well be a zero. What it prints is measured on fonts it never trained on.
"""

import argparse
import math
import random
import sys
import time
from pathlib import Path

import numpy as np
import torch
from HersheyFonts import HersheyFonts
from PIL import Image, ImageDraw

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from model import Net  # noqa: E402
from s5.cpu_memory import keep_freed_memory  # noqa: E402
from s5.pictures import predict, preprocess  # noqa: E402
from utils import (  # noqa: E402
    Recipe,
    autocast_dtype,
    check_output,
    device_arg,
    get_data_loaders,
    get_device,
    load_checkpoint,
    make_criterion,
    read_checkpoint,
    save_weights,
    set_seed,
    test,
)

LOOKS_LIKE_A_DIGIT = set("OoDIlLijJSsZzBbgqGTt")  # O/o/D 0, I/l/L/i/j/J/T/t 1 or 7, S/s 5, Z/z 2, B 8, b/G 6, g/q 9
LETTERS = [c for c in "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz" if c not in LOOKS_LIKE_A_DIGIT]
TRAINING_FONTS = ["futural", "rowmans", "rowmand", "timesr", "timesrb", "scripts", "cursive"]
HELD_OUT_FONTS = ["futuram", "rowmant", "timesi", "timesib", "scriptc"]  # only for measuring
LETTERS_PER_BATCH = 128  # beside each batch of digits
LETTERS_WEIGHT = 0.5  # of the letters' loss against the digits' (Hendrycks et al.'s value)


def draw(text, font, rng, size=200):
    """`text` drawn in the Hershey stroke `font` on white paper: a grey [size, size] picture in [0, 1],
    with a random slant, rotation (up to 15 degrees), size and pen width from `rng` (a random.Random)."""
    strokes = [list(stroke) for stroke in font.strokes_for_text(text)]
    points = np.array([p for stroke in strokes for p in stroke], float)
    if not len(points):
        raise ValueError(f"the font has no strokes for {text!r}")
    low, high = points.min(0), points.max(0)
    centre = (low + high) / 2
    angle, slant = math.radians(rng.uniform(-15, 15)), rng.uniform(-0.25, 0.25)
    scale = rng.uniform(0.45, 0.8) * size / max(high - low)
    cos, sin = math.cos(angle), math.sin(angle)

    def place(p):
        x, y = (p[0] - centre[0]) * scale, (p[1] - centre[1]) * scale
        x += slant * y
        return size / 2 + x * cos - y * sin, size / 2 + x * sin + y * cos

    picture = Image.new("L", (size, size), 255)
    pen = ImageDraw.Draw(picture)
    width = max(2, round(size / 16 * rng.uniform(0.6, 1.5)))
    for stroke in strokes:
        line = [place(p) for p in stroke]
        if len(line) > 1:
            pen.line(line, fill=0, width=width, joint="curve")
        for x, y in line:  # round ends
            pen.ellipse([x - width / 2, y - width / 2, x + width / 2, y + width / 2], fill=0)
    return np.asarray(picture, np.float32) / 255


def drawn_characters(n, characters, fonts, seed):
    """n pictures of characters drawn in the given Hershey fonts, through s5.pictures.preprocess: a normalised
    [n, 1, 28, 28] tensor, and the characters. A character a font lacks, or a drawing that preprocess
    refuses, is drawn again."""
    rng = random.Random(seed)
    loaded = {}
    for name in fonts:
        loaded[name] = HersheyFonts()
        loaded[name].load_default_font(name)
    images, drawn = [], []
    while len(images) < n:
        character = rng.choice(characters)
        try:
            images.append(preprocess(draw(character, loaded[rng.choice(fonts)], rng)))
        except ValueError:  # NoDigitError among them
            continue
        drawn.append(character)
    return torch.cat(images) if images else torch.empty(0, 1, 28, 28), drawn


def top_probabilities(model, images, device, batch_size=2000):
    """The top class probability for each image [N, 1, 28, 28] (normalised), on the CPU (predict, in batches)."""
    return torch.cat([predict(model, images[i: i + batch_size], device).max(1).values
                      for i in range(0, len(images), batch_size)])


def fine_tune(model, device, train_loader, letters, epochs, criterion, lr=3e-4, seed=0):
    """`epochs` passes over train_loader, each batch of digits trained with `criterion` beside
    LETTERS_PER_BATCH of `letters` (normalised, on any device) trained towards the uniform distribution;
    Adam, its learning rate decaying linearly from `lr` to 0."""
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    decay = torch.optim.lr_scheduler.LinearLR(optimizer, 1.0, 0.0, total_iters=epochs * len(train_loader))
    dtype = autocast_dtype(device)
    dtype = dtype if dtype == torch.bfloat16 else None  # fp16 would need a gradient scaler; fp32 is fine here
    letters = letters.to(device)
    pick = torch.Generator(device=letters.device).manual_seed(seed)
    for epoch in range(1, epochs + 1):
        model.train()
        start = time.perf_counter()
        for images, labels in train_loader:
            images, labels = images.to(device), labels.to(device)
            extra = letters[torch.randint(len(letters), (LETTERS_PER_BATCH,), generator=pick, device=letters.device)]
            with torch.autocast(torch.device(device).type, dtype=dtype, enabled=dtype is not None):
                output = model(torch.cat([images, extra])).float()
            digits, others = output[: len(images)], output[len(images):]
            # Cross-entropy against the uniform distribution: the mean of minus the log-probabilities.
            loss = criterion(digits, labels) + LETTERS_WEIGHT * -others.mean(1).mean()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            decay.step()
        print(f"fine-tuning epoch {epoch}/{epochs}: {time.perf_counter() - start:.0f}s")


def main(argv=None):
    p = argparse.ArgumentParser(description="Fine-tune a trained Net to answer 'not a digit' for letters.")
    p.add_argument("checkpoint", help="the model: a checkpoint of train.py or the notebook, or a state_dict")
    p.add_argument("out", help="where the fine-tuned model is saved")
    p.add_argument("--epochs", type=int, default=4, help="fine-tuning epochs over MNIST (default: 4; 2 are quicker "
                   "but cost a model of the S5 recipe ~0.17 points of test accuracy: docs/letters.md)")
    p.add_argument("--letters", type=int, default=8000, help="letters drawn for training (default: 8000)")
    p.add_argument("--lr", type=float, default=3e-4, help="Adam's learning rate, decaying to 0 (default: 3e-4)")
    p.add_argument("--refuse", type=float, default=0.0005,
                   help="share of MNIST's training digits left under min_confidence (default: 0.0005)")
    p.add_argument("--seed", type=int, default=1, help="random seed (default: 1)")
    p.add_argument("--data-dir", help="folder holding MNIST/raw/ (default: $MNIST_DATA_DIR or ./data)")
    p.add_argument("--device", type=device_arg, help="cpu, cuda, cuda:1, mps (default: the best available)")
    p.add_argument("--overwrite", action="store_true", help="replace `out` if it exists")
    args = p.parse_args(argv)
    if args.epochs < 1 or args.letters < 1:
        sys.exit("error: --epochs and --letters must be at least 1")
    if not 0 < args.lr < 1:
        sys.exit(f"error: --lr must be between 0 and 1, got {args.lr}")
    if not 0 < args.refuse < 1:
        sys.exit(f"error: --refuse must be a share between 0 and 1, got {args.refuse}")
    if Path(args.out).resolve() == Path(args.checkpoint).resolve():
        sys.exit("error: out is the checkpoint itself; give another path, so that the model it holds is kept")

    device = args.device or get_device()
    try:
        state = read_checkpoint(args.checkpoint)
        model = Net()
        load_checkpoint(args.checkpoint, model)
        check_output(args.out, args.overwrite)
        train_loader, test_loader = get_data_loaders(256, args.data_dir, device, seed=args.seed)
    except (OSError, ValueError, RuntimeError) as error:
        sys.exit(f"error: {error}")
    model.to(device)
    if torch.device(device).type == "cpu":
        keep_freed_memory()  # glibc keeps freed memory for reuse (s5/cpu_memory.py): faster epochs
    set_seed(args.seed)
    smoothing = (state.get("config") or {}).get("hyperparameters", {}).get("label_smoothing", 0.0)
    criterion = make_criterion(Recipe(label_smoothing=smoothing))  # the digits' loss, as the run trained them

    def top_probabilities_over(loader):
        return torch.cat([top_probabilities(model, images, device) for images, _ in loader])

    _, before = test(model, device, test_loader)
    start = time.perf_counter()
    letters, _ = drawn_characters(args.letters, LETTERS, TRAINING_FONTS, args.seed)
    print(f"drew {len(letters)} letters in {time.perf_counter() - start:.0f}s")
    fine_tune(model, device, train_loader, letters, args.epochs, criterion, args.lr, args.seed)

    # Calibrated on the training digits as training augments them (rotated, some zoomed): harder than the
    # originals, which the model has learnt closely, so closer to a digit it has never seen.
    min_confidence = torch.quantile(top_probabilities_over(train_loader), args.refuse).item()
    _, after = test(model, device, test_loader)
    test_refused = (top_probabilities_over(test_loader) < min_confidence).float().mean().item()
    held_out, _ = drawn_characters(min(args.letters, 1000), LETTERS, HELD_OUT_FONTS, args.seed + 1)
    letters_refused = (top_probabilities(model, held_out, device) < min_confidence).float().mean().item()

    taught = {"epochs": args.epochs, "letters": args.letters, "lr": args.lr, "refuse": args.refuse, "seed": args.seed,
              "from": str(args.checkpoint)}
    try:
        save_weights(args.out, {**state, "model": model.state_dict(), "min_confidence": min_confidence,
                                "outlier_exposure": taught})
    except OSError as error:
        sys.exit(f"error: {error}")
    print(f"test accuracy {before:.2f}% -> {after:.2f}%; min_confidence {min_confidence:.3f}: under it "
          f"{100 * test_refused:.2f}% of MNIST's test digits and {100 * letters_refused:.1f}% of {len(held_out)} "
          f"letters in fonts it never trained on")
    print(f"saved {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
