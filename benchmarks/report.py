"""The compact table each benchmark script prints last: its target figures, ready to paste.

Example:
    >>> report = Report("bench_client")
    >>> report.add("amap over ainvoke + gather", "+2.6%", "<= +10%", met=True)
    >>> print(report.markdown())  # doctest: +SKIP
"""

from __future__ import annotations

import datetime as dt
import os
from dataclasses import dataclass, field

from helpers.bench import machine_info


@dataclass
class Report:
    """Rows of (figure, measured, target, verdict), with when and where they were measured."""

    script: str
    rows: list[tuple[str, str, str, str]] = field(default_factory=list)
    load_start: float = field(default_factory=lambda: os.getloadavg()[0])
    load_end: float | None = None  # set when the table is first printed

    def add(self, figure: str, measured: str, target: str = "", met: bool | None = None) -> None:
        """One row; ``met`` None means a figure shown for information, with no target."""
        verdict = "" if met is None else ("met" if met else "MISSED")
        self.rows.append((figure, measured, target, verdict))

    def markdown(self) -> str:
        """A Markdown table headed by the script, date, machine and load average."""
        machine = machine_info()
        if self.load_end is None:
            self.load_end = os.getloadavg()[0]
        header = (
            f"**{self.script}** — {dt.date.today().isoformat()}, {machine['nproc']} CPU "
            f"{machine['cpu_model']}, Python {machine['python']}, load average (1 min) "
            f"{self.load_start:.1f} at start, {self.load_end:.1f} at end"
        )
        lines = [header, "", "| figure | measured | target | verdict |", "| --- | --- | --- | --- |"]
        lines += ["| " + " | ".join(row) + " |" for row in self.rows]
        return "\n".join(lines)

    def print(self) -> None:
        print(f"\n{'-' * 40} final table (paste into docs/benchmark.md) {'-' * 40}")
        print(self.markdown(), flush=True)
