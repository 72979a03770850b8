"""The protobuf modules committed beside kitfs/csi/csi.proto are what grpcio-tools generates from
it, and the messages keep the CSI spec v1's package, service names and field numbers (copied here
from the spec's csi.proto, container-storage-interface/spec), so a kubelet's bytes decode."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from kitfs.csi import csi_pb2

ROOT = Path(__file__).resolve().parents[2]
GENERATED = ("csi_pb2.py", "csi_pb2.pyi", "csi_pb2_grpc.py")

# (message, field, number, protobuf type name) as in the spec's csi.proto v1.
SPEC_FIELDS = [
    ("GetPluginInfoResponse", "name", 1, "string"),
    ("GetPluginInfoResponse", "vendor_version", 2, "string"),
    ("GetPluginInfoResponse", "manifest", 3, "message"),
    ("GetPluginCapabilitiesResponse", "capabilities", 1, "message"),
    ("ProbeResponse", "ready", 1, "message"),
    ("NodePublishVolumeRequest", "volume_id", 1, "string"),
    ("NodePublishVolumeRequest", "publish_context", 2, "message"),
    ("NodePublishVolumeRequest", "staging_target_path", 3, "string"),
    ("NodePublishVolumeRequest", "target_path", 4, "string"),
    ("NodePublishVolumeRequest", "volume_capability", 5, "message"),
    ("NodePublishVolumeRequest", "readonly", 6, "bool"),
    ("NodePublishVolumeRequest", "secrets", 7, "message"),
    ("NodePublishVolumeRequest", "volume_context", 8, "message"),
    ("NodeUnpublishVolumeRequest", "volume_id", 1, "string"),
    ("NodeUnpublishVolumeRequest", "target_path", 2, "string"),
    ("NodeGetVolumeStatsRequest", "volume_id", 1, "string"),
    ("NodeGetVolumeStatsRequest", "volume_path", 2, "string"),
    ("NodeGetVolumeStatsRequest", "staging_target_path", 3, "string"),
    ("NodeGetVolumeStatsResponse", "usage", 1, "message"),
    ("NodeGetVolumeStatsResponse", "volume_condition", 2, "message"),
    ("VolumeUsage", "available", 1, "int64"),
    ("VolumeUsage", "total", 2, "int64"),
    ("VolumeUsage", "used", 3, "int64"),
    ("VolumeUsage", "unit", 4, "enum"),
    ("VolumeCondition", "abnormal", 1, "bool"),
    ("VolumeCondition", "message", 2, "string"),
    ("VolumeCapability", "block", 1, "message"),
    ("VolumeCapability", "mount", 2, "message"),
    ("VolumeCapability", "access_mode", 3, "message"),
    ("NodeGetCapabilitiesResponse", "capabilities", 1, "message"),
    ("NodeGetInfoResponse", "node_id", 1, "string"),
    ("NodeGetInfoResponse", "max_volumes_per_node", 2, "int64"),
    ("NodeGetInfoResponse", "accessible_topology", 3, "message"),
]
TYPE_NAMES = {9: "string", 8: "bool", 3: "int64", 11: "message", 14: "enum"}


def test_the_committed_modules_are_generated_from_the_proto(tmp_path: Path) -> None:
    pytest.importorskip("grpc_tools", reason="grpcio-tools is in the test extra")
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "grpc_tools.protoc",
            f"-I{ROOT}",
            f"--python_out={tmp_path}",
            f"--pyi_out={tmp_path}",
            f"--grpc_python_out={tmp_path}",
            str(ROOT / "kitfs" / "csi" / "csi.proto"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    for name in GENERATED:
        fresh = (tmp_path / "kitfs" / "csi" / name).read_text()
        committed = (ROOT / "kitfs" / "csi" / name).read_text()
        assert fresh == committed, f"{name} is stale: regenerate it (see csi.proto's header)"


def test_messages_keep_the_specs_package_services_and_field_numbers() -> None:
    assert csi_pb2.DESCRIPTOR.package == "csi.v1"
    services = csi_pb2.DESCRIPTOR.services_by_name
    assert [m.name for m in services["Identity"].methods] == [
        "GetPluginInfo",
        "GetPluginCapabilities",
        "Probe",
    ]
    assert {m.name for m in services["Node"].methods} == {
        "NodePublishVolume",
        "NodeUnpublishVolume",
        "NodeGetVolumeStats",
        "NodeGetCapabilities",
        "NodeGetInfo",
    }
    for message, field, number, type_name in SPEC_FIELDS:
        descriptor = csi_pb2.DESCRIPTOR.message_types_by_name[message].fields_by_name[field]
        assert (descriptor.number, TYPE_NAMES[descriptor.type]) == (number, type_name), message
    modes = csi_pb2.VolumeCapability.AccessMode.Mode
    assert [modes.Value(n) for n in ("SINGLE_NODE_WRITER", "MULTI_NODE_READER_ONLY")] == [1, 3]


def test_a_request_as_a_kubelet_encodes_it_decodes() -> None:
    """Bytes of a NodePublishVolumeRequest written field by field (protobuf wire format) parse."""

    def field(number: int, payload: bytes) -> bytes:
        return bytes([number << 3 | 2, len(payload)]) + payload

    entry = field(1, b"reference") + field(2, b"r.example/a/b:1")
    wire = field(1, b"vol") + field(4, b"/t") + bytes([6 << 3, 1]) + field(8, entry)
    request = csi_pb2.NodePublishVolumeRequest.FromString(wire)
    assert (request.volume_id, request.target_path, request.readonly) == ("vol", "/t", True)
    assert dict(request.volume_context) == {"reference": "r.example/a/b:1"}
