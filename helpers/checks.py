"""Checks a notebook prints, one per line, so that a reader (and the real-vLLM test tier) can count them.

Example:
    >>> check("8 outcomes, in input order", True)
    check passed: 8 outcomes, in input order
    True
"""

from __future__ import annotations

PASSED = "check passed"
FAILED = "CHECK FAILED"


def check(what: str, passed: bool) -> bool:
    """Print ``check passed: {what}`` or ``CHECK FAILED: {what}``; return ``passed`` as a bool."""
    passed = bool(passed)
    print(f"{PASSED if passed else FAILED}: {what}")
    return passed
