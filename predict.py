"""Name the digit in your own pictures with a trained Net.

    python predict.py my_seven.jpg scan.png --checkpoint checkpoints/best.pt

Works on photos or scans of a digit written on paper (dark ink on a light background, any size,
off-centre, colour or grey) and on MNIST-style images (light on dark): each is turned into what MNIST
looks like before the model sees it (see preprocess).
"""

import argparse
import sys

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from model import Net
from train import device_arg
from utils import IMAGE_SIZE, get_device, load_checkpoint, normalize

DIGIT_BOX = 20  # MNIST digits were fitted into 20x20 pixels, then centred by mass in 28x28
INK_THRESHOLD = 0.3  # after contrast stretching, brighter than this counts as ink when cropping


def load_image(path):
    """The image at path as grey floats in [0, 1], honouring EXIF rotation; transparency becomes white."""
    with Image.open(path) as image:
        image = ImageOps.exif_transpose(image)
        if image.mode in ("RGBA", "LA", "P"):
            image = image.convert("RGBA")
            background = Image.new("RGBA", image.size, "white")
            image = Image.alpha_composite(background, image)
        return np.asarray(image.convert("L"), dtype=np.float32) / 255


def preprocess(grey):
    """A grey [H, W] picture of one digit -> a normalised [1, 1, 28, 28] tensor, made as MNIST was made.

    Invert when the background (the border's median) is light, stretch the contrast so paper is 0 and
    the darkest ink 1, crop to the ink, fit into a 20x20 box keeping the aspect ratio, and place it in
    28x28 so that its centre of mass is at the centre.
    """
    border = np.concatenate([grey[0], grey[-1], grey[:, 0], grey[:, -1]])
    if np.median(border) > 0.5:
        grey = 1.0 - grey
    background = np.median(np.concatenate([grey[0], grey[-1], grey[:, 0], grey[:, -1]]))
    ink = np.clip((grey - background) / max(grey.max() - background, 1e-6), 0, 1)
    rows, cols = np.nonzero(ink > INK_THRESHOLD)
    if len(rows) == 0:
        raise ValueError("no ink found: the picture is blank or has no contrast")
    ink = ink[rows.min(): rows.max() + 1, cols.min(): cols.max() + 1]
    h, w = ink.shape
    scale = DIGIT_BOX / max(h, w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    digit = np.asarray(Image.fromarray((ink * 255).astype(np.uint8)).resize(size, Image.LANCZOS),
                       dtype=np.float32) / 255
    canvas = np.zeros((IMAGE_SIZE, IMAGE_SIZE), dtype=np.float32)
    ys, xs = np.indices(digit.shape)
    mass = digit.sum()
    cy, cx = (ys * digit).sum() / mass, (xs * digit).sum() / mass
    top = int(round(IMAGE_SIZE / 2 - cy))
    left = int(round(IMAGE_SIZE / 2 - cx))
    top = min(max(top, 0), IMAGE_SIZE - digit.shape[0])
    left = min(max(left, 0), IMAGE_SIZE - digit.shape[1])
    canvas[top: top + digit.shape[0], left: left + digit.shape[1]] = digit
    return normalize(torch.from_numpy(canvas)[None, None])


@torch.no_grad()
def predict(model, images, device="cpu"):
    """Class probabilities [N, 10] for a batch of preprocessed images."""
    model.eval()
    return model(images.to(device)).exp().cpu()


def main(argv=None):
    p = argparse.ArgumentParser(description="Name the digit in each picture with a trained Net.")
    p.add_argument("images", nargs="+", metavar="IMAGE", help="photos, scans or MNIST-style images of one digit")
    p.add_argument("--checkpoint", required=True, help="a checkpoint from train.py or the notebook")
    p.add_argument("--device", type=device_arg, help="cpu, cuda, mps (default: the best available)")
    args = p.parse_args(argv)

    device = args.device or get_device()
    model = Net()
    try:
        load_checkpoint(args.checkpoint, model)
    except (FileNotFoundError, ValueError) as error:
        sys.exit(f"error: {error}")
    model.to(device)

    failures = 0
    for path in args.images:
        try:
            image = preprocess(load_image(path))
        except (OSError, UnidentifiedImageError, ValueError) as error:
            print(f"error: {path}: cannot read a digit ({error})", file=sys.stderr)
            failures += 1
            continue
        probs = predict(model, image, device)[0]
        top = probs.topk(3)
        ranked = ", ".join(f"{d} {100 * p:.1f}%" for p, d in zip(top.values.tolist(), top.indices.tolist(),
                                                                     strict=True))
        print(f"{path}: {top.indices[0].item()}  ({ranked})")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
