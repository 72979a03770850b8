"""Run Python as ``nobody``, a process that cannot open ``/dev/fuse``: where the kit file system
must work without FUSE or root.

The test venv's interpreter lives under root's home (0700), out of nobody's reach, so the runner
makes a venv under the temporary directory from Debian's ``/usr/bin/python3`` (same 3.11 ABI),
puts a copy of the worktree's ``kitfs`` package and its dist-info (the ``fsspec.specs`` entry
point) in a directory nobody can read, and adds the test venv's site-packages (fsspec, pandas,
pyarrow, trio, httpx) after it. The child gets a clean environment: no ``KITFS_POLICY`` or
``KITOPS_HOME`` from the parent.
"""

from __future__ import annotations

import compileall
import importlib.metadata
import json
import os
import shutil
import subprocess
import sysconfig
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import kitfs

SYSTEM_PYTHON = "/usr/bin/python3"
DROP = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups"]
# The child's first act: prove it cannot open /dev/fuse.
PRELUDE = """\
import json, os, sys
try:
    os.close(os.open("/dev/fuse", os.O_RDWR))
    raise SystemExit("this process can open /dev/fuse")
except OSError:
    pass
def report(value):
    print("RESULT " + json.dumps(value))
"""


def available() -> str | None:
    """Why the runner cannot work here, or None."""
    if os.geteuid() != 0:
        return "needs root to switch to nobody"
    if shutil.which("setpriv") is None or not Path(SYSTEM_PYTHON).exists():
        return "needs setpriv and /usr/bin/python3"
    return None


@dataclass
class Nobody:
    """A venv and a scratch area for ``nobody``; ``run`` executes a snippet there."""

    base: Path

    @classmethod
    def create(cls) -> Nobody:
        base = Path(tempfile.mkdtemp(prefix="kitfs-nobody-"))
        try:
            cls._build(base)
        except BaseException:
            shutil.rmtree(base, ignore_errors=True)
            raise
        return cls(base)

    @staticmethod
    def _build(base: Path) -> None:
        base.chmod(0o755)
        lib = base / "lib"
        package = Path(kitfs.__file__).parent
        shutil.copytree(package, lib / "kitfs", ignore=shutil.ignore_patterns("__pycache__"))
        dist = importlib.metadata.distribution("kitfs")
        info = Path(dist._path)  # type: ignore[attr-defined]  # the dist-info directory
        shutil.copytree(info, lib / info.name)
        compileall.compile_dir(str(lib / "kitfs"), quiet=1)
        subprocess.run(
            [SYSTEM_PYTHON, "-m", "venv", "--without-pip", str(base / "venv")], check=True
        )
        site = next((base / "venv" / "lib").glob("python3*/site-packages"))
        deps = sysconfig.get_paths()["purelib"]
        (site / "kitfs-under-test.pth").write_text(f"{lib}\n{deps}\n")
        scratch = base / "scratch"
        scratch.mkdir()
        scratch.chmod(0o1777)
        for path in [base, *base.rglob("*")]:
            if not path.is_symlink() and path != scratch:
                path.chmod(path.stat().st_mode | 0o444 | (0o111 if path.is_dir() else 0))

    def workdir(self, name: str) -> Path:
        """A directory nobody may write (a cache, a kit home)."""
        path = self.base / "scratch" / name
        path.mkdir(parents=True, exist_ok=True)
        path.chmod(0o777)
        return path

    def run(self, code: str, *, timeout: float = 120) -> Any:
        """Run ``PRELUDE + code`` as nobody; return what it passed to ``report`` (JSON)."""
        env = {
            "PATH": "/usr/bin:/bin",
            "HOME": str(self.workdir("home")),
            "KITFS_CACHE": str(self.workdir("default-cache")),
            "LANG": "C.UTF-8",
        }
        done = subprocess.run(
            [*DROP, str(self.base / "venv" / "bin" / "python"), "-c", PRELUDE + code],
            capture_output=True,
            text=True,
            timeout=timeout,
            env=env,
            cwd="/",
            check=False,
        )
        assert done.returncode == 0, f"exit {done.returncode}\n{done.stdout}\n{done.stderr}"
        lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
        assert lines, f"no result\n{done.stdout}\n{done.stderr}"
        return json.loads(lines[-1].removeprefix("RESULT "))

    def remove(self) -> None:
        shutil.rmtree(self.base, ignore_errors=True)
