"""Progress for long loops: a tqdm bar on a terminal, plain periodic lines anywhere else.

A bar redraws itself with carriage returns, which fills log files, CI output and SLURM logs with
thousands of fragments; there the same progress is a line at every tenth of the work and at the end.
"""
from __future__ import annotations

import sys
from typing import Any, Iterable, Iterator

from tqdm.auto import tqdm

LINES_PER_RUN = 10


def _on_terminal(stream) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


class LineProgress:
    """tqdm's update/set_postfix/close, printed as a line per tenth of `total` (and at the end)."""

    def __init__(self, total: int | None, *, desc: str = "", initial: int = 0, unit: str = "it", stream=None,
                 silent: bool = False):
        self.silent = silent
        self.total, self.n, self.desc, self.unit = total, initial, desc, unit
        self.stream = stream if stream is not None else sys.stderr
        self.postfix: dict[str, Any] = {}
        self._every = max(1, (total or 0) // LINES_PER_RUN) if total else None
        self._last_printed = initial
        self._closed = False

    def set_postfix(self, **values: Any) -> None:
        self.postfix.update(values)

    def update(self, n: int = 1) -> None:
        self.n += n
        if self._every and (self.n - self._last_printed >= self._every or self.n == self.total):
            self._print()

    def _print(self) -> None:
        self._last_printed = self.n
        if self.silent:
            return
        done = f"{self.n}/{self.total}" if self.total else str(self.n)
        percent = f" ({100 * self.n // self.total}%)" if self.total else ""
        extra = "".join(f" {k}={v}" for k, v in self.postfix.items())
        print(f"{self.desc}: {done} {self.unit}{percent}{extra}", file=self.stream, flush=True)

    def close(self) -> None:
        if not self._closed and self.n != self._last_printed:
            self._print()
        self._closed = True


def progress_bar(total: int | None, *, desc: str = "", initial: int = 0, unit: str = "it",
                 disable: bool = False, leave: bool = True):
    """A tqdm bar when stderr is a terminal, else a LineProgress; `disable` gives one that shows nothing."""
    if disable:
        return LineProgress(total, desc=desc, initial=initial, unit=unit, silent=True)
    if _on_terminal(sys.stderr):
        return tqdm(total=total, initial=initial, desc=desc, unit=unit, leave=leave, dynamic_ncols=True)
    return LineProgress(total, desc=desc, initial=initial, unit=unit)


def track(items: Iterable, *, total: int | None = None, desc: str = "", unit: str = "it",
          leave: bool = True) -> Iterator:
    """Iterate `items`, showing progress as progress_bar does."""
    if total is None:
        try:
            total = len(items)  # type: ignore[arg-type]
        except TypeError:
            total = None
    bar = progress_bar(total, desc=desc, unit=unit, leave=leave)
    try:
        for item in items:
            yield item
            bar.update(1)
    finally:
        bar.close()
