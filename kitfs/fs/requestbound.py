"""An upper bound on every FUSE request the daemon answers.

The kernel waits for the daemon's answer to a request it has handed over, and a reader waiting
there cannot be killed (``request_wait_answer``: even SIGKILL waits). So no request may wait
forever on a fetch: each runs in a cancel scope of ``--request-timeout`` seconds (default 300;
``$KITFS_REQUEST_TIMEOUT``), and one that runs out answers ETIMEDOUT, logged with what it waited for.
Nothing is remembered as failed: the next read of the same file asks again (a cancelled download
keeps its verified-so-far partial file to resume after; nothing unverified gets a cache name).

When the daemon is told to stop (SIGTERM), :meth:`RequestBounds.abort` cancels every request in
flight at once (each answers EIO), so that the FUSE loop ends and the mount goes away promptly.

kitfs.fs.mount reads the setting before it forks, so trio and pyfuse3 load only where a request
is bounded (in the daemon).
"""

from __future__ import annotations

import contextlib
import errno
import logging
import math
import os
from collections.abc import Iterator
from typing import TYPE_CHECKING

from kitfs.errors import UsageError

if TYPE_CHECKING:
    import trio

log = logging.getLogger(__name__)

DEFAULT_REQUEST_TIMEOUT = 300.0
ENV_REQUEST_TIMEOUT = "KITFS_REQUEST_TIMEOUT"


def request_timeout(text: str | None = None) -> float:
    """``--request-timeout``, else ``$KITFS_REQUEST_TIMEOUT``, else the default (seconds)."""
    value = text if text not in (None, "") else os.environ.get(ENV_REQUEST_TIMEOUT)
    if not value:
        return DEFAULT_REQUEST_TIMEOUT
    try:
        seconds = float(value)
    except ValueError:
        seconds = math.nan
    if not seconds > 0 or math.isinf(seconds):
        raise UsageError(f"request_timeout must be a positive number of seconds, not {value!r}")
    return seconds


class RequestBounds:
    """The cancel scopes of the requests in flight, each with the same timeout."""

    def __init__(self, timeout: float = DEFAULT_REQUEST_TIMEOUT) -> None:
        self.timeout = timeout
        self.stopping = False
        self.timed_out = 0  # requests answered ETIMEDOUT (for tests and the log)
        self._scopes: set[trio.CancelScope] = set()

    @contextlib.contextmanager
    def bound(self, name: str, args: tuple[object, ...] = ()) -> Iterator[None]:
        """Run one request's work (``name`` and the first ``args`` name it in the log); raise
        FUSEError(ETIMEDOUT) when it takes longer than the timeout, FUSEError(EIO) when the daemon
        is stopping."""
        import pyfuse3
        import trio

        with trio.move_on_after(self.timeout) as scope:
            if self.stopping:
                scope.cancel()
            self._scopes.add(scope)
            try:
                yield
            finally:
                self._scopes.discard(scope)
        if not scope.cancelled_caught:
            return
        if self.stopping:
            log.info("%s%r: cancelled, the daemon is stopping (EIO)", name, args)
            raise pyfuse3.FUSEError(errno.EIO)
        self.timed_out += 1
        log.warning(
            "%s%r: no answer within %g s (--request-timeout): ETIMEDOUT; a later request tries "
            "again",
            name,
            args,
            self.timeout,
        )
        raise pyfuse3.FUSEError(errno.ETIMEDOUT)

    def abort(self) -> None:
        """Cancel every request in flight, and any that comes after (the daemon is stopping)."""
        self.stopping = True
        for scope in list(self._scopes):
            scope.cancel()
