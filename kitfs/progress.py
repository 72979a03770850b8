"""Progress display for long operations: rich bars on a terminal, log lines with ``--progress plain``,
nothing otherwise.

Library code takes a ``ProgressSink`` (anything with ``task(description, total)``) so it never needs
to know whether a terminal is attached; the CLI decides.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Protocol, TextIO


class Task(Protocol):
    def advance(self, amount: int) -> None: ...


class ProgressSink(Protocol):
    def task(self, description: str, total: int | None) -> Task: ...


class _NullTask:
    def advance(self, amount: int) -> None:
        pass

    def describe(self, description: str) -> None:
        pass


class NullProgress:
    """Shows nothing: for scripts, pipes and library callers."""

    def task(self, description: str, total: int | None) -> Task:
        return _NullTask()


class _RichTask:
    def __init__(self, progress: object, task_id: object) -> None:
        self._progress = progress
        self._id = task_id

    def advance(self, amount: int) -> None:
        self._progress.advance(self._id, amount)  # type: ignore[attr-defined]

    def describe(self, description: str) -> None:
        """A new label for the bar (an import counts its files in it)."""
        self._progress.update(self._id, description=description)  # type: ignore[attr-defined]


class RichProgress:
    """Byte-counting bars on stderr, removed when done."""

    def __init__(self) -> None:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            Progress,
            TextColumn,
            TimeRemainingColumn,
            TransferSpeedColumn,
        )

        self._progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            DownloadColumn(binary_units=True),
            TransferSpeedColumn(),
            TimeRemainingColumn(),
            console=Console(stderr=True),
            transient=True,
        )

    def __enter__(self) -> RichProgress:
        self._progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._progress.stop()

    def task(self, description: str, total: int | None) -> Task:
        return _RichTask(self._progress, self._progress.add_task(description, total=total))


class _PlainTask:
    """Writes a line each time another quarter of the bytes is done."""

    STEPS = 4

    def __init__(self, description: str, total: int | None, stream: TextIO) -> None:
        self._description = description
        self._total = total
        self._stream = stream
        self._done = 0
        self._reported = 0
        if total == 0:
            self._write(f"{description}: nothing to transfer")

    def _write(self, line: str) -> None:
        self._stream.write(line + "\n")
        self._stream.flush()

    def describe(self, description: str) -> None:
        self._description = description

    def advance(self, amount: int) -> None:
        self._done += amount
        if not self._total:
            return
        step = min(self.STEPS, self._done * self.STEPS // self._total)
        if step > self._reported:
            self._reported = step
            percent = step * 100 // self.STEPS
            self._write(f"{self._description}: {percent}% ({self._done}/{self._total} bytes)")


class PlainProgress:
    """Plain log lines on stderr (``--progress plain``): for CI logs and other non-terminals."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self._stream = stream or sys.stderr

    def task(self, description: str, total: int | None) -> Task:
        return _PlainTask(description, total, self._stream)


@contextmanager
def progress_for(mode: bool | str) -> Iterator[ProgressSink]:
    """The sink for ``mode``: "bars" (or True: the CLI passes "stderr is a terminal"), "plain" for
    log lines, anything else for nothing."""
    if mode == "plain":
        yield PlainProgress()
    elif mode is True or mode == "bars":
        with RichProgress() as sink:
            yield sink
    else:
        yield NullProgress()
