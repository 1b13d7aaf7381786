"""Progress of a long command (``lab up``, ``backup``, ``restore``) for a person at a terminal.

On a terminal (stderr is a TTY): a line per stage, and a counter for many items redrawn in place
(``  enrolling blades 12/50``), so that a command taking a minute says what it is doing. Not on a
terminal (a script, a pipe, CI): nothing. The command's own result line on stdout is the same
either way, so scripts read exactly what they read before.

Code that does the work takes a :class:`Progress` and never asks where it goes.
"""

from __future__ import annotations

import sys
import time
from typing import Protocol, TextIO


class Progress(Protocol):
    def stage(self, text: str) -> None:
        """A new stage begins (ends any counter)."""

    def count(self, done: int, total: int, what: str) -> None:
        """``done`` of ``total`` ``what`` so far."""

    def close(self) -> None:
        """The operation is over (ends any counter)."""


class NoProgress:
    """Says nothing (not a terminal, or a caller that shows no progress)."""

    def stage(self, text: str) -> None:
        pass

    def count(self, done: int, total: int, what: str) -> None:
        pass

    def close(self) -> None:
        pass


class TerminalProgress:
    """Stage lines, and one counter line redrawn with a carriage return at most ``every`` seconds
    (and always at its last item), on ``stream``."""

    def __init__(self, stream: TextIO, prefix: str, *, every: float = 0.1) -> None:
        self.stream = stream
        self.prefix = prefix
        self.every = every
        self._counting = False
        self._drawn = 0.0

    def _end_counter(self) -> None:
        if self._counting:
            self.stream.write("\n")
            self._counting = False

    def stage(self, text: str) -> None:
        self._end_counter()
        self.stream.write(f"{self.prefix}: {text}\n")
        self.stream.flush()

    def count(self, done: int, total: int, what: str) -> None:
        now = time.monotonic()
        if done < total and self._counting and now - self._drawn < self.every:
            return
        self._drawn = now
        width = 20
        filled = width * done // max(total, 1)
        self.stream.write(f"\r\033[K  [{'#' * filled}{'.' * (width - filled)}] {what} {done}/{total}")
        self.stream.flush()
        self._counting = True

    def close(self) -> None:
        self._end_counter()
        self.stream.flush()


def for_terminal(prefix: str, stream: TextIO | None = None) -> Progress:
    """Progress on ``stream`` (stderr) when it is a terminal, else none."""
    out = stream if stream is not None else sys.stderr
    return TerminalProgress(out, prefix) if out.isatty() else NoProgress()


__all__ = ["NoProgress", "Progress", "TerminalProgress", "for_terminal"]
