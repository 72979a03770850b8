"""``kitfs import --tool git``: a local repository with LFS-tracked weights, cloned over file://
with Debian's git and git-lfs (both run for real; git's configuration lives in a temporary HOME)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from helpers import cli, fails, ok, payload, snapshot

pytestmark = pytest.mark.skipif(
    shutil.which("git") is None
    or subprocess.run(["git", "lfs", "version"], capture_output=True).returncode != 0,
    reason="git and git-lfs are needed (scripts/bootstrap.sh installs them)",
)

WEIGHTS = payload(2 << 20, "git-weights")
FILES = {
    "model.safetensors": WEIGHTS,
    "config.json": b'{"layers": 2}\n',
    "README.md": b"# from git\n",
    "extra/notes.txt": b"notes\n",
}


def git(cwd: Path, *args: str) -> str:
    result = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    return result.stdout


@pytest.fixture
def remote(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A bare repository whose weights live in git-lfs (objects pushed to the file:// remote)."""
    home = tmp_path / "git-home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    for key, value in (
        ("user.name", "Test"),
        ("user.email", "t@example.com"),
        ("init.defaultBranch", "main"),
    ):
        git(tmp_path, "config", "--global", key, value)
    git(tmp_path, "lfs", "install")
    bare = tmp_path / "models" / "acme" / "gitmodel.git"
    bare.parent.mkdir(parents=True)
    git(tmp_path, "init", "--bare", str(bare))
    work = tmp_path / "work"
    git(tmp_path, "init", str(work))
    git(work, "lfs", "track", "*.safetensors")
    for rel, data in FILES.items():
        (work / rel).parent.mkdir(parents=True, exist_ok=True)
        (work / rel).write_bytes(data)
    git(work, "add", ".")
    git(work, "commit", "-m", "model")
    git(work, "tag", "v1")
    git(work, "remote", "add", "origin", bare.as_uri())
    git(work, "push", "origin", "main", "v1")
    git(work, "lfs", "push", "--all", bare.as_uri())
    # The bare repository holds a pointer, not the weights: git-lfs must fetch them.
    assert (
        b"oid sha256:"
        in subprocess.run(
            ["git", "show", "main:model.safetensors"], cwd=bare, capture_output=True, check=True
        ).stdout
    )
    return bare


def test_git_import_of_lfs_weights_over_file_url(remote: Path, tmp_path: Path) -> None:
    home = tmp_path / "kit-home"
    result = ok(
        cli(
            home,
            "import",
            remote.as_uri(),
            "--tool",
            "git",
            "--ref",
            "v1",
            "-t",
            "acme/gitmodel:v1",
        )
    )
    assert "Generated Kitfile:" in result.stdout
    kitfile = yaml.safe_load(ok(cli(home, "info", "acme/gitmodel:v1")).stdout)
    # kit names the package after the last two segments of what it was given.
    assert kitfile["package"] == {"name": "gitmodel.git", "authors": ["acme"]}
    assert kitfile["model"]["path"] == "model.safetensors"
    out = tmp_path / "out"
    ok(cli(home, "unpack", "acme/gitmodel:v1", "-d", str(out)))
    for rel, data in FILES.items():
        assert (out / rel).read_bytes() == data, rel
    assert not (out / ".gitattributes").exists() and not (out / ".git").exists()
    assert not any((home / "cache" / "kitfs-import").iterdir())  # the clone is gone


def test_file_url_is_imported_with_git_without_tool_flag(remote: Path, tmp_path: Path) -> None:
    home = tmp_path / "kit-home"
    ok(cli(home, "import", remote.as_uri(), "-t", "m:1"))
    out = tmp_path / "out"
    ok(cli(home, "unpack", "m:1", "-d", str(out)))
    assert (out / "model.safetensors").read_bytes() == WEIGHTS


def test_missing_ref_fails_in_one_line_and_stores_nothing(remote: Path, tmp_path: Path) -> None:
    home = tmp_path / "kit-home"
    ok(cli(home, "import", remote.as_uri(), "-t", "m:1"))
    before = snapshot(home / "storage")
    line = fails(cli(home, "import", remote.as_uri(), "--ref", "no-such-branch", "-t", "m:2"))
    assert line.startswith("kitfs: error cloning repository:") and "no-such-branch" in line
    assert snapshot(home / "storage") == before


def test_missing_lfs_object_fails(remote: Path, tmp_path: Path) -> None:
    for obj in (remote / "lfs" / "objects").rglob("*"):
        if obj.is_file():
            obj.unlink()
    line = fails(cli(tmp_path / "kit-home", "import", remote.as_uri(), "-t", "m:1"))
    assert line.startswith("kitfs: error downloading LFS files repository:")
