"""CSV + JSON round trip of benchmark results, and the run metadata."""

from __future__ import annotations

import json
import math

import pandas as pd
import pytest

from helpers.bench.metrics import SLO
from helpers.bench.records import RequestRecord, RunResult
from helpers.bench.results import (
    BenchResult,
    collect_metadata,
    default_results_dir,
    describe_metadata,
    load_result,
    save_result,
)


def make_result():
    records = [
        RequestRecord(
            0,
            0.0,
            1.0,
            streamed=True,
            ttft_s=0.1,
            ttfa_s=0.4,
            itl_s=[0.1, 0.2],
            chunks=3,
            prompt_tokens=12,
            output_tokens=3,
            reasoning_tokens=1,
        ),
        RequestRecord(1, 0.2, 0.3, ok=False, error='HTTP 500: boom, "quoted"\nsecond line'),
    ]
    runs = [
        RunResult(
            records,
            duration_s=1.0,
            cpu_s=0.05,
            settings={"generator": "open", "rate": math.inf, "burstiness": 1.0},
        ),
        RunResult(
            [RequestRecord(0, 0.0, 2.0, output_tokens=7)], duration_s=2.0, settings={"generator": "serial"}
        ),
    ]
    metadata = collect_metadata(model="Qwen/Qwen3-0.6B", server_kind="simulator", sim_profile="t4")
    return BenchResult(runs, metadata, slo=SLO(e2el_s=1.5))


def test_round_trip_keeps_records_settings_and_summary(tmp_path):
    result = make_result()
    paths = save_result(result, "roundtrip", tmp_path)
    assert {p.name for p in paths.values()} == {
        "roundtrip_requests.csv",
        "roundtrip_summary.csv",
        "roundtrip.json",
    }
    loaded = load_result(paths["json"])
    assert [r.records for r in loaded.runs] == [r.records for r in result.runs]
    assert loaded.runs[0].settings["rate"] == math.inf
    assert loaded.runs[0].label == "open inf req/s"
    assert loaded.slo == result.slo
    assert loaded.metadata == result.metadata
    pd.testing.assert_frame_equal(loaded.summary, result.summary)
    # loading by name from the directory works too
    assert load_result("roundtrip", tmp_path).runs[1].records[0].output_tokens == 7


def test_json_is_strict_and_summary_csv_is_readable(tmp_path):
    paths = save_result(make_result(), "strict", tmp_path)
    document = json.loads(paths["json"].read_text(), parse_constant=pytest.fail)
    assert document["runs"][0]["settings"]["rate"] == "inf"
    summary = pd.read_csv(paths["summary"])
    assert summary["failed"].tolist() == [1, 0]
    assert summary["good_requests"].tolist() == [1, 0]  # 2.0 s > 1.5 s


def test_metadata_names_machine_and_packages_without_secrets():
    metadata = collect_metadata("http://user:secret@127.0.0.1:9/v1", "m", api_key="sk-secret-123456789")
    text = json.dumps(metadata)
    assert "secret" not in text
    assert metadata["endpoint"] == "http://127.0.0.1:9/v1"
    assert metadata["server_version"] is None  # nothing listens on port 9
    assert metadata["machine"]["nproc"] >= 1 and metadata["machine"]["cpu_model"]
    assert "pandas" in metadata["packages"]
    described = describe_metadata({**metadata, "server_kind": "simulator", "sim_profile": "t4"})
    assert "profile t4" in described and "CPU" in described


def test_bad_name_and_missing_file_are_clear_errors(tmp_path):
    with pytest.raises(ValueError, match="plain file stem"):
        save_result(make_result(), "a/b", tmp_path)
    with pytest.raises(FileNotFoundError, match="save_result"):
        load_result("nothing-here", tmp_path)


def test_results_dir_follows_the_environment_at_call_time(tmp_path, monkeypatch):
    monkeypatch.setenv("QWEN_RESULTS_DIR", str(tmp_path / "scratch"))
    assert default_results_dir() == tmp_path / "scratch"
    paths = save_result(make_result(), "by-env")
    assert paths["json"] == tmp_path / "scratch" / "by-env.json"
    assert load_result("by-env").runs[1].records[0].output_tokens == 7


def test_results_default_to_the_working_directory_not_the_source_tree(tmp_path, monkeypatch):
    """An installed package must not write into site-packages, nor a user run over committed files."""
    monkeypatch.delenv("QWEN_RESULTS_DIR")
    monkeypatch.chdir(tmp_path)
    assert default_results_dir() == tmp_path / "results"
    paths = save_result(make_result(), "in-cwd")
    assert paths["json"] == tmp_path / "results" / "in-cwd.json"
    assert load_result("in-cwd").runs[1].records[0].output_tokens == 7
    monkeypatch.setenv("QWEN_RESULTS_DIR", "")  # empty means unset
    assert default_results_dir() == tmp_path / "results"
