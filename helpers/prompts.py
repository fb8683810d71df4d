"""Prompt sets shipped in ``data/prompts/``: the blog posts' Chinese prompts and English ones.

Example:
    >>> from helpers.prompts import load_prompts
    >>> load_prompts("zh")[0]
    '你是谁?'
"""

from __future__ import annotations

import json
from pathlib import Path

DATA_DIR = Path(__file__).resolve().parent.parent / "data"
PROMPT_SETS = ("zh", "en", "mixed")


def load_prompt_records(name: str = "mixed", *, data_dir: Path | None = None) -> list[dict]:
    """Return the records (``id``, ``lang``, ``prompt``) of a prompt set.

    ``mixed`` interleaves ``zh`` and ``en`` so every batch has both languages.
    """
    if name not in PROMPT_SETS:
        raise ValueError(f"unknown prompt set {name!r}; choose one of {', '.join(PROMPT_SETS)}")
    folder = (data_dir or DATA_DIR) / "prompts"
    if name == "mixed":
        zh = load_prompt_records("zh", data_dir=data_dir)
        en = load_prompt_records("en", data_dir=data_dir)
        return [record for pair in zip(zh, en, strict=True) for record in pair]
    path = folder / f"{name}.jsonl"
    if not path.exists():
        raise FileNotFoundError(f"prompt set not found: {path} (use a checkout with data/)")
    with path.open(encoding="utf-8") as lines:
        return [json.loads(line) for line in lines if line.strip()]


def load_prompts(name: str = "mixed", *, data_dir: Path | None = None) -> list[str]:
    """Return just the prompt strings of a prompt set, in file order."""
    return [record["prompt"] for record in load_prompt_records(name, data_dir=data_dir)]
