import json
from importlib import resources

import pytest

from helpers.prompts import load_prompt_records, load_prompts


def test_sets_have_both_languages_and_unique_ids():
    zh, en, mixed = load_prompts("zh"), load_prompts("en"), load_prompt_records("mixed")
    assert zh[0] == "你是谁?"
    assert all(any("\u4e00" <= ch <= "\u9fff" for ch in p) for p in zh)
    assert all(p.isascii() for p in en)
    assert len(mixed) == len(zh) + len(en)
    assert [r["lang"] for r in mixed[:2]] == ["zh", "en"]
    assert len({r["id"] for r in mixed}) == len(mixed)


def test_unknown_set_is_a_clear_error():
    with pytest.raises(ValueError, match="choose one of"):
        load_prompts("fr")


def test_sets_ship_inside_the_package():
    """Read as package data (importlib.resources), so an installed package has them too."""
    shipped = resources.files("helpers") / "prompt_sets"
    for name in ("zh", "en"):
        lines = (shipped / f"{name}.jsonl").read_text(encoding="utf-8").splitlines()
        assert load_prompts(name) == [json.loads(line)["prompt"] for line in lines if line.strip()]


def test_a_folder_of_your_own_replaces_the_shipped_sets(tmp_path):
    (tmp_path / "prompts").mkdir()
    (tmp_path / "prompts" / "en.jsonl").write_text('{"id": "x", "lang": "en", "prompt": "hi"}\n')
    assert load_prompts("en", data_dir=tmp_path) == ["hi"]
    with pytest.raises(FileNotFoundError, match=r"zh\.jsonl"):
        load_prompts("zh", data_dir=tmp_path)
