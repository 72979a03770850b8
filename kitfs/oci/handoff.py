"""Where the control plane hands a body's bytes to the data plane.

The event loop sends a request and reads the status and headers (auth, retries, redirects, mirrors:
the control plane). The bytes of the body go to a :class:`Sink`, an object that owns the buffers
they land in and does its work (hash, decompress, write) as they fill, in a worker thread. For a
plain-TCP HTTP/1.1 answer with a known length, the worker thread reads the socket itself with
``recv_into`` straight into the sink's buffer: one copy from the kernel, no bytes object per piece,
no event loop in between, and the GIL released while it waits, so several bodies are received,
hashed and written on every core at once. Other answers (TLS, chunked, short) arrive through httpx on
the loop and are handed to the sink in batches, in a worker thread too.

A sink is called by one thread at a time (the bytes of one body are in order); it never sees a byte
twice. It checks what it is given against digests it trusts: nothing here verifies anything.
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
from collections.abc import AsyncIterator

import httpx
import trio

from kitfs.oci.body import fast_path_applies
from kitfs.oci.deadline import current, paused, received
from kitfs.oci.sink import Counted, feed, feed_all

SLICE = 1.0  # a receiving thread looks at its stop flag this often while the socket is idle
BATCH = 4 * 1024 * 1024  # bytes that arrive on the loop are handed to the sink in batches this big


def _discard(view: memoryview, skip: int) -> tuple[memoryview, int]:
    dropped = min(skip, len(view))
    return view[dropped:], skip - dropped


async def receive_body(
    response: httpx.Response, sink: Counted, skip: int, timeout: float | None
) -> None:
    """Pass the body of ``response`` on to ``sink`` after dropping its first ``skip`` bytes, until
    the sink's limit or the body's end. Errors are httpx's (a dropped connection is an
    ``httpx.TransportError``), so the request loop retries and resumes as for any answer."""
    raw = _raw_socket(response)
    pieces = response.aiter_raw()
    try:
        if raw is None:
            await _through_loop(pieces, sink, skip)
            return
        # The first piece is what h11 holds buffered; the rest is read from the socket.
        first = await anext(pieces, b"")
        view, skip = _discard(memoryview(first), skip)
        view = view[: sink.remaining]
        if len(view):
            with paused():
                await trio.to_thread.run_sync(feed, sink, view)
        rest = int(response.headers["content-length"]) - len(first)
        want = min(rest, skip + sink.remaining)
        if want > 0:
            await _pump_in_thread(raw, sink, skip, want, timeout, response.request)
    finally:
        with contextlib.suppress(Exception):
            await pieces.aclose()  # type: ignore[attr-defined]


async def _through_loop(pieces: AsyncIterator[bytes], sink: Counted, skip: int) -> None:
    batch: list[memoryview] = []  # views of the pieces httpx made: no copy on the loop
    held = 0
    try:
        async for chunk in pieces:
            received(len(chunk))  # TransferTooSlow below the minimum rate (kitfs.oci.deadline)
            view, skip = _discard(memoryview(chunk), skip)
            view = view[: sink.remaining - held]
            if len(view):
                batch.append(view)
                held += len(view)
            if held >= BATCH or held >= sink.remaining:
                with paused():  # the sink's work is our time, not the registry's
                    await trio.to_thread.run_sync(feed_all, sink, batch)
                batch, held = [], 0
            if not sink.remaining:
                return
    finally:
        if batch:  # bytes that arrived before a drop are good: the sink keeps them
            with trio.CancelScope(shield=True):
                await trio.to_thread.run_sync(feed_all, sink, batch)


def _raw_socket(response: httpx.Response) -> socket.socket | None:
    """The plain TCP socket under a large HTTP/1.1 answer, or None (TLS, or not worth it)."""
    if not fast_path_applies(response):
        return None
    stream = response.extensions["network_stream"]
    try:
        if stream.get_extra_info("ssl_object") is not None:
            return None
        trio_socket = stream.get_extra_info("socket")
    except (AssertionError, AttributeError):
        return None
    if trio_socket is None:
        return None
    return socket.socket(fileno=os.dup(trio_socket.fileno()))


async def _pump_in_thread(
    raw: socket.socket,
    sink: Counted,
    skip: int,
    want: int,
    timeout: float | None,
    request: httpx.Request,
) -> None:
    stop = threading.Event()
    try:
        await trio.to_thread.run_sync(
            _pump, raw, sink, skip, want, timeout, stop, abandon_on_cancel=True
        )
    except TimeoutError as exc:
        raise httpx.ReadTimeout(str(exc), request=request) from None
    except OSError as exc:
        raise httpx.ReadError(str(exc) or type(exc).__name__, request=request) from None
    finally:
        stop.set()  # an abandoned thread (the caller was cancelled) stops within SLICE


def _pump(
    raw: socket.socket,
    sink: Counted,
    skip: int,
    want: int,
    timeout: float | None,
    stop: threading.Event,
) -> None:
    """Receive ``want`` bytes of the body into the sink's buffers (a worker thread's loop). The
    request's transfer guard (trio runs the thread in a copy of the caller's context) is told of
    every piece and asked while the socket is idle, so a registry that trickles or stalls ends
    this loop with TransferTooSlow."""
    guard = current()
    if guard is not None:
        guard.restart()
    scratch = memoryview(bytearray(min(skip, 1 << 20))) if skip else None
    try:
        raw.settimeout(SLICE)
        idle_since = time.monotonic()
        while want > 0 and not stop.is_set():
            if skip and scratch is not None:
                target = scratch[: min(skip, len(scratch))]
            else:
                target = sink.buffer()
                target = target[:want] if len(target) > want else target
            try:
                count = raw.recv_into(target)
            except TimeoutError:
                if timeout is not None and time.monotonic() - idle_since > timeout:
                    raise TimeoutError(f"no byte for {timeout:g} s") from None
                if guard is not None:
                    guard.check()
                continue
            if not count:
                raise ConnectionError(
                    f"peer closed connection without sending complete message body "
                    f"({want} bytes missing)"
                )
            idle_since = time.monotonic()
            want -= count
            if skip:
                skip -= count
            elif guard is None:
                sink.filled(count)
            else:
                with guard.paused():  # the sink hashes and writes here: our time
                    sink.filled(count)
            if guard is not None:
                guard.advance(count)
    finally:
        raw.close()  # our duplicate of the descriptor; httpx closes its own with the answer
