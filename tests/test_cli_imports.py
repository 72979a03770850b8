"""Start-up: each verb loads only what it needs (issue 10, item 5).

trio, httpx, pyfuse3 and cryptography cost most of a cold ``kitfs`` start. These tests run verbs in
a fresh interpreter and check which of them got imported: a verb that works on local storage must
load none, the command that forks a mount daemon must load none before the daemon reports ready,
and a local mount must not load the HTTP client. No timing is asserted (the machines are shared).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import kitfs, make_tree, ok

HEAVY = ("trio", "httpx", "pyfuse3", "cryptography")
REF = "startup/tiny:v1"

# Runs kitfs.cli.main(argv) in this interpreter, then prints the heavy modules it loaded as JSON
# on the last line of stdout (after the verb's own output).
_PROBE = f"""
import json, sys
from kitfs.cli import main
code = main(sys.argv[1:])
sys.stdout.flush()
print()
print(json.dumps({{"code": code, "loaded": [m for m in {HEAVY!r} if m in sys.modules]}}))
"""


def loaded_by(*argv: str, env: dict[str, str] | None = None) -> list[str]:
    """The heavy modules ``kitfs ARGV`` imports (the verb must succeed)."""
    done = subprocess.run(
        [sys.executable, "-c", _PROBE, *argv],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **(env or {})},
        stdin=subprocess.DEVNULL,
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["code"] == 0, done.stderr
    return list(report["loaded"])


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A kit home holding one ModelKit, packed by kitfs."""
    root = tmp_path_factory.mktemp("startup")
    ctx = root / "ctx"
    make_tree(
        ctx,
        {
            "Kitfile": "manifestVersion: 1.0.0\npackage:\n  name: tiny\n"
            "model:\n  path: model.bin\ndocs:\n  - path: README.md\n",
            "model.bin": b"w" * 2048,
            "README.md": "tiny\n",
        },
    )
    ok(kitfs(root / "home", "pack", str(ctx), "-t", REF))
    return root / "home"


def test_importing_the_cli_loads_no_heavy_module() -> None:
    code = f"import sys, kitfs.cli; print([m for m in {HEAVY!r} if m in sys.modules])"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


@pytest.mark.parametrize(
    "argv",
    [
        ("version",),
        ("list",),
        ("list", "--format", "json"),
        ("info", REF),
        ("inspect", REF),
        ("tag", REF, "startup/tiny:other"),
        ("cache", "info"),
    ],
    ids=lambda argv: " ".join(argv),
)
def test_local_verbs_load_no_network_fuse_or_signing_code(
    home: Path, tmp_path: Path, argv: tuple[str, ...]
) -> None:
    cache = ["--cache-dir", str(tmp_path / "cache")] if argv[0] == "cache" else []
    assert loaded_by("--config", str(home), *argv, *cache) == []


def test_unpack_of_local_storage_loads_signing_code_only_when_asked(
    home: Path, tmp_path: Path
) -> None:
    argv = ["--config", str(home), "unpack", REF, "--cache-dir", str(tmp_path / "cache")]
    without = loaded_by(*argv, "-d", str(tmp_path / "plain"), env={"KITFS_POLICY": ""})
    assert "cryptography" not in without
    policy = tmp_path / "policy.json"
    policy.write_text(json.dumps({"default": [{"type": "insecureAcceptAnything"}]}))
    asked = loaded_by(*argv, "-d", str(tmp_path / "policed"), env={"KITFS_POLICY": str(policy)})
    assert "cryptography" in asked


def test_a_local_mount_source_loads_no_http_client(home: Path, tmp_path: Path) -> None:
    code = (
        "import sys\n"
        "from pathlib import Path\n"
        "from kitfs.config import Paths\n"
        "from kitfs.fs.sourcechoice import open_source\n"
        "from kitfs.storage.cache import BlobCache\n"
        f"cache = BlobCache(Path({str(tmp_path / 'cache')!r})).ensure()\n"
        f"source = open_source({REF!r}, Paths.resolve({str(home)!r}), cache)\n"
        "print(type(source).__name__, 'httpx' in sys.modules)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.split() == ["LocalStorageSource", "False"]


def test_the_mount_command_returns_ready_without_loading_the_daemon_code(
    home: Path, tmp_path: Path
) -> None:
    """The command forks before trio, pyfuse3 or the registry client are imported; the daemon
    loads them, mounts, and the command returns with the Kitfile readable."""
    mountpoint = tmp_path / "mnt"
    mountpoint.mkdir()
    argv = ["--config", str(home), "mount", REF, str(mountpoint)]
    try:
        loaded = loaded_by(*argv, "--cache-dir", str(tmp_path / "cache"), env={"KITFS_POLICY": ""})
        assert "name: tiny" in (mountpoint / "Kitfile").read_text()
    finally:
        subprocess.run(["fusermount3", "-u", str(mountpoint)], capture_output=True, timeout=60)
    assert loaded == []
