"""Append outcomes to a JSONL file as they finish, and resume a batch from it.

``amap(..., checkpoint="data/run.jsonl")`` uses this: every finished outcome (success or
failure) is appended as one JSON line and flushed at once, so a crash, a kernel restart or an
interrupt loses at most the prompts in flight. On a re-run, prompts whose *successful* outcome is
already in the file for the same index and the same prompt are loaded instead of sent again;
failed and unfinished ones are sent again. A prompt is matched by its JSON form
(``helpers.inputs.record_key``): the text of a string, the OpenAI-style dicts of a message list.
A reply cut by ``max_tokens`` is not a success to resume from, even one accepted as ok by an
earlier run with ``accept_truncated=True``, unless this run accepts cut replies too. A
``parsed`` object comes back as JSON data (a pydantic instance as its ``model_dump`` dict). Use
one file per batch: the file does not record which model or settings produced an answer.

Example::

    store = Checkpoint("data/run.jsonl")
    done = store.load_successes([as_record(p) for p in prompts])  # {index: Outcome} already answered
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import IO

from helpers.inputs import PromptRecord, record_key
from helpers.outcomes import Outcome


class Checkpoint:
    """A JSONL file of outcomes: one JSON object per line, appended as outcomes finish."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if self.path.suffix != ".jsonl":
            raise ValueError(
                f"checkpoint must be a .jsonl file path such as 'data/run.jsonl', got {str(path)!r}."
            )
        self._file: IO[str] | None = None

    def load_successes(
        self, prompts: Sequence[PromptRecord], *, accept_truncated: bool = False
    ) -> dict[int, Outcome]:
        """Successful outcomes in the file that match ``prompts`` (records) by index and prompt.

        ``accept_truncated``: also resume replies cut by ``max_tokens`` that were kept as ok.

        A line that cannot be parsed (a write cut by a crash) is skipped with a warning; a
        later line for the same index replaces an earlier one.
        """
        if not self.path.exists():
            return {}
        latest: dict[int, Outcome] = {}
        skipped = 0
        with self.path.open(encoding="utf-8") as lines:
            for line in lines:
                if not line.strip():
                    continue
                try:
                    outcome = Outcome.from_json_dict(json.loads(line))
                except (ValueError, TypeError):
                    skipped += 1
                    continue
                latest[outcome.index] = outcome
        if skipped:
            warnings.warn(
                f"{self.path}: skipped {skipped} unreadable line(s), probably a write cut by a "
                "crash; those prompts will be sent again.",
                stacklevel=2,
            )
        resumed = {}
        for index, outcome in latest.items():
            usable = outcome.ok and (accept_truncated or not outcome.truncated)
            if (
                usable
                and 0 <= index < len(prompts)
                and record_key(prompts[index]) == record_key(outcome.prompt)
            ):
                outcome.from_checkpoint = True
                resumed[index] = outcome
        return resumed

    def append(self, outcome: Outcome) -> None:
        """Write one outcome as a JSON line and flush it to the OS."""
        if self._file is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = self.path.open("a", encoding="utf-8")
            if self._file.tell() > 0 and not self._ends_with_newline():
                self._file.write("\n")  # end a line cut by a crash before appending after it
        self._file.write(json.dumps(outcome.to_json_dict(), ensure_ascii=False) + "\n")
        self._file.flush()

    def _ends_with_newline(self) -> bool:
        with self.path.open("rb") as raw:
            raw.seek(-1, 2)
            return raw.read(1) == b"\n"

    def close(self) -> None:
        """Close the file (amap does this when the batch ends, however it ends)."""
        if self._file is not None:
            self._file.close()
            self._file = None
