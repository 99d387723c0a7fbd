"""Reading a picture of a digit as MNIST shows one, shared by predict.py and app.py: a photo, scan or drawing
loaded (EXIF rotation, transparency as white paper, 16-bit; MAX_PIXELS refused before decoding), its ink
found and checked (no digit, several side by side), cropped, scaled and centred as MNIST's digits were; a
trained model's checkpoint loaded, and its answer checked against the checkpoint's min_confidence."""

import math
import os
import stat
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps, UnidentifiedImageError

from model import Net
from s5.checkpoints import load_checkpoint, read_checkpoint
from s5.config import IMAGE_SIZE
from s5.device_loader import normalize

# Trained by this repository (the tuned recipe, seed 1, then tools/outlier_exposure.py; docs/letters.md says
# how and how well).
DEFAULT_CHECKPOINT = Path(__file__).resolve().parents[1] / "weights" / "s5_tuned.pt"
MAX_PIXELS = 40_000_000  # a 40-megapixel photo; larger pictures (or decompression bombs) are refused
DIGIT_BOX = 20  # MNIST digits were fitted into 20x20 pixels, then centred by mass in 28x28
INK_THRESHOLD = 0.3  # after contrast stretching, brighter than this counts as ink when cropping

# When a picture holds no digit, or several. Calibrated on the 70,000 MNIST digits, which all pass with a
# margin (at most: ink on 43% of the picture and on 4.5% of its edge; the 3 largest pieces hold >= 84% of
# the ink; strokes at most 5 pixels deep in 28x28; ink at most 2.5 times as wide as it is tall; digits side
# by side: none, 2 if a fifth of the ink and 0.15 of the height were enough).
MIN_SIGNAL_TO_NOISE = 10  # the darkest ink against the paper's pixel-to-pixel noise
MAX_INK = 0.5  # share of the picture's pixels that are ink
MAX_EDGE_INK = 0.15  # share of the picture's edge pixels that are ink
MIN_MAIN_PIECES = 0.75  # share of the ink in its 3 largest connected pieces
MAX_STROKE_DEPTH = 6  # pixels from a stroke's inside to its outside, in the 28x28 image
MAX_WIDTH_TO_HEIGHT = 5  # the ink's width over its height: wider is a dash, a line or an underline
# Digits side by side: columns of ink apart by empty columns, each with a quarter of the ink and half the
# height, the gap a fifth of the height ("42" on one line; two digits that touch are read as one).
DIGIT_MIN_INK, DIGIT_MIN_HEIGHT, DIGIT_MIN_GAP = 0.25, 0.5, 0.2


class NoDigitError(ValueError):
    """The picture holds no digit: blank, noise, or ink that is not strokes."""


class SeveralDigitsError(NoDigitError):
    """The picture holds several digits side by side; the model reads one at a time."""


class NotADigitError(NoDigitError):
    """The model is less sure of any digit than it is of nearly every digit (under its min_confidence)."""


def load_image(path):
    """The picture at path as grey floats [H, W] in [0, 1]: EXIF rotation honoured, transparency flattened
    onto white, 16-bit, 32-bit and float pictures scaled from their darkest to their lightest pixel.
    Raises ValueError or OSError with a reason for anything that is not a readable picture."""
    mode = os.stat(path).st_mode  # FileNotFoundError, PermissionError: their own messages
    if stat.S_ISDIR(mode):
        raise ValueError("it is a folder, not a picture")
    if not stat.S_ISREG(mode):
        raise ValueError("it is not a regular file (a pipe or a device?); give a picture file")
    with open_image(path) as image:
        return to_grey(ImageOps.exif_transpose(image))


def open_image(file):
    """The picture in file (a path or a binary file object) as a PIL image, of which only the header is read:
    one of more than MAX_PIXELS pixels (or a decompression bomb) is refused, with ValueError, before it is
    decoded. So is a file that is not in a picture format Pillow reads."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(file)  # reads the header only: the size is known before decoding
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        image = None  # larger than PIL's own limit
    except UnidentifiedImageError:  # its own message repeats the path
        raise ValueError("not in a picture format that Pillow reads; give a PNG, JPEG, BMP, TIFF, "
                         "GIF or WebP file") from None
    if image is not None and image.width * image.height <= MAX_PIXELS:
        return image
    if image is not None:
        image.close()
    raise ValueError(f"the picture is larger than {MAX_PIXELS // 1_000_000} megapixels (or its header says so); "
                     "shrink it first")


def to_grey(image):
    """A PIL image as grey floats [H, W] in [0, 1], as load_image describes."""
    if image.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):  # more than 8 bits: its own range
        grey = np.asarray(image, dtype=np.float64)
        if not np.isfinite(grey).all():
            raise ValueError("the picture holds NaN or infinite pixel values")
        low, high = grey.min(), grey.max()
        return ((grey - low) / (high - low) if high > low else np.zeros_like(grey)).astype(np.float32)
    if "A" in image.mode or "transparency" in image.info:  # transparent parts are white paper
        image = Image.alpha_composite(Image.new("RGBA", image.size, "white"), image.convert("RGBA"))
    return np.asarray(image.convert("L"), dtype=np.float32) / 255


def _edge(array):
    return np.concatenate([array[0], array[-1], array[:, 0], array[:, -1]])


def _noise(grey):
    """The pixel noise's standard deviation, from neighbour differences (robust: edges and smooth shading
    change few of them)."""
    differences = np.abs(np.diff(grey, axis=1)).ravel()
    return 1.4826 * float(np.median(differences)) / math.sqrt(2) if differences.size else 0.0


def _main_pieces_share(mask, size=128):
    """The share of the ink in its 3 largest 8-connected pieces, on a copy at most `size` pixels across.
    The pieces: union-find over every pair of neighbouring ink pixels, all pairs at once with numpy."""
    ink = torch.from_numpy(mask)[None, None].float()
    factor = math.ceil(max(mask.shape) / size)
    if factor > 1:
        ink = F.max_pool2d(ink, factor, ceil_mode=True)
    ink = ink[0, 0].numpy() > 0
    h, w = ink.shape
    root = np.arange(ink.sum())  # each ink pixel's piece, named by its smallest pixel once all are joined
    index = np.full(ink.shape, -1)
    index[ink] = root
    pairs = []
    for dy, dx in ((0, 1), (1, 0), (1, 1), (1, -1)):  # right, down and both diagonals: each pair once
        x0, x1 = max(0, -dx), w - max(0, dx)
        a, b = index[: h - dy, x0:x1], index[dy:, x0 + dx: x1 + dx]
        both = (a >= 0) & (b >= 0)
        pairs.append(np.stack([a[both], b[both]]))
    a, b = np.concatenate(pairs, axis=1)
    while not np.array_equal(root_a := root[a], root_b := root[b]):
        np.minimum.at(root, np.maximum(root_a, root_b), np.minimum(root_a, root_b))  # hook the larger root
        while not np.array_equal(up := root[root], root):  # then point every pixel at its root
            root = up
    sizes = torch.from_numpy(np.bincount(root)).sort(descending=True).values
    return float(sizes[:3].sum() / sizes.sum())


def _stroke_depth(mask):
    """How many 3x3 erosions the ink in a 2-D boolean mask survives: half its thickest stroke, in pixels."""
    ink, depth = torch.from_numpy(mask)[None, None].float(), 0
    while ink.any():
        ink = -F.max_pool2d(-ink, 3, stride=1, padding=1)
        depth += 1
    return depth


def _digits_side_by_side(ink):
    """How many digits stand side by side in ink cropped to itself: runs of inked columns holding
    DIGIT_MIN_INK of the ink and DIGIT_MIN_HEIGHT of its height each, DIGIT_MIN_GAP of the height apart."""
    mask = ink > INK_THRESHOLD
    inked = np.flatnonzero(np.diff(np.concatenate([[0], mask.any(axis=0), [0]]).astype(np.int8)))
    column_ink = ink.sum(axis=0)
    least_ink = DIGIT_MIN_INK * column_ink.sum()
    digits, end = 0, None
    for first, stop in zip(inked[::2], inked[1::2], strict=True):
        rows = np.flatnonzero(mask[:, first:stop].any(axis=1))
        if column_ink[first:stop].sum() >= least_ink and rows[-1] - rows[0] + 1 >= DIGIT_MIN_HEIGHT * len(mask):
            digits += end is None or first - end >= DIGIT_MIN_GAP * len(mask)
            end = stop
    return max(digits, 1)


def find_ink(grey):
    """The ink of a grey [H, W] picture as floats in [0, 1] (ink 1, paper 0): inverted when the border is
    light, contrast stretched so paper is 0 and the darkest ink 1. Raises NoDigitError when what the
    picture holds cannot be a digit: no ink standing out of the noise, ink over most of it or along its
    edge, or ink scattered in specks."""
    if np.median(_edge(grey)) > 0.5:
        grey = 1.0 - grey
    background = np.median(_edge(grey))
    contrast = grey.max() - background
    if contrast < MIN_SIGNAL_TO_NOISE * max(_noise(grey), 0.5 / 255):
        raise NoDigitError("the picture is blank, or noise with no stroke standing out")
    ink = np.clip((grey - background) / contrast, 0, 1)
    mask = ink > INK_THRESHOLD
    if mask.mean() > MAX_INK:
        raise NoDigitError(f"ink covers {100 * mask.mean():.0f}% of the picture")
    if _edge(mask).mean() > MAX_EDGE_INK:
        raise NoDigitError("the ink runs along the picture's edge (a dark area or shadow, not a digit)")
    if _main_pieces_share(mask) < MIN_MAIN_PIECES:
        raise NoDigitError("the ink is scattered in specks (noise?)")
    return ink


def preprocess(grey):
    """A grey [H, W] picture of one digit -> a normalised [1, 1, 28, 28] tensor, made as MNIST was made.

    Find the ink (find_ink), crop to it, fit into a 20x20 box keeping the aspect ratio, and place it in
    28x28 so that its centre of mass is at the centre. Raises NoDigitError for a picture with no digit
    (see find_ink; also ink far wider than tall, or a solid blob rather than strokes), and its subclass
    SeveralDigitsError for digits side by side.
    """
    ink = find_ink(grey)
    rows, cols = np.nonzero(ink > INK_THRESHOLD)
    ink = ink[rows.min(): rows.max() + 1, cols.min(): cols.max() + 1]
    h, w = ink.shape
    if w > MAX_WIDTH_TO_HEIGHT * h:
        raise NoDigitError(f"the ink is {w / h:.0f} times as wide as it is tall: a dash or a line, not a digit")
    digits = _digits_side_by_side(ink)
    if digits > 1:
        raise SeveralDigitsError(f"{digits} or more digits side by side; the model reads one digit: give it one at "
                                 "a time")
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
    if _stroke_depth(canvas > 0.5) > MAX_STROKE_DEPTH:
        raise NoDigitError("the ink is a solid blob, not strokes")
    return normalize(torch.from_numpy(canvas)[None, None])


def unreadable(error):
    """Why a picture could not be read, in a few words: an OSError's own reason, else the error's message."""
    return getattr(error, "strerror", None) or str(error) or type(error).__name__


def load_model(path, device="cpu"):
    """(a Net with the checkpoint's weights, on device; the checkpoint's min_confidence, or None): the least
    top probability the model gives a digit, below which the picture is "not a digit, it seems". Raises
    OSError or ValueError, with the reason, for a file that is not such a checkpoint."""
    model = Net()
    load_checkpoint(path, model)
    min_confidence = read_checkpoint(path).get("min_confidence")
    if min_confidence is not None and not (isinstance(min_confidence, float) and 0 < min_confidence < 1):
        raise ValueError(f"{path} holds min_confidence {min_confidence!r}, not a probability between 0 and 1; "
                         "make it again with tools/outlier_exposure.py")
    return model.to(device), min_confidence


@torch.no_grad()
def predict(model, images, device="cpu"):
    """Class probabilities [N, 10] for a batch of preprocessed images."""
    model.eval()
    return model(images.to(device)).exp().cpu()


def check_confident(probs, min_confidence):
    """Raise NotADigitError when the top of one picture's probabilities [10] is under min_confidence (a
    letter, a sign: something the model gives less than it gives nearly every digit). None checks nothing."""
    top = probs.max().item()
    if min_confidence is not None and top < min_confidence:
        raise NotADigitError(f"not a digit, it seems: the model gives no digit over {top:.0%}, and nearly every "
                             f"digit gets {min_confidence:.0%} or more")
