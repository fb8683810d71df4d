"""Print the simulator's options table, or replace it in a Markdown file (``--write docs/simulator.md``)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from helpers.sim.options import markdown_table, replace_table


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m helpers.sim.options_doc", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--write", metavar="FILE", type=Path, help="replace the table in this file")
    args = parser.parse_args(argv)
    if args.write is None:
        print(markdown_table())
    else:
        args.write.write_text(replace_table(args.write.read_text(encoding="utf-8")), encoding="utf-8")


if __name__ == "__main__":
    main(sys.argv[1:])
