"""S5.ipynb runs top to bottom, headless, with tiny parameters on the synthetic data."""

import json
import re
import shutil
import subprocess
import sys

import papermill
import pytest
from conftest import ROOT, train_py

sys.path.insert(0, str(ROOT / "tools"))
from tidy_notebook import WIDGET  # noqa: E402
from tidy_notebook import main as tidy_main  # noqa: E402


def epoch_metrics(text):
    """The per-epoch lines, without their timing."""
    return [re.sub(r" \| [\d.]+s$", "", line) for line in text.splitlines() if "train loss" in line]


def run_notebook(out, **parameters):
    """S5.ipynb run headless with these parameters, saved to `out`; returns its cells' outputs."""
    papermill.execute_notebook(str(ROOT / "S5.ipynb"), str(out), cwd=str(ROOT), progress_bar=False,
                               kernel_name="python3", parameters=parameters)
    return [output for cell in json.loads(out.read_text())["cells"] for output in cell.get("outputs", [])]


def printed(outputs):
    return "".join("".join(output.get("text", "")) for output in outputs)


def tracked_changes():
    """`git status` of the repository's tracked files (None outside a git checkout)."""
    status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT, capture_output=True,
                            text=True)
    return status.stdout if status.returncode == 0 else None


def test_notebook_runs_end_to_end_and_matches_train_py(mnist_root, tmp_path):
    out = tmp_path / "S5-out.ipynb"
    before = tracked_changes()
    outputs = run_notebook(out, epochs=2, batch_size=128, data_dir=str(mnist_root), runs_dir=str(tmp_path / "runs"))
    assert tracked_changes() == before  # the README's figures and every other tracked file untouched
    text = printed(outputs)
    # The six figures show in the notebook itself, even where MPLBACKEND=Agg is set (as in CI).
    assert sum("image/png" in output.get("data", {}) for output in outputs) == 6
    step = re.search(r"loss on this batch: ([\d.]+) before the step, ([\d.]+) after", text)
    before, after = map(float, step.groups())
    assert after < before  # the five steps, written out, lower the loss on their batch
    assert "Epoch 1: train loss" in text and "Epoch 2: train loss" in text and "test" in text
    assert "593,200" in text  # the torchsummary table
    run = tmp_path / "runs" / "exp"
    assert f"run folder: {run}" in text
    for name in ("sample_data", "train_metrics", "misclassified", "confusion_matrix", "feature_maps"):
        assert (run / f"{name}.png").stat().st_size > 1000
    assert (run / "last.pt").exists() and (run / "best.pt").exists()
    assert json.loads((run / "history.json").read_text())["epoch"] == [1, 2]

    # The same seed and recipe from the shell: the same epochs, digit for digit.
    cli = train_py("--epochs", "2", "--batch-size", "128", "--data-dir", mnist_root, cwd=tmp_path)
    assert cli.returncode == 0, cli.stderr
    assert epoch_metrics(text) == epoch_metrics(cli.stdout) and len(epoch_metrics(text)) == 2
    # ... and it can continue the notebook's run: the notebook saved what the run is made of.
    shutil.copytree(run, tmp_path / "copy")
    cli = train_py("--resume", run, "--epochs", "3", "--data-dir", mnist_root, cwd=tmp_path)
    assert cli.returncode == 0, cli.stderr
    assert "batch_size=128" in cli.stdout and "Epoch 3: train loss" in cli.stdout

    # The notebook continues a run too (a copy of the same one): to the same epoch 3 as train.py; but not
    # with a parameter other than the run's, which would not be what trains.
    parameters = {"epochs": 3, "batch_size": 128, "data_dir": str(mnist_root), "resume": str(tmp_path / "copy")}
    with pytest.raises(papermill.PapermillExecutionError, match="lr 0.1 differs from the resumed run's 0.01"):
        run_notebook(out, **parameters, lr=0.1)
    assert json.loads((tmp_path / "copy" / "history.json").read_text())["epoch"] == [1, 2]  # untouched
    resumed = printed(run_notebook(out, **parameters))
    assert "resuming after epoch 2" in resumed
    assert epoch_metrics(resumed) == epoch_metrics(cli.stdout) == epoch_metrics(resumed)[-1:]


def test_the_committed_notebook_holds_a_whole_tidy_run():
    notebook = json.loads((ROOT / "S5.ipynb").read_text())
    code = [cell for cell in notebook["cells"] if cell["cell_type"] == "code"]
    assert [cell["execution_count"] for cell in code] == list(range(1, len(code) + 1))  # top to bottom, once
    outputs = [output for cell in code for output in cell["outputs"]]
    assert not any(WIDGET in output.get("data", {}) for output in outputs)  # no frozen progress bars
    assert "papermill" not in notebook["metadata"] and not any("execution" in cell["metadata"] for cell in code)
    text = json.dumps(outputs)
    assert not re.search(r"/(work|home|tmp|Users|root)/", text)  # no machine's paths
    assert "best test accuracy" in text and "Epoch 20: train loss" in text


def test_running_the_training_cell_again_replaces_nothing(mnist_root, tmp_path):
    """A learner runs the training cell a second time, or the model's cell and then the training cell: the
    run folder's checkpoints and history stay those of the first run, and the error says what to do."""
    import nbclient
    import nbformat

    prepared = tmp_path / "prepared.ipynb"  # S5.ipynb with the parameters injected, not run
    papermill.execute_notebook(str(ROOT / "S5.ipynb"), str(prepared), prepare_only=True, kernel_name="python3",
                               parameters={"epochs": 1, "batch_size": 128, "data_dir": str(mnist_root),
                                           "runs_dir": str(tmp_path / "runs")})
    notebook = nbformat.read(prepared, as_version=4)
    index = {name: next(i for i, cell in enumerate(notebook.cells) if text in cell.source)
             for name, text in (("model", "model = Net().to(device)"), ("training", "with run:"))}
    client = nbclient.NotebookClient(notebook, kernel_name="python3", resources={"metadata": {"path": str(ROOT)}})
    run = tmp_path / "runs" / "exp"
    with client.setup_kernel():
        for i in range(index["training"] + 1):
            client.execute_cell(notebook.cells[i], i)
        files = {name: (run / name).read_bytes() for name in ("last.pt", "best.pt", "history.json")}
        again = [("training",), ("model", "training")]
        errors = [("ValueError", "history already holds epochs 1-1, and fit would train epoch 1 again into it"),
                  ("FileExistsError", f"{run / 'last.pt'} already exists, and fit starts a new run at epoch 1")]
        for cells, (error, message) in zip(again, errors, strict=True):
            with pytest.raises(nbclient.exceptions.CellExecutionError) as refusal:
                for name in cells:
                    client.execute_cell(notebook.cells[index[name]], index[name])
            assert refusal.value.ename == error and refusal.value.evalue.startswith(message)
    assert {name: (run / name).read_bytes() for name in files} == files


def test_tidying_what_is_not_a_notebook_leaves_the_target_as_it_was(tmp_path):
    target = tmp_path / "S5.ipynb"
    shutil.copy(ROOT / "S5.ipynb", target)
    (tmp_path / "results.json").write_text('{"test_acc": [99.3]}')
    with pytest.raises(SystemExit, match=f"^error: {re.escape(str(tmp_path / 'results.json'))} is not a Jupyter "
                                         f"notebook .*; {re.escape(str(target))} is unchanged$"):
        tidy_main([str(tmp_path / "results.json"), str(target)])
    assert target.read_bytes() == (ROOT / "S5.ipynb").read_bytes()
    tidy_main([str(ROOT / "S5.ipynb"), str(tmp_path / "tidy.ipynb")])  # the committed notebook: tidy already
    assert (tmp_path / "tidy.ipynb").read_bytes() == (ROOT / "S5.ipynb").read_bytes()
    assert sorted(path.name for path in tmp_path.iterdir()) == ["S5.ipynb", "results.json", "tidy.ipynb"]
