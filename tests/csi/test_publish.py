"""Publish, read, unpublish through a real ``kitfs csi`` process, as a kubelet would drive it (the
kubelet is simulated by the gRPC client generated from kitfs/csi/csi.proto: none can run here)."""

from __future__ import annotations

import concurrent.futures
import os
from pathlib import Path

import grpc
import pytest
from csi_plugin import Mode, Plugin, capability, is_mounted, status_of
from registry import RegistryServer
from reliability.helpers import Kit, make_kit

from kitfs.csi import csi_pb2

FILES = {
    "model/weights.bin": os.urandom(300_000),
    "model/config.json": b'{"layers": 2}\n',
    "data/train.csv": b"a,b\n1,2\n",
}
KITFILE = """manifestVersion: 1.0.0
package:
  name: csi
model:
  name: weights
  path: model
datasets:
  - name: train
    path: data
"""


@pytest.fixture
def plugin(shared_plugin: Plugin) -> Plugin:
    return shared_plugin


@pytest.fixture(scope="module")
def kit(registry: RegistryServer, tmp_path_factory: pytest.TempPathFactory) -> Kit:
    base = tmp_path_factory.mktemp("csi-kit")
    return make_kit(
        base / "home",
        base / "ctx",
        registry.host,
        "kitfs-csi/publish",
        files=FILES,
        kitfile=KITFILE,
    )


def served(target: Path) -> dict[str, bytes]:
    """The ModelKit's files as a pod sees them in the volume (sections layout)."""
    return {
        "model/weights.bin": (target / "model" / "model" / "weights.bin").read_bytes(),
        "model/config.json": (target / "model" / "model" / "config.json").read_bytes(),
        "data/train.csv": (target / "datasets" / "data" / "train.csv").read_bytes(),
    }


def test_identity_and_node_information(plugin: Plugin) -> None:
    info = plugin.identity().GetPluginInfo(csi_pb2.GetPluginInfoRequest())
    assert info.name == "kitfs.kitops.dev"
    assert info.vendor_version
    capabilities = plugin.identity().GetPluginCapabilities(csi_pb2.GetPluginCapabilitiesRequest())
    assert list(capabilities.capabilities) == []  # a node-only plugin: no controller service
    assert plugin.identity().Probe(csi_pb2.ProbeRequest()).ready.value is True
    node = plugin.node().NodeGetCapabilities(csi_pb2.NodeGetCapabilitiesRequest())
    rpc = csi_pb2.NodeServiceCapability.RPC
    assert {c.rpc.type for c in node.capabilities} == {rpc.GET_VOLUME_STATS, rpc.VOLUME_CONDITION}
    assert plugin.node().NodeGetInfo(csi_pb2.NodeGetInfoRequest()).node_id == "node-1"


def test_publish_serves_the_modelkit_and_unpublish_removes_the_target(
    plugin: Plugin, kit: Kit
) -> None:
    target = plugin.target("pod-a")
    plugin.publish(target, kit.ref())
    assert served(target) == FILES
    assert "name: csi" in (target / "Kitfile").read_text()
    stats = plugin.node().NodeGetVolumeStats(
        csi_pb2.NodeGetVolumeStatsRequest(volume_id="csi-vol-1", volume_path=str(target))
    )
    assert stats.volume_condition.abnormal is False
    assert {u.unit for u in stats.usage} == {csi_pb2.VolumeUsage.BYTES, csi_pb2.VolumeUsage.INODES}

    pid = plugin.daemon_pid(target)
    plugin.publish(target, kit.ref())  # the same target twice: OK, the same daemon
    assert plugin.daemon_pid(target) == pid
    code, message = status_of(
        lambda: plugin.publish(target, kit.ref(), attributes={"layout": "unpack"})
    )
    assert code == grpc.StatusCode.ALREADY_EXISTS, message

    plugin.unpublish(target)
    assert not target.exists()
    assert not is_mounted(target)
    assert plugin.records() == {}
    plugin.unpublish(target)  # gone already: OK
    plugin.unpublish(plugin.target("never-published"))  # never mounted: OK


def test_unpublish_succeeds_while_a_reader_holds_a_file_open(plugin: Plugin, kit: Kit) -> None:
    target = plugin.target("pod-open")
    plugin.publish(target, kit.ref(), attributes={"layout": "unpack"})
    with (target / "model" / "weights.bin").open("rb") as held:
        head = held.read(1000)
        plugin.unpublish(target)
        assert not target.exists()
        assert head + held.read() == FILES["model/weights.bin"]  # still served to the holder


def test_a_static_persistent_volume_read_only_many(plugin: Plugin, kit: Kit) -> None:
    """A PV's publish: its volumeHandle as volume_id, ReadOnlyMany as MULTI_NODE_READER_ONLY (no
    readonly flag needed), its attributes only."""
    target = plugin.target("pod-rox")
    plugin.publish(
        target,
        kit.ref(),
        volume_id="llama-3-1",
        readonly=False,
        cap=capability(Mode.MULTI_NODE_READER_ONLY),
        inline=False,
        attributes={"layout": "unpack"},
    )
    assert (target / "model" / "weights.bin").read_bytes() == FILES["model/weights.bin"]
    assert (target / "data" / "train.csv").read_bytes() == FILES["data/train.csv"]
    plugin.unpublish(target, "llama-3-1")
    code, _ = status_of(
        lambda: plugin.node().NodeGetVolumeStats(
            csi_pb2.NodeGetVolumeStatsRequest(volume_id="llama-3-1", volume_path=str(target))
        )
    )
    assert code == grpc.StatusCode.NOT_FOUND


def test_volumes_published_at_once_are_each_served(plugin: Plugin, kit: Kit) -> None:
    targets = [plugin.target(f"pod-{i}") for i in range(4)]
    with concurrent.futures.ThreadPoolExecutor(len(targets)) as pool:
        calls = [
            pool.submit(plugin.publish, t, kit.ref(), volume_id=f"vol-{i}")
            for i, t in enumerate(targets)
        ]
        for call in calls:
            call.result()
    assert len({plugin.daemon_pid(t) for t in targets}) == len(targets)
    for target in targets:
        assert served(target) == FILES
    for i, target in enumerate(targets):
        plugin.unpublish(target, f"vol-{i}")
    assert plugin.records() == {}
