"""What a kubelet gets back for a bad volume: a gRPC status code and a message a user reads in
``kubectl describe pod``; nothing is left mounted (the kubelet is simulated: none can run here)."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest
from csi_plugin import Mode, Plugin, capability, is_mounted, status_of
from registry import RegistryServer, free_port
from reliability.helpers import Kit, make_kit

from kitfs.csi import csi_pb2

FILES = {"model/weights.bin": b"w" * 4096}
KITFILE = "manifestVersion: 1.0.0\npackage:\n  name: err\nmodel:\n  name: w\n  path: model\n"


@pytest.fixture
def plugin(shared_plugin: Plugin) -> Plugin:
    return shared_plugin


@pytest.fixture(scope="module")
def kit(registry: RegistryServer, tmp_path_factory: pytest.TempPathFactory) -> Kit:
    base = tmp_path_factory.mktemp("csi-err")
    return make_kit(
        base / "home", base / "ctx", registry.host, "kitfs-csi/errors", files=FILES, kitfile=KITFILE
    )


def refused(plugin: Plugin, target: Path, reference: str | None, **kwargs: object) -> tuple:  # type: ignore[type-arg]
    code, message = status_of(lambda: plugin.publish(target, reference, **kwargs))  # type: ignore[arg-type]
    assert not is_mounted(target)
    assert plugin.records() == {}
    assert "Traceback" not in message and "internal error" not in message
    return code, message


def test_bad_requests_are_invalid_arguments(plugin: Plugin, kit: Kit) -> None:
    target = plugin.target("pod")
    code, message = refused(plugin, target, kit.ref(), with_capability=False)
    assert (code, message) == (grpc.StatusCode.INVALID_ARGUMENT, "volume_capability is missing")
    code, message = refused(plugin, target, None)
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert message.startswith('volume attribute "reference" is missing')
    code, message = refused(plugin, target, "Registry.example.com/UPPER::case")
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert message.startswith('volume attribute "reference": ')
    code, message = refused(plugin, target, kit.ref(), attributes={"cacheDir": "/etc"})
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert message.startswith("unknown volume attribute cacheDir")
    code, message = refused(plugin, target, kit.ref(), attributes={"verifyKey": "../../etc/passwd"})
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert "keys directory" in message
    code, message = refused(plugin, target, "oci:/var/lib/secret-layout")
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    code, message = refused(plugin, target, kit.ref(), cap=capability(block=True))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert "block" in message


def test_a_writable_volume_is_refused(plugin: Plugin, kit: Kit) -> None:
    target = plugin.target("pod")
    code, message = refused(plugin, target, kit.ref(), readonly=False)
    assert code == grpc.StatusCode.FAILED_PRECONDITION
    assert "read-only" in message and "SINGLE_NODE_WRITER" in message
    code, message = refused(
        plugin, target, kit.ref(), cap=capability(Mode.MULTI_NODE_READER_ONLY, flags=("rw",))
    )
    assert code == grpc.StatusCode.FAILED_PRECONDITION
    assert "rw" in message


def test_a_missing_modelkit_is_not_found(plugin: Plugin, kit: Kit) -> None:
    target = plugin.target("pod")
    code, message = refused(plugin, target, f"{kit.registry}/{kit.repository}:no-such-tag")
    assert code == grpc.StatusCode.NOT_FOUND, message
    assert "no-such-tag" in message
    code, message = refused(plugin, target, f"{kit.registry}/kitfs-csi/no-such-repo:v1")
    assert code == grpc.StatusCode.NOT_FOUND, message


def test_an_unreachable_registry_with_nothing_cached_is_unavailable(plugin: Plugin) -> None:
    target = plugin.target("pod")
    code, message = refused(plugin, target, f"127.0.0.1:{free_port()}/kitfs-csi/away:v1")
    assert code == grpc.StatusCode.UNAVAILABLE, message
    assert "unreachable" in message


def test_unpublish_and_stats_need_their_ids(plugin: Plugin) -> None:
    node = plugin.node()
    code, message = status_of(
        lambda: node.NodeUnpublishVolume(
            csi_pb2.NodeUnpublishVolumeRequest(target_path=str(plugin.target("p")))
        )
    )
    assert (code, message) == (grpc.StatusCode.INVALID_ARGUMENT, "volume_id is missing")
    code, message = status_of(
        lambda: node.NodeGetVolumeStats(csi_pb2.NodeGetVolumeStatsRequest(volume_id="v"))
    )
    assert (code, message) == (grpc.StatusCode.INVALID_ARGUMENT, "volume_path is missing")
