"""Draw a digit and watch the Net read it: a Gradio page over a trained checkpoint.

    python app.py                                   # http://127.0.0.1:7860, with the shipped weights
    python app.py --checkpoint runs/exp/best.pt     # your own run's model
    GRADIO_SERVER_PORT=8000 GRADIO_SERVER_NAME=0.0.0.0 python app.py

Draw on the sketchpad or upload a photo or scan of one digit: the page shows the model's top 3 digits
and the 28x28 picture it actually sees. Both go through predict.py's preprocessing (predict.preprocess),
and an upload is read as predict.py reads a file (predict.load_image). The upload's handler is also the
API endpoint /predict (gradio_client).
"""

import argparse
import os
import socket
import sys
from pathlib import Path

if not os.environ.get("GRADIO_SERVER_PORT", "7860").strip().isdigit():  # gradio reads it as it is imported
    sys.exit(f"error: GRADIO_SERVER_PORT={os.environ['GRADIO_SERVER_PORT']!r} is not a port number; set it to one, "
             "such as 7860, or unset it")

import gradio as gr  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

from predict import (  # noqa: E402
    DEFAULT_CHECKPOINT,
    NoDigitError,
    NotADigitError,
    SeveralDigitsError,
    check_confident,
    load_image,
    load_model,
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


def read_picture(model, grey, min_confidence=None):
    """(what gr.Label shows, the 28x28 picture the model saw) for a grey picture [H, W] in [0, 1].

    The label is {digit: probability} for the top 3; NO_DIGIT when the picture holds no digit; the reason
    when it holds several side by side, or when the model is less sure of any digit than min_confidence
    (predict.check_confident; None: never)."""
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
    if composite is None or not np.asarray(composite.convert("RGBA"))[..., 3].any():
        return None, None
    return read_picture(model, to_grey(composite), min_confidence)


def read_upload(model, upload, min_confidence=None):
    """read_picture for an uploaded file (a path, or the upload's file data as Gradio sends it), read as
    predict.py reads one: EXIF rotation, transparency as white paper, 16-bit, the size limit. (None, None)
    when there is none. A file that is not a readable picture raises gr.Error: one line on the page."""
    if upload is None:
        return None, None
    path = upload.get("path") if isinstance(upload, dict) else upload
    if path is None:  # file data with a URL or nothing instead: not what Gradio's clients send
        raise gr.Error("the upload holds no file; send the picture as one (gradio_client: handle_file(PATH))",
                       print_exception=False)
    name = (upload.get("orig_name") if isinstance(upload, dict) else None) or Path(path).name
    try:
        grey = load_image(path)
    except Exception as error:  # whatever the file holds, the page stays up and says why
        raise gr.Error(f"{name}: cannot read a picture ({unreadable(error)})", print_exception=False) from None
    return read_picture(model, grey, min_confidence)


def build_app(model, min_confidence=None):
    """The page: a sketchpad and an upload on the left, the answer and what the model sees on the right;
    min_confidence as read_picture takes it."""
    with gr.Blocks(title="Draw a digit: the S5 Net reads it") as app:
        gr.Markdown("## Draw a digit\nPick the brush (✎, left of the sketchpad) and draw one digit with the mouse, "
                    "or upload a photo of one: the network answers after every stroke, and shows the 28×28 picture "
                    "it sees after preprocessing.")
        with gr.Row():
            with gr.Column():
                with gr.Tab("Draw"):
                    sketch = gr.Sketchpad(label="sketchpad", type="pil", format="png", canvas_size=(CANVAS, CANVAS),
                                          fixed_canvas=True, layers=False, transforms=(),
                                          brush=gr.Brush(default_size=BRUSH, colors=["#000000"], color_mode="fixed"),
                                          elem_id="sketchpad")
                with gr.Tab("Upload"):
                    upload = gr.Image(label="a photo or scan of one digit", type="pil", sources=["upload", "clipboard"],
                                      elem_id="upload")
            with gr.Column():
                answer = gr.Label(num_top_classes=3, label="what the model reads", elem_id="answer")
                seen = gr.Image(label="what the model sees (28×28)", interactive=False, elem_id="seen")
        sketch.change(lambda value: read_sketch(model, value, min_confidence), sketch, [answer, seen], api_name=False,
                      trigger_mode="always_last", show_progress="hidden")
        # preprocess=False: the handler gets the uploaded file itself, not Gradio's RGB decoding of it. The
        # picture it made waits in a State (which the API leaves out) for the preview, so the file is read once.
        preview = gr.State()
        reading = upload.upload(lambda file: read_upload(model, file, min_confidence), upload, [answer, preview],
                                api_name="predict", preprocess=False)
        reading.success(lambda picture: picture, preview, seen, api_name=False)
        reading.failure(lambda: (None, None), None, [answer, seen], api_name=False)  # no answer left from before
        upload.clear(lambda: (None, None), None, [answer, seen], api_name=False)
    return app


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
    try:
        check_host(os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"))
        build_app(model, min_confidence).launch()  # GRADIO_SERVER_PORT and GRADIO_SERVER_NAME pick the address
    except (OSError, OverflowError) as error:  # a port out of range, no free port, a host that is not this machine
        sys.exit(f"error: cannot start the page: {error}")


if __name__ == "__main__":
    main()
