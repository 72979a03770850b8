"""Helpers for the reliability suite: ModelKits to fault, raw pushes of hostile artifacts, and
checks that local storage and the mount cache hold only verified bytes.

ModelKits are packed with the real CLI (in-process) and pushed to the real registry; hostile ones are
hand-built (config, layers, manifest) and pushed with ``RegistryClient`` so that they reach kitfs the
way a crafted ModelKit would: from a registry.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import trio
from helpers import WHOLE, cli, ok, payload, saved_digest

from kitfs.config import Paths
from kitfs.fs.mounttable import find_mount
from kitfs.oci import media
from kitfs.oci.client import RegistryClient, RegistryOptions
from kitfs.oci.manifest import Descriptor, sha256_digest
from kitfs.progress import NullProgress
from kitfs.reference import parse
from kitfs.remote import pull, unpack_remote
from kitfs.storage.local import LocalStore
from kitfs.unpack import UnpackOptions

T = TypeVar("T")
KITFS = str(Path(sys.executable).parent / "kitfs")

# Fast retries for in-process verbs: the bounds are what is tested, not the waiting.
FAST = RegistryOptions(plain_http=True, retries=4, backoff=0.01, backoff_cap=0.2, timeout=3.0)


# -- ModelKits made by the real pack ------------------------------------------------------------


KITFILE = """manifestVersion: 1.0.0
package:
  name: reliability
model:
  name: weights
  path: model
datasets:
  - name: train
    path: data
code:
  - path: src
docs:
  - path: docs
"""


@dataclass(frozen=True)
class Kit:
    """A ModelKit pushed to a registry: its reference (through ``host``) and what it holds."""

    home: Path  # the kit home it was packed in
    registry: str  # host:port it was pushed to
    repository: str
    tag: str
    digest: str
    files: dict[str, bytes]  # path in the context -> content

    def ref(self, host: str | None = None) -> str:
        return f"{host or self.registry}/{self.repository}:{self.tag}"

    def manifest(self) -> dict[str, Any]:
        blob = self.home / "storage" / "blobs" / "sha256" / self.digest.removeprefix("sha256:")
        return dict(json.loads(blob.read_bytes()))

    def layers(self) -> list[Descriptor]:
        return [
            Descriptor(d["mediaType"], d["digest"], d["size"]) for d in self.manifest()["layers"]
        ]

    def biggest_layer(self) -> Descriptor:
        return max(self.layers(), key=lambda d: d.size)


def standard_files(scale: int = 1) -> dict[str, bytes]:
    """A model, a dataset and code; sizes in units of ``scale`` x ~1 MB for the weights."""
    return {
        "model/weights.bin": payload(1_500_000 * scale, seed=1),
        "model/config.json": b'{"layers": 2}\n',
        "data/train.csv": b"a,b\n" + b"".join(b"%d,%d\n" % (i, i * i) for i in range(20_000)),
        "src/train.py": b"print('hello')\n",
        "docs/README.md": b"# reliability\n" * 100,
    }


def make_kit(
    home: Path,
    context: Path,
    registry: str,
    repository: str,
    *,
    files: dict[str, bytes] | None = None,
    kitfile: str = KITFILE,
    tag: str = "v1",
    compression: str = "none",
) -> Kit:
    """Pack ``files`` with ``kitfile`` and push them to ``registry`` (plain HTTP)."""
    files = files if files is not None else standard_files()
    context.mkdir(parents=True, exist_ok=True)
    (context / "Kitfile").write_text(kitfile)
    for rel, data in files.items():
        (context / rel).parent.mkdir(parents=True, exist_ok=True)
        (context / rel).write_bytes(data)
    ref = f"{registry}/{repository}:{tag}"
    digest = saved_digest(
        ok(cli(home, "pack", str(context), "-t", ref, "--compression", compression, *WHOLE))
    )
    ok(cli(home, "push", ref, "--plain-http"))
    return Kit(home, registry, repository, tag, digest, files)


# -- hand-built (hostile) artifacts ---------------------------------------------------------------


def run_client(host: str, body: Callable[[RegistryClient], Any]) -> Any:
    async def main() -> Any:
        async with RegistryClient(host, RegistryOptions(plain_http=True)) as client:
            return await body(client)

    return trio.run(main)


def push_raw(
    host: str,
    repository: str,
    config: bytes | dict[str, Any],
    layers: list[tuple[str, bytes]],
    *,
    tag: str = "v1",
    config_media_type: str = media.KIT_CONFIG,
    tmp: Path,
) -> str:
    """Push a hand-built ModelKit: ``layers`` are (media type, blob); returns the manifest digest."""
    config_bytes = (
        json.dumps(config, separators=(",", ":")).encode() if isinstance(config, dict) else config
    )
    blobs = [(config_media_type, config_bytes), *layers]
    descriptors = []
    tmp.mkdir(parents=True, exist_ok=True)
    for i, (media_type, data) in enumerate(blobs):
        path = tmp / f"blob-{i}"
        path.write_bytes(data)
        descriptors.append((Descriptor(media_type, sha256_digest(data), len(data)), path))
    manifest = {
        "schemaVersion": 2,
        "mediaType": media.OCI_MANIFEST,
        "config": descriptors[0][0].to_dict(),
        "layers": [d.to_dict() for d, _ in descriptors[1:]],
    }
    body = json.dumps(manifest, separators=(",", ":")).encode()

    async def push(client: RegistryClient) -> str:
        for desc, path in descriptors:
            await client.upload_blob(repository, desc, path)
        return await client.put_manifest(repository, tag, body, media.OCI_MANIFEST)

    return str(run_client(host, push))


def kit_config(**sections: Any) -> dict[str, Any]:
    """A Kitfile config: ``manifestVersion``, a package, then ``sections`` (model=..., code=[...])."""
    return {"manifestVersion": "1.0.0", "package": {"name": "hostile"}, **sections}


# -- the verbs, in-process --------------------------------------------------------------------


def do_pull(home: Path, ref: str, options: RegistryOptions = FAST) -> str:
    return pull(parse(ref), Paths(home), options, NullProgress())


def do_unpack(home: Path, ref: str, target: Path, options: RegistryOptions = FAST) -> None:
    unpack_remote(parse(ref), Paths(home), options, UnpackOptions(target=target), NullProgress())


# -- what is on disk --------------------------------------------------------------------------


def fresh_home(tmp: Path) -> Path:
    """A kit home with an empty local storage (so that before/after comparisons see only changes)."""
    home = tmp / "home"
    LocalStore(home / "storage").ensure()
    return home


def storage_state(home: Path) -> dict[str, bytes]:
    """Every file of the local storage (relative path -> content), for before/after comparisons."""
    root = home / "storage"
    out: dict[str, bytes] = {}
    for dirpath, _, names in os.walk(root):
        for name in names:
            path = Path(dirpath, name)
            out[path.relative_to(root).as_posix()] = path.read_bytes()
    return out


def assert_blobs_verified(root: Path) -> None:
    """Every ``blobs/sha256/<hex>`` below ``root`` hashes to its name: nothing unverified stored."""
    for path in root.rglob("*"):
        if path.is_file() and path.parent.name == "sha256" and len(path.name) == 64:
            actual = hashlib.sha256(path.read_bytes()).hexdigest()
            assert actual == path.name, f"{path} holds bytes that do not match its digest"


def files_in(root: Path) -> dict[str, bytes]:
    """Regular files below ``root`` (relative path -> content)."""
    out: dict[str, bytes] = {}
    for dirpath, _, names in os.walk(root):
        for name in names:
            path = Path(dirpath, name)
            out[path.relative_to(root).as_posix()] = path.read_bytes()
    return out


def run_kitfs(
    home: Path, *args: str, timeout: float = 60, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """The installed command, as a user runs it."""
    full_env = {k: v for k, v in os.environ.items() if k != "KITOPS_HOME"}
    full_env.update(env or {})
    return subprocess.run(
        [KITFS, "--config", str(home), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=full_env,
    )


@contextmanager
def popen_kitfs(home: Path, *args: str) -> Iterator[subprocess.Popen[str]]:
    """Start the command in the background; it is killed when the block ends."""
    env = {k: v for k, v in os.environ.items() if k != "KITOPS_HOME"}
    process = subprocess.Popen(
        [KITFS, "--config", str(home), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        yield process
    finally:
        if process.poll() is None:
            process.kill()
        process.communicate(timeout=10)


# -- mounts -------------------------------------------------------------------------------------

_PID_RE = re.compile(r"daemon started \(pid (\d+)\)")


def wait_until(condition: Callable[[], bool], timeout: float = 20.0, what: str = "it") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


def is_mounted(path: Path) -> bool:
    return find_mount(path) is not None


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with contextlib.suppress(FileNotFoundError, IndexError):
        return Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1][0] != "Z"
    return False


class Mounts:
    """Runs ``kitfs mount`` (daemons) for one test and always unmounts and stops them after."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.home = base / "mount-home"
        self.cache = base / "cache"
        self.points: list[tuple[Path, Path]] = []  # (mountpoint, cache dir)

    def try_mount(
        self,
        ref: str,
        name: str | Path = "mnt",
        *flags: str,
        cache: Path | None = None,
        plain_http: bool = True,
    ) -> tuple[Path, subprocess.CompletedProcess[str]]:
        """Mount ``ref`` at ``name`` (below the test's directory unless absolute)."""
        mountpoint = self.base / name
        mountpoint.mkdir(exist_ok=True)
        cache = cache or self.cache
        self.points.append((mountpoint, cache))
        network = ["--plain-http"] if plain_http else []
        result = run_kitfs(
            self.home, "mount", ref, str(mountpoint), *network, "--cache-dir", str(cache), *flags
        )
        return mountpoint, result

    def mount(
        self, ref: str, name: str | Path = "mnt", *flags: str, cache: Path | None = None
    ) -> Path:
        mountpoint, result = self.try_mount(ref, name, *flags, cache=cache)
        assert result.returncode == 0, result.stderr
        assert is_mounted(mountpoint)
        return mountpoint

    def log(self, mountpoint: Path) -> str:
        cache = dict(self.points).get(mountpoint, self.cache)
        name = str(mountpoint).strip("/").replace("/", "-")
        path = cache / "logs" / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def pid(self, mountpoint: Path) -> int:
        pids = _PID_RE.findall(self.log(mountpoint))
        assert pids, "the daemon logged no pid"
        return int(pids[-1])

    def unmount(self, mountpoint: Path) -> None:
        if is_mounted(mountpoint):
            subprocess.run(["fusermount3", "-u", "-z", str(mountpoint)], capture_output=True)

    def cleanup(self) -> None:
        for mountpoint, _ in self.points:
            pids = [int(p) for p in _PID_RE.findall(self.log(mountpoint))]
            self.unmount(mountpoint)
            for pid in pids:
                with contextlib.suppress(AssertionError):
                    wait_until(lambda pid=pid: not alive(pid), 10)  # type: ignore[misc]
                if alive(pid):
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
