"""Where results and plots go by default, for the benchmark engine and the plots alike."""

from __future__ import annotations

import os
from pathlib import Path

DEFAULT_RESULTS_FOLDER = "results"
RESULTS_DIR_VARIABLE = "QWEN_RESULTS_DIR"


def default_results_dir() -> Path:
    """Where results and plots go by default: ``$QWEN_RESULTS_DIR`` if set, else ``./results/``.

    ``./results/`` is under the working directory (a notebook's folder in Jupyter), never the
    installed package. Read on every call (not at import), so a test run or a notebook can redirect
    its output by setting the variable at any time; ``make run`` points it at the committed
    ``data/results/``.
    """
    override = os.environ.get(RESULTS_DIR_VARIABLE)
    return Path(override).expanduser() if override else Path.cwd() / DEFAULT_RESULTS_FOLDER
