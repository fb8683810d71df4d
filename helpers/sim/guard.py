"""`python -m helpers.sim.guard PARENT_PID [--pdeathsig] -- COMMAND ...`: run COMMAND while PARENT_PID lives.

The simulator watches its parent itself (``helpers.sim.lifeline.watch_parent``); a program we do not write
(the vLLM router, a Rust binary) cannot. The guard sits between: it starts the program with
``PR_SET_PDEATHSIG`` (Linux: the kernel kills it when the guard exits) and exits as soon as its own parent
is gone (stdin closed, parent pid changed), so the program never outlives the Python process that asked
for it, even one killed with SIGKILL. SIGTERM and SIGINT are passed on; the guard exits with the program's
exit code.
"""

from __future__ import annotations

import argparse
import ctypes
import signal
import subprocess
import sys

from helpers.sim.lifeline import watch_parent

_PR_SET_PDEATHSIG = 1


def _die_with_guard() -> None:
    """In the child, before exec: SIGKILL it when the guard (its parent) exits."""
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def guarded_command(command: list[str], parent_pid: int, *, pdeathsig: bool) -> list[str]:
    """The command line that runs ``command`` under a guard watching ``parent_pid``.

    ``pdeathsig``: the guard also asks the kernel to kill it when the thread that started it ends; only
    right when that is the parent's main thread (the signal follows the thread, not the process).
    """
    flag = ["--pdeathsig"] if pdeathsig else []
    return [sys.executable, "-m", "helpers.sim.guard", str(parent_pid), *flag, "--", *command]


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(prog="python -m helpers.sim.guard", description=__doc__.splitlines()[0])
    parser.add_argument("parent_pid", type=int)
    parser.add_argument("--pdeathsig", action="store_true")
    if "--" not in argv or argv.index("--") == len(argv) - 1:
        parser.error("give the command to run after --")
    split = argv.index("--")
    args, command = parser.parse_args(argv[:split]), argv[split + 1 :]
    child = subprocess.Popen(command, stdin=subprocess.DEVNULL, preexec_fn=_die_with_guard)

    def pass_on(signum: int, _frame: object) -> None:
        child.send_signal(signum)

    signal.signal(signal.SIGTERM, pass_on)
    signal.signal(signal.SIGINT, pass_on)
    watch_parent(args.parent_pid, args.pdeathsig)
    return child.wait()


if __name__ == "__main__":
    raise SystemExit(main())
