"""The server's own view, from its Prometheus ``/metrics`` (vLLM and the simulator expose one);
shared by the benchmark and the simulated fleet (``helpers.sim.fleet``).

Comparing it with what the client measured tells where time went: e.g. the server's mean TTFT
against the client's, or the simulator's ``vllm_sim:engine_lag_*`` (steps that ended late because
the simulator's CPU, not the modelled GPU, was busy).

Example::

    before = scrape_metrics(server.root_url)
    ...  # run a load
    change = metrics_delta(before, scrape_metrics(server.root_url))
    histogram_mean(change, "vllm:time_to_first_token_seconds")
"""

from __future__ import annotations

import math

import httpx

from helpers.extras import require_extra

require_extra(
    "bench", ["prometheus_client"], needed_for="reading a server's /metrics (helpers.server_metrics)"
)

from prometheus_client.parser import text_string_to_metric_families


def scrape_metrics(root_url: str, *, timeout: float = 5.0) -> dict[str, float]:
    """Every sample of ``GET {root_url}/metrics``, summed over labels, by sample name."""
    response = httpx.get(f"{root_url.rstrip('/')}/metrics", timeout=timeout)
    response.raise_for_status()
    samples: dict[str, float] = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            if "le" in sample.labels or "quantile" in sample.labels or sample.name.endswith("_created"):
                continue
            samples[sample.name] = samples.get(sample.name, 0.0) + sample.value
    return samples


def metrics_delta(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    """What changed between two scrapes (counters and histogram sums/counts)."""
    return {name: value - before.get(name, 0.0) for name, value in after.items()}


def histogram_mean(samples: dict[str, float], name: str) -> float:
    """Mean of a histogram from its ``_sum`` and ``_count`` (NaN if absent or empty)."""
    count = samples.get(f"{name}_count", 0.0)
    return samples.get(f"{name}_sum", math.nan) / count if count else math.nan
