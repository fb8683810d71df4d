"""The Chinese edition: ``notebooks/NN_name.zh-CN.ipynb`` built from the English notebooks (``make zh``).

Code cells and their outputs live once, in the English notebook. Each markdown cell's translation
lives in ``i18n/zh-CN/NN_name.json``, keyed by the cell's nbformat id and stamped with the SHA-256 of
the English text it translates::

    {"notebook": "00_setup.ipynb", "language": "zh-CN",
     "cells": [{"id": "75c4f475", "en_sha256": "…", "zh": ["# 标题\\n", "…"]}]}

A twin sits next to its English notebook (same working directory, so ``../data/...``, ``results/``
and the imports resolve alike) and is the English notebook with each markdown cell replaced by its
translation; a cell whose English changed since it was translated, or that has no translation yet,
keeps its English text until someone translates it. Never edit a twin: edit the English notebook or
the translation, then rebuild.

    python -m kit_tools.translations build    # write every twin (make zh)
    python -m kit_tools.translations status   # what needs translating, with the English text (alias: stale)
"""

from __future__ import annotations

import argparse
import copy
import difflib
import hashlib
import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

import nbformat

ROOT = Path(__file__).resolve().parent.parent
LANGUAGE = "zh-CN"
TWIN_SUFFIX = f".{LANGUAGE}.ipynb"


def en_sha256(text: str) -> str:
    """The hash a translation carries of the English markdown it translates."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def is_twin(path: Path) -> bool:
    """True for a built translation (``NN_name.zh-CN.ipynb``), False for an English notebook."""
    return path.name.endswith(TWIN_SUFFIX)


def english_notebooks(notebooks: Path = ROOT / "notebooks") -> list[Path]:
    """The numbered English notebooks, in order."""
    return sorted(p for p in notebooks.glob("[0-9][0-9]_*.ipynb") if not is_twin(p))


def twin_path(english: Path) -> Path:
    """Where the Chinese twin of ``english`` lives: next to it, same working directory."""
    return english.with_name(english.stem + TWIN_SUFFIX)


def translation_path(english: Path, translations: Path = ROOT / "i18n" / LANGUAGE) -> Path:
    """The translation file of ``english``."""
    return translations / f"{english.stem}.json"


@dataclass(frozen=True)
class Problem:
    """A markdown cell the twin cannot show in Chinese, or a translation that no longer has a cell."""

    notebook: str
    cell_id: str
    kind: str  # "missing", "stale" (English changed), "orphan" (no such cell), "no id"
    english: str = ""
    translated_sha256: str = ""

    def __str__(self) -> str:
        what = {
            "missing": "has no translation",
            "stale": "changed since it was translated (en_sha256 differs)",
            "orphan": "is translated but no longer in the English notebook: delete its entry",
            "no id": "has no nbformat id: save the English notebook with JupyterLab (nbformat 4.5 adds ids)",
        }[self.kind]
        return f"{self.notebook} cell {self.cell_id}: {what}"


def read_notebook(path: Path) -> nbformat.NotebookNode:
    return nbformat.reads(path.read_text(encoding="utf-8"), as_version=4)


def load_translations(path: Path) -> dict[str, dict]:
    """The entries of one translation file by cell id; {} if the file does not exist yet."""
    if not path.exists():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        entries = data["cells"]
        by_id = {entry["id"]: entry for entry in entries}
        for entry in entries:
            if not isinstance(entry["en_sha256"], str) or not isinstance(entry["zh"], list):
                raise TypeError(f"cell {entry['id']}: en_sha256 must be a string, zh a list of lines")
    except (ValueError, KeyError, TypeError) as error:
        raise SystemExit(
            f"{path}: not a translation file ({error!r}); expected "
            '{"notebook", "language", "cells": [{"id", "en_sha256", "zh": [lines]}]}'
        ) from error
    if len(by_id) != len(entries):
        raise SystemExit(f"{path}: a cell id appears twice; keep one entry per cell")
    return by_id


def find_problems(english: Path, translations: Path = ROOT / "i18n" / LANGUAGE) -> list[Problem]:
    """Markdown cells of ``english`` without a current translation, and translations without a cell."""
    entries = load_translations(translation_path(english, translations))
    problems = []
    markdown_ids = set()
    for index, cell in enumerate(read_notebook(english).cells):
        if cell.cell_type != "markdown":
            continue
        cell_id = cell.get("id")
        if not cell_id:
            problems.append(Problem(english.name, f"#{index}", "no id", cell.source))
            continue
        markdown_ids.add(cell_id)
        entry = entries.get(cell_id)
        if entry is None:
            problems.append(Problem(english.name, cell_id, "missing", cell.source))
        elif entry["en_sha256"] != en_sha256(cell.source):
            problems.append(Problem(english.name, cell_id, "stale", cell.source, entry["en_sha256"]))
    problems += [Problem(english.name, i, "orphan") for i in entries if i not in markdown_ids]
    return problems


def build_twin(english: Path, translations: Path = ROOT / "i18n" / LANGUAGE) -> str:
    """The twin's file text: the English notebook, each translated markdown cell in Chinese.

    Everything else (cell ids, code, outputs, execution counts, cell and notebook metadata) is
    copied. The first markdown cell gets a line linking the English original.
    """
    notebook = read_notebook(english)
    twin = copy.deepcopy(notebook)
    entries = load_translations(translation_path(english, translations))
    first = True
    for cell in twin.cells:
        if cell.cell_type != "markdown":
            continue
        if not cell.get("id"):
            raise SystemExit(f"{Problem(english.name, '?', 'no id')}; the twin cannot be built")
        entry = entries.get(cell.id)
        if entry is not None and entry["en_sha256"] == en_sha256(cell.source):
            cell.source = "".join(entry["zh"])
        if first:
            source_file = translation_path(english, translations).relative_to(translations.parent.parent)
            cell.source += (
                f"\n\n> 英文原版：[`{english.name}`]({english.name})。本笔记本由 `make zh` 从英文版和"
                f" `{source_file.as_posix()}` 生成，请勿直接编辑。"
            )
            first = False
    text = nbformat.writes(twin)
    return text if text.endswith("\n") else text + "\n"


def previous_english(english: Path, cell_id: str, sha256: str, depth: int = 200) -> str | None:
    """The English text a stale translation was made from, found in the notebook's git history."""
    try:
        log = subprocess.run(
            ["git", "log", f"-{depth}", "--format=%H", "--", english.name],
            cwd=english.parent, capture_output=True, text=True, check=True, timeout=60,
        ).stdout.split()  # fmt: skip
        for commit in log:
            shown = subprocess.run(
                ["git", "show", f"{commit}:./{english.name}"],
                cwd=english.parent, capture_output=True, text=True, check=True, timeout=60,
            ).stdout  # fmt: skip
            for cell in nbformat.reads(shown, as_version=4).cells:
                if cell.get("id") == cell_id and en_sha256(cell.source) == sha256:
                    return cell.source
    except (OSError, subprocess.SubprocessError, ValueError):
        return None
    return None


def status(notebooks: Path, translations: Path, out: TextIO | None = None) -> int:
    """Print every cell that needs translating (with its English, and a diff for changed cells) and
    every twin that needs rebuilding; return how many there are."""
    out = out or sys.stdout
    count = 0
    for english in english_notebooks(notebooks):
        for problem in find_problems(english, translations):
            count += 1
            print(f"\n=== {problem}", file=out)
            if problem.kind in ("missing", "stale"):
                target = translation_path(english, translations).relative_to(translations.parent.parent)
                print(f"    in {target.as_posix()}: en_sha256 {en_sha256(problem.english)}", file=out)
            if problem.kind == "stale":
                before = previous_english(english, problem.cell_id, problem.translated_sha256)
                if before is not None:
                    print("--- what changed in the English:", file=out)
                    diff = difflib.unified_diff(
                        before.splitlines(), problem.english.splitlines(), "translated", "now", lineterm=""
                    )
                    print("\n".join(list(diff)[2:]), file=out)
            if problem.english:
                print("--- English text now:", file=out)
                print(problem.english, file=out)
        twin = twin_path(english)
        if not twin.exists() or twin.read_text(encoding="utf-8") != build_twin(english, translations):
            count += 1
            print(f"\n=== {twin.name} is not what the build produces: run `make zh`", file=out)
    known = {p.stem for p in english_notebooks(notebooks)}
    strays = [*translations.glob("*.json"), *notebooks.glob(f"*{TWIN_SUFFIX}")]
    for stray in sorted(strays):
        if stray.name.removesuffix(TWIN_SUFFIX).removesuffix(".json") not in known:
            count += 1
            print(f"\n=== {stray.name}: its English notebook is gone; delete it", file=out)
    print(f"\n{count} to do" if count else "Chinese edition up to date.", file=out)
    return count


def build(notebooks: Path, translations: Path, out: TextIO | None = None) -> list[Path]:
    """Write every twin that differs from what the English notebook and its translation give."""
    out = out or sys.stdout
    written = []
    for english in english_notebooks(notebooks):
        twin = twin_path(english)
        text = build_twin(english, translations)
        untranslated = [p for p in find_problems(english, translations) if p.kind in ("missing", "stale")]
        if not twin.exists() or twin.read_text(encoding="utf-8") != text:
            twin.write_text(text, encoding="utf-8")
            written.append(twin)
        state = "wrote" if twin in written else "same "
        note = f"  ({len(untranslated)} cell(s) still in English: see `status`)" if untranslated else ""
        print(f"[{state}] {twin.relative_to(notebooks.parent).as_posix()}{note}", file=out)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=["build", "status", "stale"])
    parser.add_argument("--notebooks", type=Path, default=ROOT / "notebooks", help=argparse.SUPPRESS)
    parser.add_argument("--translations", type=Path, default=ROOT / "i18n" / LANGUAGE, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.command == "build":
        build(args.notebooks, args.translations)
        return 0
    return 1 if status(args.notebooks, args.translations) else 0


if __name__ == "__main__":
    raise SystemExit(main())
