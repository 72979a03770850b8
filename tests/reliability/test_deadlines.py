"""A registry that trickles or stalls (tests/hostileregistry.py) cannot hang kitfs.

Each transfer has a minimum rate beside its idle timeout (kitfs/oci/deadline.py), so a blob or a
manifest sent a few bytes a second fails ``pull``, ``unpack`` and a read through a mount with one
line naming the registry and the rate; each FUSE request has an upper bound
(kitfs/fs/requestbound.py), so a reader of a stalled layer gets an error, can be killed, and other
directories keep answering; SIGTERM ends a daemon with a fetch in flight. The bounds are set small
here (--min-rate 1KiB over --rate-window 1, --idle-timeout 2) so the tests stay fast; what is
asserted is the message, that the command ended within the bound, and what was stored.
"""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import forge_file, forge_tar, payload
from hostileregistry import NORMAL, Behaviour, HostileRegistry, stall, trickle, trickle_headers

from kitfs.oci import media

from .helpers import (
    Mounts,
    alive,
    assert_blobs_verified,
    fresh_home,
    is_mounted,
    run_kitfs,
    wait_until,
)

RATE = ("--min-rate", "1KiB", "--rate-window", "1", "--idle-timeout", "2")
# Two attempts of one window each, backoff and start-up: well inside this.
BOUND = 15.0
MODEL = media.layer_media_type("model", "none")
DATASET = media.layer_media_type("dataset", "none")
WEIGHTS = payload(64 * 1024, seed="w")
ROWS = b"a,b\n1,2\n"
SLOW_MESSAGE = "is sending slower than the minimum rate of 1 KiB/s"


def config() -> bytes:
    kitfile = {
        "manifestVersion": "1.0.0",
        "package": {"name": "hostile"},
        "model": {"name": "w", "path": "model"},
        "datasets": [{"name": "d", "path": "data"}],
    }
    return json.dumps(kitfile).encode()


@pytest.fixture
def hostile() -> Iterator[HostileRegistry]:
    with HostileRegistry() as registry:
        yield registry


def serve(
    registry: HostileRegistry,
    repository: str,
    model: Behaviour = NORMAL,
    manifest: Behaviour = NORMAL,
) -> str:
    """A ModelKit of a model layer (sent as ``model`` says) and a dataset layer; its reference."""
    registry.add_modelkit(
        repository,
        "v1",
        config(),
        [
            (MODEL, forge_tar(forge_file("model/w.bin", WEIGHTS)), model),
            (DATASET, forge_tar(forge_file("data/rows.csv", ROWS)), NORMAL),
        ],
        manifest_behaviour=manifest,
    )
    return f"{registry.host}/{repository}:v1"


def one_line(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode != 0, result.stdout
    assert "Traceback" not in result.stderr and "internal error" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


# -- pull and unpack -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("verb", "what"),
    [
        ("pull", "blob"),
        ("unpack", "blob"),
        ("pull", "manifest"),
        ("unpack", "manifest"),
        ("unpack", "manifest-headers"),
    ],
)
def test_a_trickling_registry_fails_pull_and_unpack_within_the_bound(
    hostile: HostileRegistry, tmp_path: Path, verb: str, what: str
) -> None:
    behaviours = {
        "blob": {"model": trickle(0.25, 8)},
        "manifest": {"manifest": trickle(0.25, 8)},
        "manifest-headers": {"manifest": trickle_headers(0.25)},
    }[what]
    ref = serve(hostile, f"slow/{verb}-{what}", **behaviours)
    home = fresh_home(tmp_path)
    target = tmp_path / "out" / "model"
    args = ["-d", str(target)] if verb == "unpack" else []
    started = time.monotonic()
    result = run_kitfs(home, verb, ref, "--plain-http", *RATE, *args, timeout=60)
    elapsed = time.monotonic() - started
    line = one_line(result)
    assert elapsed < BOUND, (elapsed, line)
    assert line.startswith(f"kitfs: registry {hostile.host} ")
    if what == "manifest-headers":
        assert "did not answer within" in line and "--idle-timeout" in line
    else:
        assert SLOW_MESSAGE in line and "--min-rate" in line
    # a slow body is retried once, like a drop, then given up; trickled headers are not retried
    if what == "blob":
        layer = json.loads(hostile.manifests[(f"slow/{verb}-{what}", "v1")])["layers"][0]
        assert hostile.count("blobs", layer["digest"]) == 2
    else:
        assert hostile.count("manifests", "v1") == (1 if what == "manifest-headers" else 2)
    assert not (home / "storage" / f"{hostile.host}").exists()
    assert_blobs_verified(home)
    assert not (tmp_path / "out").exists(), "a failed unpack left the directory it created"


def test_a_healthy_registry_is_not_tripped_by_the_rate(
    hostile: HostileRegistry, tmp_path: Path
) -> None:
    ref = serve(hostile, "healthy/kit")
    home = fresh_home(tmp_path)
    target = tmp_path / "out"
    result = run_kitfs(home, "unpack", ref, "--plain-http", *RATE, "-d", str(target))
    assert result.returncode == 0, result.stderr
    assert (target / "model" / "w.bin").read_bytes() == WEIGHTS
    assert (target / "data" / "rows.csv").read_bytes() == ROWS


# -- through a mount ---------------------------------------------------------------------------


def mount_args(request_timeout: str) -> tuple[str, ...]:
    return (*RATE, "--request-timeout", request_timeout)


def test_a_mount_read_of_a_trickling_layer_fails_within_the_bound(
    hostile: HostileRegistry, mounts: Mounts
) -> None:
    ref = serve(hostile, "slow/mount", model=trickle(0.25, 8))
    mountpoint = mounts.mount(ref, "mnt", *mount_args("60"))
    started = time.monotonic()
    with pytest.raises(OSError) as failure:
        (mountpoint / "model" / "model" / "w.bin").read_bytes()
    assert time.monotonic() - started < BOUND
    assert failure.value.errno == errno.EIO
    assert (mountpoint / "datasets" / "data" / "rows.csv").read_bytes() == ROWS
    assert SLOW_MESSAGE in mounts.log(mountpoint)
    assert_cache_verified(mounts.cache)


def test_a_trickling_manifest_fails_the_mount_within_the_bound(
    hostile: HostileRegistry, mounts: Mounts
) -> None:
    ref = serve(hostile, "slow/mount-manifest", manifest=trickle(0.25, 8))
    started = time.monotonic()
    mountpoint, result = mounts.try_mount(ref, "mnt", *mount_args("60"))
    assert time.monotonic() - started < BOUND
    line = one_line(result)
    assert SLOW_MESSAGE in line and hostile.host in line
    assert not is_mounted(mountpoint)


def test_a_reader_of_a_stalled_layer_gets_an_error_and_can_be_killed(
    hostile: HostileRegistry, mounts: Mounts
) -> None:
    """The registry sends the headers and 100 bytes, then nothing; its idle timeout (60 s) is
    longer than the request bound (3 s), so the request bound is what answers."""
    ref = serve(hostile, "stuck/mount", model=stall(after=100))
    mountpoint = mounts.mount(ref, "mnt", "--idle-timeout", "60", "--request-timeout", "3")
    weights = mountpoint / "model" / "model" / "w.bin"
    started = time.monotonic()
    with pytest.raises(OSError) as failure:
        weights.read_bytes()
    assert 2.5 < time.monotonic() - started < 10
    assert failure.value.errno == errno.ETIMEDOUT
    # Meanwhile another directory answers at once.
    assert (mountpoint / "datasets" / "data" / "rows.csv").read_bytes() == ROWS
    # A reader that is killed while it waits is gone within the bound.
    reader = subprocess.Popen(
        ["cat", str(weights)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    time.sleep(0.5)
    listing = sorted(os.listdir(mountpoint / "datasets" / "data"))
    assert listing == ["rows.csv"]
    reader.kill()
    reader.wait(timeout=10)
    assert reader.returncode == -signal.SIGKILL
    assert "no answer within 3 s" in mounts.log(mountpoint)
    assert_cache_verified(mounts.cache)


def test_sigterm_unmounts_promptly_with_a_fetch_in_flight(
    hostile: HostileRegistry, mounts: Mounts
) -> None:
    ref = serve(hostile, "stuck/sigterm", model=stall(after=100))
    mountpoint = mounts.mount(ref, "mnt", "--idle-timeout", "60", "--request-timeout", "120")
    pid = mounts.pid(mountpoint)
    reader = subprocess.Popen(
        ["cat", str(mountpoint / "model" / "model" / "w.bin")],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    wait_until(lambda: hostile.count("blobs", layer_digest(hostile, "stuck/sigterm")) > 0, 10)
    started = time.monotonic()
    os.kill(pid, signal.SIGTERM)
    wait_until(lambda: not is_mounted(mountpoint), 10, "the mount to go away")
    wait_until(lambda: not alive(pid), 10, "the daemon to exit")
    out, err = reader.communicate(timeout=10)
    assert time.monotonic() - started < 10
    assert reader.returncode != 0 and out == ""
    assert "cat:" in err
    assert "received SIGTERM: unmounting" in mounts.log(mountpoint)
    assert_cache_verified(mounts.cache)
    names = list((mounts.cache / "tars" / "sha256").iterdir())
    assert names == [], names


def layer_digest(registry: HostileRegistry, repository: str) -> str:
    return str(json.loads(registry.manifests[(repository, "v1")])["layers"][0]["digest"])


def assert_cache_verified(cache: Path) -> None:
    """Only verified bytes have names in the cache (its index records are named by the layer)."""
    for kind in ("tars", "blobs", "spans"):
        if (cache / kind).exists():
            assert_blobs_verified(cache / kind)
