"""Deadlines for registry transfers: a minimum rate beside the idle timeout.

An idle timeout alone never ends a registry that trickles (one byte every few seconds resets it
forever), so every exchange also has a *minimum transfer rate*: after the first byte, every window
of ``window`` seconds must bring at least ``min_rate * window`` bytes, and the first byte (the
answer's headers) must come within the idle timeout. :class:`TransferGuard` keeps that account. It
is plain, synchronous and locked, so the trio client (kitfs.oci.client, kitfs.oci.body) and
readers in worker threads use the same one: call :meth:`TransferGuard.advance` as bytes arrive;
it raises :class:`TransferTooSlow`, a one-line error naming the registry and the rate, once the
transfer fell behind. A caller treats that like a dropped connection (retry, resume), at most
``SLOW_ATTEMPTS`` times. Time the receiving side spends busy (writing, hashing, a full queue) is
left out with :meth:`TransferGuard.paused`: the rate is the registry's, not our disk's.

Settings come from flags, then the environment (``KITFS_MIN_RATE``, ``KITFS_RATE_WINDOW``,
``KITFS_IDLE_TIMEOUT``), then the defaults below: a registry that sends less than 1 KiB/s for 20 s
is far below any healthy one, and a 1-byte-per-second trickle is ended within a minute (two
attempts of about 20 s). An answer whose headers trickle is ended once, after the idle timeout;
one that does not start at all is httpx's read timeout, retried as a drop, as before.
"""

from __future__ import annotations

import contextlib
import contextvars
import math
import os
import re
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from kitfs.errors import TransientError, UsageError

DEFAULT_MIN_RATE = 1024  # bytes per second; 0 turns the rate check off
DEFAULT_WINDOW = 20.0  # seconds over which the rate is measured
DEFAULT_IDLE = 60.0  # seconds without a byte (and before the first one)
SLOW_ATTEMPTS = 2  # a transfer below the rate is tried this many times in all
HEADER_GRACE = 1.0  # an answer that has not started is left to httpx's own timeout this long

ENV_MIN_RATE = "KITFS_MIN_RATE"
ENV_WINDOW = "KITFS_RATE_WINDOW"
ENV_IDLE = "KITFS_IDLE_TIMEOUT"

_RATE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmg]?)(i?b?)(?:/s)?\s*$", re.IGNORECASE)


class TransferTooSlow(TransientError):
    """A registry sent (or took) bytes slower than the minimum rate, or went idle too long.
    ``answered`` is False when its answer never started (its headers trickled): a retry would
    only wait as long again, so callers give up at once."""

    def __init__(self, message: str, answered: bool = True) -> None:
        super().__init__(message)
        self.answered = answered


def format_rate(rate: float) -> str:
    """``1 KiB/s``, ``512 B/s``: the rate as a person reads it."""
    for unit, size in (("MiB", 1 << 20), ("KiB", 1 << 10)):
        if rate >= size:
            return f"{rate / size:g} {unit}/s"
    return f"{rate:g} B/s"


class TransferGuard:
    """The rate account of one transfer (one request and its answer).

    ``advance(n)`` counts bytes and raises TransferTooSlow when the transfer is behind;
    ``check()`` raises without counting; ``deadline()`` is the monotonic time by which the next
    bytes must arrive, for callers that can wait with a timeout (a cancel scope, a socket)."""

    def __init__(
        self,
        registry: str,
        min_rate: float = DEFAULT_MIN_RATE,
        window: float = DEFAULT_WINDOW,
        idle: float | None = DEFAULT_IDLE,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.registry = registry
        self.min_rate = max(0.0, float(min_rate))
        self.window = max(0.001, float(window))
        self.idle = idle if idle and idle > 0 else None
        self._clock = clock
        self._lock = threading.Lock()
        self.started = clock()
        self.total = 0
        self._last = self.started  # when the last bytes came
        self._window_start: float | None = None  # None until the first byte
        self._window_bytes = 0
        self.listener: Callable[[], None] | None = None  # told after bytes moved the deadline

    @property
    def quota(self) -> float:
        """Bytes each window must bring."""
        return self.min_rate * self.window

    def advance(self, nbytes: int) -> None:
        """Count ``nbytes`` that just arrived (or were sent); raise if the transfer is behind."""
        now = self._clock()
        with self._lock:
            self._check(now)
            if nbytes <= 0:
                return
            self.total += nbytes
            self._last = now
            if self._window_start is None:
                self._window_start = now
            self._window_bytes += nbytes
            if self._window_bytes >= self.quota:
                self._window_start, self._window_bytes = now, 0
        if self.listener is not None:
            self.listener()

    def sent(self) -> None:
        """The request body is sent: the answer must now start within the idle timeout (a
        registry may take a while to commit a large upload), not within a rate window."""
        now = self._clock()
        with self._lock:
            self._last = now
            self._window_start, self._window_bytes = None, 0
        if self.listener is not None:
            self.listener()

    def responded(self) -> None:
        """The answer's headers came: the idle clock and the first rate window start now."""
        now = self._clock()
        with self._lock:
            self._check(now)
            self._last = now
            if self._window_start is None:
                self._window_start = now
        if self.listener is not None:
            self.listener()

    def restart(self) -> None:
        """A new window and idle period start now (a receiving thread has just started: the time
        it waited for a thread was ours, not the registry's)."""
        now = self._clock()
        with self._lock:
            self._last = now
            if self._window_start is not None:
                self._window_start, self._window_bytes = now, 0

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        """Time spent inside does not count: the receiving side is busy (writing, hashing, a full
        queue), and the rate is the registry's, not our disk's."""
        started = self._clock()
        try:
            yield
        finally:
            spent = self._clock() - started
            with self._lock:
                self._last += spent
                if self._window_start is not None:
                    self._window_start += spent

    def check(self) -> None:
        """Raise TransferTooSlow if the transfer is behind now."""
        now = self._clock()
        with self._lock:
            self._check(now)

    def deadline(self) -> float:
        """The monotonic time by which more bytes must arrive (``inf`` when nothing bounds it)."""
        with self._lock:
            return self._deadline()

    def remaining(self) -> float:
        """Seconds until :meth:`deadline` (never negative)."""
        return max(0.0, self.deadline() - self._clock())

    def _deadline(self) -> float:
        candidates = [math.inf]
        if self.idle is not None:
            candidates.append(self._last + self.idle)
        if self._window_start is not None and self.min_rate > 0:
            candidates.append(self._window_start + self.window)
        return min(candidates)

    def _check(self, now: float) -> None:
        if now > self._deadline():
            raise self.error(now)

    def error(self, now: float | None = None) -> TransferTooSlow:
        """The one-line error for this transfer as it stands."""
        now = self._clock() if now is None else now
        if self._window_start is None:
            return TransferTooSlow(
                f"registry {self.registry} did not answer within {now - self.started:.0f} s "
                f"(idle timeout {self.idle or 0:g} s; --idle-timeout or ${ENV_IDLE})",
                answered=False,
            )
        if self.idle is not None and now > self._last + self.idle:
            return TransferTooSlow(
                f"registry {self.registry} sent nothing for {now - self._last:.0f} s "
                f"(idle timeout {self.idle:g} s; --idle-timeout or ${ENV_IDLE})"
            )
        return TransferTooSlow(
            f"registry {self.registry} is sending slower than the minimum rate of "
            f"{format_rate(self.min_rate)} ({self._window_bytes} bytes in the last "
            f"{now - self._window_start:.0f} s; --min-rate or ${ENV_MIN_RATE})"
        )


# -- the guard of the running transfer (for code the client calls while it reads an answer) ----

_ACTIVE: contextvars.ContextVar[TransferGuard | None] = contextvars.ContextVar(
    "kitfs_transfer_guard", default=None
)


def activate(guard: TransferGuard | None) -> contextvars.Token[TransferGuard | None]:
    """Make ``guard`` the running transfer's guard in this task or thread (undo with ``reset``)."""
    return _ACTIVE.set(guard)


def reset(token: contextvars.Token[TransferGuard | None]) -> None:
    _ACTIVE.reset(token)


def current() -> TransferGuard | None:
    """The guard of the running transfer in this task or thread, if any."""
    return _ACTIVE.get()


def paused() -> contextlib.AbstractContextManager[None]:
    """:meth:`TransferGuard.paused` of the running transfer (nothing when none is guarded)."""
    guard = _ACTIVE.get()
    return guard.paused() if guard is not None else contextlib.nullcontext()


def received(nbytes: int) -> None:
    """Count bytes of the running transfer (if one is guarded); raise TransferTooSlow if behind."""
    guard = _ACTIVE.get()
    if guard is not None:
        guard.advance(nbytes)


# -- settings ---------------------------------------------------------------------------------


def parse_rate(text: str, what: str = "--min-rate") -> int:
    """``1KiB``, ``64k``, ``2M/s``, ``512``: bytes per second (``0`` turns the check off)."""
    match = _RATE_RE.match(str(text))
    if not match:
        raise UsageError(f"{what} must be a rate like 1KiB or 512 (bytes per second), not {text!r}")
    power = " kmg".index(match.group(2).lower() or " ")
    return int(float(match.group(1)) * 1024**power)


def parse_seconds(text: str, what: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise UsageError(f"{what} must be a number of seconds, not {text!r}") from None
    if not value > 0 or math.isinf(value):
        raise UsageError(f"{what} must be a positive number of seconds, not {text!r}")
    return value


def transfer_settings(
    min_rate: str | None = None,
    window: str | None = None,
    idle: str | None = None,
    environ: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """RegistryOptions fields (``min_rate``, ``rate_window``, ``timeout``) from flag values, then
    the environment, then the defaults."""
    env = os.environ if environ is None else environ

    def pick(value: str | None, name: str) -> str | None:
        return value if value not in (None, "") else env.get(name) or None

    rate_text, window_text, idle_text = (
        pick(min_rate, ENV_MIN_RATE),
        pick(window, ENV_WINDOW),
        pick(idle, ENV_IDLE),
    )
    return {
        "min_rate": parse_rate(rate_text) if rate_text else DEFAULT_MIN_RATE,
        "rate_window": parse_seconds(window_text, "--rate-window")
        if window_text
        else DEFAULT_WINDOW,
        "timeout": parse_seconds(idle_text, "--idle-timeout") if idle_text else DEFAULT_IDLE,
    }
