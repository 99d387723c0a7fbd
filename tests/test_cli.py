"""train.py and predict.py as a user runs them: from the shell, or by their main() in this process where a
process of their own would test nothing more."""

import json
import os
import subprocess
import sys

import pytest
import torch
from conftest import ROOT, png_claiming, refusal, train_py, train_py_refusal
from PIL import Image, ImageDraw

import app
import predict
import train
from model import Net
from predict import DEFAULT_CHECKPOINT
from utils import get_mnist_datasets, load_checkpoint, new_history, normalize, save_checkpoint


def run(script, *args, cwd=None):
    env = {**os.environ, "MPLBACKEND": "Agg"}
    return subprocess.run([sys.executable, str(ROOT / script), *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, env=env, timeout=600)


def test_train_help(capsys):
    with pytest.raises(SystemExit) as exit:  # train.main as `python train.py --help` runs it
        train.main(["--help"])
    assert exit.value.code == 0
    out = capsys.readouterr().out
    for flag in ("--epochs", "--batch-size", "--lr", "--momentum", "--step-size", "--gamma", "--seed",
                 "--data-dir", "--device", "--pipeline", "--checkpoint", "--resume", "--dry-run"):
        assert flag in out


@pytest.mark.parametrize("args, message", [
    (["--epochs", "0"], "--epochs: must be positive"),
    (["--lr", "-1"], "--lr: must be positive"),
    (["--batch-size", "many"], "--batch-size: must be a whole number, got 'many'"),
    (["--epochs", "1.5"], "--epochs: must be a whole number, got '1.5'"),
    (["--lr", "fast"], "--lr: must be a number, got 'fast'"),
    (["--pipeline", "pil"], "--pipeline: invalid choice"),
    (["--compile", "max"], "--compile: invalid choice"),
])
def test_train_bad_values_get_argparse_errors(args, message, capsys):
    with pytest.raises(SystemExit) as exit:  # train.main as `python train.py ARGS` runs it, without a new Python
        train.main(args)
    assert exit.value.code == 2 and message in capsys.readouterr().err


@pytest.mark.parametrize("pipeline, more", [("fast", []), ("s5", []), ("fast", ["--compile", "cudagraphs"])])
def test_train_dry_run(mnist_root, tmp_path, pipeline, more):
    result = train_py("--dry-run", "--data-dir", mnist_root, "--pipeline", pipeline, *more, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "Epoch 1: train loss" in result.stdout


def test_train_writes_history_plot_and_checkpoints_then_resumes(mnist_root, tmp_path):
    common = ["--data-dir", mnist_root, "--device", "cpu"]
    result = run("train.py", "--epochs", "2", "--batch-size", "128", *common, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "run folder: runs/exp" in result.stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == ["runs"]  # nothing outside the run folder
    run_dir = tmp_path / "runs" / "exp"
    assert json.loads((run_dir / "history.json").read_text())["epoch"] == [1, 2]
    assert (run_dir / "train_metrics.png").stat().st_size > 1000
    assert (run_dir / "best.pt").exists()
    # The batch size and the rest come from the run itself; only the epochs are new.
    result = train_py("--epochs", "3", "--resume", "runs/exp", *common, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "resumed from runs/exp/last.pt after epoch 2" in result.stdout and "Epoch 3:" in result.stdout
    assert "batch_size=128" in result.stdout
    assert json.loads((run_dir / "history.json").read_text())["epoch"] == [1, 2, 3]


def test_a_seed_torch_cannot_take_is_one_line(mnist_root):
    assert train_py_refusal("--seed", 2**64, "--data-dir", mnist_root, "--dry-run") == (
        "error: seed must be a whole number from 0 to 2**63 - 1, got 18446744073709551616")


def test_a_flag_the_recipe_ignores_is_one_line(mnist_root, tmp_path):
    line = train_py_refusal("--recipe", "onecycle", "--momentum", "0.8", "--runs-dir", tmp_path, "--data-dir",
                            mnist_root)
    assert line.startswith("error: momentum 0.8 would change nothing") and line.endswith("leave it out")
    assert not (tmp_path / "exp").exists()


def test_train_without_data_is_one_clear_error(tmp_path):
    line = train_py_refusal("--dry-run", "--data-dir", tmp_path / "empty")
    assert line.startswith(f"error: MNIST files missing in {tmp_path / 'empty' / 'MNIST' / 'raw'}") and "\n" not in line


def random_checkpoint(path):
    torch.manual_seed(0)
    save_checkpoint(path, Net(), None, None, 1, new_history())
    return path


def test_predict_prints_a_line_per_image_and_survives_bad_ones(tmp_path):
    checkpoint = random_checkpoint(tmp_path / "model.pt")
    Image.new("L", (60, 40), 255).save(tmp_path / "blank.png")
    digit = Image.new("L", (28, 28), 0)
    digit.paste(255, (12, 5, 15, 23))
    digit.save(tmp_path / "one.png")
    (tmp_path / "notes.txt").write_text("not an image")
    png_claiming(tmp_path / "bomb.png", 100_000, 100_000)
    os.mkfifo(tmp_path / "pipe.png")
    pictures = ["notes.txt", "bomb.png", "pipe.png", "one.png", "blank.png", "missing.png"]
    result = run("predict.py", *(tmp_path / name for name in pictures), "--checkpoint", checkpoint)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 2 and lines[0].startswith(f"{tmp_path / 'one.png'}: ") and lines[0].count("%") == 3
    assert lines[1].startswith(f"{tmp_path / 'blank.png'}: no digit found")
    errors = result.stderr.strip().splitlines()
    assert [line.split(": ")[1] for line in errors] == [str(tmp_path / name) for name in pictures if name in
                                                         ("notes.txt", "bomb.png", "pipe.png", "missing.png")]
    assert all(line.startswith("error: ") and "cannot read a picture" in line for line in errors)


def test_predict_and_the_app_use_the_shipped_weights_by_default(tmp_path):
    seven = Image.new("L", (300, 300), 255)
    ImageDraw.Draw(seven).line([(75, 60), (225, 60), (135, 255)], fill=0, width=22)
    seven.save(tmp_path / "seven.png")
    result = run("predict.py", tmp_path / "seven.png", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"{tmp_path / 'seven.png'}: 7  (7 ")
    assert refusal(app.main, "--checkpoint", tmp_path / "none.pt") == (  # refused before any page starts
        f"error: checkpoint {tmp_path / 'none.pt'} does not exist; check the path or train first")


def test_predict_refuses_a_diverged_checkpoint(tmp_path, capsys):
    torch.manual_seed(0)
    model = Net()
    with torch.no_grad():
        model.fc1.weight[0, 0] = float("nan")
    save_checkpoint(tmp_path / "nan.pt", model, None, None, 3, new_history())
    Image.new("L", (28, 28), 0).save(tmp_path / "x.png")
    assert refusal(predict.main, tmp_path / "x.png", "--checkpoint", tmp_path / "nan.pt") == (
        f"error: {tmp_path / 'nan.pt'} holds weights that are not finite (NaN or inf in fc1.weight): the run that "
        "wrote it diverged; use an earlier checkpoint")
    assert capsys.readouterr().out == ""


def test_predict_with_a_missing_checkpoint(tmp_path):
    assert refusal(predict.main, "x.png", "--checkpoint", tmp_path / "none.pt") == (
        f"error: checkpoint {tmp_path / 'none.pt'} does not exist; check the path or train first")


@pytest.mark.skipif(not os.environ.get("MNIST_DATA_DIR"), reason="MNIST_DATA_DIR is not set")
def test_predict_reads_digits_photographed_on_paper(tmp_path):
    """The shipped model reads test digits redrawn as dark ink on light paper as it reads the originals."""
    _, test_set = get_mnist_datasets(download=False)
    paths, labels = [], []
    for i in range(20):
        digit = Image.fromarray(255 - test_set.data[i].numpy()).resize((240, 240), Image.BICUBIC)
        paper = Image.new("RGB", (640, 480), (240, 236, 228))
        paper.paste(digit.convert("RGB"), (40 + 17 * i, 30 + 9 * i))
        paths.append(tmp_path / f"photo{i}.jpg")
        paper.save(paths[-1], quality=90)
        labels.append(int(test_set.targets[i]))
    result = run("predict.py", *paths)  # the shipped weights
    assert result.returncode == 0, result.stderr
    predicted = [int(line.split(": ")[1].split()[0]) for line in result.stdout.strip().splitlines()]
    # What the same model says of the original 28x28 images: preprocessing should change little.
    model = Net()
    load_checkpoint(DEFAULT_CHECKPOINT, model)
    with torch.no_grad():
        direct = model(normalize(test_set.data[:20, None].float() / 255)).argmax(dim=1).tolist()
    assert sum(p == d for p, d in zip(predicted, direct, strict=True)) >= 19, (predicted, direct)
    assert sum(p == t for p, t in zip(predicted, labels, strict=True)) >= 19, (predicted, labels)
