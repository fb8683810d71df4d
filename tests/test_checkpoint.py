"""amap(..., checkpoint=...): outcomes written as they finish; a re-run sends only what is missing."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from test_concurrency import http_error, scripted

from helpers.checkpoint import Checkpoint
from helpers.concurrency import BatchCancelled, amap
from helpers.outcomes import Outcome
from helpers.retry import Backoff

FAST = Backoff(base_s=0.001, max_s=0.01, seed=0)
PROMPTS = ["你好", "1+1=?", "天空为什么是蓝色的?", "hello"]


def lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


async def test_every_finished_outcome_is_one_json_line(tmp_path: Path) -> None:
    path = tmp_path / "data" / "run.jsonl"
    model = scripted(**{"hello": [http_error(400)]})
    outcomes = await amap(model, PROMPTS, checkpoint=path, progress=False)
    records = lines(path)
    assert sorted(r["index"] for r in records) == [0, 1, 2, 3]
    by_index = {r["index"]: r for r in records}
    assert by_index[2]["prompt"] == "天空为什么是蓝色的?"  # stored as UTF-8, not \\u escapes
    assert "天空" in path.read_text(encoding="utf-8")
    assert by_index[3]["ok"] is False and by_index[3]["error_type"] == "BadRequestError"
    assert [Outcome.from_json_dict(by_index[i]) for i in range(4)] == outcomes


async def test_a_rerun_sends_only_prompts_without_a_successful_outcome(tmp_path: Path) -> None:
    path = tmp_path / "run.jsonl"
    first = await amap(scripted(hello=[http_error(400)]), PROMPTS, checkpoint=path, progress=False)
    assert [o.ok for o in first] == [True, True, True, False]

    model = scripted()
    again = await amap(model, PROMPTS, checkpoint=path, progress=False)
    assert model.calls == ["hello"]
    assert [o.ok for o in again] == [True] * 4
    assert [o.from_checkpoint for o in again] == [True, True, True, False]
    assert [o.answer for o in again[:3]] == [o.answer for o in first[:3]]

    model = scripted()
    await amap(model, PROMPTS, checkpoint=path, progress=False)
    assert model.calls == []


async def test_a_changed_prompt_at_the_same_index_is_sent_again(tmp_path: Path) -> None:
    path = tmp_path / "run.jsonl"
    await amap(scripted(), PROMPTS, checkpoint=path, progress=False)
    model = scripted()
    changed = [*PROMPTS[:3], "goodbye"]
    outcomes = await amap(model, changed, checkpoint=path, progress=False)
    assert model.calls == ["goodbye"]
    assert outcomes[3].answer == "GOODBYE"


async def test_outcomes_are_on_disk_while_the_batch_is_still_running(tmp_path: Path) -> None:
    path = tmp_path / "run.jsonl"
    model = scripted()
    model.delays = {"hello": 30.0}
    task = asyncio.create_task(amap(model, PROMPTS, checkpoint=path, progress=False))
    while not path.exists() or len(lines(path)) < 3:
        await asyncio.sleep(0.01)
    assert not task.done()
    task.cancel()
    with pytest.raises(BatchCancelled):
        await task
    assert sorted(r["index"] for r in lines(path)) == [0, 1, 2]


async def test_after_a_cancelled_run_the_rerun_sends_only_the_unfinished(tmp_path: Path) -> None:
    path = tmp_path / "run.jsonl"
    prompts = [f"p{i}" for i in range(10)]
    model = scripted()
    model.delays = {prompt: 30.0 for prompt in prompts[6:]}
    task = asyncio.create_task(amap(model, prompts, concurrency=3, checkpoint=path, progress=False))
    while len(model.calls) < 9:
        await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(BatchCancelled) as info:
        await task
    assert sum(o.ok for o in info.value.outcomes) == 6

    model = scripted()
    outcomes = await amap(model, prompts, concurrency=3, checkpoint=path, progress=False)
    assert sorted(model.calls) == prompts[6:]
    assert all(o.ok for o in outcomes)


async def test_a_line_cut_by_a_crash_is_skipped_and_its_prompt_sent_again(tmp_path: Path) -> None:
    path = tmp_path / "run.jsonl"
    await amap(scripted(), PROMPTS, checkpoint=path, progress=False)
    text = path.read_text(encoding="utf-8")
    cut = text[: text.rstrip("\n").rfind("\n") + 1] + text.rstrip("\n").split("\n")[-1][:20]
    path.write_text(cut, encoding="utf-8")
    lost_index = json.loads(text.rstrip("\n").split("\n")[-1])["index"]

    model = scripted()
    with pytest.warns(UserWarning, match="skipped 1 unreadable line"):
        outcomes = await amap(model, PROMPTS, checkpoint=path, progress=False)
    assert model.calls == [PROMPTS[lost_index]]
    assert all(o.ok for o in outcomes)
    with pytest.warns(UserWarning, match="skipped 1 unreadable line"):
        assert sorted(Checkpoint(path).load_successes(PROMPTS)) == [0, 1, 2, 3]


def test_a_missing_file_means_nothing_to_resume(tmp_path: Path) -> None:
    assert Checkpoint(tmp_path / "absent.jsonl").load_successes(PROMPTS) == {}


def test_the_path_must_be_jsonl() -> None:
    with pytest.raises(ValueError, match=r"\.jsonl file path"):
        Checkpoint("data/run.json")
