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
from typing import Any

from helpers.bench import machine_info


def machine_line(machine: dict[str, Any] | None = None) -> str:
    """This machine in one line, e.g. ``2 CPU AMD EPYC 7B13, 24 GB, Python 3.11.9``."""
    machine = machine or machine_info()
    memory = f", {machine['memory_gb']:.0f} GB" if machine.get("memory_gb") else ""
    return f"{machine['nproc']} CPU {machine['cpu_model']}{memory}, Python {machine['python']}"


def verdict(met: bool) -> str:
    """``MET`` or ``MISSED``, for a figure printed against its target."""
    return "MET" if met else "MISSED"


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
        if self.load_end is None:
            self.load_end = os.getloadavg()[0]
        header = (
            f"**{self.script}** — {dt.date.today().isoformat()}, {machine_line()}, load average "
            f"(1 min) {self.load_start:.1f} at start, {self.load_end:.1f} at end"
        )
        lines = [header, "", "| figure | measured | target | verdict |", "| --- | --- | --- | --- |"]
        lines += ["| " + " | ".join(row) + " |" for row in self.rows]
        return "\n".join(lines)

    def print(self) -> None:
        print(f"\n{'-' * 40} final table (paste into docs/benchmark.md) {'-' * 40}")
        print(self.markdown(), flush=True)
