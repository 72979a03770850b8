"""Progress display for long operations: rich bars on a terminal, nothing otherwise.

Library code takes a ``ProgressSink`` (anything with ``task(description, total)``) so it never needs
to know whether a terminal is attached; the CLI decides.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Protocol


class Task(Protocol):
    def advance(self, amount: int) -> None: ...


class ProgressSink(Protocol):
    def task(self, description: str, total: int | None) -> Task: ...


class _NullTask:
    def advance(self, amount: int) -> None:
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


@contextmanager
def progress_for(enabled: bool) -> Iterator[ProgressSink]:
    """A sink that shows bars when ``enabled`` (the CLI passes "stderr is a terminal")."""
    if not enabled:
        yield NullProgress()
        return
    with RichProgress() as sink:
        yield sink
