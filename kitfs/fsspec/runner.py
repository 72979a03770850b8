"""A trio event loop in a background daemon thread, for callers that are synchronous.

The layer store and the sources are trio code; fsspec, pandas and pyarrow call from plain threads.
Each :class:`TrioThread` runs one ``trio.run`` whose nursery holds the store's background work
(read-ahead, syncing fresh tars), and runs coroutines for any thread with ``trio.from_thread.run``
through the loop's token. Loops still running at interpreter exit are stopped by an ``atexit``
hook (after their owner's shutdown coroutine ran), so the cache is left as a mount leaves it.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import threading
import weakref
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import trio

log = logging.getLogger(__name__)

T = TypeVar("T")
STOP_TIMEOUT = 30.0

_running: weakref.WeakSet[TrioThread] = weakref.WeakSet()


class TrioThread:
    """One trio loop in a daemon thread; ``run`` a coroutine function on it from any other thread."""

    def __init__(self, name: str = "kitfs-trio") -> None:
        self._ready = threading.Event()
        self._token: trio.lowlevel.TrioToken | None = None
        self._nursery: trio.Nursery | None = None
        self._stop: trio.Event | None = None
        self._failure: BaseException | None = None
        self._shutdown: Callable[[], Awaitable[None]] | None = None
        self._thread = threading.Thread(target=self._main, name=name, daemon=True)
        self._thread.start()
        self._ready.wait()
        if self._failure is not None:
            raise self._failure
        _running.add(self)

    @property
    def nursery(self) -> trio.Nursery:
        assert self._nursery is not None
        return self._nursery

    @property
    def alive(self) -> bool:
        return self._thread.is_alive() and self._token is not None

    def on_shutdown(self, job: Callable[[], Awaitable[None]]) -> None:
        """Run ``job`` on the loop when it stops (closing stores and sources)."""
        self._shutdown = job

    def run(self, function: Callable[..., Awaitable[T]], *args: Any) -> T:
        """Run ``function(*args)`` on the loop and return its result (or raise its exception)."""
        if not self.alive:
            raise RuntimeError("the kitfs event loop has stopped")
        return trio.from_thread.run(function, *args, trio_token=self._token)

    def stop(self) -> None:
        """Run the shutdown job, end the loop and wait for its thread (idempotent)."""
        token = self._token
        if token is None or not self._thread.is_alive():
            return
        if self._shutdown is not None:
            try:
                trio.from_thread.run(self._shutdown, trio_token=token)
            except Exception:
                log.exception("closing the kitfs event loop's stores failed")
        with contextlib.suppress(trio.RunFinishedError):
            trio.from_thread.run_sync(self._request_stop, trio_token=token)
        self._thread.join(STOP_TIMEOUT)
        _running.discard(self)

    def _request_stop(self) -> None:
        assert self._stop is not None
        self._stop.set()

    def _main(self) -> None:
        try:
            trio.run(self._serve)
        except BaseException as exc:  # reported to the starting thread, or logged once running
            if not self._ready.is_set():
                self._failure = exc
            else:
                log.exception("the kitfs event loop failed")
        finally:
            self._token = None
            self._ready.set()

    async def _serve(self) -> None:
        self._stop = trio.Event()
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            self._token = trio.lowlevel.current_trio_token()
            self._ready.set()
            await self._stop.wait()
            nursery.cancel_scope.cancel()


@atexit.register
def _stop_all() -> None:
    for loop in list(_running):
        loop.stop()
