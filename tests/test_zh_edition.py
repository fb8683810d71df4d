"""The Chinese edition (``notebooks/NN_name.zh-CN.ipynb``) keeps step with the English notebooks.

Each twin is built by ``make zh`` (``kit_tools/translations.py``) from its English notebook and
``i18n/zh-CN/NN_name.json``. These tests fail, naming the notebook and the cell id, when an English
markdown cell changed and its translation was not updated, when a translation is missing, when a
twin's code cells or outputs differ from the English ones, or when a committed twin is not what the
build produces. ``python -m kit_tools.translations status`` prints what to translate.

nbval executes the English notebooks only (the root ``conftest.py`` sets ``collect_ignore_glob`` for
``notebooks/*.zh-CN.ipynb``): the twins' code cells and outputs are proven identical here, so running
them again would double the notebooks' share of ``make test`` for nothing. A twin still runs on its
own with ``pytest notebooks/NN_name.zh-CN.ipynb`` or Restart & Run All in JupyterLab; after changing
how twins are built, execute each once from ``notebooks/`` (``kit_tools.run_notebooks.run_notebook``)
to show they still run from there.

Figures stay English in both editions (many GPU pods have no CJK font): their text comes from code
cells, which the two editions share, and the last tests check that none of it is CJK.
"""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path

import nbformat
import pytest

from kit_tools.translations import (
    ROOT,
    build,
    build_twin,
    en_sha256,
    english_notebooks,
    find_problems,
    status,
    translation_path,
    twin_path,
)

ENGLISH = english_notebooks()
TRANSLATIONS = ROOT / "i18n" / "zh-CN"
WHAT_TO_DO = (
    "\nPrint the English to translate with `python -m kit_tools.translations status`, update `zh` and "
    "`en_sha256` in i18n/zh-CN/, then `make zh`."
)
CJK = re.compile(r"[\u3000-\u303f\u3400-\u4dbf\u4e00-\u9fff\uff00-\uffef]")


def read(path: Path) -> nbformat.NotebookNode:
    return nbformat.reads(path.read_text(encoding="utf-8"), as_version=4)


def differences(english: nbformat.NotebookNode, twin: nbformat.NotebookNode) -> list[str]:
    """What differs between two editions apart from the markdown cells' text, one line per cell."""
    found = []
    if english.metadata != twin.metadata or english.nbformat_minor != twin.nbformat_minor:
        found.append("notebook metadata or nbformat version")
    if [c.get("id") for c in english.cells] != [c.get("id") for c in twin.cells]:
        return [*found, "cells: not the same ids in the same order"]
    for en, zh in zip(english.cells, twin.cells, strict=True):
        if en.cell_type != zh.cell_type:
            found.append(f"cell {en.id}: {en.cell_type} in English, {zh.cell_type} in the twin")
        elif en.cell_type != "markdown" and en != zh:
            changed = sorted(key for key in set(en) | set(zh) if en.get(key) != zh.get(key))
            found.append(f"cell {en.id}: {', '.join(changed)} differ")
        elif en.cell_type == "markdown" and (en.metadata, en.get("attachments")) != (
            zh.metadata,
            zh.get("attachments"),
        ):
            found.append(f"cell {en.id}: markdown metadata or attachments differ")
    return found


@pytest.mark.parametrize("english", ENGLISH, ids=lambda p: p.name)
def test_every_markdown_cell_has_a_current_translation(english: Path):
    problems = find_problems(english)
    if problems:
        pytest.fail("\n".join(map(str, problems)) + WHAT_TO_DO)


@pytest.mark.parametrize("english", ENGLISH, ids=lambda p: p.name)
def test_twin_has_the_english_code_cells_and_outputs(english: Path):
    twin = twin_path(english)
    assert twin.exists(), f"{twin.name} is missing: run `make zh`"
    found = differences(read(english), read(twin))
    assert not found, f"{twin.name} differs from {english.name}:\n" + "\n".join(found) + "\nRun `make zh`."


@pytest.mark.parametrize("english", ENGLISH, ids=lambda p: p.name)
def test_committed_twin_is_what_the_build_produces(english: Path):
    twin = twin_path(english)
    assert twin.exists(), f"{twin.name} is missing: run `make zh`"
    if twin.read_text(encoding="utf-8") != build_twin(english):
        pytest.fail(
            f"{twin.name} is not what `make zh` builds (edited by hand, or not rebuilt): run `make zh`"
        )


def test_every_translation_file_belongs_to_an_english_notebook():
    stray = sorted(p.name for p in TRANSLATIONS.glob("*.json") if p.stem not in {e.stem for e in ENGLISH})
    assert not stray, f"translations without an English notebook: {stray}"
    twins = {p.name for p in (ROOT / "notebooks").glob("*.zh-CN.ipynb")}
    assert twins == {twin_path(e).name for e in ENGLISH}, "a twin without its English notebook: delete it"


def test_readmes_link_each_other_and_every_chinese_notebook():
    english = (ROOT / "README.md").read_text(encoding="utf-8")
    chinese = (ROOT / "README.zh-CN.md").read_text(encoding="utf-8")
    assert "(README.zh-CN.md)" in english.splitlines()[0] and "(README.md)" in chinese.splitlines()[0]
    missing = [e.stem for e in ENGLISH if f"(notebooks/{twin_path(e).name})" not in chinese]
    assert not missing, f"README.zh-CN.md links no Chinese notebook for {missing}: add a row to its table"


# --- the machinery, on a notebook made here ---------------------------------------------------------


def small_notebook(intro: str = "Intro **text**.") -> nbformat.NotebookNode:
    kernelspec = {"name": "python3", "display_name": "Python 3"}
    notebook = nbformat.v4.new_notebook(metadata={"kernelspec": kernelspec})
    notebook.cells = [
        nbformat.v4.new_markdown_cell(intro, id="intro"),
        nbformat.v4.new_code_cell("print('hi')", id="code-1", execution_count=1),
        nbformat.v4.new_markdown_cell("## Next", id="next"),
    ]
    notebook.cells[1].outputs = [nbformat.v4.new_output("stream", name="stdout", text="hi\n")]
    return notebook


@pytest.fixture
def edition(tmp_path: Path) -> tuple[Path, Path]:
    notebooks, translations = tmp_path / "notebooks", tmp_path / "i18n" / "zh-CN"
    notebooks.mkdir()
    translations.mkdir(parents=True)
    nbformat.write(small_notebook(), notebooks / "00_small.ipynb")
    cells = [
        {"id": "intro", "en_sha256": en_sha256("Intro **text**."), "zh": ["介绍**文字**。"]},
        {"id": "next", "en_sha256": en_sha256("## Next"), "zh": ["## 下一步"]},
    ]
    (translations / "00_small.json").write_text(json.dumps({"cells": cells}, ensure_ascii=False))
    return notebooks, translations


def test_build_replaces_markdown_only_and_links_the_original(edition):
    notebooks, translations = edition
    assert build(notebooks, translations) == [notebooks / "00_small.zh-CN.ipynb"]
    english, twin = read(notebooks / "00_small.ipynb"), read(notebooks / "00_small.zh-CN.ipynb")
    assert twin.cells[0].source.startswith("介绍**文字**。\n\n> 英文原版：[`00_small.ipynb`](00_small.ipynb)")
    assert twin.cells[2].source == "## 下一步"
    assert differences(english, twin) == []
    assert build(notebooks, translations) == []  # nothing changed: nothing written
    assert not find_problems(notebooks / "00_small.ipynb", translations)


def test_changed_english_is_named_by_cell_and_stays_english_until_translated(edition, capsys):
    notebooks, translations = edition
    english = small_notebook("Intro, rewritten.")
    english.cells.append(nbformat.v4.new_markdown_cell("A new cell.", id="added"))
    nbformat.write(english, notebooks / "00_small.ipynb")
    problems = find_problems(notebooks / "00_small.ipynb", translations)
    assert [(p.cell_id, p.kind) for p in problems] == [("intro", "stale"), ("added", "missing")]
    assert str(problems[0]) == (
        "00_small.ipynb cell intro: changed since it was translated (en_sha256 differs)"
    )
    twin_text = build_twin(notebooks / "00_small.ipynb", translations)
    assert "Intro, rewritten." in twin_text and "介绍" not in twin_text and "下一步" in twin_text

    assert status(notebooks, translations) == 3  # two cells, and the twin that is not built yet
    printed = capsys.readouterr().out
    assert "Intro, rewritten." in printed and "A new cell." in printed
    assert en_sha256("A new cell.") in printed
    assert "00_small.zh-CN.ipynb is not what the build produces" in printed


def test_a_translation_whose_cell_is_gone_is_reported(edition):
    notebooks, translations = edition
    english = small_notebook()
    del english.cells[2]
    nbformat.write(english, notebooks / "00_small.ipynb")
    problems = find_problems(notebooks / "00_small.ipynb", translations)
    assert [(p.cell_id, p.kind) for p in problems] == [("next", "orphan")]


def test_a_markdown_cell_without_an_id_is_named_and_stops_the_build(edition):
    notebooks, translations = edition
    english = json.loads((notebooks / "00_small.ipynb").read_text(encoding="utf-8"))
    english["nbformat_minor"] = 4  # before nbformat 4.5 cells had no ids
    for cell in english["cells"]:
        del cell["id"]
    (notebooks / "00_small.ipynb").write_text(json.dumps(english), encoding="utf-8")
    problems = find_problems(notebooks / "00_small.ipynb", translations)
    assert [(p.cell_id, p.kind) for p in problems] == [("#0", "no id"), ("#2", "no id"), ("intro", "orphan"),
                                                        ("next", "orphan")]  # fmt: skip
    with pytest.raises(SystemExit, match="has no nbformat id"):
        build_twin(notebooks / "00_small.ipynb", translations)


def test_a_malformed_translation_file_is_a_clear_error(edition):
    notebooks, translations = edition
    translation_path(notebooks / "00_small.ipynb", translations).write_text('{"cells": [{"id": "intro"}]}')
    with pytest.raises(SystemExit, match="not a translation file"):
        find_problems(notebooks / "00_small.ipynb", translations)


def test_twin_comparison_catches_changed_code_outputs_and_metadata():
    english = small_notebook()
    for change in (
        lambda nb: setattr(nb.cells[1], "source", "print('hello')"),
        lambda nb: nb.cells[1].outputs[0].update(text="other\n"),
        lambda nb: setattr(nb.cells[1], "execution_count", 7),
        lambda nb: nb.metadata.update(kernelspec={"name": "other", "display_name": "Other"}),
        lambda nb: nb.cells.pop(),
    ):
        twin = small_notebook()
        change(twin)
        assert differences(english, twin), change


# --- figures stay English ----------------------------------------------------------------------------

EVERY_NOTEBOOK = sorted((ROOT / "notebooks").glob("*.ipynb"))


def plotting_cells(notebook: nbformat.NotebookNode) -> list[str]:
    """Sources of the code cells that call a plot function or matplotlib."""
    found = []
    for cell in notebook.cells:
        if cell.cell_type != "code":
            continue
        code = "\n".join(
            line for line in cell.source.splitlines() if not line.lstrip().startswith(("%", "!"))
        )
        calls = [node.func for node in ast.walk(ast.parse(code)) if isinstance(node, ast.Call)]
        names = [getattr(func, "attr", None) or getattr(func, "id", "") for func in calls]
        if any(name.startswith(("plot", "imshow")) for name in names):
            found.append(cell.source)
    return found


@pytest.mark.parametrize("path", EVERY_NOTEBOOK, ids=lambda p: p.name)
def test_no_figure_text_a_pod_without_cjk_fonts_cannot_draw(path: Path):
    """A CJK label drawn with matplotlib's default font warns 'Glyph ... missing from font(s)' in the
    cell's output (this machine has no CJK font); and a plotting cell passes no CJK text itself."""
    notebook = read(path)
    for cell in notebook.cells:
        for output in cell.get("outputs", []):
            text = json.dumps(output, ensure_ascii=False)
            assert "missing from font" not in text, f"{path.name} cell {cell.get('id')}: a glyph no font has"
    for source in plotting_cells(notebook):
        assert not CJK.search(source), f"{path.name}: a figure would get CJK text from:\n{source}"


def test_plots_module_draws_no_cjk_text():
    assert not CJK.search((ROOT / "helpers" / "plots.py").read_text(encoding="utf-8"))
