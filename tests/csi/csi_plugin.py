"""The CSI plugin as the tests run it: ``kitfs csi`` as a real process on a unix socket in a
temporary directory, driven by a gRPC client generated from the same csi.proto.

No kubelet can run here, so the tests play its part: they call NodePublishVolume and
NodeUnpublishVolume with the requests a kubelet sends (target paths below a pod directory whose
parent exists, an inline volume's SINGLE_NODE_WRITER access mode with readonly set, the
``csi.storage.k8s.io/*`` attributes it adds), and read the volume from the target path as a pod would.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import grpc

from kitfs.csi import csi_pb2, csi_pb2_grpc

KITFS = str(Path(sys.executable).parent / "kitfs")
START_TIMEOUT = 30.0
Mode = csi_pb2.VolumeCapability.AccessMode


def capability(
    mode: int = Mode.SINGLE_NODE_WRITER, *, block: bool = False, flags: tuple[str, ...] = ()
) -> csi_pb2.VolumeCapability:
    """A volume capability as the kubelet sends it (an inline volume: SINGLE_NODE_WRITER)."""
    access = csi_pb2.VolumeCapability.AccessMode(mode=mode)  # type: ignore[arg-type]
    if block:
        return csi_pb2.VolumeCapability(
            block=csi_pb2.VolumeCapability.BlockVolume(), access_mode=access
        )
    mount = csi_pb2.VolumeCapability.MountVolume(mount_flags=list(flags))
    return csi_pb2.VolumeCapability(mount=mount, access_mode=access)


class Plugin:
    """One ``kitfs csi`` process and its directories; ``cleanup`` unmounts and stops everything."""

    def __init__(self, base: Path, *flags: str) -> None:
        self.base = base
        self.socket = base / "csi.sock"
        self.state = base / "state"
        self.cache = base / "cache"
        self.keys = base / "keys"
        self.pods = base / "pods"
        self.log_path = base / "plugin.log"
        self.flags = flags
        self.process: subprocess.Popen[bytes] | None = None
        self.channel: grpc.Channel | None = None
        for directory in (self.keys, self.pods):
            directory.mkdir(parents=True, exist_ok=True)

    # -- the process ----------------------------------------------------------------------------

    def start(self, env: dict[str, str] | None = None) -> Plugin:
        environ = {
            k: v for k, v in os.environ.items() if k not in ("KITFS_POLICY", "DOCKER_CONFIG")
        }
        environ["KITOPS_HOME"] = str(self.base / "home")
        environ["DOCKER_CONFIG"] = str(self.base / "no-docker")
        environ.update(env or {})
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [
                    KITFS,
                    "csi",
                    "--endpoint",
                    f"unix://{self.socket}",
                    "--node-id",
                    "node-1",
                    "--state-dir",
                    str(self.state),
                    "--cache-dir",
                    str(self.cache),
                    "--keys-dir",
                    str(self.keys),
                    "--plain-http",
                    "--repair-interval",
                    "3600",
                    *self.flags,
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=environ,
            )
        self.channel = grpc.insecure_channel(f"unix://{self.socket}")
        self._wait_ready()
        return self

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                raise AssertionError(f"kitfs csi exited:\n{self.log()}")
            with contextlib.suppress(grpc.RpcError):
                if self.identity().Probe(csi_pb2.ProbeRequest(), timeout=2).ready.value:
                    return
            time.sleep(0.1)
        raise AssertionError(f"kitfs csi was not ready within {START_TIMEOUT}s:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def kill(self) -> None:
        """kill -9 the plugin (its spawner exits with it; the volumes' daemons do not)."""
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)
        if self.channel is not None:
            self.channel.close()
            self.channel = None

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        if self.channel is not None:
            self.channel.close()
            self.channel = None

    def cleanup(self) -> None:
        """Stop the plugin, detach every mount below the base directory, stop their daemons."""
        self.stop()
        for mountpoint in mounts_below(self.base):
            subprocess.run(["fusermount3", "-u", "-z", mountpoint], capture_output=True, timeout=30)
        for pid in self.daemon_pids():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)

    # -- the client -----------------------------------------------------------------------------

    def identity(self) -> csi_pb2_grpc.IdentityStub:
        assert self.channel is not None
        return csi_pb2_grpc.IdentityStub(self.channel)

    def node(self) -> csi_pb2_grpc.NodeStub:
        assert self.channel is not None
        return csi_pb2_grpc.NodeStub(self.channel)

    def target(self, pod: str) -> Path:
        """A target path as the kubelet makes it: .../pods/UID/volumes/kubernetes.io~csi/NAME/mount,
        whose parent exists and which does not."""
        parent = self.pods / pod / "volumes" / "kubernetes.io~csi" / "model"
        parent.mkdir(parents=True, exist_ok=True)
        return parent / "mount"

    def publish(
        self,
        target: Path,
        reference: str | None,
        *,
        volume_id: str = "csi-vol-1",
        attributes: dict[str, str] | None = None,
        secrets: dict[str, str] | None = None,
        readonly: bool = True,
        cap: csi_pb2.VolumeCapability | None = None,
        with_capability: bool = True,
        inline: bool = True,
    ) -> csi_pb2.NodePublishVolumeResponse:
        """A publish as the kubelet sends it for an inline volume (``inline``: it adds the pod's
        attributes) or for a PersistentVolume (the PV's attributes only)."""
        context = {}
        if inline:
            context = {"csi.storage.k8s.io/ephemeral": "true", "csi.storage.k8s.io/pod.name": "p"}
        if reference is not None:
            context["reference"] = reference
        context.update(attributes or {})
        request = csi_pb2.NodePublishVolumeRequest(
            volume_id=volume_id,
            target_path=str(target),
            readonly=readonly,
            volume_context=context,
            secrets=secrets or {},
        )
        if with_capability:
            request.volume_capability.CopyFrom(cap or capability())
        return self.node().NodePublishVolume(request, timeout=60)

    def unpublish(self, target: Path, volume_id: str = "csi-vol-1") -> None:
        request = csi_pb2.NodeUnpublishVolumeRequest(volume_id=volume_id, target_path=str(target))
        self.node().NodeUnpublishVolume(request, timeout=60)

    def records(self) -> dict[str, dict[str, object]]:
        """The plugin's volume records by target path."""
        out = {}
        for path in (self.state / "volumes").glob("*.json"):
            record = json.loads(path.read_text())
            out[record["target"]] = record
        return out

    def daemon_pid(self, target: Path) -> int:
        return int(self.records()[str(target)]["pid"])  # type: ignore[call-overload]

    def daemon_pids(self) -> list[int]:
        return [int(r["pid"]) for r in self.records().values() if r.get("pid")]  # type: ignore[call-overload]


def mounts_below(base: Path) -> list[str]:
    """Mountpoints below ``base`` (deepest first), from /proc/self/mountinfo."""
    prefix = str(base.resolve()) + "/"
    found = []
    with open("/proc/self/mountinfo", encoding="utf-8") as handle:
        for line in handle:
            point = line.split()[4].replace("\\040", " ")
            if point.startswith(prefix):
                found.append(point)
    return sorted(found, key=len, reverse=True)


def is_mounted(path: Path) -> bool:
    return str(path) in mounts_below(path.parent)


def status_of(call: object) -> tuple[grpc.StatusCode, str]:
    """The status code and message a failed call (a callable) answered with."""
    try:
        call()  # type: ignore[operator]
    except grpc.RpcError as exc:
        return exc.code(), exc.details()  # type: ignore[attr-defined]
    raise AssertionError("the call succeeded")


def read_tree(root: Path) -> dict[str, bytes]:
    """Every regular file below ``root`` with its bytes (relative slash paths)."""
    out = {}
    for dirpath, _, filenames in os.walk(root):
        for name in filenames:
            path = Path(dirpath, name)
            out[path.relative_to(root).as_posix()] = path.read_bytes()
    return out
