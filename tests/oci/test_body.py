"""Large blob bodies are read straight from the connection (kitfs.oci.body), and stay exactly as
safe as through httpx: drops resume after the last byte that arrived, a stall times out and
resumes, a flipped byte fails the digest.

A real docker-registry behind the fault proxy. The spies on ``kitfs.oci.body._rest`` and
``kitfs.oci.handoff._pump`` only count the bytes that took a fast path (so each test shows which
path it exercised); they change nothing.
"""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import AsyncGenerator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import trio
from faultproxy import Fault, FaultProxy, blob_get, once
from helpers import payload

from kitfs.errors import DigestMismatchError
from kitfs.oci import body, handoff, media
from kitfs.oci.client import RegistryClient, RegistryOptions
from kitfs.oci.manifest import Descriptor, sha256_digest
from kitfs.oci.sink import Counted

MIB = 1 << 20
SIZE = 12 * MIB + 777
ONE_STREAM = RegistryOptions(plain_http=True, retries=3, backoff=0.01, parallel_min=0)


def _run(
    host: str, options: RegistryOptions, work: Callable[[RegistryClient], Awaitable[None]]
) -> None:
    async def main() -> None:
        async with RegistryClient(host, options) as client:
            await work(client)

    trio.run(main)


@pytest.fixture
def fast_bytes(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Bytes read from the connection past httpx, per body (one entry per answer): by the event
    loop (``body._rest``) or by a worker thread (``handoff._pump``, straight into a sink)."""
    counts: list[int] = []
    real_rest = body._rest
    real_pump = handoff._pump

    async def counting(
        response: httpx.Response, remaining: int, timeout: float | None
    ) -> AsyncGenerator[bytes, None]:
        counts.append(0)
        async for piece in real_rest(response, remaining, timeout):
            counts[-1] += len(piece)
            yield piece

    def counting_pump(
        raw: socket.socket,
        sink: Counted,
        skip: int,
        want: int,
        timeout: float | None,
        stop: threading.Event,
    ) -> None:
        before = sink.count
        try:
            real_pump(raw, sink, skip, want, timeout, stop)
        finally:
            counts.append(sink.count - before)

    monkeypatch.setattr(body, "_rest", counting)
    monkeypatch.setattr(handoff, "_pump", counting_pump)
    return counts


@dataclass
class Case:
    """A 12 MiB blob in a real registry behind the fault proxy, and where a download puts it."""

    proxy: FaultProxy
    repo: str
    data: bytes
    desc: Descriptor
    dest: Path
    fast: list[int]  # what the fast path read, per answer (the spy above)

    def download(self, options: RegistryOptions = ONE_STREAM) -> None:
        async def work(client: RegistryClient) -> None:
            await client.download_blob(self.repo, self.desc, self.dest)

        _run(self.proxy.host, options, work)

    def ranges(self) -> list[str | None]:
        return [
            r.headers.get("range")
            for r in self.proxy.requests
            if blob_get(r) and r.path.endswith(self.desc.digest)
        ]


@pytest.fixture
def case(fault_proxy: FaultProxy, repo_name: str, tmp_path: Path, fast_bytes: list[int]) -> Case:
    data = payload(SIZE, seed=31)
    source = tmp_path / "source"
    source.write_bytes(data)
    desc = Descriptor(media.OCI_MANIFEST, sha256_digest(data), len(data))

    async def upload(client: RegistryClient) -> None:
        await client.upload_blob(repo_name, desc, source)

    _run(fault_proxy.host, ONE_STREAM, upload)
    fault_proxy.clear()
    return Case(fault_proxy, repo_name, data, desc, tmp_path / "out", fast_bytes)


def test_a_large_body_is_read_from_the_connection(case: Case) -> None:
    case.download()
    assert case.dest.read_bytes() == case.data
    assert case.ranges() == [None]
    assert len(case.fast) == 1
    assert SIZE - MIB <= case.fast[0] < SIZE  # all but what came with the headers


def test_parallel_ranges_are_read_from_the_connection(case: Case) -> None:
    case.download(
        RegistryOptions(
            plain_http=True, retries=3, backoff=0.01, parallel_min=MIB, range_part=9 * MIB
        )
    )
    assert case.dest.read_bytes() == case.data
    assert sorted(case.ranges(), key=str) == [
        f"bytes=0-{9 * MIB - 1}",
        f"bytes={9 * MIB}-{SIZE - 1}",
    ]
    assert len(case.fast) == 1  # the 9 MiB part; the 3 MiB rest is below the threshold


def test_a_drop_after_the_first_piece_resumes_after_the_last_byte_that_arrived(
    case: Case,
) -> None:
    cut = 10 * MIB + 12345
    case.proxy.add_rule(once(blob_get, Fault(cut_after=cut)))
    case.download()
    assert case.dest.read_bytes() == case.data
    assert case.ranges() == [None, f"bytes={cut}-"]
    assert case.fast and case.fast[0] > 9 * MIB  # the drop came in the fast path


def test_a_stall_after_the_first_piece_times_out_and_resumes(case: Case) -> None:
    stall_at = 9 * MIB
    case.proxy.add_rule(once(blob_get, Fault(stall_after=stall_at, stall=30)))
    case.download(
        RegistryOptions(plain_http=True, retries=3, backoff=0.01, parallel_min=0, timeout=1)
    )
    assert case.dest.read_bytes() == case.data
    assert case.ranges() == [None, f"bytes={stall_at}-"]
    assert stall_at - MIB <= case.fast[0] < stall_at  # the stall came in the fast path


def test_a_flipped_byte_in_the_fast_path_fails_the_digest_and_keeps_nothing(
    case: Case, tmp_path: Path
) -> None:
    case.proxy.add_rule(once(blob_get, Fault(corrupt_at=11 * MIB)))
    with pytest.raises(DigestMismatchError) as caught:
        case.download()
    assert caught.value.expected == case.desc.digest
    assert case.fast and case.fast[0] > 10 * MIB
    assert sorted(os.listdir(tmp_path)) == ["source"]


def _response(headers: dict[str, str], http_version: str = "HTTP/1.1") -> httpx.Response:
    return httpx.Response(
        200,
        headers=headers,
        extensions={"http_version": http_version.encode(), "network_stream": object()},
    )


@pytest.mark.parametrize(
    ("headers", "version", "fast"),
    [
        ({"content-length": str(body.FAST_MIN)}, "HTTP/1.1", True),
        ({"content-length": str(body.FAST_MIN - 1)}, "HTTP/1.1", False),
        ({}, "HTTP/1.1", False),  # no length: read through httpx to the end
        ({"content-length": str(SIZE), "content-encoding": "gzip"}, "HTTP/1.1", False),
        ({"content-length": str(SIZE), "transfer-encoding": "chunked"}, "HTTP/1.1", False),
        ({"content-length": str(SIZE)}, "HTTP/2", False),
    ],
)
def test_only_plain_large_http11_bodies_take_the_fast_path(
    headers: dict[str, str], version: str, fast: bool
) -> None:
    assert body.fast_path_applies(_response(headers, version)) is fast
