"""The synchronous side of the Python API: sessions on a background trio loop, kitfs errors as
Python's.

A :class:`Client` owns one blob cache (the mount's, by default) and, from its first use, one trio
loop in a daemon thread (kitfs.fsspec.runner); it opens one :class:`~kitfs.fsspec.session.Session`
per reference and runs every call on that loop, so that the layer store and the tree are only ever
touched by that loop's tasks, whatever thread calls. A forked child (Dask, multiprocessing) starts
its own loop: threads do not survive ``fork``.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar

from kitfs.errors import KitfsError
from kitfs.fsspec.errors import as_python_error
from kitfs.fsspec.options import KitOptions

if TYPE_CHECKING:
    from kitfs.fsspec.records import Entry, Handle
    from kitfs.fsspec.runner import TrioThread
    from kitfs.fsspec.session import Session
    from kitfs.storage.cache import BlobCache

T = TypeVar("T")


class Client:
    """Sessions for references, run on one background loop (see the module docstring)."""

    def __init__(self, options: KitOptions) -> None:
        self.options = options
        self._lock = threading.Lock()
        self._loop: TrioThread | None = None
        self._pid = os.getpid()
        self._cache: BlobCache | None = None
        self._sessions: dict[str, Session] = {}
        self._opening: dict[str, Any] = {}

    # -- the loop ------------------------------------------------------------------------------

    def _running_loop(self) -> TrioThread:
        with self._lock:
            if self._pid != os.getpid():  # a forked child: the parent's thread is not here
                self._pid, self._loop, self._sessions = os.getpid(), None, {}
            if self._loop is None or not self._loop.alive:
                from kitfs.fsspec.runner import TrioThread  # trio loads on first use only

                self._sessions, self._opening = {}, {}  # both belong to the old loop
                self._loop = TrioThread()
                self._loop.on_shutdown(self._close_sessions)
            return self._loop

    def call(self, function: Callable[..., Awaitable[T]], *args: Any) -> T:
        """Run ``function(*args)`` on the loop; a kitfs error comes out as Python's."""
        loop = self._running_loop()
        try:
            return loop.run(function, *args)
        except KitfsError as exc:
            raise as_python_error(exc) from exc

    @property
    def cache(self) -> BlobCache:
        if self._cache is None:
            from kitfs.storage.cache import BlobCache

            self._cache = BlobCache(self.options.cache_dir, self.options.cache_size).ensure()
        return self._cache

    # -- sessions ------------------------------------------------------------------------------

    def session(self, reference: str) -> Session:
        """The open session of ``reference`` (resolved and signature-checked once per client)."""
        loop = self._running_loop()
        found = self._sessions.get(reference)
        if found is not None:
            return found
        cache = self.cache
        try:
            return loop.run(self._open_session, reference, cache)
        except KitfsError as exc:
            raise as_python_error(exc) from exc

    async def _open_session(self, reference: str, cache: BlobCache) -> Session:
        import trio

        from kitfs.fsspec.session import Session

        lock = self._opening.setdefault(reference, trio.Lock())
        async with lock:
            found = self._sessions.get(reference)
            if found is None:
                assert self._loop is not None
                found = await Session.start(reference, self.options, cache, self._loop.nursery)
                self._sessions[reference] = found
            return found

    async def _close_sessions(self) -> None:
        sessions, self._sessions = list(self._sessions.values()), {}
        for session in sessions:
            await session.aclose()

    # -- operations ----------------------------------------------------------------------------

    def stat(self, reference: str, path: str) -> Entry:
        return self.call(self.session(reference).stat, path)

    def listdir(self, reference: str, path: str) -> list[Entry]:
        return self.call(self.session(reference).listdir, path)

    def open(self, reference: str, path: str) -> tuple[Session, Handle]:
        session = self.session(reference)
        return session, self.call(session.open, path)

    def read(self, session: Session, handle: Handle, offset: int, size: int) -> bytes:
        return self.call(session.read, handle, offset, size)

    def release(self, session: Session, handle: Handle) -> None:
        loop = self._loop
        if loop is not None and loop.alive and self._pid == os.getpid():
            self.call(_release, session, handle)

    def read_range(self, reference: str, path: str, start: int, end: int) -> bytes:
        """Bytes [start, end) of a file, opened and released in one call on the loop."""
        return self.call(_read_range, self.session(reference), path, start, end)

    def close(self) -> None:
        """Close every session and stop the loop (the cache stays, as after a mount)."""
        with self._lock:
            loop, self._loop = self._loop, None
        if loop is not None and self._pid == os.getpid():
            loop.stop()


async def _release(session: Session, handle: Handle) -> None:
    session.release(handle)


async def _read_range(session: Session, path: str, start: int, end: int) -> bytes:
    handle = await session.open(path)
    try:
        return await session.read(handle, start, end - start)
    finally:
        session.release(handle)
