"""What a batch job did, in one object and a few lines of text."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from helpers.batch.files import BadLine


@dataclass
class BatchSummary:
    """Counts of one run (``skipped``: answered by an earlier run, not sent again)."""

    output: str
    engine: str
    lines: int = 0
    skipped: int = 0
    ok: int = 0
    truncated: int = 0
    failed: Counter = field(default_factory=Counter)
    bad_lines: list[BadLine] = field(default_factory=list)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    elapsed_s: float = 0.0

    @property
    def sent(self) -> int:
        return self.ok + self.truncated + sum(self.failed.values())

    def count(self, record: dict[str, Any]) -> None:
        """Add one output line written by this run."""
        response = record.get("response") or {}
        body = response.get("body") or {}
        if response.get("status_code") != 200:
            error = record.get("error") or body.get("error") or {}
            self.failed[str(error.get("type") or error.get("code") or response.get("status_code"))] += 1
            return
        choice = (body.get("choices") or [{}])[0]
        if choice.get("finish_reason") == "length":
            self.truncated += 1
        else:
            self.ok += 1
        usage = body.get("usage") or {}
        self.prompt_tokens += usage.get("prompt_tokens") or 0
        self.completion_tokens += usage.get("completion_tokens") or 0

    def __str__(self) -> str:
        failed = sum(self.failed.values())
        detail = f" ({', '.join(f'{kind} x{n}' for kind, n in self.failed.most_common())})" if failed else ""
        rate = self.sent / self.elapsed_s if self.elapsed_s else 0.0
        tokens = self.completion_tokens / self.elapsed_s if self.elapsed_s else 0.0
        lines = [
            f"{self.lines} lines: {self.sent} sent ({self.engine}), {self.skipped} already answered, "
            f"{len(self.bad_lines)} bad",
            f"{self.ok} ok, {self.truncated} truncated (finish_reason length), {failed} failed{detail}",
            f"tokens: {self.prompt_tokens} prompt, {self.completion_tokens} completion; "
            f"{self.elapsed_s:.1f} s, {rate:.1f} requests/s, {tokens:.0f} output tokens/s",
            f"output: {self.output}",
        ]
        lines += [f"bad input {bad}" for bad in self.bad_lines]
        return "\n".join(lines)
