"""Crash safety of the verbs that write local storage: ``kill -9`` (and Ctrl-C) in the middle of
``pull`` and ``pack`` leave storage as it was (at most verified blobs and scratch files more), and
the same command run again succeeds without any cleanup. The mount's crash tests (daemon killed
mid-download, full disk) are in test_faults_mount.py.
"""

from __future__ import annotations

import json
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from faultproxy import FaultProxy, for_digest, once, stall
from registry import RegistryServer

from .helpers import (
    Kit,
    assert_blobs_verified,
    fresh_home,
    make_kit,
    payload,
    popen_kitfs,
    run_kitfs,
    standard_files,
    storage_state,
)


@pytest.fixture(scope="module")
def kit(registry: RegistryServer, tmp_path_factory: pytest.TempPathFactory) -> Kit:
    base = tmp_path_factory.mktemp("crashkit")
    files = standard_files(scale=4)  # a 6 MB layer: downloads flush to disk in 1 MiB pieces
    return make_kit(base / "home", base / "ctx", registry.host, "reliability/crash", files=files)


def wait_for(
    condition: Callable[[], bool],
    process: subprocess.Popen[str],
    timeout: float = 45.0,
    what: str = "condition",
) -> None:
    """Wait until ``condition`` holds while ``process`` runs; else fail with what it printed."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        if process.poll() is not None:
            break
        time.sleep(0.02)
    state = "still running" if process.poll() is None else f"exited {process.returncode}"
    process.kill()
    _, err = process.communicate(timeout=10)
    raise AssertionError(f"timed out waiting for {what}; the command was {state}: {err[-2000:]}")


def metadata(home: Path) -> dict[str, bytes]:
    """Local storage without its blobs: the index and tag files that say what ModelKits exist."""
    return {k: v for k, v in storage_state(home).items() if not k.startswith("blobs/")}


def partial_bytes(home: Path) -> int:
    """Bytes sitting in scratch files under the kit home's cache (downloads in progress)."""
    return sum(p.stat().st_size for p in (home / "cache").rglob("*") if p.is_file())


@pytest.mark.parametrize("how", ["kill-9", "sigint"])
def test_pull_interrupted_mid_layer_leaves_storage_as_it_was(
    how: str, kit: Kit, fault_proxy: FaultProxy, tmp_path: Path
) -> None:
    layer = kit.biggest_layer()
    # The stall outlasts the wait, which is long: on the CI machine this wait once ran out after
    # 45 s (slow fsyncs of the blobs before the layer are the likely cause), and a stall that
    # ended first would let the pull finish instead.
    fault_proxy.add_rule(once(for_digest(layer.digest), stall(600, after=layer.size // 2)))
    home = fresh_home(tmp_path)
    before = metadata(home)
    ref = kit.ref(fault_proxy.host)
    with popen_kitfs(home, "pull", ref, "--plain-http", "--concurrency", "1") as process:
        wait_for(
            lambda: partial_bytes(home) >= 2 << 20,
            process,
            timeout=300,
            what="part of the layer on disk",
        )
        process.send_signal(signal.SIGKILL if how == "kill-9" else signal.SIGINT)
        process.wait(10)
    assert process.returncode == (-signal.SIGKILL if how == "kill-9" else 130)
    assert metadata(home) == before
    assert_blobs_verified(home / "storage")
    assert not (home / "storage" / "blobs" / "sha256" / layer.hex).exists()
    held = partial_bytes(home)  # kept, however the pull ended: the next one resumes after it
    assert held >= 2 << 20
    fault_proxy.clear()
    mark = len(fault_proxy.requests)
    result = run_kitfs(home, "pull", ref, "--plain-http", timeout=300)
    assert result.returncode == 0, result.stderr
    gets = [r for r in fault_proxy.requests[mark:] if for_digest(layer.digest)(r)]
    assert [r.headers.get("range") for r in gets] == [f"bytes={held}-"]  # only the rest refetched
    assert json.loads(run_kitfs(home, "list", "--format", "json").stdout)
    assert_blobs_verified(home / "storage")
    assert (home / "storage" / "blobs" / "sha256" / layer.hex).is_file()
    assert partial_bytes(home) == 0  # the killed pull's scratch files were reclaimed


@pytest.mark.parametrize("how", ["kill-9", "sigint"])
def test_pack_interrupted_mid_layer_leaves_storage_as_it_was(how: str, tmp_path: Path) -> None:
    home = fresh_home(tmp_path)
    small = tmp_path / "small"
    (small / "model").mkdir(parents=True)
    (small / "Kitfile").write_text("manifestVersion: 1.0.0\nmodel:\n  path: model\n")
    (small / "model" / "w.bin").write_bytes(b"w")
    first = run_kitfs(home, "pack", str(small), "-t", "before:1")
    assert first.returncode == 0, first.stderr
    context = tmp_path / "ctx"
    (context / "model").mkdir(parents=True)
    (context / "Kitfile").write_text("manifestVersion: 1.0.0\nmodel:\n  path: model\n")
    big = payload(8 << 20, seed=5)
    with open(context / "model" / "weights.bin", "wb") as out:
        for _ in range(6):  # 48 MiB: about a second of gzip
            out.write(big)
    before = metadata(home)
    blobs_before = {k for k in storage_state(home) if k.startswith("blobs/")}
    with popen_kitfs(home, "pack", str(context), "-t", "m:1", "--compression", "gzip") as process:
        wait_for(lambda: partial_bytes(home) > 1 << 20, process, what="pack writing a layer")
        process.send_signal(signal.SIGKILL if how == "kill-9" else signal.SIGINT)
        process.wait(10)
    assert metadata(home) == before
    assert {k for k in storage_state(home) if k.startswith("blobs/")} == blobs_before
    if how == "sigint":
        assert partial_bytes(home) == 0
    result = run_kitfs(
        home, "pack", str(context), "-t", "m:1", "--compression", "gzip", timeout=120
    )
    assert result.returncode == 0, result.stderr
    listed = run_kitfs(home, "list", "--format", "json")
    assert "m" in listed.stdout and "before" in listed.stdout
    assert_blobs_verified(home / "storage")


def test_a_stale_partial_download_does_not_poison_the_next_pull(
    kit: Kit, fault_proxy: FaultProxy, tmp_path: Path
) -> None:
    """Garbage left in the scratch directory by a crashed pull (even with a blob's name) is never
    taken for the blob."""
    home = fresh_home(tmp_path)
    layer = kit.biggest_layer()
    scratch = home / "cache" / "pull"
    scratch.mkdir(parents=True)
    (scratch / layer.hex).write_bytes(b"garbage")
    (scratch / f"blob-{layer.hex[:8]}").write_bytes(b"garbage")
    result = run_kitfs(home, "pull", kit.ref(fault_proxy.host), "--plain-http")
    assert result.returncode == 0, result.stderr
    assert_blobs_verified(home / "storage")
    # Every blob of the ModelKit is stored, each the publisher's bytes (the garbage was not it).
    manifest = kit.manifest()
    wanted = {kit.digest, manifest["config"]["digest"], *(d.digest for d in kit.layers())}
    stored = home / "storage" / "blobs" / "sha256"
    assert {f"sha256:{p.name}" for p in stored.iterdir()} == wanted
    published = kit.home / "storage" / "blobs" / "sha256"
    for digest in wanted:
        hexpart = digest.removeprefix("sha256:")
        assert (stored / hexpart).read_bytes() == (published / hexpart).read_bytes()
    gets = [r for r in fault_proxy.requests if for_digest(layer.digest)(r)]
    assert [r.headers.get("range") for r in gets] == [None]  # fetched whole, from the start
    listed = json.loads(run_kitfs(home, "list", "--format", "json").stdout)
    assert [row["digest"] for row in listed] == [kit.digest]
