"""Progress on long work (ingest, preprocess, evaluate, the export checks), on stderr.

* On a terminal: a tqdm bar with the items done, the rate and the time left, shown once the work
  has run for :data:`SHOW_AFTER` seconds (short work prints nothing).
* Otherwise (CI, ``dvc repro > log``): at most one line per 10% done and one summary line, so a
  log stays short; work shorter than :data:`SHOW_AFTER` seconds prints nothing at all.

Training keeps its own one line per epoch (:mod:`pipeline.training.callbacks`).

    with Progress(total=len(files), desc="ingest: decoding images", unit="image") as progress:
        for path in files:
            ...
            progress.update()
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterable, Iterator
from typing import IO, TypeVar

SHOW_AFTER = 2.0  # seconds of work before any progress is shown
Item = TypeVar("Item")


def _duration(seconds: float) -> str:
    seconds = max(0, round(seconds))
    return f"{seconds // 60}:{seconds % 60:02d}" if seconds >= 60 else f"{seconds} s"


class Progress:
    """Counts work done out of ``total`` items; a context manager that prints the summary on exit.

    Args:
        total: items to do (``None``: unknown; a log then gets only the summary line).
        desc: what is being done, prefixed with the stage (``"evaluate: predicting"``).
        unit: the item's name, singular.
        stream: where to write (default ``sys.stderr``); a terminal gets the tqdm bar.
        clock: seconds, for tests.
    """

    def __init__(
        self,
        total: int | None,
        desc: str,
        unit: str = "item",
        stream: IO[str] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.total, self.desc, self.unit = total, desc, unit
        self.stream = stream if stream is not None else sys.stderr
        self.clock = clock
        self.done = 0
        self.started = clock()
        self._decile = 0
        self._printed = False
        self._bar = None
        if _is_terminal(self.stream):
            from tqdm import tqdm

            self._bar = tqdm(
                total=total,
                desc=desc,
                unit=unit,
                file=self.stream,
                delay=SHOW_AFTER,
                dynamic_ncols=True,
                unit_scale=True,
            )

    def update(self, count: int = 1) -> None:
        """``count`` more items done."""
        self.done += count
        if self._bar is not None:
            self._bar.update(count)
            return
        if not self.total or self.done >= self.total:  # done: the summary line says so
            return
        decile = 10 * self.done // self.total
        if decile <= self._decile:
            return
        self._decile = decile
        elapsed = self.clock() - self.started
        if elapsed < SHOW_AFTER:
            return
        rate = self.done / elapsed if elapsed > 0 else 0.0
        left = (self.total - self.done) / rate if rate > 0 else 0.0
        self._write(
            f"{self.desc}: {10 * decile}% ({self.done:,}/{self.total:,} {self.unit}s, "
            f"{rate:,.0f}/s, {_duration(left)} left)"
        )

    def close(self) -> None:
        """Finish the bar, or write the summary line if the work took :data:`SHOW_AFTER` s or more."""
        if self._bar is not None:
            self._bar.close()
            self._bar = None
            return
        elapsed = self.clock() - self.started
        if elapsed >= SHOW_AFTER or self._printed:
            rate = self.done / elapsed if elapsed > 0 else 0.0
            self._write(
                f"{self.desc}: {self.done:,} {self.unit}s in {_duration(elapsed)} ({rate:,.0f}/s)"
            )

    def _write(self, line: str) -> None:
        self._printed = True
        print(line, file=self.stream, flush=True)

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


def track(
    items: Iterable[Item], desc: str, unit: str = "item", total: int | None = None
) -> Iterator[Item]:
    """``items``, counted by a :class:`Progress` (``total`` defaults to ``len(items)``)."""
    if total is None:
        total = len(items) if hasattr(items, "__len__") else None
    with Progress(total, desc, unit) as progress:
        for item in items:
            yield item
            progress.update()


def _is_terminal(stream: IO[str]) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False
