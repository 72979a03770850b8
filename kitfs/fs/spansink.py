"""The receiving end of a run of spans: bytes land in one span-sized buffer, and each span is
verified and stored in the worker thread that received it, then reported to the event loop.

A run is one Range request over neighbouring spans of a layer (kitfs.fs.spanreader). The body is
received into this sink by a worker thread (kitfs.oci.handoff) or read from a local file
(kitfs.fs.source), so hashing, decompressing and writing a span happen beside the receiving, on
whichever core is free, and the event loop only learns "span 7 is here" (or "span 7 was wrong").
Buffers come from the mount's :class:`kitfs.fs.spanmemory.SpanMemory`: a span's bytes are copied
once, from the kernel into a page-aligned buffer; the cache's file is written from it with
``O_DIRECT`` and, for an uncompressed layer, the buffer itself then serves the reader (the sink
takes another for the next span). A compressed span is decompressed into a second buffer, which
serves, and the receiving buffer is reused.
"""

from __future__ import annotations

import contextlib
import logging
import mmap
import threading
from collections.abc import Callable, Sequence
from pathlib import Path

import trio

from kitfs.errors import DigestMismatchError
from kitfs.fs.spanmemory import SpanMemory
from kitfs.layers.spanindex import Span, SpanIndexError

log = logging.getLogger(__name__)

# store(position, span, buffer, view of its bytes) -> (temp file, buffer holding the plain bytes)
Store = Callable[[int, Span, mmap.mmap, memoryview], tuple[Path | None, mmap.mmap | None]]
# report(position, temp, plain buffer, problem, mismatch)
Report = Callable[[int, Path | None, mmap.mmap | None, str | None, bool], None]


class SpanRunSink:
    """A :class:`kitfs.oci.sink.Sink` for the spans at ``positions`` (neighbours, in order):
    ``store`` verifies and writes one (worker thread), ``report(position, temp, plain, problem,
    mismatch)`` runs on the event loop for each span, in order, as soon as it is stored or refused
    (``mismatch``: its bytes were wrong; else the cache could not take them). ``finish`` after the
    body ended normally gives the receiving buffer back for reuse."""

    def __init__(
        self,
        spans: Sequence[Span],
        positions: Sequence[int],
        store: Store,
        report: Report,
        token: trio.lowlevel.TrioToken,
        memory: SpanMemory | None = None,
    ) -> None:
        self._spans = spans
        self._positions = positions
        self._store = store
        self._report = report
        self._token = token
        self._memory = memory if memory is not None else SpanMemory(0)
        self._size = max(span.blob_size for span in spans)
        self._buffer: mmap.mmap | None = None
        self._lock = threading.Lock()
        self._lent = False  # a view of the buffer is out (a thread may be receiving into it)
        self._finished = False
        self._held = 0
        self.done = 0  # spans received (stored or refused)

    def buffer(self) -> memoryview:
        with self._lock:
            if self.done >= len(self._spans) or self._finished:
                # More than the run (the request's limit prevents it), or a thread left over
                # after the run ended: never a buffer anyone else may be using.
                return memoryview(bytearray(1 << 16))
            if self._buffer is None:
                self._buffer = self._memory.take(self._size)
            self._lent = True
            return memoryview(self._buffer)[self._held : self._spans[self.done].blob_size]

    def finish(self) -> None:
        """The body ended normally (no thread is receiving): the buffer can serve another run."""
        with self._lock:
            self._finished = True
            buffer, self._buffer = self._buffer, None
            if buffer is not None and not self._lent:
                self._memory.give(buffer)

    def filled(self, count: int) -> None:
        with self._lock:
            self._lent = False
            if self.done >= len(self._spans) or self._finished or self._buffer is None:
                return
            buffer = self._buffer
        self._held += count
        span = self._spans[self.done]
        if self._held < span.blob_size:
            return
        position = self._positions[self.done]
        temp: Path | None = None
        plain: mmap.mmap | None = None
        problem: str | None = None
        mismatch = False
        try:
            temp, plain = self._store(position, span, buffer, memoryview(buffer)[: span.blob_size])
        except (DigestMismatchError, SpanIndexError) as exc:
            problem, mismatch = str(exc), True
        except OSError as exc:
            problem = f"the cache cannot store span {position}: {exc.strerror or exc}"
        if plain is buffer:  # it serves the span now: the next span needs another
            with self._lock:
                self._buffer = None
        self.done += 1
        self._held = 0
        with contextlib.suppress(trio.RunFinishedError):  # the mount ended meanwhile
            self._token.run_sync_soon(self._report_safely, position, temp, plain, problem, mismatch)

    def _report_safely(
        self,
        position: int,
        temp: Path | None,
        plain: mmap.mmap | None,
        problem: str | None,
        mismatch: bool,
    ) -> None:
        """Runs on the event loop, where an exception would end the whole run: a report that
        comes after its reader stopped (a receiving thread abandoned at unmount) is only logged."""
        try:
            self._report(position, temp, plain, problem, mismatch)
        except Exception:
            log.exception("span %d arrived after its reader stopped", position)
