"""Name the digit in your own pictures with a trained Net.

    python predict.py my_seven.jpg scan.png                               # the shipped weights
    python predict.py my_seven.jpg --checkpoint runs/exp/best.pt          # your own run's model

Works on photos or scans of a digit written on paper (dark ink on a light background, any size,
off-centre, colour or grey; 8-bit, 16-bit or float; transparent parts count as white paper) and on
MNIST-style images (light on dark): each is turned into what MNIST looks like before the model sees it
(see preprocess). A picture with no digit on it (blank, noise, a page with a dark area, a dash) is answered
"no digit found", one with several side by side (a number) says so, and one the model is not sure of
("not a digit, it seems": a letter, a sign) where the checkpoint holds a min_confidence (the shipped
weights do; tools/outlier_exposure.py adds one to yours); files that cannot be read get an error line, and
the others still run. Pictures of more than MAX_PIXELS pixels are refused before they are decoded.
"""

import argparse
import sys

from s5.config import device_arg, get_device
from s5.pictures import (  # noqa: F401  (also importable from here, as before the move into s5/)
    DEFAULT_CHECKPOINT,
    MAX_PIXELS,
    NoDigitError,
    NotADigitError,
    SeveralDigitsError,
    check_confident,
    find_ink,
    load_image,
    load_model,
    open_image,
    predict,
    preprocess,
    to_grey,
    unreadable,
)


def main(argv=None):
    p = argparse.ArgumentParser(description="Name the digit in each picture with a trained Net.")
    p.add_argument("images", nargs="+", metavar="IMAGE", help="photos, scans or MNIST-style images of one digit")
    p.add_argument("--checkpoint", default=DEFAULT_CHECKPOINT,
                   help=f"a checkpoint from train.py or the notebook (default: weights/{DEFAULT_CHECKPOINT.name})")
    p.add_argument("--device", type=device_arg, help="cpu, cuda, mps (default: the best available)")
    args = p.parse_args(argv)

    device = args.device or get_device()
    try:
        model, min_confidence = load_model(args.checkpoint, device)
    except (OSError, ValueError) as error:
        sys.exit(f"error: {error}")

    failures = 0
    for path in args.images:
        try:
            image = preprocess(load_image(path))
        except SeveralDigitsError as reason:
            print(f"{path}: {reason}")
            continue
        except NoDigitError as reason:
            print(f"{path}: no digit found ({reason})")
            continue
        except Exception as error:  # whatever the file holds, the pictures after it are still read
            print(f"error: {path}: cannot read a picture ({unreadable(error)})", file=sys.stderr)
            failures += 1
            continue
        probs = predict(model, image, device)[0]
        try:
            check_confident(probs, min_confidence)
        except NotADigitError as reason:
            print(f"{path}: {reason}")
            continue
        top = probs.topk(3)
        ranked = ", ".join(f"{d} {100 * p:.1f}%" for p, d in zip(top.values.tolist(), top.indices.tolist(),
                                                                     strict=True))
        print(f"{path}: {top.indices[0].item()}  ({ranked})")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
