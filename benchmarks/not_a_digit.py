"""How often models answer "not a digit": letters, digits and signs drawn in fonts that
tools/outlier_exposure.py never trains on, and MNIST's test digits, each at one min_confidence.

    python benchmarks/not_a_digit.py BEFORE.pt weights/s5_tuned.pt    # docs/letters.md's table, about a minute

The threshold is the first min_confidence a checkpoint holds, applied to them all, so that a model trained
on digits alone is measured at the same confidence as the one taught letters. MNIST's test digits are
counted when the data is there (--data-dir, $MNIST_DATA_DIR or ./data).
"""

import argparse
import string
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tools")]
from outlier_exposure import (  # noqa: E402
    HELD_OUT_FONTS,
    LETTERS,
    LOOKS_LIKE_A_DIGIT,
    drawn_characters,
    top_probabilities,
)

from predict import load_model, predict  # noqa: E402
from utils import get_data_loaders, test  # noqa: E402

SIGN_FONTS = ["greek", "cyrillic", "astrology", "markers", "meteorology", "symbolic", "mathupp", "music",
              "japanese"]  # no Latin letters or digits in them; none is used in training
SIGNS = list(string.ascii_letters + "!#$%&*+<=>?@")  # the keys; each font draws its own sign for them


def main(argv=None):
    p = argparse.ArgumentParser(description="Share of pictures answered 'not a digit', per checkpoint.")
    p.add_argument("checkpoints", nargs="+")
    p.add_argument("--data-dir", help="folder holding MNIST/raw/ (default: $MNIST_DATA_DIR or ./data)")
    args = p.parse_args(argv)
    torch.manual_seed(0)
    models = {path: load_model(path) for path in args.checkpoints}
    min_confidence = next((c for _, c in models.values() if c is not None), None)
    if min_confidence is None:
        sys.exit("error: no checkpoint holds a min_confidence; make one with tools/outlier_exposure.py")

    like = sorted(LOOKS_LIKE_A_DIGIT)
    sets = {
        "letters no digit looks like": drawn_characters(2000, LETTERS, HELD_OUT_FONTS, seed=21),
        "letters a digit may look like": drawn_characters(1000, like, HELD_OUT_FONTS, seed=22),
        "digits drawn in those fonts": drawn_characters(2000, list("0123456789"), HELD_OUT_FONTS, seed=23),
        "signs it never saw": drawn_characters(2000, SIGNS, SIGN_FONTS, seed=24),
    }
    try:
        _, test_loader = get_data_loaders(1000, args.data_dir, "cpu", download=False)
    except (OSError, ValueError) as error:
        print(f"MNIST's test digits left out: {error}")
        test_loader = None
    print(f"min_confidence {min_confidence:.3f}")
    for path, (model, _) in models.items():
        print(f"\n{path}")
        for name, (images, characters) in sets.items():
            top = top_probabilities(model, images, "cpu")
            line = f"  {name} ({len(images):,}): {100 * (top < min_confidence).float().mean():.1f}% not a digit"
            if name.startswith("digits"):
                read = predict(model, images).argmax(1) == torch.tensor([int(c) for c in characters])
                line += f", read right {100 * read.float().mean():.1f}%"
            print(line)
        if test_loader is not None:
            top = torch.cat([top_probabilities(model, images, "cpu") for images, _ in test_loader])
            _, accuracy = test(model, "cpu", test_loader)
            print(f"  MNIST's test digits ({len(top):,}): {100 * (top < min_confidence).float().mean():.2f}% not a "
                  f"digit, accuracy {accuracy:.2f}%")
    return 0


if __name__ == "__main__":
    sys.exit(main())
