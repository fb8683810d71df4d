"""Every notebook, Restart & Run All, against set-up A (the README's command)."""

from __future__ import annotations

import pytest

from notebooks import NOTEBOOKS, run_against

pytestmark = pytest.mark.timeout(900)


@pytest.mark.parametrize("name", sorted(path.stem for path in NOTEBOOKS.glob("[0-9][0-9]_*.ipynb")))
def test_notebook_runs_against_setup_a(server_a, tmp_path, name):
    assert run_against(name, server_a, tmp_path) == []
