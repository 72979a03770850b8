"""``kitfs csi``: start the spawner, then the gRPC server, repair what a previous run left, and
serve until SIGTERM or SIGINT.

The spawner starts first, before grpc is imported: it is a separate interpreter in any case (see
kitfs.csi.spawner), and this keeps the plugin's own process free of forks once gRPC runs.
"""

from __future__ import annotations

import logging
import signal
import threading
from dataclasses import dataclass
from pathlib import Path

from kitfs.csi.spawner import Spawner
from kitfs.csi.spec import NodeSettings
from kitfs.csi.state import StateDir
from kitfs.errors import UsageError
from kitfs.storage.cache import BlobCache

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PluginConfig:
    """Everything ``kitfs csi`` was told by its flags and environment."""

    endpoint: str
    node_id: str
    driver_name: str
    state_dir: Path
    node: NodeSettings
    repair_interval: float = 30.0


def run(config: PluginConfig) -> int:
    """Serve the CSI plugin until SIGTERM or SIGINT; the volumes' daemons keep serving after."""
    socket = socket_path(config.endpoint)
    BlobCache(config.node.cache_dir, config.node.cache_size).ensure()
    state = StateDir(config.state_dir).ensure()
    spawner = Spawner()
    try:
        return _serve(config, socket, state, spawner)
    finally:
        spawner.close()


def _serve(config: PluginConfig, socket: Path, state: StateDir, spawner: Spawner) -> int:
    from kitfs.csi.server import PluginInfo, listening
    from kitfs.csi.volumes import VolumeManager

    volumes = VolumeManager(config.node, state, spawner)
    stop = threading.Event()
    ready = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    info = PluginInfo(config.driver_name, config.node_id)
    with listening(socket, info, volumes, ready):
        ready.set()  # calls for a target wait for its repair (one lock per target)
        repaired = volumes.repair()  # volumes whose daemon died while the plugin was away
        log.info("found %d volume(s), repaired %d", sum(1 for _ in state.records()), repaired)
        while not stop.wait(config.repair_interval):
            volumes.repair()
    log.info("CSI plugin stopped; published volumes stay mounted")
    return 0


def socket_path(endpoint: str) -> Path:
    """The unix socket path of a CSI endpoint (``unix:///csi/csi.sock`` or a plain path)."""
    if endpoint.startswith("unix://"):
        path = endpoint[len("unix://") :]
    elif endpoint.startswith("unix:"):
        path = endpoint[len("unix:") :]
    elif "://" in endpoint:
        raise UsageError(f"endpoint {endpoint!r}: CSI plugins listen on unix sockets only")
    else:
        path = endpoint
    if not path.startswith("/"):
        raise UsageError(f"endpoint {endpoint!r}: give an absolute socket path (unix:///...)")
    return Path(path)
