"""Blob uploads (kitfs.oci.upload through RegistryClient.upload_blob) against a real docker-registry:
one streamed request for a large blob, the registry's chunk limits, resuming after dropped connections,
and a damaged local file refused before its upload is committed."""

from __future__ import annotations

import hashlib
import random
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

import httpx
import pytest
import trio
from faultproxy import Fault, FaultProxy, ProxyRequest, Response, cut_request, once
from registry import RegistryServer

from kitfs.errors import DigestMismatchError
from kitfs.oci.client import RegistryClient, RegistryOptions
from kitfs.oci.manifest import Descriptor, sha256_digest
from kitfs.oci.upload import READ_BLOCK, ChunkLimits, UploadSource

T = TypeVar("T")
MiB = 1024 * 1024
PLAIN = RegistryOptions(plain_http=True, retries=3, backoff=0.01)


def run(host: str, body: Callable[[RegistryClient], Awaitable[T]], options: RegistryOptions) -> T:
    async def main() -> T:
        async with RegistryClient(host, options) as client:
            return await body(client)

    return trio.run(main)


def random_blob(tmp_path: Path, size: int, seed: int = 0) -> tuple[Path, Descriptor, bytes]:
    data = random.Random(seed).randbytes(size)
    path = tmp_path / f"blob-{seed}"
    path.write_bytes(data)
    return path, Descriptor("application/octet-stream", sha256_digest(data), size), data


def upload_and_fetch(
    host: str, repository: str, desc: Descriptor, path: Path, options: RegistryOptions = PLAIN
) -> bytes:
    """Upload, then fetch the blob back (fetch_blob verifies the digest)."""

    async def body(client: RegistryClient) -> bytes:
        await client.upload_blob(repository, desc, path)
        return await client.fetch_blob(repository, desc.digest, desc.size)

    return run(host, body, options)


def upload_requests(proxy: FaultProxy) -> list[tuple[str, str]]:
    """(method, Content-Range or digest marker) of every request to an upload session."""
    out = []
    for r in proxy.requests:
        if "/blobs/uploads/" not in r.path:
            continue
        mark = r.headers.get("content-range", "")
        if r.method == "PUT":
            mark = "digest" if "digest=" in r.path else "no digest"
        out.append((r.method, mark))
    return out


def registry_has(registry: RegistryServer, repository: str, digest: str) -> bool:
    with httpx.Client(base_url=registry.url, trust_env=False) as client:
        return client.head(f"/v2/{repository}/blobs/{digest}").status_code == 200


def post_answer(headers: dict[str, str]) -> Callable[[ProxyRequest], Fault | None]:
    """Add ``headers`` to the registry's answers to POST .../blobs/uploads/."""
    fault = Fault(set_headers=headers)
    return lambda r: fault if r.method == "POST" and "/blobs/uploads/" in r.path else None


# --- request counts ----------------------------------------------------------------------------


def test_large_blob_goes_in_one_streamed_put(
    fault_proxy: FaultProxy, repo_name: str, tmp_path: Path
) -> None:
    """24 MiB (16 MiB chunks used to take two PATCHes and a PUT; a 100 MiB blob seven and a PUT):
    one PUT that carries the whole blob and its digest."""
    path, desc, data = random_blob(tmp_path, 24 * MiB)
    assert upload_and_fetch(fault_proxy.host, repo_name, desc, path) == data
    assert upload_requests(fault_proxy) == [("POST", ""), ("PUT", "digest")]
    put = fault_proxy.matching("PUT", "/blobs/uploads/")[0]
    assert put.headers["content-length"] == str(desc.size)


def test_small_blob_is_verified_then_put_whole(
    fault_proxy: FaultProxy, repo_name: str, tmp_path: Path
) -> None:
    path, desc, data = random_blob(tmp_path, 3 * MiB, seed=1)
    assert upload_and_fetch(fault_proxy.host, repo_name, desc, path) == data
    assert upload_requests(fault_proxy) == [("POST", ""), ("PUT", "digest")]
    assert fault_proxy.matching("PUT", "/blobs/uploads/")[0].headers["content-length"] == str(
        desc.size
    )


# --- chunk limits ------------------------------------------------------------------------------


def test_registry_maximum_chunk_length_is_honoured(
    fault_proxy: FaultProxy, repo_name: str, tmp_path: Path
) -> None:
    path, desc, data = random_blob(tmp_path, 2 * MiB + 1000, seed=2)
    fault_proxy.add_rule(post_answer({"OCI-Chunk-Max-Length": str(MiB)}))
    options = RegistryOptions(plain_http=True, chunked_threshold=64 * 1024)
    assert upload_and_fetch(fault_proxy.host, repo_name, desc, path, options) == data
    assert [m for method, m in upload_requests(fault_proxy) if method == "PATCH"] == [
        f"0-{MiB - 1}",
        f"{MiB}-{2 * MiB - 1}",
        f"{2 * MiB}-{desc.size - 1}",
    ]


def test_registry_minimum_chunk_length_is_honoured(
    fault_proxy: FaultProxy, repo_name: str, tmp_path: Path
) -> None:
    """A 64 KiB chunk_size is raised to the registry's 1 MiB minimum (the last chunk may be less)."""
    path, desc, data = random_blob(tmp_path, MiB + MiB // 2, seed=3)
    fault_proxy.add_rule(post_answer({"OCI-Chunk-Min-Length": str(MiB)}))
    options = RegistryOptions(plain_http=True, chunked_threshold=64 * 1024, chunk_size=64 * 1024)
    assert upload_and_fetch(fault_proxy.host, repo_name, desc, path, options) == data
    assert [m for method, m in upload_requests(fault_proxy) if method == "PATCH"] == [
        f"0-{MiB - 1}",
        f"{MiB}-{desc.size - 1}",
    ]


@pytest.mark.parametrize(
    ("limits", "preferred", "size", "length"),
    [
        (ChunkLimits(), 0, 100, 100),
        (ChunkLimits(), 30, 100, 30),
        (ChunkLimits(maximum=40), 0, 100, 40),
        (ChunkLimits(minimum=50), 30, 100, 50),
        (ChunkLimits(minimum=50, maximum=20), 0, 100, 20),
        (ChunkLimits(minimum=500), 0, 100, 100),
    ],
)
def test_chunk_length(limits: ChunkLimits, preferred: int, size: int, length: int) -> None:
    assert limits.chunk_length(preferred, size) == length


def test_chunk_limit_headers_that_are_not_numbers_are_ignored() -> None:
    headers = {"oci-chunk-min-length": "lots", "oci-chunk-max-length": " 4096 "}
    assert ChunkLimits.from_headers(headers) == ChunkLimits(0, 4096)


# --- a damaged local file --------------------------------------------------------------------


def test_corrupted_large_blob_is_not_committed(
    fault_proxy: FaultProxy, registry: RegistryServer, repo_name: str, tmp_path: Path
) -> None:
    """The bytes go out as they are read, and the blob's last block only once the whole blob
    hashes right: the PUT stops short of its Content-Length, the session is cancelled and the
    registry has no such blob."""
    path, desc, data = random_blob(tmp_path, 12 * MiB, seed=4)
    damaged = bytearray(data)
    damaged[7 * MiB] ^= 0xFF
    path.write_bytes(damaged)

    with pytest.raises(DigestMismatchError) as caught:
        upload_and_fetch(fault_proxy.host, repo_name, desc, path)
    assert str(caught.value) == (
        f"blob {desc.digest} read from {path} failed verification: expected {desc.digest}, "
        f"got {sha256_digest(bytes(damaged))}"
    )
    assert upload_requests(fault_proxy) == [("POST", ""), ("PUT", "digest"), ("DELETE", "")]
    assert not registry_has(registry, repo_name, desc.digest)


def test_corrupted_chunked_blob_is_not_committed(
    fault_proxy: FaultProxy, registry: RegistryServer, repo_name: str, tmp_path: Path
) -> None:
    """In chunks, the last one is cut short the same way, and no PUT ?digest= is sent at all."""
    path, desc, data = random_blob(tmp_path, 3 * MiB, seed=10)
    path.write_bytes(data[:MiB] + b"x" + data[MiB + 1 :])
    options = RegistryOptions(plain_http=True, chunked_threshold=64 * 1024, chunk_size=MiB)
    with pytest.raises(DigestMismatchError, match=f"blob {desc.digest} read from"):
        upload_and_fetch(fault_proxy.host, repo_name, desc, path, options)
    assert upload_requests(fault_proxy) == [
        ("POST", ""),
        ("PATCH", f"0-{MiB - 1}"),
        ("PATCH", f"{MiB}-{2 * MiB - 1}"),
        ("PATCH", f"{2 * MiB}-{3 * MiB - 1}"),
        ("DELETE", ""),
    ]
    assert not registry_has(registry, repo_name, desc.digest)


def test_corrupted_small_blob_opens_no_session(
    fault_proxy: FaultProxy, registry: RegistryServer, repo_name: str, tmp_path: Path
) -> None:
    path, desc, data = random_blob(tmp_path, 100_000, seed=5)
    path.write_bytes(b"\0" + data[1:])
    with pytest.raises(DigestMismatchError, match=f"blob {desc.digest} read from"):
        upload_and_fetch(fault_proxy.host, repo_name, desc, path)
    assert [r.method for r in fault_proxy.requests] == ["HEAD"]
    assert not registry_has(registry, repo_name, desc.digest)


# --- dropped connections and refused ranges ------------------------------------------------------


def test_connection_dropped_mid_upload_restarts_in_a_new_session(
    fault_proxy: FaultProxy, registry: RegistryServer, repo_name: str, tmp_path: Path
) -> None:
    """distribution drops a session whose body was cut short (BLOB_UPLOAD_INVALID on the status
    request): the upload opens a new session and sends the blob again, hashed afresh."""
    path, desc, data = random_blob(tmp_path, 12 * MiB, seed=6)
    fault_proxy.add_rule(once(lambda r: r.method == "PUT", cut_request(5 * MiB)))
    assert upload_and_fetch(fault_proxy.host, repo_name, desc, path) == data
    assert upload_requests(fault_proxy) == [
        ("POST", ""),
        ("PUT", "digest"),
        ("GET", ""),
        ("POST", ""),
        ("PUT", "digest"),
    ]
    assert registry_has(registry, repo_name, desc.digest)


def test_dropped_chunk_resumes_at_the_registry_offset(
    fault_proxy: FaultProxy, repo_name: str, tmp_path: Path
) -> None:
    """A chunk whose connection drops before any of it arrived: the status request says how many
    bytes the session holds and the upload goes on from there, in the same session."""
    path, desc, data = random_blob(tmp_path, 300_000, seed=7)
    options = RegistryOptions(
        plain_http=True, retries=3, backoff=0.01, chunked_threshold=100_000, chunk_size=100_000
    )
    second = once(lambda r: r.headers.get("content-range") == "100000-199999", Fault(drop=True))
    fault_proxy.add_rule(second)
    assert upload_and_fetch(fault_proxy.host, repo_name, desc, path, options) == data
    assert upload_requests(fault_proxy) == [
        ("POST", ""),
        ("PATCH", "0-99999"),
        ("PATCH", "100000-199999"),
        ("GET", ""),
        ("PATCH", "100000-199999"),
        ("PATCH", "200000-299999"),
        ("PUT", "digest"),
    ]


def test_registry_refusing_a_whole_blob_gets_chunks(
    fault_proxy: FaultProxy, repo_name: str, tmp_path: Path
) -> None:
    """A 413 to the monolithic PUT (a proxy's body limit, say): the blob goes in PATCH chunks of
    at most 16 MiB in the same session, then a PUT commits it."""
    path, desc, data = random_blob(tmp_path, 10 * MiB, seed=11)
    too_large = Fault(respond=Response(413, {"Content-Type": "text/plain"}, b"too large"))
    fault_proxy.add_rule(once(lambda r: r.method == "PUT", too_large))
    assert upload_and_fetch(fault_proxy.host, repo_name, desc, path) == data
    assert upload_requests(fault_proxy) == [
        ("POST", ""),
        ("PUT", "digest"),
        ("GET", ""),
        ("PATCH", f"0-{desc.size - 1}"),
        ("PUT", "digest"),
    ]


def test_upload_refused_as_an_unknown_session_asks_for_its_status(
    fault_proxy: FaultProxy, repo_name: str, tmp_path: Path
) -> None:
    """A 404 to the data request: the status request decides (here the session is intact)."""
    path, desc, data = random_blob(tmp_path, 9 * MiB, seed=12)
    unknown = b'{"errors":[{"code":"BLOB_UPLOAD_INVALID","message":"blob upload invalid"}]}'
    gone = Fault(respond=Response(404, {"Content-Type": "application/json"}, unknown))
    fault_proxy.add_rule(once(lambda r: r.method == "PUT", gone))
    assert upload_and_fetch(fault_proxy.host, repo_name, desc, path) == data
    assert upload_requests(fault_proxy) == [
        ("POST", ""),
        ("PUT", "digest"),
        ("GET", ""),
        ("PUT", "digest"),
    ]


def test_refused_range_resumes_at_the_registry_offset(
    fault_proxy: FaultProxy, repo_name: str, tmp_path: Path
) -> None:
    path, desc, data = random_blob(tmp_path, 200_000, seed=8)
    options = RegistryOptions(
        plain_http=True, retries=3, backoff=0.01, chunked_threshold=100_000, chunk_size=100_000
    )
    refused = Fault(respond=Response(416, {"Content-Type": "application/json"}, b"{}"))
    fault_proxy.add_rule(once(lambda r: r.headers.get("content-range") == "100000-199999", refused))
    assert upload_and_fetch(fault_proxy.host, repo_name, desc, path, options) == data
    assert [m for method, m in upload_requests(fault_proxy) if method == "PATCH"] == [
        "0-99999",
        "100000-199999",
        "100000-199999",
    ]


# --- the hash follows the registry's offset ------------------------------------------------------


def test_upload_source_hashes_up_to_a_reported_offset(tmp_path: Path) -> None:
    """A body cut short, then resumed from an offset the registry reports inside that body: the
    bytes before it are hashed again (not sent), those after it sent, and the digest holds."""
    size = 2 * READ_BLOCK + 12345
    path, desc, data = random_blob(tmp_path, size, seed=9)
    middle = READ_BLOCK + 777

    async def main() -> list[bytes]:
        sent: list[bytes] = []
        async with trio.open_nursery() as nursery:
            blob = UploadSource(path, desc, hashlib.sha256, nursery, lambda _: None)
            async for chunk in blob.body(0, size)():  # dropped after its first block
                sent.append(chunk)
                break
            async for chunk in blob.body(middle, size)():
                sent.append(chunk)
            blob.acknowledge(size)
            blob.verify()
            blob.close()
        return sent

    sent = trio.run(main)
    assert sent[0] == data[:READ_BLOCK]
    assert b"".join(sent[1:]) == data[middle:]
