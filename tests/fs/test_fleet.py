"""A fleet on one machine: N = 8 mounts, each with its own cache (N nodes), pulling one ModelKit
through CNCF distribution in proxy mode (a pull-through mirror named in registries.conf) in front of
the origin. The origin's access log shows it served each blob for the whole fleet, not per node; with
the mirror stopped, new mounts fall back to the origin.

distribution 2.8 (Debian's docker-registry) fetches a blob twice from the origin the first time it
is pulled through (one copy streamed to the client, one stored in the background: its
proxyblobstore.go; distribution PR 3569 removed the second in v3), so "once" here means: the count
after the first node does not grow with the other seven.
"""

from __future__ import annotations

import hashlib
import os
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pullthrough
import pytest
from faultproxy import FaultProxy, always, flip, for_digest
from fs_mounting import Mounter, wait_for
from helpers import WHOLE, cli, make_tree, ok, payload
from registry import RegistryServer

from kitfs.config import Paths
from kitfs.reference import parse
from kitfs.storage.local import LocalStore

NODES = 8
KITFILE = """manifestVersion: 1.0.0
package:
  name: fleet
model:
  name: weights
  path: model
datasets:
  - name: eval
    path: data
"""
FILES = {"model/weights.bin": payload(2_000_000, "fleet"), "data/eval.csv": b"p,q\n" * 2000}


@pytest.fixture
def origin() -> Iterator[RegistryServer]:
    server = pullthrough.start(access_log=True)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def mirror(origin: RegistryServer) -> Iterator[RegistryServer]:
    server = pullthrough.start(remote_url=origin.url)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def mounter(tmp_path: Path) -> Iterator[Mounter]:
    if not os.path.exists("/dev/fuse"):
        pytest.skip("needs /dev/fuse")
    m = Mounter(tmp_path / "fleet", tmp_path / "pub")
    m.base.mkdir()
    try:
        yield m
    finally:
        m.cleanup()


def read_all(mnt: Path) -> dict[str, bytes]:
    return {
        "model/weights.bin": (mnt / "model" / "model" / "weights.bin").read_bytes(),
        "data/eval.csv": (mnt / "datasets" / "data" / "eval.csv").read_bytes(),
    }


def mirror_holds(mirror: RegistryServer, digest: str) -> bool:
    hexpart = digest.removeprefix("sha256:")
    return (
        mirror.root / "docker/registry/v2/blobs/sha256" / hexpart[:2] / hexpart / "data"
    ).is_file()


def test_a_fleet_pulls_each_blob_from_the_origin_once_through_a_mirror(
    origin: RegistryServer, mirror: RegistryServer, mounter: Mounter, tmp_path: Path
) -> None:
    home = tmp_path / "pub"
    context = tmp_path / "context"
    make_tree(context, {"Kitfile": KITFILE, **FILES})
    ref = f"{origin.host}/fleet/{uuid.uuid4().hex[:8]}:v1"
    ok(cli(home, "pack", str(context), "-t", ref, "--compression", "zstd", *WHOLE))
    ok(cli(home, "push", ref, "--plain-http"))
    store = LocalStore(Paths(home).storage)
    manifest = store.load_manifest(store.resolve(parse(ref))[1])
    blobs = [manifest.config.digest, *(layer.digest for layer in manifest.layers)]
    conf = tmp_path / "registries.conf"
    conf.write_text(
        f'[[registry]]\nlocation = "{origin.host}"\ninsecure = true\n\n'
        f'[[registry.mirror]]\nlocation = "{mirror.host}"\ninsecure = true\n'
    )

    def node(i: int) -> Path:
        return mounter.mount(
            ref,
            mounter.mountpoint(f"node{i}"),
            "--registries-conf",
            str(conf),
            cache=tmp_path / f"cache{i}",
        )

    assert read_all(node(0)) == FILES
    assert wait_for(lambda: all(mirror_holds(mirror, d) for d in blobs))
    # the access log is written just after each response: let the background copies' lines land
    wait_for(lambda: all(pullthrough.blob_bodies(origin)[d] == 2 for d in blobs), timeout=3)
    after_first = pullthrough.blob_bodies(origin)
    assert set(after_first) == set(blobs)
    assert all(1 <= after_first[d] <= 2 for d in blobs)  # 2: distribution 2.8's background copy

    mounts = [node(i) for i in range(1, NODES)]
    results: dict[Path, dict[str, bytes]] = {}
    readers = [
        threading.Thread(target=lambda m=m: results.__setitem__(m, read_all(m))) for m in mounts
    ]
    for reader in readers:
        reader.start()
    for reader in readers:
        reader.join(60)
    assert [results.get(m) == FILES for m in mounts] == [True] * (NODES - 1)
    assert pullthrough.blob_bodies(origin) == after_first  # nodes 2..8 cost the origin nothing

    mirror.stop()
    for i in (NODES, NODES + 1):
        assert read_all(node(i)) == FILES
    expected = {d: after_first[d] + 2 for d in blobs}  # one fetch per new node
    wait_for(lambda: pullthrough.blob_bodies(origin) == expected, timeout=5)
    assert pullthrough.blob_bodies(origin) == expected


def test_a_mount_refuses_a_corrupt_blob_from_a_mirror_and_reads_the_origins(
    registry: RegistryServer, mounter: Mounter, tmp_path: Path
) -> None:
    """The mirror (a FaultProxy over the same registry) flips a byte of the model layer: the mount
    refuses it, reads the origin's, and caches only verified bytes."""
    with FaultProxy(registry.host) as origin, FaultProxy(registry.host) as mirror:
        home = tmp_path / "pub"
        context = tmp_path / "context"
        make_tree(context, {"Kitfile": KITFILE, **FILES})
        ref = f"{origin.host}/fleet/{uuid.uuid4().hex[:8]}:v1"
        ok(cli(home, "pack", str(context), "-t", ref, *WHOLE))
        ok(cli(home, "push", ref, "--plain-http"))
        store = LocalStore(Paths(home).storage)
        model = store.load_manifest(store.resolve(parse(ref))[1]).layers[0].digest
        mirror.add_rule(always(for_digest(model), flip(4096)))
        conf = tmp_path / "registries.conf"
        conf.write_text(
            f'[[registry]]\nlocation = "{origin.host}"\ninsecure = true\n\n'
            f'[[registry.mirror]]\nlocation = "{mirror.host}"\ninsecure = true\n'
        )
        before = len(origin.requests)
        mnt = mounter.mount(ref, mounter.mountpoint(), "--registries-conf", str(conf))
        assert read_all(mnt) == FILES
        assert len(mirror.matching("GET", model)) == 1
        assert [
            r.path.rsplit("/", 1)[1] for r in origin.requests[before:] if "/blobs/" in r.path
        ] == [model]
        tars = [p for p in (mounter.cache / "tars" / "sha256").iterdir()]
        assert f"{model.removeprefix('sha256:')}" in {p.name for p in tars}
        for tar in tars:
            assert hashlib.sha256(tar.read_bytes()).hexdigest() == tar.name
        assert "failed verification" in mounter.log_path(mnt).read_text()
