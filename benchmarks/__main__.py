"""``python -m benchmarks`` (``make bench``): run every ``benchmarks/bench_*.py`` ``main()`` in turn.

Each script prints its own figures and targets; a script that crashes is reported and the others
still run, and the exit status is 1 if any crashed. At the end, the final tables of all scripts
that return one (``benchmarks.report.Report``) are printed again together, ready to paste.
"""

from __future__ import annotations

import importlib
import sys
import time
import traceback
from pathlib import Path

from benchmarks.report import Report


def main() -> int:
    scripts = sorted(Path(__file__).parent.glob("bench_*.py"))
    crashed = []
    reports = []
    for script in scripts:
        print(f"\n{'=' * 100}\n{script.name}\n{'=' * 100}", flush=True)
        start = time.perf_counter()
        try:
            result = importlib.import_module(f"benchmarks.{script.stem}").main()
            if isinstance(result, Report):
                reports.append(result)
        except Exception:
            traceback.print_exc()
            crashed.append(script.name)
        print(f"[{script.name}: {time.perf_counter() - start:.0f} s]", flush=True)
    if reports:
        print(f"\n{'=' * 100}\nall final tables\n{'=' * 100}")
        for report in reports:
            print(report.markdown() + "\n")
    if crashed:
        print(f"\ncrashed: {', '.join(crashed)}", file=sys.stderr)
    return 1 if crashed else 0


if __name__ == "__main__":
    sys.exit(main())
