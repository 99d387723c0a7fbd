"""train.py and predict.py from the shell, as a user runs them."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image

from model import Net
from utils import get_mnist_datasets, load_checkpoint, new_history, normalize, save_checkpoint

ROOT = Path(__file__).resolve().parents[1]


def run(script, *args, cwd=None):
    env = {**os.environ, "MPLBACKEND": "Agg"}
    return subprocess.run([sys.executable, str(ROOT / script), *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, env=env, timeout=600)


def test_train_help():
    result = run("train.py", "--help")
    assert result.returncode == 0
    for flag in ("--epochs", "--batch-size", "--lr", "--momentum", "--step-size", "--gamma", "--seed",
                 "--data-dir", "--device", "--pipeline", "--checkpoint", "--resume", "--dry-run"):
        assert flag in result.stdout


@pytest.mark.parametrize("args, message", [
    (["--epochs", "0"], "--epochs: must be positive"),
    (["--lr", "-1"], "--lr: must be positive"),
    (["--batch-size", "many"], "--batch-size: invalid"),
    (["--pipeline", "pil"], "--pipeline: invalid choice"),
])
def test_train_bad_values_get_argparse_errors(args, message):
    result = run("train.py", *args)
    assert result.returncode == 2 and message in result.stderr


@pytest.mark.parametrize("pipeline", ["fast", "s5"])
def test_train_dry_run(mnist_root, tmp_path, pipeline):
    result = run("train.py", "--dry-run", "--data-dir", mnist_root, "--pipeline", pipeline, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "Epoch 1: train loss" in result.stdout


def test_train_writes_history_plot_and_checkpoints_then_resumes(mnist_root, tmp_path):
    common = ["--data-dir", mnist_root, "--batch-size", "128", "--device", "cpu"]
    result = run("train.py", "--epochs", "2", *common, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    history = json.loads((tmp_path / "history.json").read_text())
    assert history["epoch"] == [1, 2]
    assert (tmp_path / "img" / "train_metrics.png").stat().st_size > 1000
    assert (tmp_path / "checkpoints" / "best.pt").exists()
    result = run("train.py", "--epochs", "3", "--resume", "checkpoints/last.pt", *common, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "resumed from checkpoints/last.pt after epoch 2" in result.stdout and "Epoch 3:" in result.stdout
    assert json.loads((tmp_path / "history.json").read_text())["epoch"] == [1, 2, 3]


def test_train_without_data_is_one_clear_error(tmp_path):
    env_free = run("train.py", "--dry-run", "--data-dir", tmp_path / "empty", cwd=tmp_path)
    assert env_free.returncode == 1
    assert env_free.stderr.strip().startswith("error: MNIST files missing in") and "Traceback" not in env_free.stderr


def random_checkpoint(path):
    torch.manual_seed(0)
    save_checkpoint(path, Net(), None, None, 1, new_history())
    return path


def test_predict_prints_a_line_per_image_and_survives_a_bad_one(tmp_path):
    checkpoint = random_checkpoint(tmp_path / "model.pt")
    Image.new("L", (60, 40), 255).save(tmp_path / "blank.png")
    digit = Image.new("L", (28, 28), 0)
    digit.paste(255, (10, 5, 16, 23))
    digit.save(tmp_path / "one.png")
    (tmp_path / "notes.txt").write_text("not an image")
    result = run("predict.py", tmp_path / "notes.txt", tmp_path / "one.png", tmp_path / "blank.png",
                 "--checkpoint", checkpoint)
    assert result.returncode == 1
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"{tmp_path / 'one.png'}: ") and lines[0].count("%") == 3
    assert "notes.txt: cannot read a digit" in result.stderr and "blank.png: cannot read a digit" in result.stderr
    assert "Traceback" not in result.stderr


def test_predict_with_a_missing_checkpoint(tmp_path):
    result = run("predict.py", "x.png", "--checkpoint", tmp_path / "none.pt")
    assert result.returncode == 1 and "none.pt does not exist" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.skipif(not os.environ.get("MNIST_DATA_DIR"), reason="MNIST_DATA_DIR is not set")
def test_predict_reads_digits_photographed_on_paper(tmp_path):
    """Train one epoch on real MNIST, then read test digits redrawn as dark ink on light paper."""
    data_dir = Path(os.environ["MNIST_DATA_DIR"]).resolve()
    result = run("train.py", "--epochs", "1", "--device", "cpu", "--data-dir", data_dir, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    _, test_set = get_mnist_datasets(download=False)
    paths, labels = [], []
    for i in range(20):
        digit = Image.fromarray(255 - test_set.data[i].numpy()).resize((240, 240), Image.BICUBIC)
        paper = Image.new("RGB", (640, 480), (240, 236, 228))
        paper.paste(digit.convert("RGB"), (40 + 17 * i, 30 + 9 * i))
        paths.append(tmp_path / f"photo{i}.jpg")
        paper.save(paths[-1], quality=90)
        labels.append(int(test_set.targets[i]))
    checkpoint = tmp_path / "checkpoints" / "best.pt"
    result = run("predict.py", *paths, "--checkpoint", checkpoint)
    assert result.returncode == 0, result.stderr
    predicted = [int(line.split(": ")[1].split()[0]) for line in result.stdout.strip().splitlines()]
    # What the same model says of the original 28x28 images: preprocessing should change little.
    model = Net()
    load_checkpoint(checkpoint, model)
    with torch.no_grad():
        direct = model(normalize(test_set.data[:20, None].float() / 255)).argmax(dim=1).tolist()
    assert sum(p == d for p, d in zip(predicted, direct, strict=True)) >= 18, (predicted, direct)
    assert sum(p == t for p, t in zip(predicted, labels, strict=True)) >= 15, (predicted, labels)
