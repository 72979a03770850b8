"""Large blobs download as several Range requests at once, hashed in order, and resume across runs.

A real docker-registry behind the fault proxy; the parts are 1 MiB here (32 MiB by default) so that a
5 MiB blob makes five of them.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
import trio
from faultproxy import Fault, FaultProxy, ProxyRequest, Response, blob_get, once
from helpers import payload

from kitfs.errors import DigestMismatchError, TransientError
from kitfs.oci import media
from kitfs.oci.client import RegistryClient, RegistryOptions
from kitfs.oci.manifest import Descriptor, sha256_digest

MIB = 1 << 20
SIZE = 5 * MIB + 1234
PARTS = RegistryOptions(
    plain_http=True, retries=3, backoff=0.01, parallel_min=MIB, range_part=MIB, concurrency=3
)


def _run(host: str, body: Callable[[RegistryClient], Awaitable[None]]) -> None:
    async def main() -> None:
        async with RegistryClient(host, PARTS) as client:
            await body(client)

    trio.run(main)


def _ranges(proxy: FaultProxy, digest: str) -> list[tuple[int, int] | None]:
    found: list[tuple[int, int] | None] = []
    for request in proxy.requests:
        if blob_get(request) and request.path.endswith(digest):
            header = request.headers.get("range")
            if header is None:
                found.append(None)
                continue
            start, _, end = header.removeprefix("bytes=").partition("-")
            found.append((int(start), int(end) if end else -1))
    return found


@pytest.fixture
def blob(fault_proxy: FaultProxy, repo_name: str, tmp_path: Path) -> tuple[bytes, Descriptor]:
    data = payload(SIZE, seed=21)
    path = tmp_path / "source"
    path.write_bytes(data)
    desc = Descriptor(media.OCI_MANIFEST, sha256_digest(data), len(data))

    async def upload(client: RegistryClient) -> None:
        await client.upload_blob(repo_name, desc, path)

    _run(fault_proxy.host, upload)
    fault_proxy.clear()
    return data, desc


def _download(proxy: FaultProxy, repo: str, desc: Descriptor, dest: Path) -> None:
    async def body(client: RegistryClient) -> None:
        await client.download_blob(repo, desc, dest)

    _run(proxy.host, body)


def _starting_at(start: int) -> Callable[[ProxyRequest], bool]:
    return lambda r: blob_get(r) and r.headers.get("range", "").startswith(f"bytes={start}-")


def test_a_large_blob_downloads_as_parallel_ranges(
    fault_proxy: FaultProxy, repo_name: str, blob: tuple[bytes, Descriptor], tmp_path: Path
) -> None:
    data, desc = blob
    dest = tmp_path / "out"
    _download(fault_proxy, repo_name, desc, dest)
    assert dest.read_bytes() == data
    asked = _ranges(fault_proxy, desc.digest)
    assert sorted(a for a in asked if a) == [
        (start, min(start + MIB, SIZE) - 1) for start in range(0, SIZE, MIB)
    ]
    assert sorted(os.listdir(tmp_path)) == ["out", "source"]


def test_a_drop_mid_range_and_a_short_206_are_asked_again(
    fault_proxy: FaultProxy, repo_name: str, blob: tuple[bytes, Descriptor], tmp_path: Path
) -> None:
    data, desc = blob
    fault_proxy.add_rule(once(_starting_at(2 * MIB), Fault(cut_after=100_000)))
    fault_proxy.add_rule(once(_starting_at(3 * MIB), Fault(truncate_to=5000)))
    dest = tmp_path / "out"
    _download(fault_proxy, repo_name, desc, dest)
    assert hashlib.sha256(dest.read_bytes()).hexdigest() == desc.hex
    asked = [a for a in _ranges(fault_proxy, desc.digest) if a]
    assert (2 * MIB + 100_000, 3 * MIB - 1) in asked  # resumed after the bytes that arrived
    assert (3 * MIB + 5000, 4 * MIB - 1) in asked


def test_a_flipped_byte_in_one_range_fails_verification_and_keeps_nothing(
    fault_proxy: FaultProxy, repo_name: str, blob: tuple[bytes, Descriptor], tmp_path: Path
) -> None:
    _, desc = blob
    fault_proxy.add_rule(once(_starting_at(4 * MIB), Fault(corrupt_at=10)))
    dest = tmp_path / "out"
    with pytest.raises(DigestMismatchError) as caught:
        _download(fault_proxy, repo_name, desc, dest)
    assert caught.value.expected == desc.digest
    assert sorted(os.listdir(tmp_path)) == ["source"]  # no file, no partial to resume from


def test_a_registry_that_ignores_range_is_read_as_one_stream(
    fault_proxy: FaultProxy, repo_name: str, blob: tuple[bytes, Descriptor], tmp_path: Path
) -> None:
    data, desc = blob
    whole = Fault(respond=Response(200, {"Content-Type": "application/octet-stream"}, data))
    fault_proxy.add_rule(lambda r: whole if blob_get(r) and r.path.endswith(desc.digest) else None)
    dest = tmp_path / "out"
    _download(fault_proxy, repo_name, desc, dest)
    assert dest.read_bytes() == data
    # One part asked for and answered with everything; then one stream, no parallel requests.
    assert len(_ranges(fault_proxy, desc.digest)) == 2


def test_an_interrupted_download_resumes_on_the_next_run_from_its_prefix(
    fault_proxy: FaultProxy, repo_name: str, blob: tuple[bytes, Descriptor], tmp_path: Path
) -> None:
    data, desc = blob
    # The parts from 3 MiB on fail, a little late: parts 1 and 2 (asked for at the same time)
    # arrive first, so the prefix kept is exactly parts 0-2 (an instant failure raced them).
    late = Fault(delay=0.3, respond=Response(503, {}, b""))
    fault_proxy.add_rule(
        lambda r: (
            late
            if blob_get(r)
            and int(r.headers.get("range", "bytes=0-").split("=")[1].split("-")[0]) >= 3 * MIB
            else None
        )
    )
    dest = tmp_path / "out"
    with pytest.raises(TransientError):
        _download(fault_proxy, repo_name, desc, dest)
    partial = tmp_path / ".out.partial"
    held = partial.stat().st_size
    assert held == 3 * MIB and partial.read_bytes() == data[:held]  # a clean prefix, in order
    fault_proxy.clear()
    _download(fault_proxy, repo_name, desc, dest)
    assert dest.read_bytes() == data and not partial.exists()
    asked = [a for a in _ranges(fault_proxy, desc.digest) if a]
    assert min(start for start, _ in asked) == held  # nothing before the prefix fetched again
    refetched = sum(end + 1 - start for start, end in asked)
    assert refetched == SIZE - held
