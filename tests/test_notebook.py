"""S5.ipynb runs top to bottom, headless, with tiny parameters on the synthetic data."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import papermill

ROOT = Path(__file__).resolve().parents[1]


def epoch_metrics(text):
    """The per-epoch lines, without their timing."""
    return [re.sub(r" \| [\d.]+s$", "", line) for line in text.splitlines() if "train loss" in line]


def test_notebook_runs_end_to_end_and_matches_train_py(mnist_root, tmp_path):
    out = tmp_path / "S5-out.ipynb"
    papermill.execute_notebook(
        str(ROOT / "S5.ipynb"), str(out), cwd=str(ROOT), progress_bar=False, kernel_name="python3",
        parameters={"epochs": 2, "batch_size": 128, "data_dir": str(mnist_root),
                    "checkpoint_dir": str(tmp_path / "ck"), "img_dir": str(tmp_path / "img")},
    )
    text = "".join(
        "".join(output.get("text", "")) for cell in json.loads(out.read_text())["cells"]
        for output in cell.get("outputs", [])
    )
    assert "Epoch 1: train loss" in text and "Epoch 2: train loss" in text and "test" in text
    assert "593,200" in text  # the torchsummary table
    for name in ("sample_data", "train_metrics", "misclassified", "confusion_matrix"):
        assert (tmp_path / "img" / f"{name}.png").stat().st_size > 1000
    assert (tmp_path / "ck" / "last.pt").exists() and (tmp_path / "ck" / "best.pt").exists()

    # The same seed and recipe from the shell: the same epochs, digit for digit.
    cli = subprocess.run([sys.executable, str(ROOT / "train.py"), "--epochs", "2", "--batch-size", "128",
                          "--data-dir", str(mnist_root)], capture_output=True, text=True, cwd=tmp_path,
                         env={**os.environ, "MPLBACKEND": "Agg"}, timeout=600)
    assert cli.returncode == 0, cli.stderr
    assert epoch_metrics(text) == epoch_metrics(cli.stdout) and len(epoch_metrics(text)) == 2
