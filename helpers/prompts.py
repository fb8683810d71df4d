"""Prompt sets shipped in the package (`helpers/prompt_sets/`): the blog posts' Chinese and English prompts.

Example:
    >>> from helpers.prompts import load_prompts
    >>> load_prompts("zh")[0]
    '你是谁?'
"""

from __future__ import annotations

import json
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path

PROMPT_SETS = ("zh", "en", "mixed")


def load_prompt_records(name: str = "mixed", *, data_dir: Path | None = None) -> list[dict]:
    """Return the records (``id``, ``lang``, ``prompt``) of a prompt set.

    ``mixed`` interleaves ``zh`` and ``en`` so every batch has both languages. ``data_dir`` reads
    ``<data_dir>/prompts/<name>.jsonl`` instead of the sets shipped in the package.
    """
    if name not in PROMPT_SETS:
        raise ValueError(f"unknown prompt set {name!r}; choose one of {', '.join(PROMPT_SETS)}")
    if name == "mixed":
        zh = load_prompt_records("zh", data_dir=data_dir)
        en = load_prompt_records("en", data_dir=data_dir)
        return [record for pair in zip(zh, en, strict=True) for record in pair]
    folder: Traversable = (
        Path(data_dir) / "prompts" if data_dir is not None else resources.files("helpers") / "prompt_sets"
    )
    source = folder / f"{name}.jsonl"
    if not source.is_file():
        raise FileNotFoundError(f"prompt set not found: {source}")
    lines = source.read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines if line.strip()]


def load_prompts(name: str = "mixed", *, data_dir: Path | None = None) -> list[str]:
    """Return just the prompt strings of a prompt set, in file order."""
    return [record["prompt"] for record in load_prompt_records(name, data_dir=data_dir)]
