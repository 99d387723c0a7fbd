"""S5.ipynb runs top to bottom, headless, with tiny parameters on the synthetic data."""

import json
from pathlib import Path

import papermill

ROOT = Path(__file__).resolve().parents[1]


def test_notebook_runs_end_to_end(mnist_root, tmp_path):
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
