"""The fsspec path loads neither pyfuse3 nor trio at import time (issue 21, item 4), nor the HTTP
client or the signing code: fsspec imports ``kit``'s class when a URL first needs it, and a
notebook's ``import kitfs`` must stay as light as the CLI's. Checked in fresh interpreters."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import cli, make_tree, ok

HEAVY = ("trio", "httpx", "pyfuse3", "cryptography")


def loaded(code: str) -> dict[str, object]:
    probe = f"{code}\nimport json, sys\nprint(json.dumps({{'heavy': [m for m in {HEAVY!r} if m in sys.modules], 'result': result}}))"
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def test_importing_the_file_system_loads_no_heavy_module() -> None:
    got = loaded("import kitfs.fsspec\nresult = kitfs.fsspec.KitFileSystem.protocol")
    assert got == {"heavy": [], "result": "kit"}


def test_the_fsspec_registration_loads_no_heavy_module() -> None:
    got = loaded(
        "import fsspec\n"
        "fs = fsspec.filesystem('kit', cache_dir='/nonexistent-cache')\n"
        "result = [type(fs).__module__, fsspec.get_filesystem_class('kit').__name__]"
    )
    assert got == {"heavy": [], "result": ["kitfs.fsspec.filesystem", "KitFileSystem"]}


def test_the_python_api_loads_no_heavy_module_until_used() -> None:
    got = loaded("import kitfs\nresult = kitfs.open_modelkit.__module__")
    assert got == {"heavy": [], "result": "kitfs.api"}


@pytest.fixture
def home(tmp_path: Path) -> Path:
    make_tree(
        tmp_path / "ctx",
        {
            "Kitfile": "manifestVersion: 1.0.0\npackage:\n  name: tiny\nmodel:\n  path: m.bin\n",
            "m.bin": b"w" * 4096,
        },
    )
    ok(cli(tmp_path / "home", "pack", str(tmp_path / "ctx"), "-t", "tiny/tiny:v1"))
    return tmp_path / "home"


def test_reading_loads_trio_but_never_pyfuse3(home: Path, tmp_path: Path) -> None:
    got = loaded(
        "import fsspec\n"
        f"fs = fsspec.filesystem('kit', config={str(home)!r}, cache_dir={str(tmp_path / 'c')!r})\n"
        "result = len(fs.cat_file('kit://tiny/tiny:v1/model/m.bin'))"
    )
    assert got == {"heavy": ["trio"], "result": 4096}
