"""RegistryClient against a real docker-registry, with a fault-injecting proxy where faults matter."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

import pytest
import trio
from faultproxy import Fault, FaultProxy, ProxyRequest, Response, blob_get, once
from helpers import payload
from registry import RegistryServer

from kitfs.errors import DigestMismatchError, NotFoundError, RegistryError, TransientError
from kitfs.oci import media
from kitfs.oci.client import RegistryClient, RegistryOptions
from kitfs.oci.manifest import Descriptor, sha256_digest

T = TypeVar("T")
PLAIN = RegistryOptions(plain_http=True, retries=3, backoff=0.01)
CONFIG = b'{"manifestVersion":"1.0.0","package":{"name":"test"}}'


def run(
    host: str, body: Callable[[RegistryClient], Awaitable[T]], options: RegistryOptions = PLAIN
) -> T:
    """Run ``body`` with a client for ``host`` under trio."""

    async def main() -> T:
        async with RegistryClient(host, options) as client:
            return await body(client)

    return trio.run(main)


def blob_file(tmp_path: Path, data: bytes, name: str = "blob") -> tuple[Path, Descriptor]:
    path = tmp_path / name
    path.write_bytes(data)
    return path, Descriptor("application/octet-stream", sha256_digest(data), len(data))


def manifest_for(config: Descriptor, layers: list[Descriptor]) -> bytes:
    raw = {
        "schemaVersion": 2,
        "mediaType": media.OCI_MANIFEST,
        "config": {"mediaType": media.KIT_CONFIG, "digest": config.digest, "size": config.size},
        "layers": [{"mediaType": d.media_type, "digest": d.digest, "size": d.size} for d in layers],
    }
    return json.dumps(raw, separators=(",", ":")).encode()


async def push_modelkit(
    client: RegistryClient, repo: str, tmp_path: Path, tag: str = "v1"
) -> tuple[bytes, str]:
    """Push a config blob, one layer and a manifest under ``tag``; returns (manifest, digest)."""
    config_path, config = blob_file(tmp_path, CONFIG, "config")
    layer_path, layer = blob_file(tmp_path, payload(10_000), "layer")
    await client.upload_blob(repo, config, config_path)
    await client.upload_blob(repo, layer, layer_path)
    body = manifest_for(config, [layer])
    digest = await client.put_manifest(repo, tag, body, media.OCI_MANIFEST)
    return body, digest


# --- manifests ---------------------------------------------------------------------------------


def test_manifest_put_get_head_roundtrip(
    registry: RegistryServer, repo_name: str, tmp_path: Path
) -> None:
    async def body(client: RegistryClient) -> None:
        manifest, digest = await push_modelkit(client, repo_name, tmp_path)
        assert digest == sha256_digest(manifest)
        assert await client.get_manifest(repo_name, "v1") == (manifest, media.OCI_MANIFEST, digest)
        assert await client.get_manifest(repo_name, digest) == (
            manifest,
            media.OCI_MANIFEST,
            digest,
        )
        head = await client.head_manifest(repo_name, "v1")
        assert head == Descriptor(media.OCI_MANIFEST, digest, len(manifest))
        assert await client.head_manifest(repo_name, "nope") is None

    run(registry.host, body)


def test_index_is_accepted_as_a_manifest(
    registry: RegistryServer, repo_name: str, tmp_path: Path
) -> None:
    async def body(client: RegistryClient) -> None:
        manifest, digest = await push_modelkit(client, repo_name, tmp_path)
        index = json.dumps(
            {
                "schemaVersion": 2,
                "mediaType": media.OCI_INDEX,
                "manifests": [
                    {"mediaType": media.OCI_MANIFEST, "digest": digest, "size": len(manifest)}
                ],
            }
        ).encode()
        index_digest = await client.put_manifest(repo_name, "all", index, media.OCI_INDEX)
        assert await client.get_manifest(repo_name, "all") == (index, media.OCI_INDEX, index_digest)

    run(registry.host, body)


def test_delete_manifest_removes_it(
    registry: RegistryServer, repo_name: str, tmp_path: Path
) -> None:
    async def body(client: RegistryClient) -> None:
        _, digest = await push_modelkit(client, repo_name, tmp_path)
        await client.delete_manifest(repo_name, digest)
        assert await client.head_manifest(repo_name, digest) is None
        with pytest.raises(NotFoundError, match=f"manifest {repo_name}@{digest} not found"):
            await client.delete_manifest(repo_name, digest)

    run(registry.host, body)


def test_missing_manifest_names_registry_and_tag(
    registry: RegistryServer, repo_name: str, tmp_path: Path
) -> None:
    async def body(client: RegistryClient) -> None:
        await push_modelkit(client, repo_name, tmp_path)
        await client.get_manifest(repo_name, "v9")

    with pytest.raises(NotFoundError) as caught:
        run(registry.host, body)
    assert str(caught.value) == f"registry {registry.host}: manifest {repo_name}:v9 not found"


def test_put_manifest_refuses_a_digest_that_does_not_match(
    registry: RegistryServer, repo_name: str
) -> None:
    wrong = sha256_digest(b"something else")

    async def body(client: RegistryClient) -> str:
        return await client.put_manifest(repo_name, wrong, b"{}", media.OCI_MANIFEST)

    with pytest.raises(DigestMismatchError, match=wrong):
        run(registry.host, body)


def test_corrupted_manifest_fails_verification(
    fault_proxy: FaultProxy, repo_name: str, tmp_path: Path
) -> None:
    async def body(client: RegistryClient) -> None:
        _, digest = await push_modelkit(client, repo_name, tmp_path)
        fault_proxy.add_rule(
            once(lambda r: "/manifests/" in r.path and r.method == "GET", Fault(corrupt_at=5))
        )
        with pytest.raises(DigestMismatchError, match=f"manifest {repo_name}@{digest}"):
            await client.get_manifest(repo_name, digest)

    run(fault_proxy.host, body)


def test_non_manifest_media_type_is_refused(fault_proxy: FaultProxy, repo_name: str) -> None:
    # The real registry never serves this; the proxy answers by itself to show the client's check.
    answer = Response(200, {"Content-Type": "text/html"}, b"<html>login page</html>")
    fault_proxy.add_rule(lambda r: Fault(respond=answer) if "/manifests/" in r.path else None)

    async def body(client: RegistryClient) -> object:
        return await client.get_manifest(repo_name, "v1")

    with pytest.raises(RegistryError) as caught:
        run(fault_proxy.host, body)
    assert str(caught.value) == (
        f"registry {fault_proxy.host}: manifest {repo_name}:v1 is not an OCI manifest (media type text/html)"
    )


# --- blobs -------------------------------------------------------------------------------------


def test_monolithic_upload_and_fetch(
    fault_proxy: FaultProxy, repo_name: str, tmp_path: Path
) -> None:
    data = payload(200_000)
    path, descriptor = blob_file(tmp_path, data)
    seen: list[int] = []

    async def body(client: RegistryClient) -> bytes:
        await client.upload_blob(repo_name, descriptor, path, progress=seen.append)
        assert await client.blob_exists(repo_name, descriptor.digest)
        return await client.fetch_blob(repo_name, descriptor.digest, descriptor.size)

    assert run(fault_proxy.host, body) == data
    assert sum(seen) == len(data)
    assert len(fault_proxy.matching("PUT", "/blobs/uploads/")) == 1
    assert fault_proxy.matching("PATCH") == []


def test_chunked_upload(fault_proxy: FaultProxy, repo_name: str, tmp_path: Path) -> None:
    data = payload(300_000, seed=1)
    path, descriptor = blob_file(tmp_path, data)
    options = RegistryOptions(plain_http=True, chunked_threshold=100_000, chunk_size=64 * 1024)
    seen: list[int] = []

    async def body(client: RegistryClient) -> bytes:
        await client.upload_blob(repo_name, descriptor, path, progress=seen.append)
        return await client.fetch_blob(repo_name, descriptor.digest)

    assert run(fault_proxy.host, body, options) == data
    patches = fault_proxy.matching("PATCH", "/blobs/uploads/")
    assert [r.headers["content-range"] for r in patches] == [
        "0-65535",
        "65536-131071",
        "131072-196607",
        "196608-262143",
        "262144-299999",
    ]
    assert sum(seen) == len(data)
    final = fault_proxy.matching("PUT", "/blobs/uploads/")
    assert len(final) == 1 and "digest=sha256%3A" in final[0].path


def test_chunked_upload_retries_a_failed_chunk(
    fault_proxy: FaultProxy, repo_name: str, tmp_path: Path
) -> None:
    data = payload(200_000, seed=12)
    path, descriptor = blob_file(tmp_path, data)
    options = RegistryOptions(plain_http=True, chunked_threshold=100_000, chunk_size=64 * 1024)
    busy = Response(503, {"Retry-After": "0"})
    second_chunk = once(
        lambda r: r.headers.get("content-range") == "65536-131071", Fault(respond=busy)
    )
    fault_proxy.add_rule(second_chunk)
    fault_proxy.add_rule(once(lambda r: r.method == "PATCH", Fault(drop=True)))

    async def body(client: RegistryClient) -> bytes:
        await client.upload_blob(repo_name, descriptor, path)
        return await client.fetch_blob(repo_name, descriptor.digest, descriptor.size)

    assert run(fault_proxy.host, body, options) == data
    ranges = [r.headers["content-range"] for r in fault_proxy.matching("PATCH")]
    assert ranges == [
        "0-65535",
        "0-65535",
        "65536-131071",
        "65536-131071",
        "131072-196607",
        "196608-199999",
    ]


def test_upload_skips_blob_the_registry_has(
    fault_proxy: FaultProxy, repo_name: str, tmp_path: Path
) -> None:
    path, descriptor = blob_file(tmp_path, payload(1000, seed=2))

    async def body(client: RegistryClient) -> None:
        await client.upload_blob(repo_name, descriptor, path)
        fault_proxy.requests.clear()
        await client.upload_blob(repo_name, descriptor, path)

    run(fault_proxy.host, body)
    assert [r.method for r in fault_proxy.requests] == ["HEAD"]


def test_cross_repository_mount(fault_proxy: FaultProxy, repo_name: str, tmp_path: Path) -> None:
    path, descriptor = blob_file(tmp_path, payload(5000, seed=3))
    other = repo_name + "-copy"

    async def body(client: RegistryClient) -> bytes:
        await client.upload_blob(repo_name, descriptor, path)
        fault_proxy.requests.clear()
        await client.upload_blob(other, descriptor, path, mount_from=repo_name)
        return await client.fetch_blob(other, descriptor.digest)

    assert run(fault_proxy.host, body) == path.read_bytes()
    posts = fault_proxy.matching("POST", f"/v2/{other}/blobs/uploads/")
    assert len(posts) == 1 and f"from={repo_name.replace('/', '%2F')}" in posts[0].path
    assert fault_proxy.matching("PUT") == [] and fault_proxy.matching("PATCH") == []


def test_fetch_blob_not_found(registry: RegistryServer, repo_name: str, tmp_path: Path) -> None:
    missing = sha256_digest(b"missing")

    async def body(client: RegistryClient) -> bytes:
        await push_modelkit(client, repo_name, tmp_path)
        return await client.fetch_blob(repo_name, missing)

    with pytest.raises(NotFoundError) as caught:
        run(registry.host, body)
    assert str(caught.value) == f"registry {registry.host}: blob {missing} in {repo_name} not found"


def test_range_reads(registry: RegistryServer, repo_name: str, tmp_path: Path) -> None:
    data = payload(50_000, seed=4)
    path, descriptor = blob_file(tmp_path, data)

    async def body(client: RegistryClient) -> list[bytes]:
        await client.upload_blob(repo_name, descriptor, path)
        return [
            await client.read_blob_range(repo_name, descriptor.digest, 1234, 4321),
            await client.read_blob_range(repo_name, descriptor.digest, 0, 1),
            await client.read_blob_range(repo_name, descriptor.digest, 49_990, 100),
            await client.read_blob_range(repo_name, descriptor.digest, 10, 0),
        ]

    assert run(registry.host, body) == [data[1234:5555], data[:1], data[49_990:], b""]


def test_range_read_refuses_a_full_answer(
    fault_proxy: FaultProxy, repo_name: str, tmp_path: Path
) -> None:
    path, descriptor = blob_file(tmp_path, payload(1000, seed=5))
    whole = path.read_bytes()
    fault_proxy.add_rule(
        lambda r: Fault(respond=Response(200, {}, whole)) if "range" in r.headers else None
    )

    async def body(client: RegistryClient) -> bytes:
        await client.upload_blob(repo_name, descriptor, path)
        return await client.read_blob_range(repo_name, descriptor.digest, 0, 10)

    with pytest.raises(
        RegistryError, match="ignored a Range request for blob .* it cannot serve partial reads"
    ):
        run(fault_proxy.host, body)


# --- downloads ---------------------------------------------------------------------------------


def test_download_writes_verified_blob(
    registry: RegistryServer, repo_name: str, tmp_path: Path
) -> None:
    data = payload(3_000_000, seed=6)
    path, descriptor = blob_file(tmp_path, data)
    dest = tmp_path / "out" / "blob"
    dest.parent.mkdir()
    seen: list[int] = []

    async def body(client: RegistryClient) -> None:
        await client.upload_blob(repo_name, descriptor, path)
        await client.download_blob(repo_name, descriptor, dest, progress=seen.append)

    run(registry.host, body)
    assert dest.read_bytes() == data
    assert sum(seen) == len(data)
    assert os.listdir(dest.parent) == ["blob"]


@pytest.mark.parametrize("size_delta", [-1, 1])
def test_download_with_wrong_size_fails_and_leaves_nothing(
    registry: RegistryServer, repo_name: str, tmp_path: Path, size_delta: int
) -> None:
    path, real = blob_file(tmp_path, payload(4096, seed=7))
    wrong = Descriptor(real.media_type, real.digest, real.size + size_delta)
    (tmp_path / "out").mkdir()
    dest = tmp_path / "out" / "blob"

    async def body(client: RegistryClient) -> None:
        await client.upload_blob(repo_name, real, path)
        await client.download_blob(repo_name, wrong, dest)

    with pytest.raises(
        DigestMismatchError, match=f"blob {real.digest} in {repo_name} failed verification"
    ):
        run(registry.host, body)
    assert os.listdir(tmp_path / "out") == []


def test_download_of_unknown_digest_leaves_nothing(
    registry: RegistryServer, repo_name: str, tmp_path: Path
) -> None:
    path, real = blob_file(tmp_path, payload(4096, seed=7))
    unknown = Descriptor(real.media_type, sha256_digest(b"never pushed"), real.size)
    (tmp_path / "out").mkdir()

    async def body(client: RegistryClient) -> None:
        await client.upload_blob(repo_name, real, path)
        await client.download_blob(repo_name, unknown, tmp_path / "out" / "blob")

    with pytest.raises(NotFoundError, match=f"blob {unknown.digest} in {repo_name} not found"):
        run(registry.host, body)
    assert os.listdir(tmp_path / "out") == []


def test_corrupted_download_fails_and_leaves_nothing(
    fault_proxy: FaultProxy, repo_name: str, tmp_path: Path
) -> None:
    path, descriptor = blob_file(tmp_path, payload(100_000, seed=9))
    (tmp_path / "out").mkdir()
    dest = tmp_path / "out" / "blob"

    async def body(client: RegistryClient) -> None:
        await client.upload_blob(repo_name, descriptor, path)
        fault_proxy.add_rule(once(blob_get, Fault(corrupt_at=50_000)))
        await client.download_blob(repo_name, descriptor, dest)

    with pytest.raises(DigestMismatchError) as caught:
        run(fault_proxy.host, body)
    assert caught.value.expected == descriptor.digest
    assert caught.value.actual != descriptor.digest
    assert os.listdir(tmp_path / "out") == []


def test_download_resumes_after_dropped_connection(
    fault_proxy: FaultProxy, repo_name: str, tmp_path: Path
) -> None:
    data = payload(2_500_000, seed=10)
    path, descriptor = blob_file(tmp_path, data)
    dest = tmp_path / "blob.out"
    cut = 1_300_000

    async def body(client: RegistryClient) -> None:
        await client.upload_blob(repo_name, descriptor, path)
        fault_proxy.add_rule(once(blob_get, Fault(cut_after=cut)))
        await client.download_blob(repo_name, descriptor, dest)

    run(fault_proxy.host, body)
    assert hashlib.sha256(dest.read_bytes()).hexdigest() == descriptor.hex
    gets = fault_proxy.matching("GET", f"/blobs/{descriptor.digest}")
    assert len(gets) == 2
    assert "range" not in gets[0].headers
    assert gets[1].headers["range"] == f"bytes={cut}-"


def test_download_gives_up_after_retries(
    fault_proxy: FaultProxy, repo_name: str, tmp_path: Path
) -> None:
    path, descriptor = blob_file(tmp_path, payload(100_000, seed=11))
    dest = tmp_path / "blob.out"

    async def body(client: RegistryClient) -> None:
        await client.upload_blob(repo_name, descriptor, path)
        fault_proxy.add_rule(lambda r: Fault(cut_after=10) if blob_get(r) else None)
        await client.download_blob(repo_name, descriptor, dest)

    with pytest.raises(
        TransientError,
        match=f"registry {fault_proxy.host}: the connection kept failing \\(connection closed by the server\\)",
    ):
        run(fault_proxy.host, body)
    assert not dest.exists()
    # What arrived is kept for the next download of the same blob to resume after.
    assert sorted(os.listdir(tmp_path)) == [".blob.out.partial", "blob"]
    assert 0 < (tmp_path / ".blob.out.partial").stat().st_size < descriptor.size


def test_a_cancelled_download_keeps_what_arrived_to_resume_after(
    fault_proxy: FaultProxy, repo_name: str, tmp_path: Path
) -> None:
    """A pull whose other blob failed cancels this one: the megabytes that arrived stay for the
    next pull to resume after (under 1 MiB, RESUME_MIN, a cancelled download keeps nothing)."""
    size = 3 << 20
    path, descriptor = blob_file(tmp_path, payload(size, seed=12))
    dest = tmp_path / "blob.out"
    partial = tmp_path / ".blob.out.partial"

    async def body(client: RegistryClient) -> None:
        await client.upload_blob(repo_name, descriptor, path)
        fault_proxy.add_rule(once(blob_get, Fault(stall_after=size // 2, stall=30)))
        with trio.move_on_after(20) as scope:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(client.download_blob, repo_name, descriptor, dest)
                while not partial.exists() or partial.stat().st_size < 1 << 20:
                    await trio.sleep(0.02)
                nursery.cancel_scope.cancel()
        assert not scope.cancelled_caught, "the stalled download never wrote what arrived"

    run(fault_proxy.host, body)
    assert not dest.exists()
    assert sorted(os.listdir(tmp_path)) == [".blob.out.partial", "blob"]
    assert partial.read_bytes() == path.read_bytes()[: partial.stat().st_size]


# --- tags --------------------------------------------------------------------------------------


def test_list_tags(registry: RegistryServer, repo_name: str, tmp_path: Path) -> None:
    async def body(client: RegistryClient) -> list[str]:
        manifest, _ = await push_modelkit(client, repo_name, tmp_path)
        for tag in ("v2", "latest"):
            await client.put_manifest(repo_name, tag, manifest, media.OCI_MANIFEST)
        return await client.list_tags(repo_name)

    assert sorted(run(registry.host, body)) == ["latest", "v1", "v2"]


def test_list_tags_follows_link_pagination(fault_proxy: FaultProxy, repo_name: str) -> None:
    # distribution 2.8 ignores ?n= for tags, so the proxy serves the pages (as newer registries do).
    pages = {
        f"/v2/{repo_name}/tags/list?n=2": (
            ["a", "b"],
            f'</v2/{repo_name}/tags/list?n=2&last=b>; rel="next"',
        ),
        f"/v2/{repo_name}/tags/list?n=2&last=b": (
            ["c", "d"],
            f'<{fault_proxy.url}/v2/{repo_name}/tags/list?n=2&last=d>; rel="next"',
        ),
        f"/v2/{repo_name}/tags/list?n=2&last=d": (["e"], None),
    }

    def serve(request: ProxyRequest) -> Fault:
        tags, link = pages[request.path]
        headers = {"Content-Type": "application/json", **({"Link": link} if link else {})}
        return Fault(
            respond=Response(200, headers, json.dumps({"name": repo_name, "tags": tags}).encode())
        )

    fault_proxy.add_rule(serve)

    async def body(client: RegistryClient) -> list[str]:
        return await client.list_tags(repo_name, page_size=2)

    assert run(fault_proxy.host, body) == ["a", "b", "c", "d", "e"]
    assert [r.path for r in fault_proxy.requests] == list(pages)


def test_unknown_repository_is_named(registry: RegistryServer, repo_name: str) -> None:
    async def body(client: RegistryClient) -> list[str]:
        return await client.list_tags(repo_name)

    with pytest.raises(NotFoundError) as caught:
        run(registry.host, body)
    assert str(caught.value) == f"registry {registry.host}: repository {repo_name} not found"


# --- transport ---------------------------------------------------------------------------------


def test_unreachable_registry_message(unreachable_host: str) -> None:
    host = unreachable_host

    async def body(client: RegistryClient) -> list[str]:
        return await client.list_tags("acme/model")

    with pytest.raises(TransientError) as caught:
        run(host, body, RegistryOptions(plain_http=True, retries=2, backoff=0.01))
    assert str(caught.value) == f"registry {host} is unreachable: connection refused"


def test_transient_errors_are_retried_honouring_retry_after(
    fault_proxy: FaultProxy, repo_name: str, tmp_path: Path
) -> None:
    busy = Response(
        503, {"Retry-After": "0"}, b'{"errors":[{"code":"UNAVAILABLE","message":"busy"}]}'
    )

    async def body(client: RegistryClient) -> bytes:
        manifest, _ = await push_modelkit(client, repo_name, tmp_path)
        fault_proxy.add_rule(once(lambda r: "/manifests/" in r.path, Fault(respond=busy), times=2))
        got, _, _ = await client.get_manifest(repo_name, "v1")
        assert got == manifest
        fault_proxy.add_rule(lambda r: Fault(respond=busy) if "/manifests/" in r.path else None)
        return (await client.get_manifest(repo_name, "v1"))[0]

    with pytest.raises(TransientError) as caught:
        run(fault_proxy.host, body, RegistryOptions(plain_http=True, retries=3, backoff=5.0))
    assert str(caught.value) == (
        f"registry {fault_proxy.host}: fetching manifest {repo_name}:v1 failed: HTTP 503 UNAVAILABLE busy "
        "(gave up after 3 attempts)"
    )
    assert len(fault_proxy.matching("GET", f"/v2/{repo_name}/manifests/v1")) == 3 + 3
