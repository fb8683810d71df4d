"""One ``Outcome`` per prompt of a batch: the answer or the error, never nothing.

Example::

    outcomes = await amap(model, prompts)
    print(summarize_outcomes(outcomes))          # 100 prompts: 98 ok, 2 failed (BadRequestError x2), ...
    frame = outcomes_to_frame(outcomes)  # one row per prompt, in input order
"""

from __future__ import annotations

import statistics
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields
from typing import TYPE_CHECKING, Any

from pydantic_core import to_jsonable_python

from helpers.inputs import PromptRecord

if TYPE_CHECKING:
    import pandas as pd

CANCELLED = "Cancelled"
TRUNCATED = "Truncated"


@dataclass
class Outcome:
    """What happened to one prompt.

    ``prompt`` is the item in JSON-ready form (a string, OpenAI-style message dicts, or a dict
    of template variables: see ``helpers.inputs``). ``ok`` is True when the model returned a
    complete, usable reply; then ``answer`` holds the text and ``reasoning`` the reasoning if
    the model exposed it (in ``additional_kwargs["reasoning_content"]`` or ``["reasoning"]``, or
    as reasoning content blocks). ``parsed`` is what a structured chain returned (a pydantic
    instance, a dict) or, for a message with tool calls, its ``tool_calls``; ``answer`` is then
    the object's JSON text (or the message text). Reloaded from JSON, ``parsed`` is a dict.
    Otherwise ``error_type`` and ``error`` say why: the exception's class name
    (``RateLimitError``, ``BadRequestError``, ``IncompleteStream``, ``RequestTimeout``,
    ``Cancelled``, ...) or the kind of unusable reply (``Truncated``: cut by ``max_tokens``,
    ``InvalidOutput``, ``MalformedToolCall``; their partial ``answer``/``reasoning`` are kept),
    and a message with the cause and what to do.
    ``attempts`` counts requests actually sent for this prompt (0: never sent), ``retried``
    lists the error type of every attempt that was retried, ``latency_s`` is the wall time
    from the first attempt to the result, backoff waits included. ``usage`` has
    ``prompt_tokens``, ``completion_tokens`` and ``reasoning_tokens`` when the server reported
    them. ``from_checkpoint`` marks an outcome loaded from a checkpoint file instead of sent.
    """

    index: int
    prompt: PromptRecord
    ok: bool
    answer: str | None = None
    reasoning: str | None = None
    error_type: str | None = None
    error: str | None = None
    attempts: int = 0
    latency_s: float = 0.0
    usage: dict[str, int] | None = None
    finish_reason: str | None = None
    retried: list[str] = field(default_factory=list)
    parsed: Any = None
    from_checkpoint: bool = False

    @property
    def cancelled(self) -> bool:
        """True if the batch was cancelled before this prompt finished."""
        return self.error_type == CANCELLED

    @property
    def truncated(self) -> bool:
        """True if the reply was cut by ``max_tokens`` (an error, or accepted as ``ok``)."""
        return self.error_type == TRUNCATED or self.finish_reason == "length"

    def to_json_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (``from_checkpoint`` is not stored; ``parsed`` as JSON data)."""
        record = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "from_checkpoint"}
        return to_jsonable_python(record, fallback=str)

    @classmethod
    def from_json_dict(cls, record: dict[str, Any]) -> Outcome:
        """Rebuild an outcome written by :meth:`to_json_dict`; unknown keys are ignored."""
        known = {f.name for f in fields(cls)}
        return cls(**{key: value for key, value in record.items() if key in known})


USAGE_COLUMNS = ("prompt_tokens", "completion_tokens", "reasoning_tokens")


def outcomes_to_frame(outcomes: Sequence[Outcome]) -> pd.DataFrame:
    """One row per outcome, in order; ``usage`` is spread into token columns.

    ``retried`` becomes the number of retries (``retries`` column) plus their types joined
    by commas (``retried``).
    """
    import pandas as pd

    rows = []
    for outcome in outcomes:
        row = asdict(outcome)
        usage = row.pop("usage") or {}
        for column in USAGE_COLUMNS:
            row[column] = usage.get(column)
        row["retries"] = len(outcome.retried)
        row["retried"] = ",".join(outcome.retried)
        rows.append(row)
    columns = [f.name for f in fields(Outcome) if f.name != "usage"]
    columns[columns.index("retried") : columns.index("retried")] = ["retries"]
    columns[columns.index("finish_reason") : columns.index("finish_reason")] = list(USAGE_COLUMNS)
    frame = pd.DataFrame(rows, columns=columns)
    return frame.astype({column: "Int64" for column in USAGE_COLUMNS})


def summarize_outcomes(outcomes: Sequence[Outcome]) -> str:
    """One line: how many succeeded, were cut by max_tokens, failed (by type), were cancelled, retried.

    Replies cut by ``max_tokens`` are their own part ("3 truncated"), not counted as failed; cut
    replies accepted with ``accept_truncated=True`` are counted in ok and said so.

    >>> summarize_outcomes([Outcome(0, "a", ok=True, attempts=2, retried=["RateLimitError"], latency_s=0.5),
    ...            Outcome(1, "b", ok=False, error_type="BadRequestError", attempts=1),
    ...            Outcome(2, "c", ok=False, error_type="Truncated", attempts=1)])
    '3 prompts: 1 ok, 1 truncated, 1 failed (BadRequestError x1), 1 retries, 4 requests sent; latency of ok: median 0.50 s, max 0.50 s'
    """  # noqa: E501
    total = len(outcomes)
    ok = [o for o in outcomes if o.ok]
    cancelled = sum(o.cancelled for o in outcomes)
    truncated = sum(o.error_type == TRUNCATED for o in outcomes)
    failures = Counter(
        o.error_type for o in outcomes if not o.ok and not o.cancelled and o.error_type != TRUNCATED
    )
    accepted_cuts = sum(o.truncated for o in ok)
    parts = [
        f"{total} prompts: {len(ok)} ok"
        + (f" ({accepted_cuts} cut by max_tokens, accepted)" if accepted_cuts else "")
    ]
    if truncated:
        parts.append(f"{truncated} truncated")
    failed = sum(failures.values())
    detail = ", ".join(f"{kind} x{count}" for kind, count in failures.most_common())
    parts.append(f"{failed} failed ({detail})" if failed else "0 failed")
    if cancelled:
        parts.append(f"{cancelled} cancelled")
    resumed = sum(o.from_checkpoint for o in outcomes)
    if resumed:
        parts.append(f"{resumed} from checkpoint")
    retries = sum(len(o.retried) for o in outcomes if not o.from_checkpoint)
    sent = sum(o.attempts for o in outcomes if not o.from_checkpoint)
    parts.append(f"{retries} retries, {sent} requests sent")
    line = ", ".join(parts)
    if ok:
        latencies = [o.latency_s for o in ok]
        line += f"; latency of ok: median {statistics.median(latencies):.2f} s, max {max(latencies):.2f} s"
    return line
