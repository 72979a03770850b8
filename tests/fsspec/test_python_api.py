"""The Python API (kitfs.api): a ModelKit opened by reference, its Kitfile, files and file objects;
``kitfs.mounted`` with FUSE, and its clear refusal without; errors as Python's own."""

from __future__ import annotations

import random
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import fsspec
import pytest
from helpers import cli, make_tree, ok
from nobody import Nobody

import kitfs
from kitfs.fs.mounttable import find_mount

REF = "api/tables:v1"
WEIGHTS = random.Random(7).randbytes(300_000)
KITFILE = (
    "manifestVersion: 1.0.0\npackage:\n  name: tables\n  authors: [Ada]\n"
    "model:\n  name: w\n  path: model/weights.bin\n"
    "datasets:\n  - name: train\n    path: data/train.csv\n"
)


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("api")
    make_tree(
        root / "ctx",
        {
            "Kitfile": KITFILE,
            "model/weights.bin": WEIGHTS,
            "data/train.csv": "x,y\n" + "1,2\n" * 1000,
        },
    )
    ok(cli(root / "home", "pack", str(root / "ctx"), "-t", REF, "--span-size", "64KiB"))
    return root / "home"


@pytest.fixture
def kit(home: Path, tmp_path: Path) -> Iterator[kitfs.ModelKit]:
    with kitfs.open_modelkit(REF, config=str(home), cache_dir=str(tmp_path / "cache")) as opened:
        yield opened


def test_a_modelkit_shows_its_kitfile_and_files(kit: kitfs.ModelKit) -> None:
    assert kit.kitfile.package["name"] == "tables"
    assert kit.kitfile.package["authors"] == ["Ada"]
    assert kit.digest.startswith("sha256:")
    assert [(e.path, e.size) for e in kit.files()] == [
        ("Kitfile", kit.stat("Kitfile").size),
        ("datasets/data/train.csv", 4 + 4 * 1000),
        ("model/model/weights.bin", len(WEIGHTS)),
    ]
    assert [e.path for e in kit.listdir()] == ["Kitfile", "datasets", "model"]
    assert kit.stat("model").is_dir


def test_file_objects_seek_and_read(kit: kitfs.ModelKit) -> None:
    with kit.open("model/model/weights.bin") as handle:
        handle.seek(200_000)
        assert handle.read(1000) == WEIGHTS[200_000:201_000]
        assert handle.tell() == 201_000
        handle.seek(-10, 2)
        assert handle.read() == WEIGHTS[-10:]
        handle.seek(0)
        assert handle.read() == WEIGHTS
    assert kit.read_bytes("model/model/weights.bin", 5, 50) == WEIGHTS[5:50]


def test_one_file_object_is_safe_to_share_between_threads(kit: kitfs.ModelKit) -> None:
    """Eight threads read 4 KiB pieces from one object: every piece of the file comes out once,
    whole (no torn, lost or repeated read)."""
    pieces: list[bytes] = []
    lock = threading.Lock()
    with kit.open("model/model/weights.bin") as handle:

        def drain() -> None:
            while piece := handle.read(4096):
                with lock:
                    pieces.append(piece)

        threads = [threading.Thread(target=drain) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
    expected = [WEIGHTS[i : i + 4096] for i in range(0, len(WEIGHTS), 4096)]
    assert sorted(pieces) == sorted(expected)


def test_the_unpack_layout_shows_kit_unpack_paths(home: Path, tmp_path: Path) -> None:
    with kitfs.open_modelkit(
        REF, config=str(home), cache_dir=str(tmp_path / "c"), layout="unpack"
    ) as kit:
        assert [e.path for e in kit.files()] == [
            "Kitfile",
            "data/train.csv",
            "model/weights.bin",
        ]
        assert kit.read_bytes("model/weights.bin") == WEIGHTS


def test_errors_are_pythons_own(kit: kitfs.ModelKit, home: Path, tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        kit.stat("model/missing.bin")
    with pytest.raises(IsADirectoryError):
        kit.open("model")
    with pytest.raises(NotADirectoryError):
        kit.listdir("Kitfile")
    loops = _loop_threads()
    with pytest.raises(FileNotFoundError, match="api/tables:v2"):
        kitfs.open_modelkit("api/tables:v2", config=str(home), cache_dir=str(tmp_path / "c"))
    assert _loop_threads() == loops, "a failed open left its event loop running"
    fs = fsspec.filesystem(  # type: ignore[attr-defined]
        "kit", config=str(home), cache_dir=str(tmp_path / "c")
    )
    with pytest.raises(PermissionError, match="read-only"):
        fs.open(f"kit://{REF}/Kitfile", "wb")
    with pytest.raises(ValueError, match="names no tag or digest"):
        fs.info("kit://api/tables/Kitfile")
    assert not fs.exists(f"kit://{REF}/nothing")


def _loop_threads() -> int:
    return sum(1 for t in threading.enumerate() if t.name == "kitfs-trio")


def test_mounted_mounts_and_unmounts_on_exit(home: Path, tmp_path: Path) -> None:
    if not kitfs.fuse_available():
        pytest.skip("FUSE is not available here")
    with kitfs.mounted(REF, config=str(home), cache_dir=str(tmp_path / "c")) as path:
        assert find_mount(path) is not None
        assert (path / "model" / "model" / "weights.bin").read_bytes() == WEIGHTS
    assert find_mount(path) is None
    assert not path.exists(), "the temporary mountpoint was left behind"


def test_mounted_without_fuse_says_so(home: Path, nobody: Nobody) -> None:
    code = (
        "import kitfs\n"
        "try:\n"
        f"    with kitfs.mounted({REF!r}) as path:\n"
        "        report('mounted')\n"
        "except OSError as exc:\n"
        "    report(str(exc))\n"
    )
    message = nobody.run(code)
    assert "FUSE is not available" in message and "open_modelkit" in message


FORKED = """
import multiprocessing, pickle, sys, fsspec
fs = fsspec.filesystem("kit", config=sys.argv[1], cache_dir=sys.argv[2])
url = "kit://{ref}/model/model/weights.bin"
first = fs.cat_file(url, 0, 1000)

def in_child(blob):
    return pickle.loads(blob).cat_file(url, 0, 1000)

with multiprocessing.get_context("fork").Pool(1) as pool:
    forked = pool.apply(fs.cat_file, (url, 0, 1000))
    pickled = pool.apply(in_child, (pickle.dumps(fs),))
print(first == forked == pickled, first.hex()[:16])
"""


def test_a_forked_child_and_a_pickled_file_system_read_on_their_own_loop(
    home: Path, tmp_path: Path
) -> None:
    """Dask and multiprocessing fork workers and pickle file systems: the child starts its own
    event loop (the parent's thread does not survive the fork)."""
    done = subprocess.run(
        [sys.executable, "-c", FORKED.format(ref=REF), str(home), str(tmp_path / "cache")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["True", WEIGHTS[:8].hex()]
