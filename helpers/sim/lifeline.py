"""How a simulator process (or a guarded program) lives and dies with the process that started it.

The protocol between parent and child: the child prints ``READY_PREFIX`` and its port on stdout
once it listens, and :func:`watch_parent` makes it exit as soon as its parent is gone. Shared by
the CLI (``python -m helpers.sim``), the parent side (``helpers.sim.process``) and the guard
(``helpers.sim.guard``).
"""

from __future__ import annotations

import logging
import os
import sys
import threading

READY_PREFIX = "SIM_READY port="
log = logging.getLogger("helpers.sim")


def watch_parent(parent_pid: int, pdeathsig: bool) -> None:
    """Exit as soon as the parent process is gone, however it ended.

    Three guards: PR_SET_PDEATHSIG (Linux: the kernel sends SIGKILL when the parent exits; only
    used when the parent started us from its main thread, since the signal follows the thread),
    end of file on stdin (the parent holds the pipe's other end), and a parent-pid poll.
    """
    if pdeathsig:
        _set_parent_death_signal()
    if os.getppid() != parent_pid:
        os._exit(0)

    def stdin_eof() -> None:
        try:
            while sys.stdin.buffer.read(4096):
                pass
        except (OSError, ValueError):
            pass
        os._exit(0)

    def poll_parent() -> None:
        while os.getppid() == parent_pid:
            threading.Event().wait(0.5)
        os._exit(0)

    threading.Thread(target=stdin_eof, name="sim-stdin-watch", daemon=True).start()
    threading.Thread(target=poll_parent, name="sim-parent-watch", daemon=True).start()


def _set_parent_death_signal() -> None:
    if not sys.platform.startswith("linux"):
        return
    try:
        import ctypes
        import signal

        libc = ctypes.CDLL(None, use_errno=True)
        pr_set_pdeathsig = 1
        libc.prctl(pr_set_pdeathsig, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):
        log.debug("PR_SET_PDEATHSIG unavailable; relying on the stdin and parent-pid watchdogs")
