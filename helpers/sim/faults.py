"""Injected faults for the resilience lessons, seeded and reproducible.

One pseudo-random draw decides each request's fate, in arrival order, from `fault_seed`: the same
seed and the same sequence of requests give the same faults.

- fail_rate: HTTP 500 or 503 with a vLLM-shaped error body;
- rate_limit_rate: HTTP 429 with a `Retry-After` header;
- disconnect_rate: the connection is closed mid-response (a stream stops after some chunks with
  no `[DONE]`; a non-streamed body stops half-way);
- latency_spike_rate: the request waits `latency_spike_s` (model seconds) before it is scheduled;
- tool_call_error_rate: in a reply with planned tool calls (tool_choice auto/required), the model
  writes a malformed `<tool_call>` (unclosed JSON): the Hermes parser gives up and the raw text is
  `content`, `finish_reason` "stop", as in `hermes-qwen3-tools-auto-malformed`. Counted in /metrics
  (`reason="tool_call_error"`) only when a call was planned. Its draw is made only when the rate is
  set, so the other faults' sequence is unchanged without it.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from helpers.sim.chat_request import ApiError
from helpers.sim.wire import error_body

RETRY_AFTER_S = 1


@dataclass(frozen=True)
class Fate:
    error: ApiError | None = None
    disconnect_after: float | None = None  # fraction of the response sent before the cut
    extra_delay_s: float = 0.0
    malformed_tool_call: bool = False  # the model botches its tool call, if it makes one


NO_FAULT = Fate()


class FaultInjector:
    def __init__(
        self,
        *,
        fail_rate: float = 0.0,
        rate_limit_rate: float = 0.0,
        disconnect_rate: float = 0.0,
        latency_spike_rate: float = 0.0,
        latency_spike_s: float = 2.0,
        tool_call_error_rate: float = 0.0,
        seed: int = 0,
    ) -> None:
        for name, rate in (
            ("fail_rate", fail_rate),
            ("rate_limit_rate", rate_limit_rate),
            ("disconnect_rate", disconnect_rate),
            ("latency_spike_rate", latency_spike_rate),
            ("tool_call_error_rate", tool_call_error_rate),
        ):
            if not 0.0 <= rate <= 1.0:
                raise ValueError(f"{name} must be between 0 and 1, got {rate}")
        if fail_rate + rate_limit_rate + disconnect_rate > 1.0:
            raise ValueError("fail_rate + rate_limit_rate + disconnect_rate must not exceed 1")
        self.fail_rate = fail_rate
        self.rate_limit_rate = rate_limit_rate
        self.disconnect_rate = disconnect_rate
        self.latency_spike_rate = latency_spike_rate
        self.latency_spike_s = latency_spike_s
        self.tool_call_error_rate = tool_call_error_rate
        self.enabled = any(
            (fail_rate, rate_limit_rate, disconnect_rate, latency_spike_rate, tool_call_error_rate)
        )
        self._rng = random.Random(seed)

    def draw(self) -> Fate:
        """The fate of the next request."""
        if not self.enabled:
            return NO_FAULT
        rng = self._rng
        roll, spike_roll, detail = rng.random(), rng.random(), rng.random()
        malformed = bool(self.tool_call_error_rate) and rng.random() < self.tool_call_error_rate
        extra = self.latency_spike_s if spike_roll < self.latency_spike_rate else 0.0
        if roll < self.fail_rate:
            return Fate(error=_server_error(detail < 0.5), extra_delay_s=extra)
        roll -= self.fail_rate
        if roll < self.rate_limit_rate:
            return Fate(error=_rate_limited(), extra_delay_s=extra)
        roll -= self.rate_limit_rate
        if roll < self.disconnect_rate:
            return Fate(
                disconnect_after=0.1 + 0.8 * detail, extra_delay_s=extra, malformed_tool_call=malformed
            )
        if extra or malformed:
            return Fate(extra_delay_s=extra, malformed_tool_call=malformed)
        return NO_FAULT


def _server_error(internal: bool) -> ApiError:
    if internal:
        body = error_body(
            "Simulated fault (--fail-rate): internal server error while processing the request.",
            "InternalServerError",
            None,
            500,
        )
        return ApiError(500, body)
    body = error_body(
        "Simulated fault (--fail-rate): the engine is temporarily unavailable, retry later.",
        "ServiceUnavailableError",
        None,
        503,
    )
    return ApiError(503, body)


def _rate_limited() -> ApiError:
    body = error_body(
        f"Simulated fault (--rate-limit-rate): too many requests, retry after {RETRY_AFTER_S} s.",
        "RateLimitError",
        None,
        429,
    )
    return ApiError(429, body, {"retry-after": str(RETRY_AFTER_S)})
