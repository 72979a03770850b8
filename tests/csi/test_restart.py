"""What survives: a plugin killed with -9 and restarted, a volume's daemon killed, the registry
gone with a warm cache; and two volumes of one ModelKit sharing the node's cache (counted in the
registry's access log). The kubelet is simulated by the gRPC client: none can run here."""

from __future__ import annotations

import base64
import json
import os
import signal
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import grpc
import pullthrough
import pytest
from csi_plugin import Plugin, is_mounted, status_of
from helpers import payload
from registry import RegistryServer
from reliability.helpers import Kit, make_kit

from kitfs.csi import csi_pb2

FILES = {"model/weights.bin": payload(400_000, "csi-restart"), "docs/README.md": b"# restart\n"}
KITFILE = """manifestVersion: 1.0.0
package:
  name: restart
model:
  name: w
  path: model
docs:
  - path: docs
"""


@pytest.fixture
def origin() -> Iterator[RegistryServer]:
    """A registry of this test's own, with its access log on (and stoppable)."""
    server = pullthrough.start(access_log=True)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def kit(origin: RegistryServer, tmp_path: Path) -> Kit:
    repository = f"kitfs-csi/{uuid.uuid4().hex[:8]}"
    return make_kit(
        tmp_path / "home", tmp_path / "ctx", origin.host, repository, files=FILES, kitfile=KITFILE
    )


def served(target: Path) -> dict[str, bytes]:
    return {
        "model/weights.bin": (target / "model" / "model" / "weights.bin").read_bytes(),
        "docs/README.md": (target / "docs" / "docs" / "README.md").read_bytes(),
    }


def wait_gone(pid: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.05)
    raise AssertionError(f"process {pid} did not exit")


def spawner_of(plugin: Plugin) -> int:
    """The plugin's one child process: its spawner."""
    assert plugin.process is not None
    pid = plugin.process.pid
    children = set()
    for task in Path(f"/proc/{pid}/task").iterdir():
        children.update((task / "children").read_text().split())
    assert len(children) == 1, children
    return int(children.pop())


def blobs_of(kit: Kit) -> list[str]:
    manifest = kit.manifest()
    return [manifest["config"]["digest"], *(d["digest"] for d in manifest["layers"])]


def test_two_volumes_of_one_modelkit_share_the_nodes_cache(
    plugin: Plugin, kit: Kit, origin: RegistryServer
) -> None:
    first, second = plugin.target("pod-1"), plugin.target("pod-2")
    plugin.publish(first, kit.ref(), volume_id="vol-1")
    assert served(first) == FILES
    plugin.publish(second, kit.ref(), volume_id="vol-2")
    assert served(second) == FILES
    assert plugin.daemon_pid(first) != plugin.daemon_pid(second)  # one daemon per volume
    deadline = time.monotonic() + 5  # a log line is written just after its response
    while time.monotonic() < deadline:
        if all(pullthrough.blob_bodies(origin)[d] for d in blobs_of(kit)):
            break
        time.sleep(0.05)
    time.sleep(0.3)  # and any second fetch would have landed by now
    bodies = pullthrough.blob_bodies(origin)
    assert {d: bodies[d] for d in blobs_of(kit)} == dict.fromkeys(blobs_of(kit), 1)


def test_kill_9_of_the_plugin_and_of_a_daemon_then_restart(
    plugin_factory,  # type: ignore[no-untyped-def]
    kit: Kit,
) -> None:
    plugin: Plugin = plugin_factory()
    kept, killed = plugin.target("pod-kept"), plugin.target("pod-killed")
    plugin.publish(kept, kit.ref(), volume_id="vol-kept")
    plugin.publish(killed, kit.ref(), volume_id="vol-killed")
    kept_pid, killed_pid = plugin.daemon_pid(kept), plugin.daemon_pid(killed)

    plugin.kill()
    os.kill(killed_pid, signal.SIGKILL)
    wait_gone(killed_pid)
    assert served(kept) == FILES  # the daemons outlive the plugin
    with pytest.raises(OSError):
        os.listdir(killed)  # ENOTCONN: the daemon is gone

    plugin.start()  # the same state directory: it finds both volumes, repairs the dead one
    assert plugin.daemon_pid(kept) == kept_pid
    deadline = time.monotonic() + 30  # the repair runs just after the plugin reports ready
    while plugin.daemon_pid(killed) == killed_pid and time.monotonic() < deadline:
        time.sleep(0.05)
    assert plugin.daemon_pid(killed) != killed_pid
    assert served(killed) == FILES
    plugin.publish(kept, kit.ref(), volume_id="vol-kept")  # idempotent after the restart
    assert plugin.daemon_pid(kept) == kept_pid

    os.kill(plugin.daemon_pid(kept), signal.SIGKILL)  # a daemon dies while the plugin runs:
    wait_gone(kept_pid)
    stats = plugin.node().NodeGetVolumeStats(
        csi_pb2.NodeGetVolumeStatsRequest(volume_id="vol-kept", volume_path=str(kept))
    )
    assert stats.volume_condition.abnormal is True
    assert "daemon is gone" in stats.volume_condition.message
    os.kill(spawner_of(plugin), signal.SIGKILL)  # and the spawner too: it is started again
    plugin.publish(kept, kit.ref(), volume_id="vol-kept")  # the next publish repairs it
    assert served(kept) == FILES
    assert plugin.daemon_pid(kept) != kept_pid

    plugin.stop()  # SIGTERM: the plugin exits cleanly, its volumes stay served
    assert plugin.process is not None and plugin.process.returncode == 0
    assert served(kept) == FILES and served(killed) == FILES
    plugin.start()

    repaired = plugin.daemon_pid(killed)
    os.kill(repaired, signal.SIGKILL)
    wait_gone(repaired)
    plugin.unpublish(killed, "vol-killed")  # and the next unpublish cleans it up
    assert not killed.exists()
    plugin.unpublish(kept, "vol-kept")
    assert not kept.exists()
    assert plugin.records() == {}


def test_the_registry_down_with_a_warm_cache(
    plugin: Plugin, kit: Kit, origin: RegistryServer
) -> None:
    first = plugin.target("pod-warm")
    plugin.publish(first, kit.ref(), volume_id="vol-1")
    assert served(first) == FILES
    origin.stop()
    second = plugin.target("pod-offline")
    plugin.publish(second, kit.ref(), volume_id="vol-2")  # the tag's last digest, from the cache
    assert served(second) == FILES
    # Credentials that the registry never granted this repository get nothing from the cache.
    auth = base64.b64encode(b"mallory:guess").decode()
    secret = json.dumps({"auths": {origin.host: {"auth": auth}}})
    third = plugin.target("pod-other-tenant")
    code, message = status_of(
        lambda: plugin.publish(
            third, kit.ref(), volume_id="vol-3", secrets={".dockerconfigjson": secret}
        )
    )
    assert code == grpc.StatusCode.UNAVAILABLE, message
    assert "never granted" in message
    assert not is_mounted(third)
