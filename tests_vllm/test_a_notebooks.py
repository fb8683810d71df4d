"""Every English notebook, Restart & Run All, against set-up A (the README's command); the Chinese
twins have the same code and outputs (tests/test_zh_edition.py)."""

from __future__ import annotations

import pytest

from kit_tools.translations import english_notebooks
from notebooks import run_against

pytestmark = pytest.mark.timeout(900)


@pytest.mark.parametrize("name", [path.stem for path in english_notebooks()])
def test_notebook_runs_against_setup_a(server_a, tmp_path, name):
    assert run_against(name, server_a, tmp_path) == []
