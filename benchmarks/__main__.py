"""``python -m benchmarks`` (``make bench``): run every ``benchmarks/bench_*.py`` ``main()`` in turn.

Each script prints its own figures and targets; a script that crashes is reported and the others
still run, and the exit status is 1 if any crashed.
"""

from __future__ import annotations

import importlib
import sys
import time
import traceback
from pathlib import Path


def main() -> int:
    scripts = sorted(Path(__file__).parent.glob("bench_*.py"))
    crashed = []
    for script in scripts:
        print(f"\n{'=' * 100}\n{script.name}\n{'=' * 100}", flush=True)
        start = time.perf_counter()
        try:
            importlib.import_module(f"benchmarks.{script.stem}").main()
        except Exception:
            traceback.print_exc()
            crashed.append(script.name)
        print(f"[{script.name}: {time.perf_counter() - start:.0f} s]", flush=True)
    if crashed:
        print(f"\ncrashed: {', '.join(crashed)}", file=sys.stderr)
    return 1 if crashed else 0


if __name__ == "__main__":
    sys.exit(main())
