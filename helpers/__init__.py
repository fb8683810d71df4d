"""Calling Qwen3-0.6B on vLLM from Python, sync and async; see README.md and docs/client.md.

The client's public API, in one place; each name is imported on first use, so ``import helpers``
costs nothing and never loads the simulator, the benchmark engine or their packages::

    from helpers import make_chat_model, amap, run
    model = make_chat_model(thinking=True)
    outcomes = run(amap(model, ["你好", "1+1=?"]))

The optional parts are subpackages with their own extras: ``helpers.sim`` (``sim``),
``helpers.bench`` and ``helpers.plots`` (``bench``), ``helpers.batch``, ``helpers.sim.fleet`` (``scale``).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# public name -> the module that defines it
_EXPORTS = {
    "make_chat_model": "helpers.chat",
    "ReasoningChatOpenAI": "helpers.reasoning_model",
    "amap": "helpers.concurrency",
    "map_prompts": "helpers.concurrency",
    "BatchCancelled": "helpers.amap_batch",
    "Outcome": "helpers.outcomes",
    "summarize_outcomes": "helpers.outcomes",
    "outcomes_to_frame": "helpers.outcomes",
    "Truncated": "helpers.replies",
    "Backoff": "helpers.retry",
    "run": "helpers.loop",
    "Endpoint": "helpers.endpoint",
    "resolve_endpoint": "helpers.endpoint",
    "check_endpoint": "helpers.diagnosis",
    "diagnose": "helpers.diagnosis",
    "EndpointError": "helpers.errors",
    "show_stream": "helpers.streaming",
    "astream_parts": "helpers.streaming",
    "stream_with_timings": "helpers.streaming",
    "load_prompts": "helpers.prompts",
}

__all__ = [
    "Backoff",
    "BatchCancelled",
    "Endpoint",
    "EndpointError",
    "Outcome",
    "ReasoningChatOpenAI",
    "Truncated",
    "amap",
    "astream_parts",
    "check_endpoint",
    "diagnose",
    "load_prompts",
    "make_chat_model",
    "map_prompts",
    "outcomes_to_frame",
    "resolve_endpoint",
    "run",
    "show_stream",
    "stream_with_timings",
    "summarize_outcomes",
]


assert set(__all__) == set(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'helpers' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # the next lookup is a plain attribute
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})


if TYPE_CHECKING:  # for type checkers and IDEs; at run time the names come from __getattr__
    from helpers.amap_batch import BatchCancelled
    from helpers.chat import make_chat_model
    from helpers.concurrency import amap, map_prompts
    from helpers.diagnosis import check_endpoint, diagnose
    from helpers.endpoint import Endpoint, resolve_endpoint
    from helpers.errors import EndpointError
    from helpers.loop import run
    from helpers.outcomes import Outcome, outcomes_to_frame, summarize_outcomes
    from helpers.prompts import load_prompts
    from helpers.reasoning_model import ReasoningChatOpenAI
    from helpers.replies import Truncated
    from helpers.retry import Backoff
    from helpers.streaming import astream_parts, show_stream, stream_with_timings
