"""Why a mount failed, said with the fix (kitfs/fs/fusecheck.py), and the directories a failed
command made are removed (kitfs/cleanup.py).

/dev/fuse and /etc/fuse.conf are stand-ins in a temporary directory: the real ones cannot be
broken for a test. A character device is made with mknod (as root) to stand for a working one.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from kitfs.cleanup import removed_on_failure
from kitfs.fs.fusecheck import explain


@pytest.fixture
def device(tmp_path: Path) -> Path:
    if os.geteuid() != 0:
        pytest.skip("mknod needs root")
    path = tmp_path / "fuse"
    os.mknod(path, 0o666 | stat.S_IFCHR, os.makedev(1, 3))  # /dev/null's numbers: harmless
    return path


def test_a_missing_dev_fuse_says_to_load_the_module(tmp_path: Path) -> None:
    message = explain(Path("/mnt/x"), "fuse_session_mount failed", dev_fuse=tmp_path / "none")
    assert message == (
        f"cannot mount at /mnt/x: {tmp_path / 'none'} does not exist: load the fuse module "
        "(modprobe fuse), or in a container pass the device (docker run --device /dev/fuse)"
    )


def test_a_dev_fuse_that_is_not_a_device(tmp_path: Path) -> None:
    fake = tmp_path / "fuse"
    fake.write_bytes(b"")
    assert "is not a character device: recreate it (mknod" in explain(
        Path("/mnt/x"), "failed", dev_fuse=fake
    )


def test_allow_other_without_user_allow_other(device: Path, tmp_path: Path) -> None:
    conf = tmp_path / "fuse.conf"
    conf.write_text("# user_allow_other\nmount_max = 1000\n")
    # root may always allow_other: the check is for other users
    assert explain(Path("/m"), "failed", allow_other=True, dev_fuse=device, fuse_conf=conf) == (
        "cannot mount at /m: failed"
    )


def test_a_working_setup_keeps_libfuses_words(device: Path) -> None:
    assert explain(Path("/m"), "fuse_session_mount failed", dev_fuse=device) == (
        "cannot mount at /m: fuse_session_mount failed"
    )


def test_a_failed_command_removes_the_directories_it_made(tmp_path: Path) -> None:
    (tmp_path / "kept").mkdir()
    target = tmp_path / "kept" / "new" / "deeper"
    with pytest.raises(RuntimeError), removed_on_failure(target):
        target.mkdir(parents=True)
        raise RuntimeError("the unpack failed")
    assert sorted(os.listdir(tmp_path / "kept")) == []
    assert (tmp_path / "kept").is_dir()


def test_directories_that_hold_something_stay(tmp_path: Path) -> None:
    target = tmp_path / "out"
    with pytest.raises(RuntimeError), removed_on_failure(target):
        target.mkdir()
        (target / "written").write_bytes(b"x")
        raise RuntimeError("failed after writing")
    assert (target / "written").read_bytes() == b"x"
    with removed_on_failure(tmp_path / "ok"):
        (tmp_path / "ok").mkdir()
    assert (tmp_path / "ok").is_dir()
