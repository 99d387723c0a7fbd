"""The two floors: the lesson (utils.py, S5.ipynb) on top, the machinery (s5/) beneath, and imports that run
one way only."""

import ast
import json

import pytest
from conftest import ROOT

import utils

# Every name utils.py exported before the machinery moved into s5/: old notebooks import them from utils.
EXPORTED_BEFORE = """
    MNIST_MEAN MNIST_STD IMAGE_SIZE NUM_CLASSES ROTATION_DEGREES ZOOM_P ZOOM_CROP GPU_CHUNK MNIST_FILES
    IDX_IMAGES_MAGIC IDX_LABELS_MAGIC PIPELINES OPTIMIZERS PRECISIONS COMPILE_MODES MAX_GRAPHED_SHAPES
    train_transforms test_transforms Recipe RECIPES ORIGINAL_STEP get_recipe run_config get_device
    resolve_device device_arg set_seed resolve_data_dir check_mnist_files get_mnist_datasets sample_augmentation
    augment normalize DeviceImages DeviceLoader EpochSeededDataLoader default_num_workers get_data_loaders
    autocast_dtype precision_note grad_scaler resolve_compile_mode compile_model train test make_optimizer
    make_criterion make_scheduler new_history fit make_run_dir check_output hold_run_folder atomic_write
    save_history save_checkpoint read_checkpoint export_weights save_weights check_resume load_checkpoint
    check_plot_path plot_sample_data plot_train_metrics get_predictions confusion_matrix plot_misclassified
    plot_confusion_matrix plot_conv_filters feature_maps plot_feature_maps
""".split()
THE_LESSON_AND_SCRIPTS = {"utils", "train", "predict", "app", "tools", "benchmarks"}
MACHINERY = sorted((ROOT / "s5").glob("*.py"))


def imported_modules(path):
    """Every module a Python file imports, at its top or inside a function, by its first name."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            found.add(node.module.split(".")[0])
    return found


@pytest.mark.parametrize("name", EXPORTED_BEFORE)
def test_every_name_utils_exported_still_imports_from_it(name):
    assert hasattr(utils, name)


@pytest.mark.parametrize("path", MACHINERY, ids=[path.name for path in MACHINERY])
def test_the_machinery_never_imports_the_lesson_or_a_script(path):
    assert not imported_modules(path) & THE_LESSON_AND_SCRIPTS


def test_the_import_check_sees_an_arrow_upwards(tmp_path):
    upwards = tmp_path / "upwards.py"
    upwards.write_text("import torch\n\ndef plot():\n    from utils import plot_train_metrics\n")
    assert imported_modules(upwards) & THE_LESSON_AND_SCRIPTS == {"utils"}


@pytest.mark.parametrize("path, most", [(ROOT / "utils.py", 450)] + [(path, 350) for path in MACHINERY],
                         ids=["utils.py"] + [f"s5/{path.name}" for path in MACHINERY])
def test_each_module_stays_short(path, most):
    assert len(path.read_text().splitlines()) <= most


def test_the_notebook_imports_a_few_names_and_writes_the_epoch_loop_out():
    cells = ["".join(cell["source"]) for cell in json.loads((ROOT / "S5.ipynb").read_text())["cells"]
             if cell["cell_type"] == "code"]
    project = {"model", "utils", "s5"}
    names = [alias.asname or alias.name for cell in cells for node in ast.walk(ast.parse(
             "\n".join(line for line in cell.splitlines() if not line.startswith("%"))))
             if isinstance(node, ast.ImportFrom) and node.module.split(".")[0] in project for alias in node.names]
    assert len(names) <= 16, names
    loop = next(cell for cell in cells if "for epoch in range(" in cell)
    for step in ("train(", "test(", "scheduler.step()", "run.record("):
        assert step in loop
