"""The ``python -m helpers.bench`` command line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from helpers.bench.cli import main

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.server
def test_help_runs_as_a_module():
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-m", "helpers.bench", "--help"], capture_output=True, text=True, env=env,
        cwd=ROOT, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "--concurrency" in done.stdout and "vllm bench serve" in done.stdout


@pytest.mark.server
def test_closed_sweep_on_the_simulator_saves_results_and_plots(tmp_path, capsys):
    code = main(
        ["--sim", "instant", "--concurrency", "1,2,4", "--num-prompts", "8", "--max-tokens", "16",
         "--ignore-eos", "--slo-ttft-ms", "1000", "--name", "cli", "--results-dir", str(tmp_path),
         "--plots", "--no-progress"]
    )  # fmt: skip
    out = capsys.readouterr().out
    assert code == 0, out
    assert "closed c=4" in out and "profile instant" in out
    summary = pd.read_csv(tmp_path / "cli_summary.csv")
    assert summary["concurrency"].tolist() == [1, 2, 4]
    assert summary["completed"].tolist() == [8, 8, 8]
    assert summary["total_output_tokens"].tolist() == [128, 128, 128]
    assert summary["good_requests"].tolist() == [8, 8, 8]
    metadata = json.loads((tmp_path / "cli.json").read_text())["metadata"]
    assert metadata["sim_profile"] == "instant" and metadata["server_kind"] == "simulator"
    assert "--concurrency 1,2,4" in metadata["command"]
    for plot in ("timeline", "cdf", "knee", "ttft-vs-throughput"):
        assert (tmp_path / f"cli-{plot}.png").stat().st_size > 10_000


@pytest.mark.server
def test_serial_langchain_run(tmp_path, capsys):
    code = main(
        ["--sim", "instant", "--path", "langchain", "--mode", "serial", "--no-stream",
         "--num-prompts", "3", "--max-tokens", "8", "--results-dir", str(tmp_path), "--no-progress"]
    )  # fmt: skip
    assert code == 0
    assert "serial c=1" in capsys.readouterr().out


@pytest.mark.server
def test_results_go_to_qwen_results_dir_by_default(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("QWEN_RESULTS_DIR", str(tmp_path))  # set after helpers.bench was imported
    code = main(["--sim", "instant", "--concurrency", "2", "--num-prompts", "2", "--max-tokens", "4",
                 "--name", "default-dir", "--no-progress"])  # fmt: skip
    assert code == 0, capsys.readouterr().out
    assert (tmp_path / "default-dir.json").exists()


def test_bad_arguments_say_what_to_do(capsys):
    assert main(["--mode", "serial"]) == 2
    assert "--path langchain" in capsys.readouterr().err
    assert main(["--concurrency", "0,4"]) == 2
    assert "must be > 0" in capsys.readouterr().err
    assert main(["--no-stream", "--slo-ttft-ms", "100"]) == 2
    assert "need streamed requests" in capsys.readouterr().err


@pytest.mark.server
def test_processes_sweep_each_run_from_two_load_processes(tmp_path, capsys):
    code = main(
        ["--sim", "instant", "--processes", "2", "--concurrency", "2,4", "--num-prompts", "8",
         "--max-tokens", "8", "--ignore-eos", "--name", "mp", "--results-dir", str(tmp_path), "--no-progress"]
    )  # fmt: skip
    out = capsys.readouterr().out
    assert code == 0, out
    assert "closed c=4, 2 processes" in out
    summary = pd.read_csv(tmp_path / "mp_summary.csv")
    assert summary["concurrency"].tolist() == [2, 4] and summary["processes"].tolist() == [2, 2]
    assert summary["process_concurrency"].tolist() == ["1,1", "2,2"]
    assert summary["completed"].tolist() == [8, 8] and summary["total_output_tokens"].tolist() == [64, 64]


@pytest.mark.server
def test_processes_open_loop_on_the_langchain_path(tmp_path, capsys):
    code = main(
        ["--sim", "instant", "--path", "langchain", "--mode", "open", "--rate", "inf,50", "--processes", "2",
         "--num-prompts", "6", "--max-tokens", "8", "--ignore-eos", "--name", "mp-open",
         "--results-dir", str(tmp_path), "--no-progress"]
    )  # fmt: skip
    out = capsys.readouterr().out
    assert code == 0, out
    summary = pd.read_csv(tmp_path / "mp-open_summary.csv")
    assert summary["path"].tolist() == ["langchain"] * 2 and summary["processes"].tolist() == [2, 2]
    assert summary["completed"].tolist() == [6, 6] and summary["total_output_tokens"].tolist() == [48, 48]


def test_bad_processes_arguments_say_what_to_do(capsys):
    assert main(["--path", "langchain", "--mode", "threads", "--processes", "2"]) == 2
    assert "--mode closed or open" in capsys.readouterr().err
    assert main(["--path", "langchain", "--mode", "serial", "--engine", "ray"]) == 2
    assert "--mode closed or open" in capsys.readouterr().err
    assert main(["--processes", "2", "--concurrency", "4", "--ray-address", "ray://head:10001"]) == 2
    assert "add --engine ray" in capsys.readouterr().err
    assert main(["--processes", "0"]) == 2
    assert "--processes must be >= 1" in capsys.readouterr().err
    assert main(["--processes", "2", "--concurrency", "1,4"]) == 2
    assert "at least one request in flight" in capsys.readouterr().err
    assert main(["--processes", "4", "--num-prompts", "2", "--concurrency", "4"]) == 2
    assert "at least one prompt each" in capsys.readouterr().err
    assert main(["--mode", "open", "--processes", "2", "--concurrency", "1"]) == 2
    assert "at least one request in flight" in capsys.readouterr().err
