"""The README's Python examples run as a user pastes them: from a folder of their own, with the data where
MNIST_DATA_DIR points (the synthetic MNIST here)."""

import os
import re
import subprocess
import sys

import pytest
from conftest import ROOT

EXAMPLES = re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), flags=re.S)


def test_the_readme_shows_the_python_api():
    assert any("from utils import" in example for example in EXAMPLES)


@pytest.mark.parametrize("example", EXAMPLES, ids=[f"example{i + 1}" for i in range(len(EXAMPLES))])
def test_a_readme_example_runs_as_written(example, mnist_root, tmp_path):
    env = {**os.environ, "MNIST_DATA_DIR": str(mnist_root), "PYTHONPATH": str(ROOT), "MPLBACKEND": "Agg"}
    result = subprocess.run([sys.executable, "-c", example], cwd=tmp_path, env=env, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr
    assert list(tmp_path.iterdir()) == []  # nothing written beside the user's own files: no ./data download
