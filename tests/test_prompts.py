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
