"""Execute every notebook headless, top to bottom, against the simulator: ``make run``.

Executed copies go to ``data/runs/`` (the committed notebooks are left untouched); the notebooks
themselves write their results (CSV, JSON, PNG) to ``$QWEN_RESULTS_DIR``, which ``make run`` sets
to the committed ``data/results/``. A notebook that fails stops the run with the failing cell's error.

Example:
    python -m kit_tools.run_notebooks                 # all notebooks
    python -m kit_tools.run_notebooks 02_async_gather # one, by name prefix
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

from kit_tools.translations import english_notebooks

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = ROOT / "notebooks"
RUNS = ROOT / "data" / "runs"


def run_notebook(path: Path, out_dir: Path = RUNS, timeout: int = 900) -> Path:
    """Execute one notebook in a fresh kernel and save the executed copy; return its path."""
    notebook = nbformat.read(path, as_version=4)
    resources = {"metadata": {"path": str(path.parent)}}
    client = NotebookClient(notebook, timeout=timeout, kernel_name="python3", resources=resources)
    client.execute()
    out_dir.mkdir(parents=True, exist_ok=True)
    out_path = out_dir / path.name
    nbformat.write(notebook, out_path)
    return out_path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", help="notebook name prefixes (default: all)")
    args = parser.parse_args(argv)
    if not (os.environ.get("QWEN_BASE_URL") or os.environ.get("OPENAI_BASE_URL")):
        print("No QWEN_BASE_URL set: the notebooks run against the embedded simulator.")
    paths = english_notebooks(NOTEBOOKS)  # the Chinese twins share their code and outputs
    if args.names:
        paths = [p for p in paths if any(p.name.startswith(n) for n in args.names)]
    if not paths:
        print("no notebook matched", file=sys.stderr)
        return 2
    for path in paths:
        started = time.perf_counter()
        try:
            out = run_notebook(path)
        except CellExecutionError as error:
            print(f"[FAIL] {path.name}\n{error}", file=sys.stderr)
            return 1
        elapsed = time.perf_counter() - started
        print(f"[OK]   {path.name} in {elapsed:.1f} s -> {out.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
