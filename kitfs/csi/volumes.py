"""Publishing and unpublishing volumes on this node: the bookkeeping a kubelet relies on.

Publish and unpublish are idempotent per target path (a per-target lock serialises calls for one
target); a target whose daemon died (the mount answers ENOTCONN) is unmounted lazily and mounted
again by the next publish, cleaned up by the next unpublish, and repaired by :meth:`repair` when the
plugin starts and periodically afterwards. Unpublish detaches lazily, so it succeeds while a reader
still has a file open; that reader keeps being served until it closes the file.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

from kitfs.csi.errors import CsiError, as_csi_error
from kitfs.csi.secrets import docker_auths, remove_docker_config, write_docker_config
from kitfs.csi.spawner import MountRequest, Spawner
from kitfs.csi.spec import NodeSettings, PublishRequest, VolumeSpec, check_request
from kitfs.csi.state import StateDir, VolumeRecord
from kitfs.errors import KitfsError
from kitfs.fs.mount import FSTYPE
from kitfs.fs.mounttable import MountInfo, find_mount
from kitfs.fs.options import build_options

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class VolumeStats:
    """What NodeGetVolumeStats reports: byte and inode usage, or why the volume is abnormal."""

    bytes_total: int = 0
    bytes_used: int = 0
    bytes_available: int = 0
    inodes_total: int = 0
    inodes_used: int = 0
    inodes_available: int = 0
    abnormal: bool = False
    message: str = "the volume is mounted and served"


class VolumeManager:
    """The node's volumes: one kitfs mount daemon per published target."""

    def __init__(self, node: NodeSettings, state: StateDir, spawner: Spawner) -> None:
        self.node = node
        self.state = state.ensure()
        self.spawner = spawner
        self._locks: dict[str, threading.Lock] = {}
        self._locks_guard = threading.Lock()

    @contextlib.contextmanager
    def _locked(self, target: Path) -> Iterator[None]:
        with self._locks_guard:
            lock = self._locks.setdefault(str(target), threading.Lock())
        with lock:
            yield

    # -- publish ------------------------------------------------------------------------------

    def publish(self, request: PublishRequest) -> None:
        spec = check_request(request, self.node)
        auths = docker_auths(request.secrets)
        with self._locked(spec.target):
            record = self.state.load(spec.target)
            mounted = _mount_at(spec.target)
            if mounted is not None and record is not None and _alive(spec.target):
                if record.volume_id != spec.volume_id or record.fingerprint != spec.fingerprint:
                    raise CsiError(
                        "ALREADY_EXISTS",
                        f"{spec.target} is already published with other arguments "
                        f"(volume {record.volume_id})",
                    )
                return
            if mounted is not None:
                self._detach(spec.target, mounted)
            self._mount(spec, auths)

    def _mount(self, spec: VolumeSpec, auths: dict[str, dict[str, str]] | None) -> None:
        try:
            build_options(spec.reference, spec.target, dict(spec.settings))  # checked here first
        except KitfsError as exc:
            raise as_csi_error(exc) from None
        _make_target(spec.target)
        secret_dir = self.state.secret_dir(spec.target)
        remove_docker_config(secret_dir)  # a previous publish's credentials, if any
        docker_config = None
        if auths is not None:
            docker_config = str(write_docker_config(secret_dir, auths))
        record = VolumeRecord(
            volume_id=spec.volume_id,
            target=str(spec.target),
            reference=spec.reference,
            fingerprint=spec.fingerprint,
            settings=dict(spec.settings),
            docker_config=docker_config,
        )
        try:
            pid = self._spawn(record)
        except BaseException:
            remove_docker_config(secret_dir)
            self.state.remove(spec.target)  # a record of a repaired volume that failed again
            with contextlib.suppress(OSError):
                spec.target.rmdir()  # made above; nothing is mounted there
            raise
        log.info("published volume %s at %s (daemon %d)", spec.volume_id, spec.target, pid)

    def _spawn(self, record: VolumeRecord) -> int:
        request = MountRequest(
            record.reference,
            record.target,
            record.settings,
            record.docker_config,
            grants=str(self.state.grants),
        )
        pid = self.spawner.mount(request)
        self.state.save(replace(record, pid=pid))
        return pid

    # -- unpublish ----------------------------------------------------------------------------

    def unpublish(self, volume_id: str, target_path: str) -> None:
        if not volume_id:
            raise CsiError("INVALID_ARGUMENT", "volume_id is missing")
        if not target_path:
            raise CsiError("INVALID_ARGUMENT", "target_path is missing")
        target = Path(os.path.normpath(target_path))
        with self._locked(target):
            mounted = _mount_at(target)
            if mounted is not None:
                self._detach(target, mounted)
            _remove_target(target)
            record = self.state.load(target)
            if record is not None and record.docker_config:
                remove_docker_config(Path(record.docker_config))
            self.state.remove(target)
        log.info("unpublished volume %s from %s", volume_id, target)

    def _detach(self, target: Path, mounted: MountInfo) -> None:
        """Unmount lazily: now for new lookups, when the last open file closes for the rest."""
        if mounted.fstype != FSTYPE:
            raise CsiError(
                "FAILED_PRECONDITION",
                f"{target} holds a {mounted.fstype} mount that kitfs did not make",
            )
        from kitfs.fs.mount import _fusermount

        result = _fusermount("-u", "-z", str(target))
        if result.returncode != 0 and _mount_at(target) is not None:
            detail = result.stderr.strip().splitlines()[-1] if result.stderr.strip() else ""
            raise CsiError("INTERNAL", f"cannot unmount {target}: {detail or 'fusermount3 failed'}")

    # -- stats and repair ---------------------------------------------------------------------

    def stats(self, volume_id: str, volume_path: str) -> VolumeStats:
        if not volume_id:
            raise CsiError("INVALID_ARGUMENT", "volume_id is missing")
        if not volume_path:
            raise CsiError("INVALID_ARGUMENT", "volume_path is missing")
        target = Path(os.path.normpath(volume_path))
        record = self.state.load(target)
        if record is None or record.volume_id != volume_id or _mount_at(target) is None:
            raise CsiError("NOT_FOUND", f"volume {volume_id} is not published at {target}")
        try:
            st = os.statvfs(target)
        except OSError as exc:
            return VolumeStats(
                abnormal=True,
                message=f"the volume's mount daemon is gone ({exc.strerror}): the next publish "
                "or the plugin's repair mounts it again",
            )
        total, free = st.f_blocks * st.f_frsize, st.f_bfree * st.f_frsize
        return VolumeStats(
            bytes_total=total,
            bytes_used=total - free,
            bytes_available=st.f_bavail * st.f_frsize,
            inodes_total=st.f_files,
            inodes_used=st.f_files - st.f_ffree,
            inodes_available=st.f_favail,
        )

    def repair(self) -> int:
        """Mount again every recorded volume whose daemon is gone (after a plugin restart, or a
        daemon killed); forget records whose target is gone. Returns how many were repaired."""
        repaired = 0
        for record in list(self.state.records()):
            target = Path(record.target)
            with self._locked(target):
                current = self.state.load(target)
                if current is None or current.fingerprint != record.fingerprint:
                    continue
                mounted = _mount_at(target)
                if mounted is not None and _alive(target):
                    continue
                if not os.path.isdir(target) and mounted is None:
                    log.info("forgetting volume %s: %s is gone", record.volume_id, target)
                    if record.docker_config:
                        remove_docker_config(Path(record.docker_config))
                    self.state.remove(target)
                    continue
                try:
                    if mounted is not None:
                        self._detach(target, mounted)
                    pid = self._spawn(current)
                except (CsiError, KitfsError) as exc:
                    log.warning("cannot repair volume %s at %s: %s", record.volume_id, target, exc)
                    continue
                log.info("repaired volume %s at %s (daemon %d)", record.volume_id, target, pid)
                repaired += 1
        return repaired


def _mount_at(target: Path) -> MountInfo | None:
    return find_mount(target)


def _alive(target: Path) -> bool:
    """Whether the mount's daemon answers (``statfs`` always reaches it; a dead one: ENOTCONN)."""
    try:
        os.statvfs(target)
    except OSError as exc:
        return exc.errno != errno.ENOTCONN
    return True


def _make_target(target: Path) -> None:
    try:
        target.mkdir(mode=0o750, exist_ok=True)
    except FileNotFoundError:
        raise CsiError(
            "INVALID_ARGUMENT", f"the parent directory of target_path {target} does not exist"
        ) from None
    except OSError as exc:
        raise CsiError("INTERNAL", f"cannot create {target}: {exc.strerror}") from None
    with os.scandir(target) as entries:
        if any(True for _ in entries):
            raise CsiError("FAILED_PRECONDITION", f"target_path {target} is not empty")


def _remove_target(target: Path) -> None:
    try:
        os.rmdir(target)
    except FileNotFoundError:
        return
    except OSError as exc:
        raise CsiError("INTERNAL", f"cannot remove {target}: {exc.strerror}") from None
