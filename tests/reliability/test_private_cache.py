"""The mount cache is private to its user, as the mount is: directories 0700, files 0600, the
daemon log too; another user (``nobody``) cannot read a cached layer or the log. An older cache
with wider directories is tightened with a warning; ``--shared-cache`` is the explicit way to
share a node cache (0755/0644), and then ``nobody`` can read it (which shows the check can fail).

The checks run as ``nobody`` through setpriv with Debian's /usr/bin/python3 (the venv lives under
root's 0700 home, out of nobody's reach); the cache lives below a 0755 directory in /tmp, so that
only the cache's own modes stand between nobody and its files.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import forge_file, forge_tar, payload
from hostileregistry import NORMAL, HostileRegistry

from kitfs.oci import media

from .helpers import Mounts, fresh_home, run_kitfs

WEIGHTS = payload(200_000, seed="private")
NOBODY = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", "/usr/bin/python3"]
READ_AS_NOBODY = """
import sys
try:
    data = open(sys.argv[1], "rb").read()
except PermissionError:
    print("denied")
else:
    print("read", len(data))
"""


def as_nobody(path: Path) -> str:
    done = subprocess.run(
        [*NOBODY, "-c", READ_AS_NOBODY, str(path)], capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


@pytest.fixture
def open_dir() -> Iterator[Path]:
    """A directory anyone may enter (unlike pytest's 0700 tmp_path)."""
    if os.geteuid() != 0 or not shutil.which("setpriv"):
        pytest.skip("needs root and setpriv to act as nobody")
    path = Path(tempfile.mkdtemp(prefix="kitfs-private-"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def kit_ref() -> Iterator[str]:
    with HostileRegistry() as registry:
        kitfile = {"manifestVersion": "1.0.0", "package": {"name": "p"}, "model": {"path": "model"}}
        registry.add_modelkit(
            "private/kit",
            "v1",
            json.dumps(kitfile).encode(),
            [
                (
                    media.layer_media_type("model", "none"),
                    forge_tar(forge_file("model/w.bin", WEIGHTS)),
                    NORMAL,
                )
            ],
        )
        yield f"{registry.host}/private/kit:v1"


def modes(root: Path) -> dict[str, int]:
    out = {".": stat.S_IMODE(root.stat().st_mode)}
    for path in root.rglob("*"):
        out[path.relative_to(root).as_posix()] = stat.S_IMODE(path.lstat().st_mode)
    return out


def test_the_mount_cache_and_log_are_private(kit_ref: str, mounts: Mounts, open_dir: Path) -> None:
    cache = open_dir / "cache"
    mountpoint = mounts.mount(kit_ref, "mnt", cache=cache)
    assert (mountpoint / "model" / "model" / "w.bin").read_bytes() == WEIGHTS
    found = modes(cache)
    tars = [p for p in (cache / "tars" / "sha256").iterdir()]
    logs = list((cache / "logs").iterdir())
    assert tars and logs
    for name, mode in found.items():
        is_dir = (cache / name).is_dir()
        assert mode == (0o700 if is_dir else 0o600), (name, oct(mode))
    assert as_nobody(tars[0]) == "denied"
    assert as_nobody(logs[0]) == "denied"


def test_a_shared_cache_is_readable_by_other_users(
    kit_ref: str, mounts: Mounts, open_dir: Path
) -> None:
    cache = open_dir / "shared"
    mountpoint = mounts.mount(kit_ref, "mnt", "--shared-cache", cache=cache)
    assert (mountpoint / "model" / "model" / "w.bin").read_bytes() == WEIGHTS
    tar = next((cache / "tars" / "sha256").iterdir())
    assert stat.S_IMODE(cache.stat().st_mode) == 0o755
    assert stat.S_IMODE(tar.stat().st_mode) == 0o644
    assert as_nobody(tar) == f"read {tar.stat().st_size}"
    assert as_nobody(next((cache / "logs").iterdir())) == "denied"  # the log stays private


def test_a_wider_cache_is_tightened_with_a_warning(tmp_path: Path) -> None:
    cache = tmp_path / "old-cache"
    (cache / "tars" / "sha256").mkdir(parents=True)
    for path in (cache, cache / "tars"):
        path.chmod(0o755)
    result = run_kitfs(fresh_home(tmp_path), "cache", "info", "--cache-dir", str(cache))
    assert result.returncode == 0, result.stderr
    assert stat.S_IMODE(cache.stat().st_mode) == 0o700
    assert stat.S_IMODE((cache / "tars").stat().st_mode) == 0o700
    assert f"tightened the cache directory {cache} to mode 700" in result.stderr
    assert f"tightened the cache directory {cache / 'tars'} to mode 700" in result.stderr


def test_a_new_cache_has_no_directory_wider_than_its_mode_even_for_a_moment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two processes that start on one new cache at once: the second must not find directories
    the first made with mkdir -p's default mode (it warned that it tightened them, for an older
    kitfs's). So each directory is made with the cache's mode, before any chmod."""
    from kitfs.storage.cache import BlobCache

    monkeypatch.setattr(BlobCache, "_set_modes", lambda self, found: None)  # the first, midway
    cache = BlobCache(tmp_path / "new" / "cache").ensure()
    made = [p for p in cache.root.rglob("*") if p.is_dir()] + [cache.root]
    assert {cache.tars.parent, cache.blobs.parent, cache.spans.parent} <= set(made)
    wider = {str(p): oct(stat.S_IMODE(p.stat().st_mode)) for p in made if p.stat().st_mode & 0o077}
    assert not wider
