"""predict.py: digits drawn the way users draw them come out the way MNIST looks; pictures with no
digit on them are answered "no digit found"; hostile files are refused with a reason."""

import os

import numpy as np
import pytest
import torch
from conftest import png_claiming
from PIL import Image, ImageDraw, ImageFilter

from predict import MAX_PIXELS, NoDigitError, SeveralDigitsError, load_image, preprocess
from predict import main as predict_main
from utils import MNIST_MEAN, MNIST_STD, get_mnist_datasets

SEVEN = [(0.15, 0.1), (0.85, 0.1), (0.4, 0.9)]  # a seven as a stroke through three points
FOUR = [(0.6, 0.9), (0.6, 0.1), (0.1, 0.65), (0.8, 0.65)]
ONE = [(0.5, 0.05), (0.5, 0.95)]
ZERO = [(0.5, 0.05), (0.85, 0.3), (0.85, 0.7), (0.5, 0.95), (0.15, 0.7), (0.15, 0.3), (0.5, 0.05)]


def draw(points, size, box, ink, paper, width, mode="RGB"):
    """Draw the stroke into `box` (left, top, side) of a `size` canvas."""
    image = Image.new(mode, size, paper)
    left, top, side = box
    ImageDraw.Draw(image).line([(left + x * side, top + y * side) for x, y in points], fill=ink, width=width,
                               joint="curve")
    return image


def pixels(tensor):
    return (tensor[0, 0] * MNIST_STD + MNIST_MEAN).numpy()


def grey(image):
    return np.asarray(image.convert("L"), dtype=np.float32) / 255


def mnist_style(points):
    """Light on dark, 28x28, already MNIST-sized: the reference."""
    return preprocess(grey(draw(points, (28, 28), (4, 4, 20), 255, 0, 2, "L")))


def correlation(a, b):
    return np.corrcoef(pixels(a).ravel(), pixels(b).ravel())[0, 1]


@pytest.mark.parametrize("points", [SEVEN, FOUR])
def test_a_photo_like_digit_matches_its_mnist_style_version(points, tmp_path):
    # Dark blue ink on off-white paper, large, far from the centre, saved as a JPEG like a phone photo.
    photo = draw(points, (900, 600), (520, 60, 300), (20, 30, 90), (235, 230, 220), 28)
    photo.save(tmp_path / "photo.jpg", quality=85)
    ours = preprocess(load_image(tmp_path / "photo.jpg"))
    assert correlation(ours, mnist_style(points)) > 0.8
    assert correlation(ours, mnist_style(SEVEN if points is FOUR else FOUR)) < 0.6


def test_a_phone_photo_is_turned_upright_by_its_exif_orientation(tmp_path):
    upright = draw(SEVEN, (300, 400), (50, 80, 200), (20, 30, 90), (235, 230, 220), 24)
    stored = upright.transpose(Image.Transpose.ROTATE_90)  # as the camera wrote the pixels
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: turn 90 degrees clockwise to view
    stored.save(tmp_path / "phone.jpg", exif=exif.tobytes(), quality=90)
    reference = preprocess(grey(upright))
    assert correlation(preprocess(load_image(tmp_path / "phone.jpg")), reference) > 0.99
    assert correlation(preprocess(grey(stored)), reference) < 0.5  # read as stored, it is another picture


def test_output_follows_mnist_conventions(tmp_path):
    draw(SEVEN, (400, 300), (10, 20, 200), "black", "white", 16).save(tmp_path / "seven.png")
    image = preprocess(load_image(tmp_path / "seven.png"))
    assert image.shape == (1, 1, 28, 28) and image.dtype == torch.float32
    p = pixels(image)
    assert p.min() == pytest.approx(0, abs=1e-5) and p.max() > 0.9  # black background, bright ink
    rows, cols = np.nonzero(p > 0.05)
    assert max(np.ptp(rows), np.ptp(cols)) + 1 in (19, 20, 21)  # fitted into a 20x20 box
    ys, xs = np.indices(p.shape)
    assert abs((ys * p).sum() / p.sum() - 14) < 1 and abs((xs * p).sum() / p.sum() - 14) < 1


def shaded_photo(points, width, seed):
    """A phone photo: uneven light across the page, sensor noise, a blurred stroke, JPEG."""
    rng = np.random.default_rng(seed)
    page = grey(draw(points, (640, 480), (200, 90, 300), 40, 255, width, "L").filter(ImageFilter.GaussianBlur(2)))
    light = np.linspace(0.75, 0.95, 640)[None, :] * np.linspace(0.9, 1.0, 480)[:, None]
    return np.clip(page * light + rng.normal(0, 0.02, page.shape), 0, 1).astype(np.float32)


REAL_DIGITS = {
    "thin pen": grey(draw(SEVEN, (300, 300), (50, 50, 200), 0, 255, 4, "L")),
    "thick marker": grey(draw(FOUR, (300, 300), (50, 50, 200), 0, 255, 40, "L")),
    "a one": grey(draw(ONE, (200, 300), (20, 40, 220), 0, 255, 14, "L")),
    "a bold zero": grey(draw(ZERO, (300, 300), (40, 40, 220), 0, 255, 45, "L")),
    "chalk on a board": grey(draw(ZERO, (300, 300), (40, 40, 220), 230, 30, 12, "L")),
    "mnist style": grey(draw(FOUR, (28, 28), (4, 4, 20), 255, 0, 2, "L")),
    "shaded photo": shaded_photo(SEVEN, 14, 0),
    "shaded photo of a one": shaded_photo(ONE, 12, 1),
    "small digit in a big picture": grey(draw(SEVEN, (1600, 1200), (700, 500, 120), 0, 255, 10, "L")),
}


@pytest.mark.parametrize("name", REAL_DIGITS)
def test_real_digits_are_read(name):
    assert preprocess(REAL_DIGITS[name]).shape == (1, 1, 28, 28)


def two_tone(share, vertical):
    page = np.ones((480, 640), np.float32)
    if vertical:
        page[:, : int(640 * share)] = 0.5
    else:
        page[: int(480 * share)] = 0.5
    return page


def blob(radius):
    page = np.ones((480, 640), np.float32)
    ys, xs = np.indices(page.shape)
    page[(ys - 240) ** 2 + (xs - 320) ** 2 < radius ** 2] = 0.1
    return page


RNG = np.random.default_rng(0)
NO_DIGIT = {
    "blank white page": np.ones((480, 640), np.float32),
    "blank black 28x28": np.zeros((28, 28), np.float32),
    "grey page with sensor noise": np.clip(0.8 + RNG.normal(0, 0.02, (480, 640)), 0, 1).astype(np.float32),
    "uniform noise": RNG.random((480, 640)).astype(np.float32),
    "uniform noise 28x28": RNG.random((28, 28)).astype(np.float32),
    "gaussian noise": np.clip(0.5 + RNG.normal(0, 0.2, (480, 640)), 0, 1).astype(np.float32),
    "salt noise": (RNG.random((480, 640)) < 0.01).astype(np.float32),
    "half-grey page": two_tone(0.5, vertical=True),
    "grey top quarter": two_tone(0.25, vertical=False),
    "grey left tenth": two_tone(0.1, vertical=True),
    "grey right three quarters": 1 - two_tone(0.25, vertical=True) * 0.5,
    "light gradient": np.tile(np.linspace(0.2, 1, 640, dtype=np.float32), (480, 1)),
    "a blot": blob(100),
    "a dot": blob(10),
    "a dash": grey(draw([(0.1, 0.5), (0.9, 0.5)], (640, 480), (0, 0, 640), 0, 255, 16, "L")),
    "a thin line across": grey(draw([(0, 0.5), (1, 0.5)], (10_000, 3), (0, 0, 10_000), 0, 255, 1, "L")),
}


@pytest.mark.parametrize("name", NO_DIGIT)
def test_a_picture_with_no_digit_is_refused(name):
    with pytest.raises(NoDigitError):
        preprocess(NO_DIGIT[name])


def number(*digits, gap):
    """Digits drawn in a row on white paper, `gap` (a share of their height) apart, as a number is written."""
    side, width = 200, 14
    page = Image.new("L", (60 + len(digits) * side + (len(digits) - 1) * int(gap * side), 300), 255)
    for i, points in enumerate(digits):
        left = 30 + i * (side + int(gap * side))
        ImageDraw.Draw(page).line([(left + x * side * 0.6, 50 + y * side) for x, y in points], fill=0, width=width,
                                  joint="curve")
    return grey(page)


@pytest.mark.parametrize("digits, gap, found", [((ONE, SEVEN), 0.5, 2), ((FOUR, ZERO), 0.25, 2),
                                                ((SEVEN, ZERO, FOUR), 0.4, 3)])
def test_digits_side_by_side_are_named_not_read_as_one(digits, gap, found, tmp_path, capsys):
    with pytest.raises(SeveralDigitsError, match=f"^{found} or more digits side by side; the model reads one digit"):
        preprocess(number(*digits, gap=gap))
    Image.fromarray((number(*digits, gap=gap) * 255).astype(np.uint8)).save(tmp_path / "number.png")
    draw(SEVEN, (300, 300), (50, 50, 200), 0, 255, 14, "L").save(tmp_path / "seven.png")
    assert predict_main([str(tmp_path / "number.png"), str(tmp_path / "seven.png")]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f"{tmp_path / 'number.png'}: {found} or more digits side by side; the model reads one digit: " \
                       "give it one at a time" and lines[1].startswith(f"{tmp_path / 'seven.png'}: 7 ")


def test_a_digit_in_two_strokes_close_together_is_one_digit():
    four = draw([(0.3, 0.1), (0.1, 0.6), (0.55, 0.6)], (300, 300), (50, 50, 200), 0, 255, 14, "L")
    ImageDraw.Draw(four).line([(50 + 0.65 * 200, 50 + 0.3 * 200), (50 + 0.65 * 200, 50 + 0.95 * 200)], fill=0,
                              width=14)  # its bar stops short of the upright, less than a tenth of the height away
    assert preprocess(grey(four)).shape == (1, 1, 28, 28)


def test_a_digit_drawn_with_a_one_pixel_pen_is_one_piece_not_specks():
    # Its slanted stroke is a chain of pixels that touch only at their corners: one piece, 8-connected.
    seven = grey(draw(SEVEN, (300, 300), (50, 50, 200), 0, 255, 1, "L"))
    assert preprocess(seven).shape == (1, 1, 28, 28)


@pytest.mark.skipif(not os.environ.get("MNIST_DATA_DIR"), reason="MNIST_DATA_DIR is not set")
def test_pairs_of_mnist_digits_a_fifth_of_their_height_apart_are_named():
    _, test_set = get_mnist_datasets(download=False)
    images, caught = test_set.data.numpy(), 0
    pairs = np.random.default_rng(0).integers(0, len(images), (200, 2))
    for a, b in pairs:
        a, b = (image[:, image.max(0) > 76] for image in (images[a], images[b]))  # cropped to their ink's columns
        row = np.concatenate([a, np.zeros((28, 6), np.uint8), b], axis=1)  # 6 pixels: 0.3 of a 20-pixel digit
        try:
            preprocess(np.pad(row, 4).astype(np.float32) / 255)
        except SeveralDigitsError:
            caught += 1
    assert caught >= 0.9 * len(pairs)  # the others: a one beside a digit with 3 times its ink, read as one digit


@pytest.mark.skipif(not os.environ.get("MNIST_DATA_DIR"), reason="MNIST_DATA_DIR is not set")
def test_no_mnist_test_digit_is_refused():
    _, test_set = get_mnist_datasets(download=False)
    refused = []
    for i, image in enumerate(test_set.data.numpy().astype(np.float32) / 255):
        try:
            preprocess(image)
        except NoDigitError as error:
            refused.append((i, str(error)))
    assert refused == []


def test_sixteen_bit_and_float_pictures_are_scaled_by_their_range(tmp_path):
    eight = draw(SEVEN, (300, 300), (50, 50, 200), 30, 220, 16, "L")
    values = np.asarray(eight, dtype=np.float64)
    Image.fromarray((values * 200).astype(np.uint16)).save(tmp_path / "sixteen.png")  # dark on light, 16-bit
    Image.fromarray((values / 1000 - 3).astype(np.float32), mode="F").save(tmp_path / "float.tiff")
    reference = preprocess(grey(eight))
    for name in ("sixteen.png", "float.tiff"):
        with Image.open(tmp_path / name) as image:
            assert image.mode in ("I", "I;16", "F")
        assert correlation(preprocess(load_image(tmp_path / name)), reference) > 0.99, name


def test_transparent_parts_are_white_paper(tmp_path):
    ink_only = draw(FOUR, (300, 300), (50, 50, 200), (0, 0, 0, 255), (0, 0, 0, 0), 16, "RGBA")
    ink_only.save(tmp_path / "transparent.png")  # black ink, fully transparent black paper
    palette = draw(FOUR, (300, 300), (50, 50, 200), 1, 0, 16, "P")
    palette.putpalette([0, 0, 0, 0, 0, 0])
    palette.save(tmp_path / "palette.png", transparency=0)
    reference = preprocess(grey(draw(FOUR, (300, 300), (50, 50, 200), 0, 255, 16, "L")))
    for name in ("transparent.png", "palette.png"):
        assert correlation(preprocess(load_image(tmp_path / name)), reference) > 0.99, name


@pytest.mark.parametrize("width, height", [(100_000, 100_000), (8_000, 6_000)])
def test_pictures_too_large_are_refused_before_decoding(tmp_path, width, height):
    assert width * height > MAX_PIXELS
    with pytest.raises(ValueError, match="larger than 40 megapixels"):
        load_image(png_claiming(tmp_path / "bomb.png", width, height))


def test_folders_pipes_and_other_files_are_refused_with_a_reason(tmp_path):
    with pytest.raises(ValueError, match="folder"):
        load_image(tmp_path)
    os.mkfifo(tmp_path / "pipe")
    with pytest.raises(ValueError, match="not a regular file"):
        load_image(tmp_path / "pipe")  # opening it would wait for a writer forever
    (tmp_path / "notes.png").write_text("not a picture")
    with pytest.raises(ValueError, match="^not in a picture format that Pillow reads; give a PNG") as refusal:
        load_image(tmp_path / "notes.png")
    assert "notes.png" not in str(refusal.value)  # the caller names the file (the app's is a temporary copy)
