"""Registry faults, crashes, a full disk and hostile content under a real mount (``kitfs mount``
daemons through /dev/fuse), and the mount's security defaults.

A read through the mount returns the ModelKit's bytes or fails with EIO: never other bytes. What is
transient is retried inside the daemon; what is not fails the read and leaves nothing in the cache;
once the fault clears (and the few seconds a failure is remembered have passed), the same read
succeeds in the same mount.
"""

from __future__ import annotations

import errno
import hashlib
import os
import re
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest
from faultproxy import (
    Fault,
    FaultProxy,
    Response,
    always,
    flip,
    for_digest,
    invalid_json,
    manifest_get,
    once,
    other_blob,
    refuse,
    reset_midway,
    stall,
    status,
    truncate,
)
from helpers import forge_file, forge_header, forge_tar
from registry import RegistryServer

from kitfs.config import Paths
from kitfs.oci import media
from kitfs.reference import parse
from kitfs.storage.local import LocalStore

from .helpers import (
    Kit,
    Mounts,
    alive,
    is_mounted,
    kit_config,
    make_kit,
    push_raw,
    standard_files,
    wait_until,
    wait_until_read,
)
from .test_hostile import gzip_bomb, many_layers_manifest

DIGEST_NAME = re.compile(r"^[0-9a-f]{64}$")
SECTION = {"model": "model", "data": "datasets", "src": "code", "docs": "docs"}


def in_mount(mnt: Path, rel: str) -> Path:
    """Where a context file shows in the default (sections) layout."""
    return mnt / SECTION[rel.split("/", 1)[0]] / rel


def layer_of(kit: Kit, top: str) -> str:
    """The digest of the layer that holds the context directory ``top``."""
    store = LocalStore(Paths(kit.home).storage)
    _, desc = store.resolve(parse(kit.ref()))
    manifest = store.load_manifest(desc)
    kitfile = store.load_kitfile(manifest)
    for entry, layer in zip(kitfile.entries(), manifest.layers, strict=True):
        if entry.path == top:
            return layer.digest
    raise KeyError(top)


def read_errno(path: Path) -> int | None:
    try:
        path.read_bytes()
    except OSError as exc:
        return exc.errno
    return None


def cached_tars(cache: Path) -> list[Path]:
    """The layer tars the cache would serve (files named by a digest)."""
    return [p for p in (cache / "tars" / "sha256").glob("*") if DIGEST_NAME.match(p.name)]


def assert_cache_verified(cache: Path) -> None:
    """Everything the cache holds under a digest name hashes to that name (layer tars and small
    blobs): a partial file never carries a digest's name."""
    for kind in ("tars", "blobs"):
        for path in (cache / kind / "sha256").glob("*"):
            if DIGEST_NAME.match(path.name):
                digest = hashlib.sha256(path.read_bytes()).hexdigest()
                assert digest == path.name, f"{path} does not match its name"


def partial_bytes(cache: Path) -> int:
    """Bytes in files of the cache that are not (yet) named by a digest: downloads in flight
    (logs and tag records, ``refs/.../@tags/TAG``, are named otherwise)."""
    return sum(
        p.stat().st_size
        for p in cache.rglob("*")
        if p.is_file() and not DIGEST_NAME.match(p.name) and p.parent.name not in ("logs", "@tags")
    )


@pytest.fixture(scope="module")
def kit(registry: RegistryServer, tmp_path_factory: pytest.TempPathFactory) -> Kit:
    base = tmp_path_factory.mktemp("mountkit")
    return make_kit(
        base / "home", base / "ctx", registry.host, "reliability/mount", compression="gzip"
    )


@pytest.fixture(scope="module")
def big_kits(registry: RegistryServer, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Kit]:
    """A 6 MB model layer, uncompressed and gzip: downloads reach the disk in 1 MiB pieces."""
    base = tmp_path_factory.mktemp("bigmountkit")
    files = standard_files(scale=4)
    return {
        compression: make_kit(
            base / compression / "home",
            base / compression / "ctx",
            registry.host,
            "reliability/big",
            files=files,
            tag=compression,
            compression=compression,
        )
        for compression in ("none", "gzip")
    }


# -- transient faults --------------------------------------------------------------------------

TRANSIENT = {
    "refused": refuse(),
    "reset-midway": reset_midway(200_000),
    "stall-then-drop": stall(1.0, after=100_000),
    "http-503": status(503),
    "http-429-retry-after": status(429, retry_after="1"),
}


@pytest.mark.parametrize("name", sorted(TRANSIENT))
def test_transient_fault_under_a_read_is_retried(
    name: str, kit: Kit, mounts: Mounts, fault_proxy: FaultProxy
) -> None:
    mnt = mounts.mount(kit.ref(fault_proxy.host))
    digest = layer_of(kit, "model")
    fault_proxy.add_rule(once(for_digest(digest), TRANSIENT[name], times=2))
    path = in_mount(mnt, "model/weights.bin")
    assert path.read_bytes() == kit.files["model/weights.bin"]
    assert len(fault_proxy.matching("GET", digest)) == 3
    assert_cache_verified(mounts.cache)


def test_transient_manifest_fault_at_mount_time_is_retried(
    kit: Kit, mounts: Mounts, fault_proxy: FaultProxy
) -> None:
    fault_proxy.add_rule(once(manifest_get, status(502), times=1))
    fault_proxy.add_rule(once(manifest_get, refuse(), times=1))
    mnt = mounts.mount(kit.ref(fault_proxy.host))
    assert in_mount(mnt, "src/train.py").read_bytes() == kit.files["src/train.py"]
    assert len(fault_proxy.matching("GET", "/manifests/")) >= 3  # both faults fired


# -- permanent faults --------------------------------------------------------------------------


def test_bad_bytes_read_as_eio_and_a_read_after_the_fault_clears_succeeds(
    kit: Kit, mounts: Mounts, fault_proxy: FaultProxy
) -> None:
    """One fault per layer, all in one mount: a flipped byte, a truncated body, another blob's
    bytes, and a registry that keeps answering 503."""
    mnt = mounts.mount(kit.ref(fault_proxy.host))
    faults = {
        "model/weights.bin": flip(1_000_000),
        "data/train.csv": truncate(5000),
        "src/train.py": other_blob(kit.repository, layer_of(kit, "docs")),
        "docs/README.md": status(503, retry_after="0"),
    }
    for rel, fault in faults.items():
        fault_proxy.add_rule(always(for_digest(layer_of(kit, rel.split("/")[0])), fault))
    for rel in faults:
        assert read_errno(in_mount(mnt, rel)) == errno.EIO, rel
    assert_cache_verified(mounts.cache)
    assert cached_tars(mounts.cache) == []  # nothing unverified kept
    assert "failed verification" in mounts.log(mnt)
    assert is_mounted(mnt)
    fault_proxy.clear()
    for rel in faults:
        wait_until_read(in_mount(mnt, rel), kit.files[rel])
    assert_cache_verified(mounts.cache)


def test_a_registry_outage_while_mounted_is_eio_then_heals(
    kit: Kit, mounts: Mounts, fault_proxy: FaultProxy
) -> None:
    """The registry goes away (port closed) after the mount: reads of cached layers go on, a read
    that needs a fetch fails with EIO after the bounded retries, and heals when it comes back."""
    mnt = mounts.mount(kit.ref(fault_proxy.host))
    assert in_mount(mnt, "src/train.py").read_bytes() == kit.files["src/train.py"]
    fault_proxy.refuse_connections()
    started = time.monotonic()
    assert read_errno(in_mount(mnt, "model/weights.bin")) == errno.EIO
    assert time.monotonic() - started < 20
    assert "unreachable: connection refused" in mounts.log(mnt)
    assert in_mount(mnt, "src/train.py").read_bytes() == kit.files["src/train.py"]
    fault_proxy.refuse_connections(False)
    wait_until_read(in_mount(mnt, "model/weights.bin"), kit.files["model/weights.bin"])


@pytest.mark.parametrize("compression", ["none", "gzip"])
def test_a_corrupted_download_never_becomes_a_cached_tar(
    compression: str, big_kits: dict[str, Kit], mounts: Mounts, fault_proxy: FaultProxy
) -> None:
    """An uncompressed layer is downloaded straight to its place among the tars: only a verified
    download may be renamed there."""
    kit = big_kits[compression]
    fault_proxy.add_rule(always(for_digest(layer_of(kit, "model")), flip(3_000_000)))
    mnt = mounts.mount(kit.ref(fault_proxy.host))
    assert read_errno(in_mount(mnt, "model/weights.bin")) == errno.EIO
    assert in_mount(mnt, "src/train.py").read_bytes() == kit.files["src/train.py"]
    assert_cache_verified(mounts.cache)
    assert partial_bytes(mounts.cache) == 0


@pytest.mark.parametrize("name", ["invalid-json", "not-a-manifest", "index"])
def test_bad_manifest_at_mount_time_is_one_clear_error(
    name: str, kit: Kit, mounts: Mounts, fault_proxy: FaultProxy
) -> None:
    fault = {
        "invalid-json": invalid_json(),
        "not-a-manifest": Fault(set_headers={"Content-Type": "text/html"}, truncate_to=10),
        "index": Fault(set_headers={"Content-Type": media.OCI_INDEX}),
    }[name]
    fault_proxy.add_rule(always(manifest_get, fault))
    mnt, result = mounts.try_mount(kit.ref(fault_proxy.host))
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("kitfs: "), result.stderr
    assert not is_mounted(mnt)
    fault_proxy.clear()
    mnt = mounts.mount(kit.ref(fault_proxy.host), "again")
    assert in_mount(mnt, "src/train.py").read_bytes() == kit.files["src/train.py"]


# -- crashes and a full disk -----------------------------------------------------------------


@pytest.mark.parametrize("compression", ["none", "gzip"])
def test_kill_9_of_the_daemon_mid_download_leaves_a_usable_cache(
    compression: str, big_kits: dict[str, Kit], mounts: Mounts, fault_proxy: FaultProxy
) -> None:
    kit = big_kits[compression]
    digest = layer_of(kit, "model")
    size = kit.biggest_layer().size
    fault_proxy.add_rule(once(for_digest(digest), stall(60, after=size // 2)))
    mnt = mounts.mount(kit.ref(fault_proxy.host))
    pid = mounts.pid(mnt)
    outcome: list[object] = []

    def reader() -> None:
        try:
            outcome.append(in_mount(mnt, "model/weights.bin").read_bytes())
        except OSError as exc:
            outcome.append(exc.errno)

    thread = threading.Thread(target=reader, daemon=True)
    thread.start()
    wait_until(lambda: partial_bytes(mounts.cache) >= 1 << 20, what="a partial download")
    os.kill(pid, signal.SIGKILL)
    thread.join(10)
    assert not thread.is_alive()
    assert outcome and outcome[0] in (errno.ENOTCONN, errno.ECONNABORTED, errno.EIO), outcome
    assert_cache_verified(mounts.cache)
    assert cached_tars(mounts.cache) == []
    mounts.unmount(mnt)
    fault_proxy.clear()
    assert partial_bytes(mounts.cache) > 0  # what the killed download left behind
    again = mounts.mount(kit.ref(fault_proxy.host), "again")
    assert in_mount(again, "model/weights.bin").read_bytes() == kit.files["model/weights.bin"]
    assert_cache_verified(mounts.cache)
    assert partial_bytes(mounts.cache) == 0  # ... is reclaimed, not kept for a day


@pytest.fixture
def small_tmpfs(tmp_path: Path) -> object:
    target = tmp_path / "tmpfs"
    target.mkdir()
    result = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(target)], capture_output=True
    )
    if result.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs: {result.stderr.decode().strip()}")
    try:
        yield target
    finally:
        subprocess.run(["umount", "-l", str(target)], capture_output=True)


def test_full_disk_during_a_download_is_eio_and_cached_files_keep_serving(
    registry: RegistryServer, mounts: Mounts, small_tmpfs: Path, tmp_path: Path
) -> None:
    files = standard_files()
    files["model/weights.bin"] = os.urandom(12 << 20)  # more than the 8 MiB disk
    kit = make_kit(tmp_path / "home", tmp_path / "ctx", registry.host, "reliability/enospc")
    del kit  # the standard kit is pushed under v1; the big one under v2
    big = make_kit(
        tmp_path / "home2",
        tmp_path / "ctx2",
        registry.host,
        "reliability/enospc",
        files=files,
        tag="v2",
    )
    mnt = mounts.mount(big.ref(), cache=small_tmpfs)
    assert in_mount(mnt, "src/train.py").read_bytes() == files["src/train.py"]
    assert read_errno(in_mount(mnt, "model/weights.bin")) == errno.EIO
    assert "No space left on device" in mounts.log(mnt) or "ENOSPC" in mounts.log(mnt)
    assert is_mounted(mnt) and alive(mounts.pid(mnt))
    assert in_mount(mnt, "src/train.py").read_bytes() == files["src/train.py"]
    assert in_mount(mnt, "docs/README.md").read_bytes() == files["docs/README.md"]
    assert partial_bytes(small_tmpfs) == 0  # a failed download gives its space back
    assert_cache_verified(small_tmpfs)


# -- hostile content ---------------------------------------------------------------------------

HOSTILE_LAYERS = {
    "parent-path": forge_tar(forge_file("model/../../evil.txt", b"x")),
    "symlink": forge_tar(
        forge_file("model/a", b"a"), forge_header("model/b", typeflag=b"2", linkname=b"/etc/passwd")
    ),
    "hardlink": forge_tar(forge_header("model/hard", typeflag=b"1", linkname=b"model/a")),
    "device": forge_tar(forge_header("model/null", typeflag=b"3")),
    "duplicate": forge_tar(forge_file("model/a", b"first"), forge_file("model/a", b"second")),
    "non-utf8": forge_tar(forge_file(b"model/caf\xe9", b"x")),
    "size-beyond-layer": forge_header("model/big", size=1 << 30) + b"short" + b"\0" * 507,
    "absolute-path": forge_tar(forge_file("/etc/evil", b"x")),
    "block-device": forge_tar(forge_header("model/sda", typeflag=b"4")),
    "overlong-name": forge_tar(
        forge_header("././@LongLink", typeflag=b"L", size=5001) + b"m" * 5000 + b"\0" * 120,
        forge_file("model/x", b"x"),
    ),
}


HOSTILE_MESSAGES = {
    "parent-path": "'..' would leave the target directory",
    "symlink": "it is a symbolic link",
    "hardlink": "it is a hard link",
    "device": "it is a character device",
    "duplicate": "it appears twice",
    "non-utf8": "not valid UTF-8",
    "size-beyond-layer": "truncated while reading entry data",
    "gzip-bomb": "follow the end of its tar archive (decompression bomb?)",
    "absolute-path": "absolute paths are not allowed",
    "block-device": "it is a block device",
    "overlong-name": "longer than 4096 bytes",
}


def test_hostile_layers_are_refused_by_the_mount(
    registry: RegistryServer, repo_name: str, mounts: Mounts, tmp_path: Path
) -> None:
    """One ModelKit per hostile layer, each a tag of one repository mounted whole: reading into the
    hostile dataset fails with EIO and the daemon logs why; the harmless docs layer next to it
    still serves; nothing lands outside the mount."""
    good = forge_tar(forge_header("docs", typeflag=b"5"), forge_file("docs/a.md", b"fine"))
    config = kit_config(datasets=[{"name": "d", "path": "data"}], docs=[{"path": "docs"}])
    for name, layer in {**HOSTILE_LAYERS, "gzip-bomb": gzip_bomb()}.items():
        compression = "gzip" if layer[:2] == b"\x1f\x8b" else "none"
        layers = [
            (media.layer_media_type("dataset", compression), layer),
            (media.layer_media_type("docs", "none"), good),
        ]
        push_raw(registry.host, repo_name, config, layers, tag=name, tmp=tmp_path / name)
    mnt = mounts.mount(f"{registry.host}/{repo_name}")
    for name in HOSTILE_MESSAGES:
        with pytest.raises(OSError) as caught:
            for dirpath, _dirs, files in os.walk(mnt / name / "datasets", onerror=_raise):
                for file in files:
                    Path(dirpath, file).read_bytes()
        assert caught.value.errno == errno.EIO, name
        assert (mnt / name / "docs" / "docs" / "a.md").read_bytes() == b"fine"
        assert HOSTILE_MESSAGES[name] in mounts.log(mnt), name
    assert is_mounted(mnt)
    assert not (tmp_path / "evil.txt").exists()


def _raise(error: OSError) -> None:
    raise error


@pytest.mark.parametrize("name", ["path-escapes", "image-config", "300000-layers"])
def test_a_mount_of_a_hostile_config_or_manifest_is_refused(
    name: str,
    registry: RegistryServer,
    repo_name: str,
    mounts: Mounts,
    fault_proxy: FaultProxy,
    tmp_path: Path,
) -> None:
    layer = forge_tar(forge_file("model/w.bin", b"w"))
    config = {
        "path-escapes": b'{"manifestVersion":"1.0.0","model":{"path":"../../etc"}}',
        "image-config": b'{"architecture":"amd64","os":"linux"}',
        "300000-layers": b'{"manifestVersion":"1.0.0","model":{"path":"model"}}',
    }[name]
    push_raw(
        registry.host,
        repo_name,
        config,
        [(media.layer_media_type("model", "none"), layer)],
        tmp=tmp_path / "blobs",
    )
    expected = {
        "path-escapes": "is outside the context directory",
        "image-config": "is not a Kitfile",
        "300000-layers": "is larger than 4194304 bytes",
    }[name]
    if name == "300000-layers":
        body = many_layers_manifest(300_000)
        headers = {"Content-Type": media.OCI_MANIFEST}
        fault_proxy.add_rule(always(manifest_get, Fault(respond=Response(200, headers, body))))
    mnt, result = mounts.try_mount(f"{fault_proxy.host}/{repo_name}:v1")
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and expected in lines[0], result.stderr
    assert not is_mounted(mnt)
