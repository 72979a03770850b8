"""The mount's whole-layer fetch of a compressed layer is one pass: the blob is decompressed, hashed
and indexed as it arrives (kitfs.layers.pipe), and its tar is committed only after the blob's digest
checks out. Real mounts, a real registry, the fault proxy in between."""

from __future__ import annotations

import errno
import hashlib
import os
import uuid
from pathlib import Path

import pytest
from faultproxy import Fault, FaultProxy, ProxyRequest, Response, blob_get
from fs_mounting import Mounter
from helpers import WHOLE, kitfs
from registry import RegistryServer

from kitfs.config import Paths
from kitfs.reference import parse
from kitfs.storage.local import LocalStore

pytestmark = pytest.mark.skipif(not os.path.exists("/dev/fuse"), reason="needs /dev/fuse")

SIZE = 6 << 20
ONE_PASS = "read in one pass as it arrived"
FALLBACK = "reading the downloaded file again"


class Compressed:
    """A ModelKit with one 6 MiB random model file, under tags gzip and zstd (kit's layers)."""

    def __init__(self, base: Path, registry: RegistryServer) -> None:
        self.home = base / "home"
        self.context = base / "ctx"
        self.context.mkdir(parents=True)
        self.data = os.urandom(SIZE)
        (self.context / "weights.bin").write_bytes(self.data)
        (self.context / "Kitfile").write_text(
            "manifestVersion: 1.0.0\npackage:\n  name: onepass\n"
            "model:\n  name: w\n  path: weights.bin\n"
        )
        self.repository = f"kitfs-fs/onepass-{uuid.uuid4().hex[:8]}"
        self.registry = registry
        for compression in ("gzip", "zstd"):
            ref = self.ref(compression)
            packed = kitfs(
                self.home,
                "pack",
                str(self.context),
                "-t",
                ref,
                "--compression",
                compression,
                *WHOLE,
            )
            assert packed.returncode == 0, packed.stderr
            assert kitfs(self.home, "push", ref, "--plain-http").returncode == 0

    def ref(self, tag: str, host: str | None = None) -> str:
        return f"{host or self.registry.host}/{self.repository}:{tag}"

    def layer(self, tag: str) -> tuple[str, bytes, str]:
        """(digest, blob bytes, diffId hex) of the tag's model layer."""
        store = LocalStore(Paths(self.home).storage)
        _repo, desc = store.resolve(parse(self.ref(tag)))
        manifest = store.load_manifest(desc)
        kitfile = store.load_kitfile(manifest)
        layer = manifest.layers[0]
        diff_id = str(next(iter(kitfile.entries())).data["diffId"]).split(":")[1]
        return layer.digest, store.blob_path(layer.digest).read_bytes(), diff_id


@pytest.fixture(scope="module")
def compressed(registry: RegistryServer, tmp_path_factory: pytest.TempPathFactory) -> Compressed:
    return Compressed(tmp_path_factory.mktemp("onepass"), registry)


def _gets(proxy: FaultProxy, digest: str) -> list[str]:
    """The Range header (or "") of every GET of ``digest``'s blob."""
    return [
        r.headers.get("range", "")
        for r in proxy.requests
        if blob_get(r) and r.path.endswith(digest)
    ]


@pytest.mark.parametrize("compression", ["gzip", "zstd"])
def test_a_compressed_layer_is_decompressed_and_indexed_as_it_arrives(
    compression: str, compressed: Compressed, mounter: Mounter, fault_proxy: FaultProxy
) -> None:
    digest, _blob, diff_id = compressed.layer(compression)
    mnt = mounter.mount(compressed.ref(compression, fault_proxy.host))
    assert (mnt / "model" / "weights.bin").read_bytes() == compressed.data
    assert _gets(fault_proxy, digest) == [""]  # fetched once, whole
    log = mounter.log_path(mnt).read_text()
    assert ONE_PASS in log and FALLBACK not in log
    # The verified tar is in the cache under its diffId, and nothing is left in tmp/.
    tar = mounter.cache / "tars" / "sha256" / diff_id
    assert hashlib.sha256(tar.read_bytes()).hexdigest() == diff_id
    assert list((mounter.cache / "tmp").iterdir()) == []


def test_a_stream_restarted_from_byte_zero_is_read_again_from_the_file(
    compressed: Compressed, mounter: Mounter, fault_proxy: FaultProxy
) -> None:
    """The connection drops after 2 MiB; the resumed request is answered with the whole blob
    (200, as a registry that ignores Range does), so what the pipe carried is not a prefix of
    what is hashed any more: the scan is abandoned and the finished file scanned instead."""
    digest, blob, _diff_id = compressed.layer("gzip")
    whole = Fault(respond=Response(200, {"Content-Type": "application/octet-stream"}, blob))
    seen: list[int] = []

    def rule(request: ProxyRequest) -> Fault | None:
        if not (blob_get(request) and request.path.endswith(digest)):
            return None
        seen.append(1)
        return Fault(cut_after=2 << 20) if len(seen) == 1 else whole

    fault_proxy.add_rule(rule)  # type: ignore[arg-type]
    mnt = mounter.mount(compressed.ref("gzip", fault_proxy.host))
    assert (mnt / "model" / "weights.bin").read_bytes() == compressed.data
    gets = _gets(fault_proxy, digest)
    assert gets[0] == "" and gets[1] == "bytes=2097152-"
    log = mounter.log_path(mnt).read_text()
    assert FALLBACK in log and ONE_PASS not in log


@pytest.mark.parametrize("compression", ["gzip", "zstd"])
def test_a_flipped_byte_fails_verification_even_when_the_scan_fails_first(
    compression: str, compressed: Compressed, mounter: Mounter, fault_proxy: FaultProxy
) -> None:
    """A byte flipped early breaks decompression while the download is still running: the
    error the mount gives is the download's digest mismatch, and nothing is cached."""
    digest, _blob, diff_id = compressed.layer(compression)
    fault_proxy.add_rule(
        lambda r: Fault(corrupt_at=300) if blob_get(r) and r.path.endswith(digest) else None
    )
    mnt = mounter.mount(compressed.ref(compression, fault_proxy.host))
    with pytest.raises(OSError) as caught:
        (mnt / "model" / "weights.bin").read_bytes()
    assert caught.value.errno == errno.EIO
    log = mounter.log_path(mnt).read_text()
    assert digest in log and "failed verification" in log
    assert "cannot be decompressed" not in log and "Traceback" not in log
    assert not (mounter.cache / "tars" / "sha256" / diff_id).exists()
    assert list((mounter.cache / "tmp").iterdir()) == []
