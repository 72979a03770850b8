"""The gRPC side of the plugin: the CSI Identity and Node services on a unix socket.

Handlers translate between protobuf messages and :mod:`kitfs.csi.volumes`, and map errors to gRPC
status codes in one place (:func:`_answer`). Requests are logged by method, volume id and target,
never whole: a NodePublishVolumeRequest carries the volume's registry credentials.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections.abc import Callable, Iterator
from concurrent import futures
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import grpc
from google.protobuf import wrappers_pb2

from kitfs import __version__
from kitfs.csi import csi_pb2, csi_pb2_grpc
from kitfs.csi.errors import CsiError, as_csi_error
from kitfs.csi.spec import Capability, PublishRequest
from kitfs.csi.volumes import VolumeManager
from kitfs.errors import KitfsError

log = logging.getLogger(__name__)

T = TypeVar("T")
MAX_WORKERS = 8


@dataclass(frozen=True)
class PluginInfo:
    driver_name: str
    node_id: str


class IdentityService(csi_pb2_grpc.IdentityServicer):
    """GetPluginInfo, GetPluginCapabilities (a node-only plugin: none) and Probe."""

    def __init__(self, info: PluginInfo, ready: threading.Event) -> None:
        self.info = info
        self.ready = ready

    def GetPluginInfo(self, request: Any, context: grpc.ServicerContext) -> Any:
        return csi_pb2.GetPluginInfoResponse(name=self.info.driver_name, vendor_version=__version__)

    def GetPluginCapabilities(self, request: Any, context: grpc.ServicerContext) -> Any:
        return csi_pb2.GetPluginCapabilitiesResponse(capabilities=[])

    def Probe(self, request: Any, context: grpc.ServicerContext) -> Any:
        return csi_pb2.ProbeResponse(ready=wrappers_pb2.BoolValue(value=self.ready.is_set()))


class NodeService(csi_pb2_grpc.NodeServicer):
    """Publish, unpublish, stats, capabilities and info of this node's kitfs volumes."""

    def __init__(self, info: PluginInfo, volumes: VolumeManager) -> None:
        self.info = info
        self.volumes = volumes

    def NodePublishVolume(self, request: Any, context: grpc.ServicerContext) -> Any:
        log.info("NodePublishVolume %s at %s", request.volume_id, request.target_path)
        publish = _publish_request(request)
        _answer(context, lambda: self.volumes.publish(publish))
        return csi_pb2.NodePublishVolumeResponse()

    def NodeUnpublishVolume(self, request: Any, context: grpc.ServicerContext) -> Any:
        log.info("NodeUnpublishVolume %s at %s", request.volume_id, request.target_path)
        _answer(context, lambda: self.volumes.unpublish(request.volume_id, request.target_path))
        return csi_pb2.NodeUnpublishVolumeResponse()

    def NodeGetVolumeStats(self, request: Any, context: grpc.ServicerContext) -> Any:
        stats = _answer(context, lambda: self.volumes.stats(request.volume_id, request.volume_path))
        usage = csi_pb2.VolumeUsage
        return csi_pb2.NodeGetVolumeStatsResponse(
            usage=[
                usage(
                    unit=usage.BYTES,
                    total=stats.bytes_total,
                    used=stats.bytes_used,
                    available=stats.bytes_available,
                ),
                usage(
                    unit=usage.INODES,
                    total=stats.inodes_total,
                    used=stats.inodes_used,
                    available=stats.inodes_available,
                ),
            ],
            volume_condition=csi_pb2.VolumeCondition(
                abnormal=stats.abnormal, message=stats.message
            ),
        )

    def NodeGetCapabilities(self, request: Any, context: grpc.ServicerContext) -> Any:
        rpc = csi_pb2.NodeServiceCapability.RPC
        return csi_pb2.NodeGetCapabilitiesResponse(
            capabilities=[
                csi_pb2.NodeServiceCapability(rpc=rpc(type=kind))
                for kind in (rpc.GET_VOLUME_STATS, rpc.VOLUME_CONDITION)
            ]
        )

    def NodeGetInfo(self, request: Any, context: grpc.ServicerContext) -> Any:
        return csi_pb2.NodeGetInfoResponse(node_id=self.info.node_id)


def _publish_request(request: Any) -> PublishRequest:
    capability = None
    if request.HasField("volume_capability"):
        cap = request.volume_capability
        access_type = cap.WhichOneof("access_type") or ""
        flags = tuple(cap.mount.mount_flags) if access_type == "mount" else ()
        capability = Capability(access_type, cap.access_mode.mode, flags)
    return PublishRequest(
        volume_id=request.volume_id,
        target_path=request.target_path,
        capability=capability,
        readonly=request.readonly,
        attributes=dict(request.volume_context),
        secrets=dict(request.secrets),
        staging_target_path=request.staging_target_path,
    )


def _answer(context: grpc.ServicerContext, call: Callable[[], T]) -> T:
    """Run ``call``; a failure ends the RPC with its status code and one-line message."""
    try:
        return call()
    except KitfsError as exc:
        error = as_csi_error(exc)
        log.warning("%s: %s", error.code, error)
        context.abort(grpc.StatusCode[error.code], str(error))
    except Exception as exc:
        log.exception("a CSI call failed")
        context.abort(grpc.StatusCode.INTERNAL, f"internal error: {type(exc).__name__}: {exc}")
    raise AssertionError("unreachable")  # context.abort raises


@contextlib.contextmanager
def listening(
    socket: Path, info: PluginInfo, volumes: VolumeManager, ready: threading.Event
) -> Iterator[grpc.Server]:
    """A started gRPC server on the unix socket ``socket``, stopped on leaving."""
    path = socket
    path.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)  # a socket left by a previous run
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=MAX_WORKERS))
    csi_pb2_grpc.add_IdentityServicer_to_server(IdentityService(info, ready), server)
    csi_pb2_grpc.add_NodeServicer_to_server(NodeService(info, volumes), server)
    if server.add_insecure_port(f"unix://{path}") == 0:
        raise CsiError("INTERNAL", f"cannot listen on {path}")
    server.start()
    log.info("CSI plugin %s serving on %s (node %s)", info.driver_name, path, info.node_id)
    try:
        yield server
    finally:
        server.stop(grace=5).wait()
