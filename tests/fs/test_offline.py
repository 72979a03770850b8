"""Serving while the registry is away (kitfs.offline): digest mounts from the cache alone, tag
mounts falling back to the digest the tag last resolved to, ``--refresh``, and ``unpack``/``info``
of a cached ModelKit; ``kitfs prefetch`` warms the cache that all of this reads.

The registry is the session's real docker-registry behind a ``FaultProxy`` (tests/faultproxy.py):
"away" is the proxy refusing connections or answering 503 for manifests, and the proxy's request
log shows what kitfs asked.
"""

from __future__ import annotations

import hashlib
import os
import uuid
from pathlib import Path

import pytest
from faultproxy import FaultProxy, always, manifest_get, status
from fs_mounting import Mounter
from helpers import WHOLE, cli, fails, make_tree, ok, payload, saved_digest

from kitfs.fs.mounttable import find_mount

KITFILE = """manifestVersion: 1.0.0
package:
  name: offline
model:
  name: weights
  path: model
datasets:
  - name: train
    path: data
"""
FILES = {
    "model/weights.bin": payload(400_000, "offline-weights"),
    "data/train.csv": b"a,b\n1,2\n" * 300,
}


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return tmp_path / "publisher"


@pytest.fixture
def mounter(tmp_path: Path) -> Mounter:
    if not os.path.exists("/dev/fuse"):
        pytest.skip("needs /dev/fuse")
    m = Mounter(tmp_path / "node", tmp_path / "publisher")
    m.base.mkdir()
    yield m
    m.cleanup()


def publish(home: Path, proxy: FaultProxy, compression: str = "gzip") -> tuple[str, str]:
    """Pack and push a small ModelKit through the proxy; (tag reference, digest reference)."""
    context = home.parent / f"context-{uuid.uuid4().hex[:6]}"
    make_tree(context, {"Kitfile": KITFILE, **FILES})
    ref = f"{proxy.host}/kitfs-offline/{uuid.uuid4().hex[:10]}:v1"
    digest = saved_digest(
        ok(cli(home, "pack", str(context), "-t", ref, "--compression", compression, *WHOLE))
    )
    ok(cli(home, "push", ref, "--plain-http"))
    return ref, f"{ref.rsplit(':', 1)[0]}@{digest}"


def sections(mnt: Path) -> dict[str, bytes]:
    return {
        "model/weights.bin": (mnt / "model" / "model" / "weights.bin").read_bytes(),
        "data/train.csv": (mnt / "datasets" / "data" / "train.csv").read_bytes(),
    }


def warm(mounter: Mounter, ref: str, *, by_mount: bool = False) -> None:
    """Fill the node's cache with every layer of ``ref``: by mounting it and reading every file,
    or with ``kitfs prefetch`` (the same layer store, in this process: faster)."""
    if not by_mount:
        ok(cli(mounter.home, "prefetch", ref, "--plain-http", "--cache-dir", str(mounter.cache)))
        return
    mnt = mounter.mount(ref, mounter.mountpoint("warm"))
    assert sections(mnt) == FILES
    ok(mounter.run("umount", str(mnt)))


def stderr_lines(result: object) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.strip()]  # type: ignore[attr-defined]


def test_digest_mount_serves_from_the_cache_while_the_registry_is_unreachable(
    fault_proxy: FaultProxy, home: Path, mounter: Mounter
) -> None:
    tag_ref, digest_ref = publish(home, fault_proxy)
    warm(mounter, tag_ref, by_mount=True)
    fault_proxy.refuse_connections()
    mnt = mounter.mountpoint("offline")
    result = mounter.try_mount(digest_ref, mnt)
    assert result.returncode == 0, result.stderr
    assert stderr_lines(result) == []  # a digest needs no registry: nothing to warn about
    assert sections(mnt) == FILES


def test_digest_mount_with_a_cached_manifest_asks_the_registry_nothing(
    fault_proxy: FaultProxy, home: Path, mounter: Mounter
) -> None:
    tag_ref, digest_ref = publish(home, fault_proxy)
    warm(mounter, tag_ref)
    before = len(fault_proxy.requests)
    mnt = mounter.mount(digest_ref, mounter.mountpoint("again"))
    assert sections(mnt) == FILES
    assert fault_proxy.requests[before:] == []


def test_tag_mount_falls_back_to_the_cached_digest_on_503_and_warns_once(
    fault_proxy: FaultProxy, home: Path, mounter: Mounter
) -> None:
    tag_ref, digest_ref = publish(home, fault_proxy)
    digest = digest_ref.rsplit("@", 1)[1]
    warm(mounter, tag_ref)
    # Retry-After: 0 keeps the client's five attempts from backing off (what is tested is the
    # fallback after them, not the waiting)
    fault_proxy.add_rule(always(manifest_get, status(503, retry_after="0")))
    before = len(fault_proxy.matching("GET", "/manifests/v1"))
    mnt = mounter.mountpoint("fallback")
    result = mounter.try_mount(tag_ref, mnt)
    assert result.returncode == 0, result.stderr
    lines = stderr_lines(result)
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("kitfs: warning: ")
    assert "HTTP 503" in lines[0] and digest in lines[0] and tag_ref in lines[0]
    assert len(fault_proxy.matching("GET", "/manifests/v1")) > before  # it did ask first
    assert sections(mnt) == FILES
    log = mounter.log_path(mnt).read_text()
    assert log.count("from the cache, which") == 1


def test_refresh_always_refuses_the_fallback(
    fault_proxy: FaultProxy, home: Path, mounter: Mounter
) -> None:
    tag_ref, _ = publish(home, fault_proxy)
    warm(mounter, tag_ref)
    fault_proxy.refuse_connections()
    mnt = mounter.mountpoint("always")
    line = fails(mounter.try_mount(tag_ref, mnt, "--refresh", "always"))
    assert "unreachable" in line
    assert find_mount(mnt) is None


def test_refresh_never_resolves_a_tag_without_a_request(
    fault_proxy: FaultProxy, home: Path, mounter: Mounter
) -> None:
    tag_ref, _ = publish(home, fault_proxy)
    warm(mounter, tag_ref)
    before = len(fault_proxy.requests)
    mnt = mounter.mountpoint("never")
    result = mounter.try_mount(tag_ref, mnt, "--refresh", "never")
    assert result.returncode == 0, result.stderr
    assert sections(mnt) == FILES
    assert fault_proxy.requests[before:] == []
    unknown = tag_ref.rsplit(":", 1)[0] + ":v2"
    line = fails(mounter.try_mount(unknown, mounter.mountpoint("never2"), "--refresh", "never"))
    assert "not in the cache" in line and "--refresh never" in line
    assert fault_proxy.requests[before:] == []


def test_tag_mount_without_a_record_still_fails_when_unreachable(
    fault_proxy: FaultProxy, home: Path, mounter: Mounter
) -> None:
    tag_ref, _ = publish(home, fault_proxy)
    fault_proxy.refuse_connections()
    line = fails(mounter.try_mount(tag_ref, mounter.mountpoint("cold")))
    assert "unreachable" in line


def test_a_deleted_tag_is_not_papered_over(
    fault_proxy: FaultProxy, home: Path, mounter: Mounter
) -> None:
    """A 404 is the registry's answer, not its absence: no fallback to the old digest."""
    tag_ref, _ = publish(home, fault_proxy)
    warm(mounter, tag_ref)
    fault_proxy.add_rule(
        always(
            manifest_get,
            status(404, body=b'{"errors":[{"code":"MANIFEST_UNKNOWN","message":"gone"}]}'),
        )
    )
    line = fails(mounter.try_mount(tag_ref, mounter.mountpoint("gone")))
    assert "not found" in line


# -- prefetch, then unpack and info without the registry ------------------------------------


def test_prefetch_fills_the_cache_that_unpack_and_info_then_read_offline(
    fault_proxy: FaultProxy, home: Path, tmp_path: Path
) -> None:
    tag_ref, digest_ref = publish(home, fault_proxy, compression="gzip")
    node = tmp_path / "node-home"
    cache = tmp_path / "cache"
    result = ok(
        cli(
            node,
            "--progress",
            "plain",
            "prefetch",
            tag_ref,
            "--plain-http",
            "--cache-dir",
            str(cache),
        )
    )
    assert f"prefetch {tag_ref}: 100% (" in result.stderr  # progress, with --progress plain
    assert "Prefetched 2 layers" in result.stderr
    tars = sorted((cache / "tars" / "sha256").iterdir())
    assert len(tars) == 2
    for tar in tars:  # each tar is named by the digest of its bytes
        assert hashlib.sha256(tar.read_bytes()).hexdigest() == tar.name
    fault_proxy.refuse_connections()
    out = tmp_path / "out"
    result = ok(
        cli(node, "unpack", tag_ref, "-d", str(out), "--plain-http", "--cache-dir", str(cache))
    )
    for rel, data in FILES.items():
        assert (out / rel).read_bytes() == data
    info = ok(cli(node, "info", "--remote", digest_ref, "--plain-http", "--cache-dir", str(cache)))
    assert "name: offline" in info.stdout
    never = ok(
        cli(
            node,
            "info",
            "--remote",
            tag_ref,
            "--plain-http",
            "--cache-dir",
            str(cache),
            "--refresh",
            "never",
        )
    )
    assert never.stdout == info.stdout


def test_offline_unpack_checks_cached_tars_against_the_config(
    fault_proxy: FaultProxy, home: Path, tmp_path: Path
) -> None:
    """A cached tar that was altered is refused by unpack (its digest is the config's diffId);
    with the registry there, it is dropped from the cache and the layer downloaded instead."""
    tag_ref, _ = publish(home, fault_proxy, compression="gzip")
    node, cache = tmp_path / "node-home", tmp_path / "cache"
    ok(cli(node, "prefetch", tag_ref, "--plain-http", "--cache-dir", str(cache)))
    biggest = max((cache / "tars" / "sha256").iterdir(), key=lambda p: p.stat().st_size)
    data = bytearray(biggest.read_bytes())
    data[2000] ^= 0xFF
    biggest.write_bytes(bytes(data))
    fault_proxy.refuse_connections()
    out = tmp_path / "out"
    result = cli(node, "unpack", tag_ref, "-d", str(out), "--plain-http", "--cache-dir", str(cache))
    assert result.returncode == 1
    assert "failed verification" in result.stderr
    assert not (out / "model" / "weights.bin").exists()
    fault_proxy.refuse_connections(False)
    before = len(fault_proxy.requests)
    ok(cli(node, "unpack", tag_ref, "-d", str(out), "--plain-http", "--cache-dir", str(cache)))
    for rel, data in FILES.items():
        assert (out / rel).read_bytes() == data
    fetched = [
        r for r in fault_proxy.requests[before:] if r.method == "GET" and "/blobs/" in r.path
    ]
    assert len(fetched) == 1  # only the damaged layer: the other came from the cache
    assert not biggest.exists()  # the damaged copy is gone


def test_prefetch_filter_fetches_only_the_selected_layers(
    fault_proxy: FaultProxy, home: Path, tmp_path: Path
) -> None:
    tag_ref, _ = publish(home, fault_proxy, compression="none")
    cache = tmp_path / "cache"
    result = ok(
        cli(
            tmp_path / "node",
            "prefetch",
            tag_ref,
            "--filter",
            "model",
            "--plain-http",
            "--cache-dir",
            str(cache),
            "--json",
        )
    )
    assert '"layers": 1' in result.stdout
    blob_gets = [r for r in fault_proxy.matching("GET", "/blobs/") if "uploads" not in r.path]
    tars = list((cache / "tars" / "sha256").iterdir())
    assert len(tars) == 1
    # the config and the model layer were fetched; the dataset layer was not
    assert len(blob_gets) == 2


def test_repository_mount_shows_the_recorded_tags_while_the_registry_is_unreachable(
    fault_proxy: FaultProxy, home: Path, mounter: Mounter
) -> None:
    tag_ref, _ = publish(home, fault_proxy)
    warm(mounter, tag_ref)
    fault_proxy.refuse_connections()
    repository = tag_ref.rsplit(":", 1)[0]
    mnt = mounter.mountpoint("repo")
    result = mounter.try_mount(repository, mnt)
    assert result.returncode == 0, result.stderr
    lines = stderr_lines(result)
    assert "showing the 1 tags" in lines[0] and "unreachable" in lines[0]
    # Listing reads each tag's manifest (only model artifacts are shown): from the cache, once.
    assert len(lines) == 2 and "using sha256:" in lines[1] and "from the cache" in lines[1]
    assert sorted(os.listdir(mnt)) == ["v1"]
    assert sections(mnt / "v1") == FILES


def test_remote_info_works_without_a_usable_mount_cache(
    fault_proxy: FaultProxy, home: Path, tmp_path: Path
) -> None:
    """A cache directory that cannot be created (a file is in the way) is not needed online."""
    tag_ref, _ = publish(home, fault_proxy)
    blocked = tmp_path / "not-a-dir"
    blocked.write_text("")
    info = ok(
        cli(
            tmp_path / "viewer",
            "info",
            "--remote",
            tag_ref,
            "--plain-http",
            "--cache-dir",
            str(blocked / "cache"),
        )
    )
    assert "name: offline" in info.stdout
    line = fails(
        cli(
            tmp_path / "viewer",
            "info",
            "--remote",
            tag_ref,
            "--plain-http",
            "--cache-dir",
            str(blocked / "cache"),
            "--refresh",
            "never",
        )
    )
    assert "cannot create the cache directory" in line
