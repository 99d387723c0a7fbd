"""app.py as a learner uses it: the handlers on sketchpad-shaped input, the page's API through
gradio_client, and a real headless Chromium drawing a digit with the mouse."""

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request

import gradio as gr
import numpy as np
import pytest
import torch
from conftest import ROOT, png_claiming
from PIL import Image, ImageDraw

import app
import utils
from app import NO_DIGIT, read_sketch, read_upload
from predict import DEFAULT_CHECKPOINT, load_model, predict
from utils import get_data_loaders

SEVEN = [(0.25, 0.2), (0.75, 0.2), (0.45, 0.85)]  # as fractions of the canvas


def arc(x, y, rx, ry, start=0, end=360, n=24):
    """Points along an ellipse centred on (x, y), clockwise from `start` degrees (0: its top) to `end`."""
    angles = np.radians(np.linspace(start, end, n + 1))
    return [(x + rx * np.sin(a), y - ry * np.cos(a)) for a in angles]


LOWERCASE = {  # those that no digit looks like (tools/outlier_exposure.py's LETTERS)
    "a": [arc(0.45, 0.62, 0.17, 0.2, 30, 390, 16), [(0.63, 0.42), (0.63, 0.85)]],
    "c": [arc(0.5, 0.62, 0.18, 0.22, 45, -225, 12)],
    "d": [arc(0.5, 0.65, 0.15, 0.2, 90, 450, 16), [(0.65, 0.15), (0.65, 0.85)]],
    "e": [[(0.32, 0.62), (0.68, 0.62)] + arc(0.5, 0.62, 0.18, 0.22, 90, -225, 12)],
    "h": [[(0.35, 0.15), (0.35, 0.85)], [(0.35, 0.6)] + arc(0.5, 0.6, 0.15, 0.15, -60, 90, 6) + [(0.65, 0.85)]],
    "k": [[(0.35, 0.15), (0.35, 0.85)], [(0.65, 0.4), (0.35, 0.65), (0.65, 0.85)]],
    "m": [[(0.2, 0.85), (0.2, 0.45), (0.35, 0.4), (0.5, 0.5), (0.5, 0.85)],
          [(0.5, 0.5), (0.65, 0.4), (0.8, 0.5), (0.8, 0.85)]],
    "n": [[(0.3, 0.85), (0.3, 0.45), (0.5, 0.4), (0.7, 0.5), (0.7, 0.85)]],
    "r": [[(0.4, 0.85), (0.4, 0.45), (0.55, 0.4), (0.7, 0.45)]],
    "u": [[(0.3, 0.4), (0.3, 0.75), (0.5, 0.85), (0.7, 0.75), (0.7, 0.4)]],
    "v": [[(0.3, 0.4), (0.5, 0.85), (0.7, 0.4)]],
    "w": [[(0.2, 0.4), (0.33, 0.85), (0.5, 0.55), (0.67, 0.85), (0.8, 0.4)]],
    "x": [[(0.3, 0.4), (0.7, 0.85)], [(0.7, 0.4), (0.3, 0.85)]],
    "y": [[(0.3, 0.35), (0.5, 0.65)], [(0.7, 0.35), (0.4, 0.95)]],
}
DIGITS = {  # each digit as a learner draws it with the mouse, some in two ways
    "0": [arc(0.5, 0.5, 0.22, 0.35)],
    "1": [[(0.5, 0.15), (0.5, 0.85)]],
    "1, with a flag": [[(0.4, 0.25), (0.55, 0.15), (0.55, 0.85)]],
    "2": [arc(0.5, 0.33, 0.2, 0.18, -80, 140, 12) + [(0.3, 0.85), (0.75, 0.85)]],
    "3": [arc(0.5, 0.32, 0.18, 0.17, -70, 180, 12), arc(0.5, 0.67, 0.2, 0.18, 0, 250, 12)],
    "4": [[(0.6, 0.15), (0.25, 0.6), (0.75, 0.6)], [(0.6, 0.15), (0.6, 0.85)]],
    "4, open": [[(0.3, 0.15), (0.3, 0.55), (0.72, 0.55)], [(0.65, 0.15), (0.65, 0.85)]],
    "5": [[(0.7, 0.15), (0.35, 0.15), (0.32, 0.45)] + arc(0.48, 0.63, 0.22, 0.2, -60, 220, 12)],
    "6": [[(0.65, 0.15), (0.35, 0.5)] + arc(0.5, 0.66, 0.18, 0.18, 240, 600, 16)],
    "7": [SEVEN],
    "7, crossed": [SEVEN, [(0.38, 0.5), (0.68, 0.5)]],
    "8": [arc(0.5, 0.32, 0.16, 0.17), arc(0.5, 0.68, 0.2, 0.18)],
    "9": [arc(0.5, 0.33, 0.18, 0.18, 90, 450, 16) + [(0.66, 0.85)]],
}
LETTERS = {  # capitals as a learner draws them with the mouse: strokes through points
    "A": [[(0.2, 0.85), (0.5, 0.15), (0.8, 0.85)], [(0.33, 0.55), (0.67, 0.55)]],
    "C": [[(0.75, 0.25), (0.5, 0.15), (0.3, 0.3), (0.25, 0.5), (0.3, 0.7), (0.5, 0.85), (0.75, 0.75)]],
    "E": [[(0.75, 0.15), (0.3, 0.15), (0.3, 0.85), (0.75, 0.85)], [(0.3, 0.5), (0.65, 0.5)]],
    "F": [[(0.75, 0.15), (0.3, 0.15), (0.3, 0.85)], [(0.3, 0.5), (0.65, 0.5)]],
    "H": [[(0.25, 0.15), (0.25, 0.85)], [(0.75, 0.15), (0.75, 0.85)], [(0.25, 0.5), (0.75, 0.5)]],
    "K": [[(0.3, 0.15), (0.3, 0.85)], [(0.75, 0.15), (0.3, 0.55), (0.75, 0.85)]],
    "M": [[(0.15, 0.85), (0.25, 0.15), (0.5, 0.6), (0.75, 0.15), (0.85, 0.85)]],
    "N": [[(0.25, 0.85), (0.25, 0.15), (0.75, 0.85), (0.75, 0.15)]],
    "P": [[(0.3, 0.85), (0.3, 0.15), (0.65, 0.15), (0.72, 0.3), (0.65, 0.45), (0.3, 0.45)]],
    "R": [[(0.3, 0.85), (0.3, 0.15), (0.65, 0.15), (0.72, 0.3), (0.65, 0.45), (0.3, 0.45), (0.72, 0.85)]],
    "V": [[(0.2, 0.15), (0.5, 0.85), (0.8, 0.15)]],
    "W": [[(0.15, 0.15), (0.3, 0.85), (0.5, 0.4), (0.7, 0.85), (0.85, 0.15)]],
    "X": [[(0.2, 0.15), (0.8, 0.85)], [(0.8, 0.15), (0.2, 0.85)]],
    "Y": [[(0.2, 0.15), (0.5, 0.5), (0.8, 0.15)], [(0.5, 0.5), (0.5, 0.85)]],
}


@pytest.fixture(scope="module")
def shipped():
    """The app's model and min_confidence, as `python app.py` loads them."""
    return load_model(DEFAULT_CHECKPOINT)


@pytest.fixture(scope="module")
def model(shipped):
    return shipped[0]


def sketch(*strokes, background=(0, 0, 0, 0), size=280, width=18):
    """What gr.Sketchpad(type="pil") hands the handler: black strokes on `background` (transparent, as
    where nothing is drawn, or opaque white), each through its points in turn (an empty one draws nothing)."""
    composite = Image.new("RGBA", (size, size), background)
    for stroke in filter(None, strokes):
        ImageDraw.Draw(composite).line([(x * size, y * size) for x, y in stroke], fill=(0, 0, 0, 255), width=width,
                                       joint="curve")
    return {"background": None, "layers": [composite], "composite": composite}


def test_a_drawn_seven_is_read_as_seven_whatever_the_background(shipped):
    model, min_confidence = shipped
    transparent, preview = read_sketch(model, sketch(SEVEN), min_confidence)
    opaque, _ = read_sketch(model, sketch(SEVEN, background=(255, 255, 255, 255)), min_confidence)
    assert max(transparent, key=transparent.get) == "7" and transparent == pytest.approx(opaque)
    assert sum(transparent.values()) == pytest.approx(1, abs=1e-4)
    assert preview.size == (224, 224)
    seen = np.asarray(preview)
    assert seen[:16].max() == 0 and seen.max() == 255  # white ink on black, a margin above the digit


@pytest.mark.parametrize("value", [None, {"background": None, "layers": [], "composite": None}, sketch([])])
def test_an_empty_or_cleared_sketchpad_clears_the_answer(model, value):
    assert read_sketch(model, value) == (None, None)


@pytest.mark.parametrize("picture", [sketch([], background=(255, 255, 255, 255)),  # white, nothing drawn
                                     sketch([(0.5, 0.5), (0.5, 0.5)], width=60)])  # a blot
def test_a_sketch_with_no_digit_says_so(model, picture):
    assert read_sketch(model, picture) == (NO_DIGIT, None)


def test_two_digits_drawn_side_by_side_are_named_not_read_as_one(model):
    one_seven = sketch([(0.15, 0.25), (0.15, 0.75)], [(0.45, 0.25), (0.85, 0.25), (0.6, 0.75)])  # a one, a seven
    assert read_sketch(model, one_seven) == ("2 or more digits side by side; the model reads one digit: give it one "
                                             "at a time", None)


def test_every_digit_drawn_on_the_sketchpad_is_read_right_not_called_a_letter(shipped):
    model, min_confidence = shipped
    for name, strokes in DIGITS.items():
        answer, _ = read_sketch(model, sketch(*strokes), min_confidence)
        assert isinstance(answer, dict) and max(answer, key=answer.get) == name[0], (name, answer)


def test_letters_drawn_on_the_sketchpad_are_named_not_read_as_digits(shipped):
    model, min_confidence = shipped
    for letter, strokes in LETTERS.items():
        answer, preview = read_sketch(model, sketch(*strokes), min_confidence)
        assert isinstance(answer, str) and answer.startswith("not a digit, it seems"), (letter, answer)
        assert preview is not None


def test_small_letters_drawn_on_the_sketchpad_are_nearly_all_named_not_read_as_digits(shipped):
    """Round small letters come close to a digit drawn by hand: all but one or two must be caught."""
    model, min_confidence = shipped
    read = {}
    for letter, strokes in LOWERCASE.items():
        answer, _ = read_sketch(model, sketch(*strokes), min_confidence)
        if isinstance(answer, dict):
            read[letter] = max(answer, key=answer.get)
    assert len(read) <= 2, f"read as digits: {read}"


def uploads(folder):
    """A seven as people upload one: a photo, a phone's photo stored sideways (EXIF orientation 6), black ink
    on transparent paper (as drawing programs export it), a 16-bit scan. Their file names."""
    photo = Image.new("RGB", (640, 480), (235, 230, 220))
    ImageDraw.Draw(photo).line([(250 + 160 * x, 80 + 320 * y) for x, y in SEVEN], fill=(20, 30, 90), width=24)
    photo.save(folder / "photo.jpg")
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: turn 90 degrees clockwise to view
    photo.transpose(Image.Transpose.ROTATE_90).save(folder / "sideways.jpg", exif=exif.tobytes())
    sketch(SEVEN, size=300, width=22)["composite"].save(folder / "transparent.png")
    Image.fromarray(np.asarray(photo.convert("L"), dtype=np.uint16) * 250).save(folder / "scan16.png")
    return ["photo.jpg", "sideways.jpg", "transparent.png", "scan16.png"]


def test_an_upload_is_read_as_predict_py_reads_the_file(shipped, tmp_path):
    model, min_confidence = shipped
    for name in uploads(tmp_path):
        label, preview = read_upload(model, {"path": str(tmp_path / name), "orig_name": name}, min_confidence)
        assert max(label, key=label.get) == "7" and preview is not None, name
    assert read_upload(model, None) == (None, None)


def test_an_unreadable_upload_is_one_line_on_the_page(model, tmp_path):
    (tmp_path / "notes.txt").write_text("not a picture")
    png_claiming(tmp_path / "huge.png", 100_000, 100_000)
    for name, why in [("notes.txt", "not in a picture format"), ("huge.png", "larger than 40 megapixels")]:
        with pytest.raises(gr.Error) as refusal:
            read_upload(model, str(tmp_path / name))
        assert refusal.value.message.startswith(f"{name}: cannot read a picture (") and why in refusal.value.message
        assert "\n" not in refusal.value.message
    for data in ({"url": "data:image/png;base64,iVBORw0KGgo=", "meta": {"_type": "gradio.FileData"}}, {}):
        with pytest.raises(gr.Error) as refusal:
            read_upload(model, data)  # file data that only raw API calls send
        assert refusal.value.message.startswith("the upload holds no file; send the picture as one")


def test_the_shipped_weights_are_small_and_load_safely():
    assert DEFAULT_CHECKPOINT.stat().st_size <= 3_000_000
    state = torch.load(DEFAULT_CHECKPOINT, weights_only=True)
    assert state["config"]["recipe"] == "tuned" and state["config"]["seed"] == 1
    assert 0 < state["min_confidence"] < 1 and state["outlier_exposure"]["epochs"] == 2  # tools/outlier_exposure.py


@pytest.mark.skipif(not os.environ.get("MNIST_DATA_DIR"), reason="MNIST_DATA_DIR is not set")
def test_the_shipped_weights_reach_99_6_percent_on_the_real_test_set_and_call_few_digits_not_a_digit(shipped):
    model, min_confidence = shipped
    _, test_loader = get_data_loaders(1000, device="cpu")
    _, accuracy = utils.test(model, "cpu", test_loader)
    assert accuracy >= 99.6
    top = torch.cat([predict(model, images).max(1).values for images, _ in test_loader])
    assert (top < min_confidence).float().mean() <= 0.003  # 0.19% when taught letters (README)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """`python app.py` on a free local port, as a learner starts it; yields its URL."""
    port = free_port()
    log = tmp_path_factory.mktemp("app") / "app.log"
    env = {**os.environ, "GRADIO_SERVER_PORT": str(port), "GRADIO_SERVER_NAME": "127.0.0.1",
           "GRADIO_ANALYTICS_ENABLED": "False"}
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, str(ROOT / "app.py")], cwd=ROOT, env=env, stdout=out,
                                stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
            try:
                urllib.request.urlopen(url, timeout=2)
                break
            except OSError:
                time.sleep(0.5)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=30)


@pytest.mark.parametrize("port, message", [
    ("99999", "error: cannot start the page: bind(): port must be 0-65535."),
    ("abc", "error: GRADIO_SERVER_PORT='abc' is not a port number; set it to one, such as 7860, or unset it")])
def test_a_port_that_cannot_be_is_one_line(port, message):
    env = {**os.environ, "GRADIO_SERVER_PORT": port, "GRADIO_ANALYTICS_ENABLED": "False"}
    result = subprocess.run([sys.executable, str(ROOT / "app.py")], cwd=ROOT, env=env, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.splitlines()[-1] == message


@pytest.mark.parametrize("host", ["192.0.2.1", "nowhere.invalid", "é" * 70])  # no machine here; no name; no DNS name
def test_a_host_this_machine_is_not_is_named_not_blamed_on_the_ports(monkeypatch, host):
    monkeypatch.setenv("GRADIO_SERVER_NAME", host)
    with pytest.raises(SystemExit) as stop:
        app.main([])
    assert str(stop.value).startswith(f"error: cannot start the page: this machine cannot listen on "
                                      f"GRADIO_SERVER_NAME={host!r} (")
    assert str(stop.value).endswith("); use 127.0.0.1 (this machine only) or 0.0.0.0 (every network it is on)")


def test_the_api_endpoint_answers_gradio_client(server, tmp_path):
    from gradio_client import Client, handle_file
    from gradio_client.exceptions import AppError

    photo = Image.new("L", (300, 300), 255)
    ImageDraw.Draw(photo).line([(300 * x, 300 * y) for x, y in SEVEN], fill=0, width=22)
    photo.save(tmp_path / "seven.png")
    Image.new("L", (300, 300), 255).save(tmp_path / "blank.png")
    client = Client(server, verbose=False)
    result = client.predict(handle_file(str(tmp_path / "seven.png")), api_name="/predict")
    assert result["label"] == "7" and len(result["confidences"]) == 3
    assert result["confidences"][0]["label"] == "7" and result["confidences"][0]["confidence"] > 0.5
    assert client.predict(handle_file(str(tmp_path / "blank.png")), api_name="/predict")["label"] == NO_DIGIT
    for name in uploads(tmp_path):
        assert client.predict(handle_file(str(tmp_path / name)), api_name="/predict")["label"] == "7", name
    (tmp_path / "notes.txt").write_text("not a picture")
    with pytest.raises(AppError, match="^notes.txt: cannot read a picture \\(not in a picture format"):
        client.predict(handle_file(str(tmp_path / "notes.txt")), api_name="/predict")


def chromium():
    return next((path for path in (shutil.which(name) for name in ("chromium", "chromium-browser")) if path), None)


@pytest.mark.skipif(chromium() is None, reason="no Chromium here: apt-get install chromium (.ci/run does)")
def test_a_digit_drawn_with_the_mouse_in_a_real_browser(server, tmp_path):
    from playwright.sync_api import expect, sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium(), args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1200, "height": 900})
            page.goto(server)
            canvas = page.locator("#sketchpad canvas").first
            canvas.wait_for()
            page.get_by_label("Brush", exact=True).click()
            box = canvas.bounding_box()  # the drawing square, 280 px, sits in the middle of it
            left, top = box["x"] + box["width"] / 2 - 140, box["y"] + box["height"] / 2 - 140

            def stroke(points):
                points = [(left + 280 * x, top + 280 * y) for x, y in points]
                page.mouse.move(*points[0])
                page.mouse.down()
                for (ax, ay), (bx, by) in zip(points, points[1:], strict=False):
                    for step in range(1, 16):
                        page.mouse.move(ax + (bx - ax) * step / 15, ay + (by - ay) * step / 15)
                page.mouse.up()

            answer = page.locator("#answer")
            stroke(SEVEN)
            expect(answer.locator("[data-testid='label-output-value']")).to_have_text("7", timeout=30_000)
            expect(page.locator("#seen img")).to_be_visible()
            if os.environ.get("APP_SCREENSHOT"):  # how img/app.png is made
                page.screenshot(path=os.environ["APP_SCREENSHOT"], clip={"x": 100, "y": 0, "width": 1000,
                                                                          "height": 600})
            page.get_by_label("Clear canvas").click()
            expect(answer.locator("[data-testid='label-output-value']")).to_have_count(0, timeout=30_000)
            page.get_by_label("Brush", exact=True).click()
            for points in LETTERS["A"]:
                stroke(points)
            expect(answer.locator("[data-testid='label-output-value']")).to_contain_text("not a digit, it seems",
                                                                                          timeout=30_000)
            page.get_by_role("tab", name="Upload").click()
            uploads(tmp_path)
            page.locator("#upload input[type=file]").set_input_files(tmp_path / "transparent.png")
            expect(answer.locator("[data-testid='label-output-value']")).to_have_text("7", timeout=30_000)
            (tmp_path / "notes.png").write_text("not a picture")
            page.locator("#upload input[type=file]").set_input_files(tmp_path / "notes.png")
            expect(page.get_by_text("notes.png: cannot read a picture (not in a picture format")).to_be_visible(
                timeout=30_000)
            expect(answer.locator("[data-testid='label-output-value']")).to_have_count(0, timeout=30_000)  # 7 gone
            page.locator("#upload input[type=file]").set_input_files(tmp_path / "photo.jpg")
            expect(answer.locator("[data-testid='label-output-value']")).to_have_text("7", timeout=30_000)
            page.locator("#upload").get_by_label("Remove Image").click()
            expect(answer.locator("[data-testid='label-output-value']")).to_have_count(0, timeout=30_000)
        finally:
            browser.close()
