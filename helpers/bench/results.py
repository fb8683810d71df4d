"""Save and load benchmark results: per-request CSV, per-run summary CSV and JSON run metadata.

Example:
    >>> result = BenchResult(runs=[run], metadata=collect_metadata(base_url, model))  # doctest: +SKIP
    >>> paths = save_result(result, "blog-sync-vs-async")                             # doctest: +SKIP
    >>> load_result(paths["json"]).summary                                             # doctest: +SKIP
"""

from __future__ import annotations

import datetime as dt
import json
import math
import os
import platform
from dataclasses import asdict, dataclass, field
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx
import pandas as pd

from helpers.bench.metrics import SLO, requests_frame, summary_frame
from helpers.bench.records import RequestRecord, RunResult
from helpers.results_dir import default_results_dir

PACKAGES = (
    "httpx",
    "aiohttp",
    "openai",
    "langchain-core",
    "langchain-openai",
    "langchain-deepseek",
    "numpy",
    "pandas",
    "matplotlib",
    "uvicorn",
    "starlette",
)


@dataclass
class BenchResult:
    """One or more runs (a sweep) with the metadata that says where they were measured."""

    runs: list[RunResult]
    metadata: dict[str, Any] = field(default_factory=dict)
    slo: SLO | None = None

    @property
    def summary(self) -> pd.DataFrame:
        """One row per run (see :func:`helpers.bench.metrics.summarize`)."""
        return summary_frame(self.runs, self.slo)

    @property
    def requests(self) -> pd.DataFrame:
        """One row per request of every run, with a ``run`` column (the run's position)."""
        frames = [requests_frame(run).assign(run=i) for i, run in enumerate(self.runs)]
        if not frames:
            return pd.DataFrame()
        return pd.concat(frames, ignore_index=True)

    def subtitle(self) -> str:
        """One line naming the server, profile and machine, for plot subtitles."""
        return describe_metadata(self.metadata)


def save_result(result: BenchResult, name: str, results_dir: str | Path | None = None) -> dict[str, Path]:
    """Write ``<name>_requests.csv``, ``<name>_summary.csv`` and ``<name>.json``; return the paths.

    ``results_dir`` defaults to :func:`default_results_dir` (``$QWEN_RESULTS_DIR`` or ``./results/``).
    """
    if not name or "/" in name or "\\" in name:
        raise ValueError(f"name must be a plain file stem such as 'sweep-t4', got {name!r}")
    directory = Path(results_dir) if results_dir is not None else default_results_dir()
    directory.mkdir(parents=True, exist_ok=True)
    paths = {
        "requests": directory / f"{name}_requests.csv",
        "summary": directory / f"{name}_summary.csv",
        "json": directory / f"{name}.json",
    }
    requests = result.requests
    if not requests.empty:
        requests["itl_s"] = requests["itl_s"].map(json.dumps)
    requests.to_csv(paths["requests"], index=False)
    summary = result.summary
    summary.to_csv(paths["summary"], index=False)
    document = {
        "name": name,
        "metadata": result.metadata,
        "slo": asdict(result.slo) if result.slo else None,
        "runs": [
            {
                "label": run.label,
                "duration_s": run.duration_s,
                "cpu_s": run.cpu_s,
                "settings": run.settings,
            }
            for run in result.runs
        ],
        "summary": summary.to_dict("records"),
    }
    text = json.dumps(_jsonable(document), indent=2, ensure_ascii=False, allow_nan=False)
    paths["json"].write_text(text, encoding="utf-8")
    return paths


def load_result(path: str | Path, results_dir: str | Path | None = None) -> BenchResult:
    """Load what :func:`save_result` wrote, from the JSON path or from the name alone."""
    path = Path(path)
    if path.suffix != ".json":
        path = (Path(results_dir) if results_dir is not None else default_results_dir()) / f"{path.name}.json"
    if not path.exists():
        raise FileNotFoundError(f"no saved result at {path}; save one first with save_result()")
    document = _restore(json.loads(path.read_text(encoding="utf-8")))
    requests_path = path.with_name(f"{document['name']}_requests.csv")
    try:
        requests = pd.read_csv(requests_path, keep_default_na=False, na_values=[""])
    except pd.errors.EmptyDataError:
        requests = pd.DataFrame(columns=["run"])
    runs = []
    for i, saved in enumerate(document["runs"]):
        rows = requests[requests["run"] == i].to_dict("records")
        for row in rows:
            row["itl_s"] = json.loads(row["itl_s"])
        runs.append(
            RunResult(
                records=[RequestRecord.from_row(row) for row in rows],
                duration_s=saved["duration_s"],
                cpu_s=saved["cpu_s"],
                settings=saved["settings"],
                label=saved["label"],
            )
        )
    slo = SLO(**document["slo"]) if document.get("slo") else None
    return BenchResult(runs=runs, metadata=document["metadata"], slo=slo)


def collect_metadata(
    base_url: str | None = None,
    model: str | None = None,
    *,
    endpoint: Any = None,
    server_kind: str | None = None,
    sim_profile: str | None = None,
    api_key: str | None = None,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Where and when a benchmark ran: endpoint, model, server kind and version, packages, machine.

    ``endpoint`` (a :class:`helpers.endpoint.Endpoint`) fills base URL, model and key. The server
    version comes from ``GET /version`` (vLLM and the simulator answer it; the simulator's ends in
    ``+qwen-sim``); the API key is only used for that request and never stored.
    """
    if endpoint is not None:
        base_url = base_url or endpoint.base_url
        model = model or endpoint.model
        if api_key is None and getattr(endpoint, "api_key", None) is not None:
            api_key = endpoint.api_key.get_secret_value()
    server_version = _server_version(base_url, api_key) if base_url else None
    if server_kind is None and server_version is not None:
        server_kind = "simulator" if "sim" in server_version.lower() else "vllm"
    return {
        "endpoint": _without_credentials(base_url) if base_url else None,
        "model": model,
        "server_kind": server_kind,
        "server_version": server_version,
        "sim_profile": sim_profile,
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "packages": _package_versions(),
        "machine": machine_info(),
        **(extra or {}),
    }


def machine_info() -> dict[str, Any]:
    """CPU count and model, memory, OS and Python of this machine."""
    cpu_model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    cpu_model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        import psutil

        memory_gb = round(psutil.virtual_memory().total / 2**30, 1)
    except ImportError:
        memory_gb = None
    return {
        "nproc": os.cpu_count(),
        "cpu_model": cpu_model,
        "memory_gb": memory_gb,
        "os": platform.platform(terse=True),
        "python": platform.python_version(),
    }


def describe_metadata(metadata: dict[str, Any]) -> str:
    """E.g. ``simulator 0.32.0 (profile t4) · Qwen3-0.6B · 2 CPU AMD EPYC``."""
    parts = []
    server = metadata.get("server_kind") or "server"
    if metadata.get("server_version"):
        server += f" {metadata['server_version']}"
    if metadata.get("sim_profile"):
        server += f" (profile {metadata['sim_profile']})"
    parts.append(server)
    if metadata.get("model"):
        parts.append(str(metadata["model"]))
    machine = metadata.get("machine") or {}
    if machine.get("nproc"):
        parts.append(f"{machine['nproc']} CPU {machine.get('cpu_model', '')}".strip())
    return " · ".join(parts)


def _server_version(base_url: str, api_key: str | None) -> str | None:
    root = base_url.rstrip("/").removesuffix("/v1")
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    try:
        response = httpx.get(f"{root}/version", headers=headers, timeout=5.0)
        response.raise_for_status()
        return str(response.json().get("version"))
    except (httpx.HTTPError, ValueError, AttributeError):
        return None


def _without_credentials(url: str) -> str:
    parts = urlsplit(url)
    netloc = parts.hostname or ""
    if parts.port:
        netloc += f":{parts.port}"
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def _package_versions() -> dict[str, str]:
    versions = {}
    for package in PACKAGES:
        try:
            versions[package] = importlib_metadata.version(package)
        except importlib_metadata.PackageNotFoundError:
            continue
    return versions


_NON_FINITE = {"inf": math.inf, "-inf": -math.inf, "nan": math.nan}


def _jsonable(value: Any) -> Any:
    """Strict JSON: non-finite floats become the strings 'inf', '-inf', 'nan'."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if hasattr(value, "item"):  # numpy scalars
        return _jsonable(value.item())
    return value


def _restore(value: Any) -> Any:
    """Inverse of :func:`_jsonable`."""
    if isinstance(value, dict):
        return {k: _restore(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_restore(v) for v in value]
    if isinstance(value, str) and value in _NON_FINITE:
        return _NON_FINITE[value]
    return value
