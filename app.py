"""Draw a digit and watch the Net read it: a Gradio page over a trained checkpoint.

    python app.py                                   # http://127.0.0.1:7860, with the shipped weights
    python app.py --checkpoint runs/exp/best.pt     # your own run's model
    GRADIO_SERVER_PORT=8000 GRADIO_SERVER_NAME=0.0.0.0 python app.py

Draw on the sketchpad or upload a photo or scan of one digit: the page shows the model's top 3 digits
and the 28x28 picture it actually sees. Both go through the preprocessing predict.py uses (s5.pictures.preprocess),
and an upload is read as predict.py reads a file (s5.pictures.load_image). The upload's handler is also the
API endpoint /predict (gradio_client).

Served to anyone (Hugging Face Spaces, GRADIO_SERVER_NAME=0.0.0.0), it reads only files uploaded to it, of
at most MAX_FILE_SIZE bytes and s5.pictures.MAX_PIXELS pixels (measured before a picture is decoded), one picture
at a time, and deletes them after DELETE_CACHE's age and when it stops.
"""

import argparse
import contextlib
import ctypes
import io
import os
import signal
import socket
import sys
from pathlib import Path

if not os.environ.get("GRADIO_SERVER_PORT", "7860").strip().isdigit():  # gradio reads it as it is imported
    sys.exit(f"error: GRADIO_SERVER_PORT={os.environ['GRADIO_SERVER_PORT']!r} is not a port number; set it to one, "
             "such as 7860, or unset it")

import gradio as gr  # noqa: E402
import torch  # noqa: E402
from gradio.components.base import server  # noqa: E402
from gradio.components.image_editor import EditorData, EditorDataBlobs  # noqa: E402
from gradio.data_classes import ImageData  # noqa: E402
from gradio.utils import get_upload_folder  # noqa: E402
from PIL import Image  # noqa: E402
from pydantic import ValidationError, model_validator  # noqa: E402

from s5.pictures import (  # noqa: E402
    DEFAULT_CHECKPOINT,
    NoDigitError,
    NotADigitError,
    SeveralDigitsError,
    check_confident,
    load_image,
    load_model,
    open_image,
    predict,
    preprocess,
    to_grey,
    unreadable,
)
from utils import MNIST_MEAN, MNIST_STD  # noqa: E402

NO_DIGIT = "no digit found"
CANVAS = 280  # pixels; the brush is sized so that a digit drawn across it has MNIST's stroke width
BRUSH = 18
PREVIEW_SCALE = 8  # the 28x28 picture shown as 224x224, each pixel a square
# Served to anyone: what the page takes in, and keeps. Pictures of more than s5.pictures.MAX_PIXELS are refused
# before they are decoded, however they arrive.
MAX_FILE_SIZE = 10_000_000  # bytes, per file (an upload, a drawing): a phone's photo of a digit takes a few MB
DELETE_CACHE = (60, 600)  # every minute, delete the uploads (and previews) older than 10 minutes; all at the end
DRAWINGS_KEPT = 16_000_000  # bytes of drawings sent and not yet read: the oldest beyond it are dropped
READING = {"concurrency_id": "read", "concurrency_limit": 1}  # one picture read at a time: bounded memory
NOT_UPLOADED = "not a file uploaded to this page; send the picture as an upload (gradio_client: handle_file(PATH))"
NO_FILE = "the upload holds no file; send the picture as one (gradio_client: handle_file(PATH))"
# The sketchpad opens with no tool chosen, and "Clear canvas" unchooses it: choose the brush (the first tool)
# whenever no tool is.
READY_TO_DRAW = """() => new MutationObserver(() => {
    const pad = document.querySelector("#sketchpad"), brush = pad?.querySelector(".toolbar-wrap button");
    if (brush && !pad.querySelector("button.highlight")) brush.click();
}).observe(document.body, {childList: true, subtree: true, attributes: true, attributeFilter: ["class"]})"""


def read_picture(model, grey, min_confidence=None):
    """(what gr.Label shows, the 28x28 picture the model saw) for a grey picture [H, W] in [0, 1].

    The label is {digit: probability} for the top 3; NO_DIGIT when the picture holds no digit; the reason
    when it holds several side by side, or when the model is less sure of any digit than min_confidence
    (s5.pictures.check_confident; None: never)."""
    try:
        image = preprocess(grey)
    except SeveralDigitsError as reason:
        return str(reason), None
    except NoDigitError:
        return NO_DIGIT, None
    probs = predict(model, image)[0]
    seen = (image[0, 0] * MNIST_STD + MNIST_MEAN).clamp(0, 1).mul(255).round().to(torch.uint8).numpy()
    preview = Image.fromarray(seen).resize((28 * PREVIEW_SCALE,) * 2, Image.NEAREST)
    try:
        check_confident(probs, min_confidence)
    except NotADigitError as reason:
        return str(reason), preview
    return {str(digit): float(p) for digit, p in enumerate(probs.tolist())}, preview


def read_sketch(model, sketch, min_confidence=None):
    """read_picture for the sketchpad's value: its composite (RGBA; transparent where nothing is drawn).
    A cleared or untouched sketchpad clears the answer."""
    composite = (sketch or {}).get("composite")
    if composite is None or ("A" in composite.getbands() and not composite.getchannel("A").getbbox()):
        return None, None
    return read_picture(model, to_grey(composite), min_confidence)


def uploaded_path(upload, received):
    """The path of an upload's file (its file data as Gradio sends it, or the path), if it is one this page
    received: written by Gradio's upload route (received: the paths it wrote, Blocks.upload_file_set) and,
    links and .. resolved, in its upload folder. Anything else raises gr.Error, with one message whatever the
    path is, so that a caller learns nothing of the server's files."""
    path = upload.get("path") if isinstance(upload, dict) else upload
    folder = os.path.realpath(get_upload_folder())
    with contextlib.suppress(TypeError, ValueError):  # not a path; a path with a NUL byte
        wanted = os.path.abspath(path)
        # list(): Gradio adds uploads to the set, and deletes old ones, from other threads meanwhile
        if (os.path.commonpath([folder, os.path.realpath(path)]) == folder
                and any(os.path.abspath(sent) == wanted for sent in list(received))):
            return path
    raise gr.Error(NOT_UPLOADED, print_exception=False)


def read_upload(model, upload, min_confidence=None, received=()):
    """read_picture for an uploaded file (a path, or the upload's file data as Gradio sends it), read as
    predict.py reads one: EXIF rotation, transparency as white paper, 16-bit, the size limit. Only a file
    this page received is read (uploaded_path). (None, None) when there is none. Anything else raises
    gr.Error: one line on the page."""
    if upload is None:
        return None, None
    path = upload.get("path") if isinstance(upload, dict) else upload
    if path is None:  # file data with a URL or nothing instead, or not file data at all (lenient)
        raise gr.Error(NO_FILE, print_exception=False)
    path = uploaded_path(upload, received)
    name = (upload.get("orig_name") if isinstance(upload, dict) else None) or Path(path).name
    try:
        grey = load_image(path)
    except Exception as error:  # whatever the file holds, the page stays up and says why
        raise gr.Error(f"{name}: cannot read a picture ({unreadable(error)})", print_exception=False) from None
    return read_picture(model, grey, min_confidence)


def open_drawing(value, received, drawings):
    """The sketchpad's value as Gradio sends it unprocessed, turned into what read_sketch takes: its composite
    as a PIL image, opened as s5.pictures.open_image opens a file (larger than the size limit: refused before it is
    decoded). The page sends the id of a drawing it sent before (to accept_blobs, kept in `drawings`: see
    keep_drawings); an API client may send the composite's file data, of a file it uploaded (uploaded_path).
    gr.Error when it cannot be read."""
    value = value or {}
    if value.get("id") is not None:
        sent = drawings.pop(value["id"], None)
        if sent is None or sent.composite is None:
            raise gr.Error("the drawing did not reach the server whole; draw it again", print_exception=False)
        file = io.BytesIO(sent.composite)
    elif value.get("composite") and value["composite"].get("path") is not None:
        file = uploaded_path(value["composite"], received)
    else:
        return {"composite": None}  # cleared, or nothing drawn
    try:
        with open_image(file) as image:
            return {"composite": image.convert("RGBA")}
    except Exception as error:
        raise gr.Error(f"the drawing: cannot read a picture ({unreadable(error)})", print_exception=False) from None


def give_back_memory():
    """Hand the memory that reading a picture freed back to the OS: glibc keeps it otherwise, in each worker
    thread's arena, and a large picture's arrays take hundreds of MB. Does nothing where libc is not glibc."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def lenient(data_model):
    """A Gradio data model that takes what it cannot validate (a string, a number, a list) as empty, for the
    handler to refuse in one line: Gradio would refuse it with the validation error's traceback on the server's
    console, and tell the caller nothing."""
    class Lenient(data_model):
        @model_validator(mode="wrap")
        @classmethod
        def _or_empty(cls, value, handler):
            try:
                return handler(value)
            except ValidationError:
                return cls()

    Lenient.__name__ = Lenient.__qualname__ = data_model.__name__
    return Lenient


class Drawing(EditorData):
    """The sketchpad's value, its pictures' file data without Gradio's file marker too (open_drawing checks
    every path, as read_upload does)."""
    background: ImageData | None = None
    layers: list[ImageData] = []
    composite: ImageData | None = None


def keep_drawings(drawings):
    """An accept_blobs for gr.Sketchpad (where the page sends a drawing's pictures before it calls the handler
    with the drawing's id), keeping in `drawings` (its blob_storage) only each drawing's composite, and at most
    DRAWINGS_KEPT bytes of those not yet read. Gradio's own keeps every picture of every drawing sent, read or
    not (trigger_mode="always_last" skips some), as long as the server runs, and makes room for as many
    layers as a request names."""
    @server
    def accept_blobs(data):
        fields = data.data if isinstance(data.data, dict) else {}
        if fields.get("type") != "composite" or not isinstance(fields.get("id"), str) or len(data.files) != 1:
            return  # the background and the layers: read by no one
        drawings[fields["id"]] = EditorDataBlobs(background=None, layers=[], composite=data.files[0][1])
        # Copies and pop(): the handler takes drawings out of the dict from another thread meanwhile.
        while sum(len(drawing.composite) for drawing in list(drawings.values())) > DRAWINGS_KEPT:
            drawings.pop(next(iter(drawings), None), None)  # the oldest

    return accept_blobs


def build_app(model, min_confidence=None):
    """The page: two tabs, "Draw" (a sketchpad) and "Upload", each with its own answer and the picture the
    model saw beside it, so that a drawing's answer that comes late never stands beside an upload (nor the
    other way round); min_confidence as read_picture takes it. It reads only what it was sent (uploaded_path),
    one picture at a time, and deletes uploads after DELETE_CACHE; launch it with launch_options()."""
    with gr.Blocks(title="Draw a digit: the S5 Net reads it", delete_cache=DELETE_CACHE) as app:
        gr.Markdown("## Draw a digit\nDraw one digit with the mouse, or upload a photo of one: the network answers "
                    "after every stroke, and shows the 28×28 picture it sees after preprocessing.")
        with gr.Tab("Draw"), gr.Row():
            sketch = gr.Sketchpad(label="sketchpad", type="pil", format="png", canvas_size=(CANVAS, CANVAS),
                                  fixed_canvas=True, layers=False, transforms=(),
                                  brush=gr.Brush(default_size=BRUSH, colors=["#000000"], color_mode="fixed"),
                                  elem_id="sketchpad")
            drawn_answer, drawn_seen = answer_column("answer", "seen")
        with gr.Tab("Upload"), gr.Row():
            upload = gr.Image(label="a photo or scan of one digit", type="pil", sources=["upload", "clipboard"],
                              elem_id="upload")
            answer, seen = answer_column("upload-answer", "upload-seen")
        # The handlers get what was sent, malformed or not, to refuse it in one line (lenient); set on the
        # components, as subclasses of them would make Gradio write app.pyi.
        upload.data_model, sketch.data_model = lenient(ImageData), lenient(Drawing)
        sketch.accept_blobs = keep_drawings(sketch.blob_storage)

        def read_drawing(value):
            try:
                drawing = open_drawing(value, app.upload_file_set, sketch.blob_storage)
                return read_sketch(model, drawing, min_confidence)
            finally:
                give_back_memory()

        def read_file(file):
            try:
                return read_upload(model, file, min_confidence, app.upload_file_set)
            finally:
                give_back_memory()

        # preprocess=False: the handlers get what was sent, not Gradio's decoding of it, and check it themselves
        # (Gradio decodes a picture whole, whatever its size). The upload's picture waits in a State (which the
        # API leaves out) for the preview, so the file is read once.
        sketch.change(read_drawing, sketch, [drawn_answer, drawn_seen], api_name=False, trigger_mode="always_last",
                      show_progress="hidden", preprocess=False, **READING)
        preview = gr.State()
        reading = upload.upload(read_file, upload, [answer, preview], api_name="predict", preprocess=False, **READING)
        reading.success(lambda picture: picture, preview, seen, api_name=False)
        reading.failure(lambda: (None, None), None, [answer, seen], api_name=False)  # no answer left from before
        upload.clear(lambda: (None, None), None, [answer, seen], api_name=False)
    return app


def answer_column(answer_id, seen_id):
    """What the model reads (the top 3 digits, or why none) and the 28×28 picture it saw, one above the other."""
    with gr.Column():
        return (gr.Label(num_top_classes=3, label="what the model reads", elem_id=answer_id),
                gr.Image(label="what the model sees (28×28)", interactive=False, elem_id=seen_id))


def launch_options():
    """The keywords of Blocks.launch for serving the page to anyone: uploads at most MAX_FILE_SIZE, and the
    page's script that makes the sketchpad ready to draw."""
    return {"max_file_size": MAX_FILE_SIZE, "js": READY_TO_DRAW}


def check_host(host):
    """Raise OSError, naming `host`, when this machine cannot listen on it over IPv4, as gradio does: a
    mistyped GRADIO_SERVER_NAME, which gradio would report as no free port."""
    try:
        with socket.socket() as listener:
            listener.bind((host, 0))
    except (OSError, TypeError) as error:  # TypeError: a name that cannot be encoded (non-ASCII, over 63 letters)
        reason = getattr(error, "strerror", None) or error
        raise OSError(f"this machine cannot listen on GRADIO_SERVER_NAME={host!r} ({reason}); "
                      "use 127.0.0.1 (this machine only) or 0.0.0.0 (every network it is on)") from None


def main(argv=None):
    p = argparse.ArgumentParser(description="A page to draw a digit on and watch the Net read it.")
    p.add_argument("--checkpoint", default=DEFAULT_CHECKPOINT,
                   help=f"a checkpoint from train.py or the notebook (default: weights/{DEFAULT_CHECKPOINT.name})")
    args = p.parse_args(argv)
    try:
        model, min_confidence = load_model(args.checkpoint)
    except (OSError, ValueError) as error:
        sys.exit(f"error: {error}")
    app = None
    try:
        check_host(os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"))
        app = build_app(model, min_confidence)
        # Stopped as services are stopped (SIGTERM), it exits at once, deleting its files below. Gradio's own
        # close waits for open connections (a browser's, a client's), then gives up and deletes nothing.
        signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(0))
        app.launch(**launch_options())  # GRADIO_SERVER_PORT and GRADIO_SERVER_NAME pick the address
    except (OSError, OverflowError) as error:  # a port out of range, no free port, a host that is not this machine
        sys.exit(f"error: cannot start the page: {error}")
    finally:
        if app is not None:
            delete_files(app)


def delete_files(app):
    """Delete the files the page received or made (uploads, previews): what delete_cache deletes by age."""
    for files in app.temp_file_sets:
        for path in list(files):
            with contextlib.suppress(OSError):
                os.remove(path)
            files.discard(path)


if __name__ == "__main__":
    main()
