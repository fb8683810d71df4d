"""Batch jobs: OpenAI Batch format in and out, resume, kill and resume, bad lines, reasoning kept, Ray."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from langchain_core.messages import AIMessage

from helpers.batch import arun_batch, read_output, read_requests
from helpers.batch.bodies import call_params, completion_body
from helpers.endpoint import Endpoint
from helpers.server_metrics import scrape_metrics
from helpers.sim import serve

NO_THINKING = {"chat_template_kwargs": {"enable_thinking": False}}


def batch_line(custom_id: str, content: str, **params) -> str:
    body = {"model": "Qwen/Qwen3-0.6B", "messages": [{"role": "user", "content": content}], **params}
    return json.dumps({"custom_id": custom_id, "method": "POST", "url": "/v1/chat/completions", "body": body})


def write_lines(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def server():
    with serve(profile="instant", answer_tokens_mean=24, think_tokens_mean=16) as running:
        yield running


@pytest.fixture
def endpoint(server) -> Endpoint:
    return Endpoint(server.base_url, server.model, kind="simulator")


def sent_so_far(server) -> float:
    return scrape_metrics(server.root_url).get("vllm:request_success_total", 0.0)


def test_input_lines_both_forms_and_every_bad_line_with_its_number(tmp_path):
    path = write_lines(
        tmp_path / "in.jsonl",
        [
            batch_line("a", "你好"),
            json.dumps({"prompt": "hello", "max_tokens": 8}),
            "",
            "{not json",
            json.dumps({"custom_id": "b", "url": "/v1/completions", "body": {"messages": []}}),
            json.dumps({"custom_id": "c", "url": "/v1/chat/completions", "body": {"messages": []}}),
            batch_line("a", "again"),
            json.dumps({"prompt": "   "}),
            batch_line("d", "hi", stream=True),
            json.dumps(["a list"]),
        ],
    )
    requests, bad = read_requests(path)
    assert [(r.line, r.custom_id) for r in requests] == [(1, "a"), (2, "line-2")]
    assert requests[1].body == {"messages": [{"role": "user", "content": "hello"}], "max_tokens": 8}
    reasons = {b.line: b.reason for b in bad}
    assert sorted(reasons) == [4, 5, 6, 7, 8, 9, 10]
    assert "not JSON" in reasons[4]
    assert "url must be /v1/chat/completions" in reasons[5]
    assert "messages must be a non-empty list" in reasons[6]
    assert "repeats line 1" in reasons[7]
    assert "prompt must be a non-empty string" in reasons[8]
    assert "streaming is not supported" in reasons[9]
    assert "JSON object is expected" in reasons[10]
    assert str(bad[0]).startswith("line 4: ")


def test_body_parameters_go_to_the_sdk_or_to_extra_body():
    messages, kwargs = call_params(
        {
            "model": "m",
            "messages": [{"role": "user", "content": "x"}],
            "max_tokens": 5,
            "top_k": 20,
            **NO_THINKING,
        }
    )
    assert messages == [{"role": "user", "content": "x"}]
    assert kwargs == {"model": "m", "max_tokens": 5, "extra_body": {"top_k": 20, **NO_THINKING}}


def test_completion_body_keeps_reasoning_tool_calls_and_usage():
    message = AIMessage(
        content="",
        additional_kwargs={"reasoning_content": "think"},
        tool_calls=[{"id": "chatcmpl-tool-1", "name": "get_weather", "args": {"city": "北京"}}],
        response_metadata={
            "id": "chatcmpl-1",
            "model_name": "Qwen/Qwen3-0.6B",
            "finish_reason": "tool_calls",
            "token_usage": {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7, "x": None},
        },
    )
    body = completion_body(message)
    reply = body["choices"][0]["message"]
    assert reply["content"] is None and reply["reasoning"] == "think"
    assert reply["tool_calls"][0]["function"] == {"name": "get_weather", "arguments": '{"city": "北京"}'}
    assert body["choices"][0]["finish_reason"] == "tool_calls"
    assert body["usage"] == {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7}


@pytest.mark.server
async def test_local_batch_writes_openai_batch_output_with_reasoning(tmp_path, endpoint):
    inputs = write_lines(
        tmp_path / "in.jsonl",
        [
            batch_line("think", "你是谁?", max_tokens=200),
            batch_line("plain", "Who are you?", max_tokens=200, **NO_THINKING),
            json.dumps({"prompt": "1+1=?", "custom_id": "short", "max_tokens": 3, **NO_THINKING}),
            batch_line("bad-temp", "hi", temperature=-1),
            "oops",
        ],
    )
    output = tmp_path / "out.jsonl"
    summary = await arun_batch(inputs, output, endpoint=endpoint, progress=False)
    records = read_output(output)
    assert set(records) == {"think", "plain", "short", "bad-temp"}
    think = records["think"]["response"]
    assert think["status_code"] == 200 and records["think"]["error"] is None
    assert think["body"]["object"] == "chat.completion"
    assert think["body"]["choices"][0]["message"]["reasoning"]  # Qwen3's thinking is kept
    assert think["body"]["choices"][0]["message"]["content"]
    assert think["body"]["usage"]["completion_tokens"] > 0
    assert records["plain"]["response"]["body"]["choices"][0]["message"]["reasoning"] is None
    assert records["short"]["response"]["body"]["choices"][0]["finish_reason"] == "length"
    refused = records["bad-temp"]["response"]
    assert refused["status_code"] == 400 and "temperature" in refused["body"]["error"]["message"]
    assert (summary.ok, summary.truncated, sum(summary.failed.values()), len(summary.bad_lines)) == (
        2,
        1,
        1,
        1,
    )
    assert summary.bad_lines[0].line == 5
    text = str(summary)
    assert "1 truncated" in text and "bad input line 5" in text and "requests/s" in text


@pytest.mark.server
async def test_rerun_sends_only_what_was_not_answered(tmp_path, server, endpoint):
    lines = [batch_line(f"r{i}", f"question {i}", max_tokens=40, **NO_THINKING) for i in range(6)]
    inputs = write_lines(tmp_path / "in.jsonl", lines)
    output = tmp_path / "out.jsonl"
    await arun_batch(inputs, output, endpoint=endpoint, progress=False)
    kept = output.read_text(encoding="utf-8").splitlines()[:2]
    output.write_text("\n".join(kept) + '\n{"custom_id": "r5", "respo', encoding="utf-8")  # cut mid-line
    before = sent_so_far(server)
    summary = await arun_batch(inputs, output, endpoint=endpoint, progress=False)
    assert sent_so_far(server) - before == 4 and summary.skipped == 2 and summary.sent == 4
    assert set(read_output(output)) == {f"r{i}" for i in range(6)}
    again = await arun_batch(inputs, output, endpoint=endpoint, progress=False)
    assert again.sent == 0 and again.skipped == 6


KILLED_JOB = [sys.executable, "-m", "helpers.batch", "--no-progress", "--concurrency", "4"]


@pytest.mark.slow
@pytest.mark.server
def test_a_killed_job_loses_no_finished_line_and_resumes(tmp_path):
    lines = [batch_line(f"k{i}", f"item {i}", max_tokens=30, **NO_THINKING) for i in range(40)]
    inputs = write_lines(tmp_path / "in.jsonl", lines)
    output = tmp_path / "out.jsonl"
    with serve(profile="l4", answer_tokens_mean=30) as slow:
        env = {**os.environ, "QWEN_BASE_URL": slow.base_url}
        job = subprocess.Popen([*KILLED_JOB, str(inputs), str(output)], env=env)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and len(read_output(output)) < 8:
            time.sleep(0.05)
        job.send_signal(signal.SIGKILL)
        job.wait()
        finished = read_output(output)
        assert 8 <= len(finished) < 40, "the job should have been killed mid-way"
        resumed = subprocess.run(
            [*KILLED_JOB, str(inputs), str(output)], env=env, capture_output=True, text=True, timeout=300
        )
    assert resumed.returncode == 0, resumed.stderr
    final = read_output(output)
    assert set(final) == {f"k{i}" for i in range(40)}
    assert all(final[key] == record for key, record in finished.items())  # finished lines kept as they were
    assert f"{len(finished)} already answered" in resumed.stdout


@pytest.mark.server
def test_cli_reports_bad_arguments(tmp_path):
    missing = subprocess.run(
        [sys.executable, "-m", "helpers.batch", str(tmp_path / "none.jsonl"), str(tmp_path / "o.jsonl")],
        capture_output=True,
        text=True,
        env={**os.environ, "QWEN_BASE_URL": "http://127.0.0.1:9/v1"},
    )
    assert missing.returncode == 2 and "No such file" in missing.stderr
