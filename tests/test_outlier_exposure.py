"""tools/outlier_exposure.py, and what its min_confidence does in predict.py and the app: a letter drawn in
strokes is answered "not a digit, it seems"; a digit drawn the same way is still read."""

import random
import sys

import numpy as np
import pytest
import torch
from conftest import ROOT, refusal
from HersheyFonts import HersheyFonts
from PIL import Image

import utils
from app import read_sketch
from model import Net
from predict import DEFAULT_CHECKPOINT, NotADigitError, check_confident, load_model, predict
from predict import main as predict_main

sys.path.insert(0, str(ROOT / "tools"))
from outlier_exposure import HELD_OUT_FONTS, LETTERS, draw, drawn_characters, top_probabilities  # noqa: E402
from outlier_exposure import main as outlier_exposure_main  # noqa: E402

DIGITS = list("0123456789")


@pytest.fixture(scope="module")
def shipped():
    return load_model(DEFAULT_CHECKPOINT)


def drawn(character, font="futuram", seed=0):
    """One character drawn in a Hershey font the fine-tuning never saw: grey, black on white, 200x200."""
    loaded = HersheyFonts()
    loaded.load_default_font(font)
    return draw(character, loaded, random.Random(seed))


def test_the_shipped_weights_answer_not_a_digit_for_letters_in_fonts_they_never_trained_on(shipped):
    model, min_confidence = shipped
    letters, _ = drawn_characters(200, LETTERS, HELD_OUT_FONTS, seed=7)
    assert (top_probabilities(model, letters, "cpu") < min_confidence).float().mean() >= 0.9


def test_the_shipped_weights_still_read_digits_drawn_in_those_fonts(shipped):
    model, min_confidence = shipped
    digits, characters = drawn_characters(200, DIGITS, HELD_OUT_FONTS, seed=8)
    probs = predict(model, digits)
    read = probs.argmax(1) == torch.tensor([int(c) for c in characters])
    assert (read & (probs.max(1).values >= min_confidence)).float().mean() >= 0.95


def test_predict_py_names_a_letter_not_a_digit(tmp_path, capsys):
    for character in "A7":
        Image.fromarray((drawn(character) * 255).astype(np.uint8)).save(tmp_path / f"{character}.png")
    assert predict_main([str(tmp_path / "A.png"), str(tmp_path / "7.png")]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith(f"{tmp_path / 'A.png'}: not a digit, it seems: the model gives no digit over ")
    assert lines[1].startswith(f"{tmp_path / '7.png'}: 7 ")


def test_the_app_names_a_drawn_letter_and_shows_what_the_model_saw(shipped):
    model, min_confidence = shipped
    letter = Image.fromarray((drawn("K") * 255).astype(np.uint8)).convert("RGBA")
    answer, preview = read_sketch(model, {"composite": letter}, min_confidence)
    assert answer.startswith("not a digit, it seems") and preview.size == (224, 224)
    label, _ = read_sketch(model, {"composite": letter})  # a checkpoint without min_confidence: ten digits only
    assert isinstance(label, dict)


def test_check_confident_refuses_only_under_min_confidence():
    probs = torch.tensor([0.3, 0.25] + [0.45 / 8] * 8)
    check_confident(probs, None)
    check_confident(probs, 0.3)
    with pytest.raises(NotADigitError, match="no digit over 30%, and nearly every digit gets 31% or more"):
        check_confident(probs, 0.31)


def test_fine_tuning_lowers_the_models_confidence_in_letters_and_saves_min_confidence(mnist_root, tmp_path):
    torch.manual_seed(0)
    model = Net()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    train_loader, _ = utils.get_data_loaders(64, mnist_root, "cpu")
    for _ in range(3):  # until it reads the synthetic digits, and letters as them with confidence
        utils.train(model, "cpu", train_loader, optimizer)
    utils.save_checkpoint(tmp_path / "run.pt", model, optimizer, None, 3, utils.new_history())
    letters, _ = drawn_characters(100, LETTERS, HELD_OUT_FONTS, seed=3)
    before = top_probabilities(model, letters, "cpu").mean()
    assert before > 0.8
    assert outlier_exposure_main([str(tmp_path / "run.pt"), str(tmp_path / "letters.pt"), "--letters", "100",
                                  "--epochs", "3", "--data-dir", str(mnist_root), "--device", "cpu"]) == 0
    tuned, min_confidence = load_model(tmp_path / "letters.pt")
    assert 0 < min_confidence < 1
    assert top_probabilities(tuned, letters, "cpu").mean() < before - 0.1
    with pytest.raises(ValueError, match="no run resumes from it"):  # weights to share, as export_weights makes
        utils.load_checkpoint(tmp_path / "letters.pt", Net(), optimizer=torch.optim.SGD(Net().parameters(), 0.1))


def test_fine_tuning_refuses_what_it_cannot_do_in_one_line(mnist_root, tmp_path):
    (tmp_path / "notes.txt").write_text("not a checkpoint")
    (tmp_path / "taken.pt").write_bytes(b"mine")
    shipped = str(DEFAULT_CHECKPOINT)
    data = ("--data-dir", mnist_root)
    assert "is not a PyTorch checkpoint" in refusal(outlier_exposure_main, tmp_path / "notes.txt", tmp_path / "o.pt",
                                                    *data)
    assert "taken.pt already exists" in refusal(outlier_exposure_main, shipped, tmp_path / "taken.pt", *data)
    assert (tmp_path / "taken.pt").read_bytes() == b"mine"
    assert "out is the checkpoint itself" in refusal(outlier_exposure_main, shipped, shipped, *data)
    assert "--refuse must be a share between 0 and 1" in refusal(outlier_exposure_main, shipped, tmp_path / "o.pt",
                                                                  "--refuse", "5")
    assert "--lr must be between 0 and 1, got 0.0" in refusal(outlier_exposure_main, shipped, tmp_path / "o.pt",
                                                              "--lr", "0")
    assert not (tmp_path / "o.pt").exists()


def test_a_min_confidence_that_is_not_a_probability_is_refused(tmp_path):
    state = torch.load(DEFAULT_CHECKPOINT, weights_only=True)
    for bad in (1.5, "0.4", 0.0):
        torch.save({**state, "min_confidence": bad}, tmp_path / "bad.pt")
        with pytest.raises(ValueError, match="not a probability between 0 and 1"):
            load_model(tmp_path / "bad.pt")
