"""Mirrors from registries.conf (kitfs.oci.endpoints) against real registries: tried in order, then
the origin; verified exactly as the origin (a corrupt blob from a mirror is refused and nothing of
it is cached); credentials are those of the host contacted; ``blocked`` refuses.

Origin and mirror are FaultProxies in front of real docker-registry processes, so each one's request
log shows who served what.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from faultproxy import FaultProxy, always, blob_get, flip, for_digest
from helpers import WHOLE, cli, fails, make_tree, ok, payload, saved_digest
from registry import RegistryServer

from kitfs.config import Paths
from kitfs.layers.hashing import hash_file
from kitfs.reference import parse
from kitfs.storage.local import LocalStore

KITFILE = """manifestVersion: 1.0.0
package:
  name: mirrored
model:
  name: weights
  path: model
datasets:
  - name: train
    path: data
"""
FILES = {"model/weights.bin": payload(300_000, "mirror"), "data/train.csv": b"x,y\n" * 500}


@pytest.fixture
def origin(registry: RegistryServer) -> Iterator[FaultProxy]:
    proxy = FaultProxy(registry.host).start()
    try:
        yield proxy
    finally:
        proxy.stop()


@pytest.fixture
def mirror(registry: RegistryServer) -> Iterator[FaultProxy]:
    """A mirror that already holds what the origin holds (the same storage behind it)."""
    proxy = FaultProxy(registry.host).start()
    try:
        yield proxy
    finally:
        proxy.stop()


def publish(
    home: Path, host: str, repository: str, compression: str = "gzip", *flags: str
) -> tuple[str, str]:
    """Pack and push; by default as kit does (layers verified whole), ``flags`` may say otherwise."""
    context = home.parent / f"context-{uuid.uuid4().hex[:6]}"
    make_tree(context, {"Kitfile": KITFILE, **FILES})
    ref = f"{host}/{repository}:v1"
    pack_flags = flags or WHOLE
    digest = saved_digest(
        ok(cli(home, "pack", str(context), "-t", ref, "--compression", compression, *pack_flags))
    )
    ok(cli(home, "push", ref, "--plain-http"))
    return ref, digest


def layer_digests(home: Path, ref: str) -> list[str]:
    store = LocalStore(Paths(home).storage)
    _, desc = store.resolve(parse(ref))
    return [layer.digest for layer in store.load_manifest(desc).layers]


def write_conf(path: Path, origin: str, *mirrors: str, prefix: str | None = None) -> Path:
    lines = ["[[registry]]"]
    if prefix:
        lines.append(f'prefix = "{prefix}"')
    lines += [f'location = "{origin}"', "insecure = true"]
    for location in mirrors:
        lines += ["", "[[registry.mirror]]", f'location = "{location}"', "insecure = true"]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_a_mirror_serves_everything_when_it_can(
    origin: FaultProxy, mirror: FaultProxy, tmp_path: Path
) -> None:
    ref, _ = publish(tmp_path / "pub", origin.host, f"mirrors/{uuid.uuid4().hex[:8]}")
    conf = write_conf(tmp_path / "registries.conf", origin.host, mirror.host)
    before = len(origin.requests)
    out = tmp_path / "out"
    ok(
        cli(
            tmp_path / "node",
            "unpack",
            ref,
            "-d",
            str(out),
            "--registries-conf",
            str(conf),
            "--cache-dir",
            str(tmp_path / "cache"),
        )
    )
    for rel, data in FILES.items():
        assert (out / rel).read_bytes() == data
    assert origin.requests[before:] == []
    assert len([r for r in mirror.requests if blob_get(r)]) == 3  # config and two layers


def test_a_corrupt_blob_from_a_mirror_is_refused_and_the_origin_used(
    origin: FaultProxy, mirror: FaultProxy, tmp_path: Path
) -> None:
    home = tmp_path / "pub"
    ref, _ = publish(home, origin.host, f"mirrors/{uuid.uuid4().hex[:8]}")
    model_layer = layer_digests(home, ref)[0]
    mirror.add_rule(always(for_digest(model_layer), flip(1000)))
    conf = write_conf(tmp_path / "registries.conf", origin.host, mirror.host)
    cache = tmp_path / "cache"
    before = len(origin.requests)
    result = ok(
        cli(
            tmp_path / "node",
            "prefetch",
            ref,
            "--cache-dir",
            str(cache),
            "--registries-conf",
            str(conf),
        )
    )
    assert "Prefetched 2 layers" in result.stderr
    assert len(mirror.matching("GET", model_layer)) == 1  # the mirror was asked and refused
    fetched = [r for r in origin.requests[before:] if "/blobs/" in r.path]
    assert [r.path.rsplit("/", 1)[1] for r in fetched] == [model_layer]  # only that one, once
    tars = list((cache / "tars" / "sha256").iterdir())
    assert len(tars) == 2
    for tar in tars:
        assert hashlib.sha256(tar.read_bytes()).hexdigest() == tar.name
    assert list((cache / "tmp").iterdir()) == []


def test_a_corrupt_span_from_a_mirror_is_asked_again_from_the_origin(
    origin: FaultProxy, mirror: FaultProxy, tmp_path: Path
) -> None:
    home = tmp_path / "pub"
    ref, _ = publish(
        home, origin.host, f"mirrors/{uuid.uuid4().hex[:8]}", "none", "--span-size", "64K"
    )
    model_layer = layer_digests(home, ref)[0]
    mirror.add_rule(always(for_digest(model_layer), flip(10)))
    conf = write_conf(tmp_path / "registries.conf", origin.host, mirror.host)
    cache = tmp_path / "cache"
    before = len(origin.requests)
    ok(
        cli(
            tmp_path / "node",
            "prefetch",
            ref,
            "--cache-dir",
            str(cache),
            "--registries-conf",
            str(conf),
        )
    )
    # The mirror served every layer's spans; the model layer's first span failed its digest and
    # was fetched again, alone, from the origin: one ranged GET there, nothing else.
    fetched = [r for r in origin.requests[before:] if "/blobs/" in r.path]
    assert [r.path.rsplit("/", 1)[1] for r in fetched] == [model_layer]
    assert fetched[0].headers.get("range", "").startswith("bytes=0-")
    out = tmp_path / "out"
    ok(
        cli(
            tmp_path / "node2",
            "unpack",
            ref,
            "-d",
            str(out),
            "--registries-conf",
            str(conf),
        )
    )
    for rel, data in FILES.items():
        assert (out / rel).read_bytes() == data
    assert not [p for p in (cache / "tars" / "sha256").iterdir() if p.name.startswith(".")]


def test_mirrors_are_tried_in_order_and_an_unreachable_one_is_skipped(
    origin: FaultProxy,
    mirror: FaultProxy,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    unreachable_host: str,
) -> None:
    ref, _ = publish(tmp_path / "pub", origin.host, f"mirrors/{uuid.uuid4().hex[:8]}")
    dead = unreachable_host
    conf = write_conf(tmp_path / "registries.conf", origin.host, dead, mirror.host)
    before = len(origin.requests)
    info = ok(cli(tmp_path / "node", "info", "--remote", ref, "--registries-conf", str(conf)))
    assert "name: mirrored" in info.stdout
    assert f"mirror {dead} failed (registry {dead} is unreachable" in caplog.text
    assert origin.requests[before:] == []
    assert mirror.matching("GET", "/manifests/v1")


def test_credentials_are_those_of_the_mirror_contacted(
    auth_registry: RegistryServer, registry: RegistryServer, tmp_path: Path, unreachable_host: str
) -> None:
    """The origin is down; only the mirror (htpasswd) has the ModelKit, under another path."""
    name = uuid.uuid4().hex[:8]
    home = tmp_path / "pub"
    mirror_ref, _ = publish(home, registry.host, f"staging/{name}")
    ok(
        cli(
            home,
            "login",
            auth_registry.host,
            "-u",
            auth_registry.username,
            "-p",
            auth_registry.password,
            "--plain-http",
        )
    )
    ok(
        cli(
            home,
            "push",
            mirror_ref,
            f"{auth_registry.host}/mirror-of-team/{name}:v1",
            "--plain-http",
        )
    )
    dead = unreachable_host
    conf = tmp_path / "registries.conf"
    conf.write_text(
        f'[[registry]]\nprefix = "{dead}/team"\nlocation = "{dead}/team"\ninsecure = true\n\n'
        f'[[registry.mirror]]\nlocation = "{auth_registry.host}/mirror-of-team"\ninsecure = true\n'
    )
    ref = f"{dead}/team/{name}:v1"
    node = tmp_path / "node"
    line = fails(cli(node, "info", "--remote", ref, "--registries-conf", str(conf)))
    assert "unreachable" in line  # no credentials for the mirror: it refused; the origin is down
    ok(
        cli(
            node,
            "login",
            auth_registry.host,
            "-u",
            auth_registry.username,
            "-p",
            auth_registry.password,
            "--plain-http",
        )
    )
    info = ok(cli(node, "info", "--remote", ref, "--registries-conf", str(conf)))
    assert "name: mirrored" in info.stdout


def test_a_blocked_registry_is_refused(tmp_path: Path) -> None:
    conf = tmp_path / "registries.conf"
    conf.write_text('[[registry]]\nlocation = "127.0.0.1:9/blocked"\nblocked = true\n')
    line = fails(
        cli(
            tmp_path / "h",
            "info",
            "--remote",
            "127.0.0.1:9/blocked/m:v1",
            "--registries-conf",
            str(conf),
        )
    )
    assert "blocked" in line and str(conf) in line


def test_pushes_go_to_the_origin_only(
    origin: FaultProxy, mirror: FaultProxy, tmp_path: Path
) -> None:
    home = tmp_path / "pub"
    context = tmp_path / "ctx"
    make_tree(context, {"Kitfile": KITFILE, **FILES})
    ref = f"{origin.host}/mirrors/{uuid.uuid4().hex[:8]}:v1"
    ok(cli(home, "pack", str(context), "-t", ref))
    conf = write_conf(tmp_path / "registries.conf", origin.host, mirror.host)
    ok(cli(home, "push", ref, "--registries-conf", str(conf)))
    assert mirror.requests == []
    assert origin.matching("PUT", "/manifests/v1")


def test_pull_goes_through_the_mirror(
    origin: FaultProxy, mirror: FaultProxy, tmp_path: Path
) -> None:
    ref, digest = publish(tmp_path / "pub", origin.host, f"mirrors/{uuid.uuid4().hex[:8]}")
    conf = write_conf(tmp_path / "registries.conf", origin.host, mirror.host)
    before = len(origin.requests)
    node = tmp_path / "node"
    result = ok(cli(node, "pull", ref, "--registries-conf", str(conf)))
    assert digest in result.stdout
    assert origin.requests[before:] == []
    store = LocalStore(Paths(node).storage)
    for layer in layer_digests(node, ref):
        assert hash_file(store.blob_path(layer))[0] == layer
