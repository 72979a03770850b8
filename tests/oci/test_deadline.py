"""The transfer guard's account (kitfs/oci/deadline.py), on a clock the test moves."""

from __future__ import annotations

import threading
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import trio
from hostileregistry import HostileRegistry, trickle

from kitfs.errors import TransientError, UsageError
from kitfs.oci.deadline import (
    DEFAULT_IDLE,
    DEFAULT_MIN_RATE,
    DEFAULT_WINDOW,
    TransferGuard,
    TransferTooSlow,
    format_rate,
    parse_rate,
    transfer_settings,
)
from kitfs.oci.manifest import Descriptor
from kitfs.oci.sink import BufferSink

if TYPE_CHECKING:
    from kitfs.oci.client import RegistryClient


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def guard(
    clock: Clock, min_rate: float = 1024, window: float = 20, idle: float = 60
) -> TransferGuard:
    return TransferGuard("reg.example:5000", min_rate, window, idle, clock=clock)


def test_a_trickle_of_one_byte_a_second_is_ended_after_one_window() -> None:
    clock = Clock()
    g = guard(clock)
    g.responded()
    for _ in range(20):
        clock.now += 1
        g.advance(1)
    clock.now += 1
    with pytest.raises(TransferTooSlow) as failure:
        g.advance(1)
    message = str(failure.value)
    assert message == (
        "registry reg.example:5000 is sending slower than the minimum rate of 1 KiB/s "
        "(20 bytes in the last 21 s; --min-rate or $KITFS_MIN_RATE)"
    )
    assert isinstance(failure.value, TransientError)  # retried like a drop


def test_a_transfer_at_the_rate_never_trips_however_long() -> None:
    clock = Clock()
    g = guard(clock)
    g.responded()
    for _ in range(1000):
        clock.now += 1
        g.advance(1024)
    assert g.total == 1024 * 1000
    assert g.deadline() == pytest.approx(clock.now + 20, abs=1)


def test_a_fast_start_buys_no_credit_for_a_later_trickle() -> None:
    clock = Clock()
    g = guard(clock)
    g.responded()
    g.advance(100 * 1024 * 1024)  # 100 MiB at once
    for _ in range(20):
        clock.now += 1
        g.advance(1)
    clock.now += 1
    with pytest.raises(TransferTooSlow):
        g.check()


def test_no_answer_within_the_idle_timeout() -> None:
    clock = Clock()
    g = guard(clock, idle=3)
    assert g.remaining() == 3
    clock.now += 3.5
    with pytest.raises(TransferTooSlow, match=r"did not answer within 4 s \(idle timeout 3 s"):
        g.check()


def test_silence_after_bytes_is_the_idle_timeout() -> None:
    clock = Clock()
    g = guard(clock, min_rate=0, idle=3)  # no rate: only the idle timeout
    g.responded()
    g.advance(10)
    clock.now += 3.5
    with pytest.raises(TransferTooSlow, match=r"sent nothing for 4 s \(idle timeout 3 s"):
        g.advance(1)


def test_a_rate_of_zero_turns_the_check_off() -> None:
    clock = Clock()
    g = guard(clock, min_rate=0, idle=0)
    g.responded()
    clock.now += 10_000
    g.advance(1)
    assert g.deadline() == float("inf")


def test_the_listener_hears_every_advance() -> None:
    clock = Clock()
    g = guard(clock)
    heard: list[float] = []
    g.listener = lambda: heard.append(g.deadline())
    g.responded()
    clock.now += 1
    g.advance(2048)  # less than a window's quota: the deadline stays
    clock.now += 1
    g.advance(20 * 1024)  # the quota is met: a new window starts now
    assert heard == [120.0, 120.0, 122.0]


def _advance_many(guard: TransferGuard) -> None:
    for _ in range(10_000):
        guard.advance(1)


def test_threads_may_share_a_guard() -> None:
    g = TransferGuard("r", 1, 60, 60)
    threads = [threading.Thread(target=_advance_many, args=(g,)) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert g.total == 40_000


def test_settings_come_from_flags_then_environment_then_defaults() -> None:
    assert transfer_settings(environ={}) == {
        "min_rate": DEFAULT_MIN_RATE,
        "rate_window": DEFAULT_WINDOW,
        "timeout": DEFAULT_IDLE,
    }
    env = {"KITFS_MIN_RATE": "64k", "KITFS_RATE_WINDOW": "5", "KITFS_IDLE_TIMEOUT": "7"}
    assert transfer_settings(environ=env) == {"min_rate": 65536, "rate_window": 5.0, "timeout": 7.0}
    assert transfer_settings("2MiB/s", "1.5", None, environ=env) == {
        "min_rate": 2 * 1024 * 1024,
        "rate_window": 1.5,
        "timeout": 7.0,
    }
    assert parse_rate("0") == 0
    assert format_rate(1536) == "1.5 KiB/s" and format_rate(100) == "100 B/s"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("fast",), "--min-rate must be a rate like 1KiB"),
        ((None, "-1"), "--rate-window must be a positive number of seconds"),
        ((None, None, "soon"), "--idle-timeout must be a number of seconds"),
    ],
)
def test_bad_settings_are_usage_errors(args: tuple[str | None, ...], message: str) -> None:
    with pytest.raises(UsageError, match=message):
        transfer_settings(*args, environ={})  # type: ignore[misc, arg-type]


def test_after_a_request_body_the_answer_has_the_idle_timeout() -> None:
    clock = Clock()
    g = guard(clock, window=20, idle=60)
    g.advance(64 * 1024)  # sending an upload
    clock.now += 1
    g.sent()
    clock.now += 50  # the registry commits the blob: longer than a window, within the idle timeout
    g.responded()
    clock.now += 21  # then its body must keep to the rate again
    with pytest.raises(TransferTooSlow, match="slower than the minimum rate"):
        g.advance(1)


# -- through the client, against a registry that slows down after a fast start ----------------

LARGE = 9 * 1024 * 1024  # past kitfs.oci.body.FAST_MIN: received past httpx (a worker thread)


def slow_client_run(
    host: str, body: Callable[[RegistryClient], Awaitable[None]]
) -> tuple[float, str]:
    """Run ``body`` with a client whose bounds are small; (seconds until it failed, message)."""
    from kitfs.oci.client import RegistryClient
    from kitfs.oci.options import RegistryOptions

    options = RegistryOptions(
        plain_http=True, min_rate=1024, rate_window=1, timeout=2, retries=3, backoff=0.01
    )

    async def main() -> tuple[float, str]:
        async with RegistryClient(host, options) as client:
            started = trio.current_time()
            with pytest.raises(TransferTooSlow) as failure:
                await body(client)
            return trio.current_time() - started, str(failure.value)

    return trio.run(main)


@pytest.fixture
def slow_blob() -> Iterator[tuple[HostileRegistry, dict[str, Any]]]:
    with HostileRegistry() as registry:
        # 2 MiB at once, then 64 bytes every 0.25 s
        yield registry, registry.add_blob(b"\1" * LARGE, trickle(0.25, 64, after=2 << 20))


def test_a_large_body_that_slows_down_fails_in_the_receiving_thread(
    slow_blob: tuple[HostileRegistry, dict[str, Any]],
) -> None:
    registry, blob = slow_blob
    sink = BufferSink(LARGE)

    async def stream(client: RegistryClient) -> None:
        await client.stream_blob_range("slow/blob", blob["digest"], 0, LARGE, sink)

    elapsed, message = slow_client_run(registry.host, stream)
    assert elapsed < 10
    assert "is sending slower than the minimum rate of 1 KiB/s" in message
    assert registry.count("blobs", blob["digest"]) == 2  # tried again like a drop, then given up
    assert sink.count >= 2 << 20  # what arrived before is kept, for the resumed request


def test_a_large_download_that_slows_down_fails_and_keeps_what_arrived(
    slow_blob: tuple[HostileRegistry, dict[str, Any]], tmp_path: Path
) -> None:
    registry, blob = slow_blob
    descriptor = Descriptor("application/octet-stream", blob["digest"], blob["size"])

    async def download(client: RegistryClient) -> None:
        await client.download_blob("slow/blob", descriptor, tmp_path / "blob")

    elapsed, message = slow_client_run(registry.host, download)
    assert elapsed < 10
    assert "is sending slower than the minimum rate" in message
    assert not (tmp_path / "blob").exists()
    partial = tmp_path / ".blob.partial"
    assert partial.stat().st_size >= 2 << 20  # a TransientError keeps the partial file to resume


def test_time_the_receiving_side_is_busy_does_not_count() -> None:
    clock = Clock()
    g = guard(clock, window=20, idle=60)
    g.responded()
    g.advance(1024)
    with g.paused():
        clock.now += 300  # a slow disk, a full queue: longer than the window and the idle timeout
    clock.now += 19
    g.advance(1)  # 19 s of registry time since the window started: still within it
    clock.now += 2
    with pytest.raises(TransferTooSlow):
        g.check()


def test_restart_forgives_the_wait_for_a_receiving_thread() -> None:
    clock = Clock()
    g = guard(clock, window=20, idle=60)
    g.responded()
    clock.now += 70  # all worker threads were busy
    g.restart()
    clock.now += 19
    g.advance(1)
    clock.now += 2
    with pytest.raises(TransferTooSlow, match="slower than the minimum rate"):
        g.check()
