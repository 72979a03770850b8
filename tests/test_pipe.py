"""kitfs.layers.pipe and readahead: bytes arrive in order, neither side of a pipe is left waiting,
and a file hashed ahead gives its whole digest."""

from __future__ import annotations

import gzip
import hashlib
import os
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from kitfs.layers.pipe import BytePipe, PipeBroken
from kitfs.layers.readahead import HashedFile


def _in_thread(body: Callable[[], object]) -> tuple[threading.Thread, list[object]]:
    out: list[object] = []

    def run() -> None:
        try:
            out.append(body())
        except BaseException as exc:  # handed to the test
            out.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, out


def _joined(thread: threading.Thread) -> None:
    thread.join(20)
    assert not thread.is_alive(), "a side of the pipe is still waiting"


def test_bytes_arrive_in_order_through_a_small_pipe() -> None:
    data = os.urandom(3 << 20)
    pipe = BytePipe(limit=64 << 10)  # far smaller than the data: the feeder must wait

    def feed() -> None:
        for start in range(0, len(data), 100_000):
            pipe.feed(data[start : start + 100_000])
        pipe.close()

    feeder, _ = _in_thread(feed)
    got = bytearray()
    while chunk := pipe.read(7000):
        got += chunk
    _joined(feeder)
    assert bytes(got) == data and pipe.position == len(data)


def test_a_decompressor_reads_the_pipe_like_a_file() -> None:
    plain = os.urandom(1 << 20) + bytes(1 << 20)
    pipe = BytePipe()
    packed = gzip.compress(plain)

    def feed() -> None:
        pipe.feed(packed)
        pipe.close()

    feeder, _ = _in_thread(feed)
    assert gzip.GzipFile(fileobj=pipe).read() == plain  # type: ignore[call-overload]
    _joined(feeder)


def test_a_reader_that_gives_up_unblocks_a_feeder_waiting_on_a_full_pipe() -> None:
    pipe = BytePipe(limit=10)
    pipe.feed(b"x" * 10)
    feeder, out = _in_thread(lambda: pipe.feed(b"more"))  # waits: the pipe is full
    feeder.join(0.2)
    assert feeder.is_alive()
    pipe.abandon()
    _joined(feeder)
    assert out == [None]
    pipe.feed(b"dropped")  # never blocks once abandoned
    assert not pipe.usable


def test_a_failed_feeder_wakes_the_reader_with_its_error() -> None:
    pipe = BytePipe()
    reader, out = _in_thread(lambda: pipe.read())
    reader.join(0.2)
    assert reader.is_alive()
    pipe.fail(PipeBroken("the download failed"))
    _joined(reader)
    assert isinstance(out[0], PipeBroken) and "download failed" in str(out[0])


def test_a_broken_stream_is_refused_even_with_bytes_held() -> None:
    pipe = BytePipe()
    pipe.feed(b"first bytes")
    pipe.break_("the registry sent the blob again from its first byte")
    with pytest.raises(PipeBroken, match="again from its first byte"):
        pipe.read()
    assert not pipe.usable


def test_end_of_stream_after_the_bytes_held() -> None:
    pipe = BytePipe()
    pipe.feed(b"abc")
    pipe.close()
    assert pipe.read(2) == b"ab" and pipe.read() == b"c" and pipe.read() == b""


def test_a_hashed_file_gives_the_whole_files_digest_even_when_read_only_in_part(
    tmp_path: Path,
) -> None:
    data = os.urandom(21 << 20)  # several read-ahead chunks, more than the pipe holds
    path = tmp_path / "blob"
    path.write_bytes(data)
    with HashedFile(path) as stream:
        assert stream.read(1000) == data[:1000]  # the reader stops early
    assert stream.digest() == "sha256:" + hashlib.sha256(data).hexdigest()
    with HashedFile(path) as stream:
        got = bytearray()
        while chunk := stream.read():
            got += chunk
    assert bytes(got) == data and stream.size == len(data)
