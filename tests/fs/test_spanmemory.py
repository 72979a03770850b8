"""Span memory (kitfs.fs.spanmemory): verified spans held in reused page-aligned buffers, bounded
by a budget, and the cache files written from them with O_DIRECT (real files, real mmap)."""

from __future__ import annotations

import ctypes
import mmap
import os
from pathlib import Path

import pytest

from kitfs.fs.spanmemory import PAGE, SpanMemory, capacity, read_span_file, write_new_file


def _address(buffer: mmap.mmap) -> int:
    return ctypes.addressof(ctypes.c_char.from_buffer(buffer))


def test_buffers_are_page_aligned_and_reused_by_size() -> None:
    memory = SpanMemory(1 << 20)
    first = memory.take(100_000)
    assert len(first) == capacity(100_000) and len(first) % PAGE == 0
    assert _address(first) % PAGE == 0
    memory.give(first)
    assert memory.take(99_000) is first  # same capacity: the idle buffer comes back
    assert memory.take(5 << 20) is not first
    assert memory.created == 2


def test_held_spans_stay_within_the_budget_oldest_out_first() -> None:
    memory = SpanMemory(3 * capacity(PAGE))
    owner = SpanMemory.owner()
    for position in range(5):
        buffer = memory.take(PAGE)
        buffer[:PAGE] = bytes([position]) * PAGE
        memory.hold(owner, position, buffer, PAGE)
        assert memory.held_bytes <= memory.budget
    assert [memory.view(owner, p) is None for p in range(5)] == [True, True, False, False, False]
    view = memory.view(owner, 4)
    assert view is not None and bytes(view) == b"\x04" * PAGE
    assert memory.created == 4  # the budget's three, one more: then evicted ones are reused
    memory.read_through(owner, 4)
    assert memory.view(owner, 4) is None
    other = SpanMemory.owner()
    assert other != owner and memory.view(other, 3) is None  # spans are per reader
    memory.drop(owner)
    assert memory.held_bytes == 0 and memory.view(owner, 3) is None


def test_a_span_larger_than_the_budget_is_not_held() -> None:
    memory = SpanMemory(PAGE)
    buffer = memory.take(2 * PAGE)
    memory.hold(SpanMemory.owner(), 0, buffer, 2 * PAGE)
    assert memory.held_bytes == 0


@pytest.mark.parametrize("size", [0, 1, 4095, 4096, 3 * 4096 + 123, (1 << 20) + 7])
def test_a_new_file_holds_the_bytes_direct_or_not(tmp_path: Path, size: int) -> None:
    data = os.urandom(size)
    buffer = SpanMemory().take(max(size, 1))
    buffer[:size] = data
    write_new_file(tmp_path / "direct", memoryview(buffer)[:size])  # aligned: O_DIRECT part
    write_new_file(tmp_path / "plain", data)  # bytes: plain writes
    assert (tmp_path / "direct").read_bytes() == data
    assert (tmp_path / "plain").read_bytes() == data
    assert (tmp_path / "direct").stat().st_mode & 0o777 == 0o600
    with pytest.raises(FileExistsError):  # never over a file that is there
        write_new_file(tmp_path / "direct", data)
    assert (tmp_path / "direct").read_bytes() == data


@pytest.mark.parametrize("size", [1, 4095, 4096, 3 * 4096 + 123, (1 << 20) + 7, 4 << 20])
def test_a_span_file_is_read_into_a_reused_buffer(tmp_path: Path, size: int) -> None:
    """A cached span is read (O_DIRECT where it can be) into a buffer of the span memory: the
    same bytes; a file shorter or longer than the span says is an OSError, and its buffer goes
    back for reuse."""
    data = os.urandom(size)
    (tmp_path / "span").write_bytes(data)
    memory = SpanMemory()
    buffer = read_span_file(memory, tmp_path / "span", size)
    assert bytes(buffer[:size]) == data
    assert _address(buffer) % PAGE == 0
    memory.give(buffer)
    for _ in range(2):  # the second failure reuses the buffer the first gave back
        with pytest.raises(OSError, match="is not"):
            read_span_file(memory, tmp_path / "span", size + 1)  # the file ends early
    if size % 4096 and size > 1:  # a longer file shows within the block O_DIRECT reads
        with pytest.raises(OSError, match="is not"):
            read_span_file(memory, tmp_path / "span", size - 1)
    created = memory.created
    for _ in range(2):
        with pytest.raises(OSError, match="is not"):
            read_span_file(memory, tmp_path / "span", size + 1)
    again = read_span_file(memory, tmp_path / "span", size)
    assert bytes(again[:size]) == data
    assert memory.created == created  # failed reads gave their buffers back; all were reused
    with pytest.raises(FileNotFoundError):
        read_span_file(memory, tmp_path / "gone", size)


def test_idle_memory_is_released_and_a_busy_one_is_kept() -> None:
    """Span memory unused for the idle time goes back to the system: held spans leave memory
    (their files serve later reads) and idle buffers are unmapped; memory in use stays."""
    memory = SpanMemory(8 * PAGE)
    held = memory.take(PAGE)
    memory.hold(1, 0, held, PAGE)
    memory.give(memory.take(2 * PAGE))
    assert (memory.held_bytes, memory.idle_bytes) == (PAGE, 2 * PAGE)
    assert memory.release_if_idle(3600.0) == 0  # used just now
    memory.last_used -= 7200.0
    assert memory.holds(1, 0) and not memory.holds(1, 1)  # a check, not a use
    assert memory.release_if_idle(3600.0) == 3 * PAGE
    memory.hold(1, 0, memory.take(PAGE), PAGE)  # back for the rest of the test
    memory.give(memory.take(2 * PAGE))
    assert memory.view(1, 0) is not None
    assert memory.release_if_idle(0.0) == 3 * PAGE
    assert (memory.held_bytes, memory.idle_bytes) == (0, 0)
    assert memory.view(1, 0) is None
    assert held.closed  # unmapped, not kept for reuse
    created = memory.created
    memory.take(PAGE)
    assert memory.created == created + 1
