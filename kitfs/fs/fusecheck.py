"""Why a FUSE mount failed, and what to do about it.

libfuse says only "fuse_session_mount failed" (and writes its own reason to the daemon's log);
the causes a user can fix are few and can be checked: /dev/fuse missing or not usable by this
user, fusermount3 (the fuse3 package) missing, ``-o allow_other`` without ``user_allow_other`` in
/etc/fuse.conf. :func:`explain` names the first that holds, with its fix.
"""

from __future__ import annotations

import os
import shutil
import stat
from pathlib import Path

DEV_FUSE = Path("/dev/fuse")
FUSE_CONF = Path("/etc/fuse.conf")
FUSERMOUNT = "fusermount3"


def explain(
    mountpoint: Path,
    detail: str,
    *,
    allow_other: bool = False,
    dev_fuse: Path = DEV_FUSE,
    fuse_conf: Path = FUSE_CONF,
) -> str:
    """One line: the mount failed at ``mountpoint`` (libfuse said ``detail``), why, and the fix."""
    return f"cannot mount at {mountpoint}: {cause(allow_other, dev_fuse, fuse_conf) or detail}"


def cause(allow_other: bool, dev_fuse: Path = DEV_FUSE, fuse_conf: Path = FUSE_CONF) -> str | None:
    """The cause of a failed mount that this machine shows, with its fix; None if none shows."""
    try:
        st = os.stat(dev_fuse)
    except FileNotFoundError:
        return (
            f"{dev_fuse} does not exist: load the fuse module (modprobe fuse), or in a "
            "container pass the device (docker run --device /dev/fuse)"
        )
    except OSError as exc:
        return f"cannot use {dev_fuse}: {exc.strerror}"
    if not stat.S_ISCHR(st.st_mode):
        return f"{dev_fuse} is not a character device: recreate it (mknod {dev_fuse} c 10 229)"
    if not os.access(dev_fuse, os.R_OK | os.W_OK):
        return (
            f"permission denied on {dev_fuse} (mode {stat.S_IMODE(st.st_mode):o}): let this user "
            f"read and write it (chmod 0666 {dev_fuse}, or add the user to its group)"
        )
    if os.geteuid() != 0 and shutil.which(FUSERMOUNT) is None:
        return f"{FUSERMOUNT} is not installed: install the fuse3 package"
    if allow_other and os.geteuid() != 0 and not _user_allow_other(fuse_conf):
        return (
            f"-o allow_other needs 'user_allow_other' in {fuse_conf} for users other than "
            "root: add that line, or mount without allow_other"
        )
    return None


def _user_allow_other(fuse_conf: Path) -> bool:
    try:
        lines = fuse_conf.read_text(errors="replace").splitlines()
    except OSError:
        return False
    return any(line.split("#", 1)[0].strip() == "user_allow_other" for line in lines)
