"""Strings that fully match a regular expression, for vLLM's `structured_outputs.regex` and JSON
Schema `pattern`: a small generator over Python's own regex parser.

- `check` refuses what vLLM's grammar backends (Rust's regex syntax) cannot compile: a syntax
  error, look-around, backreferences; the message is the one vLLM puts after "Grammar error: "
  (prefixed "regex parse error: ").
- `matching_text` picks each element with `rng` (deterministic for a seeded `random.Random`):
  unbounded repeats (`*`, `+`, `{n,}`) and large bounds repeat at most `_REPEAT_EXTRA` times
  beyond their minimum; `.` and negated classes use readable ASCII characters; anchors and
  word boundaries write nothing, and a draw that does not `re.fullmatch` is drawn again.

No library fits: `rstr`'s xeger draws negated classes from a `set`, so its output changes with
PYTHONHASHSEED, and `exrex` uses the global `random` module.

Example:
    >>> import random
    >>> matching_text(r"[0-9]{3}-[0-9]{4}", random.Random(0))
    '604-6475'
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable, Iterator
from typing import Any

try:
    import re._parser as _sre  # type: ignore[import-not-found]  # Python >= 3.11
except ImportError:  # pragma: no cover - Python < 3.11
    import sre_parse as _sre  # type: ignore[no-redef]

_REPEAT_EXTRA = 3
_ATTEMPTS = 32


def check(pattern: str) -> None:
    """Raise ValueError (vLLM's wording) when vLLM would refuse `pattern`."""
    try:
        parsed = _sre.parse(pattern)
    except re.error as error:
        raise ValueError(f"regex parse error: {error}") from None
    for opcode, _ in _walk(parsed):
        if opcode in (_sre.ASSERT, _sre.ASSERT_NOT):
            raise ValueError(
                "regex parse error: look-around, including look-ahead and look-behind, is not supported"
            )
        if opcode in (_sre.GROUPREF, _sre.GROUPREF_EXISTS):
            raise ValueError("regex parse error: backreferences are not supported")


def matching_text(pattern: str, rng: random.Random) -> str:
    """A string `re.fullmatch(pattern, ...)` accepts; ValueError when no draw matches."""
    compiled = re.compile(pattern)
    parsed = _sre.parse(pattern)
    for _ in range(_ATTEMPTS):
        text = _RegexWriter(rng).write(parsed)
        if compiled.fullmatch(text):
            return text
    raise ValueError(f"no string generated for regex {pattern!r}")


def _walk(parsed: Any) -> Iterator[tuple[Any, Any]]:
    for opcode, argument in parsed:
        yield opcode, argument
        if opcode in (_sre.MAX_REPEAT, _sre.MIN_REPEAT, _sre.POSSESSIVE_REPEAT):
            yield from _walk(argument[2])
        elif opcode is _sre.SUBPATTERN:
            yield from _walk(argument[3])
        elif opcode is _sre.ATOMIC_GROUP:
            yield from _walk(argument)
        elif opcode is _sre.BRANCH:
            for branch in argument[1]:
                yield from _walk(branch)
        elif opcode in (_sre.ASSERT, _sre.ASSERT_NOT):
            yield from _walk(argument[1])


_READABLE = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
_CATEGORY_CHARS = {
    "CATEGORY_DIGIT": "0123456789",
    "CATEGORY_NOT_DIGIT": "abcdefghijklmnopqrstuvwxyz",
    "CATEGORY_SPACE": " ",
    "CATEGORY_NOT_SPACE": _READABLE,
    "CATEGORY_WORD": _READABLE + "_",
    "CATEGORY_NOT_WORD": " -.,",
    "CATEGORY_LINEBREAK": "\n",
    "CATEGORY_NOT_LINEBREAK": _READABLE,
}
_FALLBACK_POOL = _READABLE + " _-.,:;!?@#%&*+=/()[]{}<>'\"~^$|\\\t\n" + "中文模拟"


class _RegexWriter:
    """Writes one string for a parsed regex, choosing with `rng` (fullmatch is checked by the caller)."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.groups: dict[int, str] = {}

    def write(self, parsed: Any) -> str:
        return "".join(self.item(opcode, argument) for opcode, argument in parsed)

    def item(self, opcode: Any, argument: Any) -> str:
        handler: Callable[[Any], str] | None = getattr(self, f"op_{str(opcode).lower()}", None)
        if handler is None:
            raise ValueError(f"unsupported regex element {opcode}")
        return handler(argument)

    def op_literal(self, code: int) -> str:
        return chr(code)

    def op_not_literal(self, code: int) -> str:
        return self.rng.choice([c for c in _READABLE if ord(c) != code])

    def op_any(self, _: Any) -> str:
        return self.rng.choice(_READABLE)

    def op_at(self, _: Any) -> str:
        return ""

    def op_in(self, items: list) -> str:
        negate = bool(items) and items[0][0] is _sre.NEGATE
        chars = self.class_chars(items[1:] if negate else items)
        if negate:
            pool = [c for c in _FALLBACK_POOL if c not in chars]
            return self.rng.choice(pool) if pool else "\u00e9"
        return self.rng.choice(chars)

    def class_chars(self, items: list) -> list[str]:
        chars: list[str] = []
        for opcode, argument in items:
            if opcode is _sre.LITERAL:
                chars.append(chr(argument))
            elif opcode is _sre.RANGE:
                low, high = argument
                chars.extend(chr(code) for code in range(low, min(high, low + 200) + 1))
            elif opcode is _sre.CATEGORY:
                chars.extend(_CATEGORY_CHARS.get(str(argument), _READABLE))
        return chars or list(_READABLE)

    def op_branch(self, argument: Any) -> str:
        return self.write(self.rng.choice(argument[1]))

    def op_subpattern(self, argument: Any) -> str:
        group, _, _, body = argument
        text = self.write(body)
        if group is not None:
            self.groups[group] = text
        return text

    def op_atomic_group(self, body: Any) -> str:
        return self.write(body)

    def op_max_repeat(self, argument: Any) -> str:
        low, high, body = argument
        high = min(high, low + _REPEAT_EXTRA) if high != _sre.MAXREPEAT else low + _REPEAT_EXTRA
        return "".join(self.write(body) for _ in range(self.rng.randint(low, high)))

    op_min_repeat = op_max_repeat
    op_possessive_repeat = op_max_repeat

    def op_groupref(self, group: int) -> str:
        return self.groups.get(group, "")
