"""Tidy an executed notebook before committing it: drop what only made sense while it ran.

    papermill S5.ipynb S5-run.ipynb && python tools/tidy_notebook.py S5-run.ipynb S5.ipynb

Removes the progress-bar widgets (tqdm's bars, frozen at 0% once saved), the widget state, and papermill's
and Jupyter's per-run metadata (timestamps, durations, the machine's paths). Keeps every other output.
"""

import argparse
import json
import os
import sys
from pathlib import Path

WIDGET = "application/vnd.jupyter.widget-view+json"


def tidy(notebook):
    """The notebook (a dict, as in the .ipynb file) without progress bars and per-run metadata."""
    notebook["metadata"].pop("papermill", None)
    notebook["metadata"].pop("widgets", None)
    for cell in notebook["cells"]:
        cell["metadata"].pop("papermill", None)
        cell["metadata"].pop("execution", None)
        if cell["metadata"].get("tags") == []:
            del cell["metadata"]["tags"]
        if "outputs" in cell:
            cell["outputs"] = [output for output in cell["outputs"] if WIDGET not in output.get("data", {})]
    return notebook


def main(argv=None):
    p = argparse.ArgumentParser(description="Tidy an executed notebook before committing it.")
    p.add_argument("source", help="the executed notebook, e.g. S5-run.ipynb")
    p.add_argument("target", help="where the tidy copy goes, e.g. S5.ipynb")
    args = p.parse_args(argv)
    try:
        with open(args.source, encoding="utf-8") as f:
            notebook = json.load(f)
        if not isinstance(notebook, dict) or not isinstance(notebook.get("cells"), list) or "metadata" not in notebook:
            sys.exit(f"error: {args.source} is not a Jupyter notebook (no cells and metadata); {args.target} is "
                     "unchanged")
        text = json.dumps(tidy(notebook), indent=1, ensure_ascii=False) + "\n"
        temporary = Path(args.target).with_name(f".{Path(args.target).name}.tmp")
        temporary.write_text(text, encoding="utf-8")  # then renamed: the target is whole, old or new
        os.replace(temporary, args.target)
    except (OSError, ValueError, KeyError) as error:
        sys.exit(f"error: {error}")


if __name__ == "__main__":
    main()
