"""``kitfs cache ls|prune|info|clear`` (kitfs.storage.maintenance): safe while mounts run (a layer an
open file reads stays, in any process), and ``info``/``clear`` shaped as kit's ``kit cache``."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from fs_mounting import Mounter
from helpers import WHOLE, cli, make_tree, ok, payload, saved_digest
from registry import RegistryServer

KIT = "/work/shared/tools/kit"
KITFILE = """manifestVersion: 1.0.0
package:
  name: cached
model:
  name: weights
  path: model
datasets:
  - name: train
    path: data
"""
WEIGHTS = payload(600_000, "cache-verbs")
FILES = {"model/weights.bin": WEIGHTS, "data/train.csv": b"q,r\n" * 400}


@pytest.fixture
def mounter(tmp_path: Path) -> Iterator[Mounter]:
    if not os.path.exists("/dev/fuse"):
        pytest.skip("needs /dev/fuse")
    m = Mounter(tmp_path / "node", tmp_path / "pub")
    m.base.mkdir()
    yield m
    m.cleanup()


def publish(home: Path, registry: RegistryServer) -> str:
    context = home.parent / "context"
    make_tree(context, {"Kitfile": KITFILE, **FILES})
    ref = f"{registry.host}/kitfs-cache/{uuid.uuid4().hex[:10]}:v1"
    saved_digest(ok(cli(home, "pack", str(context), "-t", ref, *WHOLE)))
    ok(cli(home, "push", ref, "--plain-http"))
    return ref


def tars(cache: Path) -> list[Path]:
    return sorted(p for p in (cache / "tars" / "sha256").iterdir() if not p.name.startswith("."))


def test_prune_all_keeps_the_layer_an_open_file_reads(
    registry: RegistryServer, mounter: Mounter, tmp_path: Path
) -> None:
    ref = publish(tmp_path / "pub", registry)
    mnt = mounter.mount(ref)
    weights = mnt / "model" / "model" / "weights.bin"
    assert (mnt / "datasets" / "data" / "train.csv").read_bytes() == FILES["data/train.csv"]
    with open(weights, "rb") as held:
        assert held.read(1000) == WEIGHTS[:1000]
        assert len(tars(mounter.cache)) == 2
        result = ok(
            cli(
                mounter.home, "cache", "prune", "--all", "--cache-dir", str(mounter.cache), "--json"
            )
        )
        pruned = json.loads(result.stdout)
        assert pruned["layers"] == 1 and len(pruned["inUse"]) == 1
        left = tars(mounter.cache)
        assert [f"sha256:{p.name}" for p in left] == pruned["inUse"]
        os.posix_fadvise(held.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)
        assert held.read() == WEIGHTS[1000:]
    ok(cli(mounter.home, "cache", "prune", "--all", "--cache-dir", str(mounter.cache)))
    assert tars(mounter.cache) == []
    # the mount fetches (and verifies) again what it needs
    with open(weights, "rb") as again:
        os.posix_fadvise(again.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)
        assert again.read() == WEIGHTS
    assert len(tars(mounter.cache)) == 1


def test_prune_older_than_removes_only_what_was_not_used(
    registry: RegistryServer, tmp_path: Path
) -> None:
    ref = publish(tmp_path / "pub", registry)
    cache = tmp_path / "cache"
    ok(cli(tmp_path / "node", "prefetch", ref, "--plain-http", "--cache-dir", str(cache)))
    old, recent = sorted(tars(cache), key=lambda p: p.stat().st_size)
    long_ago = time.time() - 3 * 86400
    os.utime(old, (long_ago, long_ago))
    listed = json.loads(
        ok(cli(tmp_path / "node", "cache", "ls", "--cache-dir", str(cache), "--json")).stdout
    )
    assert [k["reference"] for k in listed["modelkits"]] == [ref]
    assert {layer["digest"] for layer in listed["layers"]} == {
        f"sha256:{p.name}" for p in (old, recent)
    }
    result = ok(
        cli(tmp_path / "node", "cache", "prune", "--older-than", "2d", "--cache-dir", str(cache))
    )
    assert "Removed 1 layers" in result.stderr
    assert tars(cache) == [recent]
    indexes = list((cache / "index" / "sha256").iterdir())
    assert len(indexes) == 1  # the index of the removed layer went with it
    # the manifest, config and tag record are recent: offline resolution still works
    assert (cache / "blobs" / "sha256").iterdir()


def test_prune_rejects_a_bad_duration(tmp_path: Path) -> None:
    result = cli(
        tmp_path, "cache", "prune", "--older-than", "soon", "--cache-dir", str(tmp_path / "c")
    )
    assert result.returncode == 2 and "invalid duration 'soon'" in result.stderr


def _kit_cache(home: Path) -> None:
    make_tree(
        home / "cache",
        {
            "pull/leftover/partial": payload(5000, 1),
            "longername/sub/g": payload(70_000, 2),
            "top": b"x" * 100,
        },
    )


@pytest.mark.skipif(not Path(KIT).exists(), reason=f"{KIT} (kit v1.7.0) is not installed")
def test_cache_info_prints_kits_lines_then_the_mount_cache(tmp_path: Path) -> None:
    home = tmp_path / "home"
    _kit_cache(home)
    env = {**os.environ, "KITOPS_HOME": str(home)}
    kit = subprocess.run(
        [KIT, "cache", "info"], capture_output=True, text=True, env=env, check=True
    )
    ours = ok(cli(home, "cache", "info", "--cache-dir", str(tmp_path / "mcache")))
    lines = ours.stdout.splitlines()
    assert "\n".join(lines[:-1]) + "\n" == kit.stdout
    assert lines[-1].startswith(f"Mount cache {tmp_path / 'mcache'}: ")
    shutil.rmtree(home / "cache")
    (home / "cache").mkdir()
    kit = subprocess.run(
        [KIT, "cache", "info"], capture_output=True, text=True, env=env, check=True
    )
    ours = ok(cli(home, "cache", "info", "--cache-dir", str(tmp_path / "mcache")))
    assert ours.stdout.splitlines()[0] + "\n" == kit.stdout


def test_cache_clear_empties_both_caches_but_keeps_live_scratch_and_open_layers(
    registry: RegistryServer, tmp_path: Path
) -> None:
    home = tmp_path / "home"
    _kit_cache(home)
    live = home / "cache" / "unpack" / str(os.getpid())  # this process is alive
    make_tree(live, {"part": b"in progress"})
    ref = publish(tmp_path / "pub", registry)
    cache = tmp_path / "cache"
    ok(cli(tmp_path / "node", "prefetch", ref, "--plain-http", "--cache-dir", str(cache)))
    ok(cli(home, "cache", "clear", "--cache-dir", str(cache)))
    assert sorted(p.name for p in (home / "cache").iterdir()) == ["unpack"]
    assert (live / "part").read_bytes() == b"in progress"
    assert tars(cache) == []
    assert list((cache / "blobs" / "sha256").iterdir()) == []
    assert not (cache / "refs").exists() or not any((cache / "refs").rglob("@tags/*"))
