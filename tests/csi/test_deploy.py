"""The manifests in deploy/kubernetes/, parsed and checked field by field (no cluster runs here, so
this is what can be checked: the objects, and that the plugin's arguments parse as `kitfs csi`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from kitfs.cli import build_parser
from kitfs.reference import parse

DEPLOY = Path(__file__).resolve().parents[2] / "deploy" / "kubernetes"
DRIVER = "kitfs.kitops.dev"


def objects(*names: str) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for name in names:
        out.extend(d for d in yaml.safe_load_all((DEPLOY / name).read_text()) if d)
    return out


def one(kind: str, *names: str) -> dict[str, Any]:
    found = [o for o in objects(*names) if o["kind"] == kind]
    assert len(found) == 1, f"{kind}: {len(found)} objects"
    return found[0]


@pytest.fixture(scope="module")
def daemonset() -> dict[str, Any]:
    return one("DaemonSet", "daemonset.yaml")


def containers(daemonset: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["name"]: c for c in daemonset["spec"]["template"]["spec"]["containers"]}


def volumes(daemonset: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {v["name"]: v for v in daemonset["spec"]["template"]["spec"]["volumes"]}


def mounts(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {m["mountPath"]: m for m in container["volumeMounts"]}


def test_kustomization_lists_every_manifest() -> None:
    resources = yaml.safe_load((DEPLOY / "kustomization.yaml").read_text())["resources"]
    assert sorted(resources) == sorted(
        p.name for p in DEPLOY.glob("*.yaml") if p.name != "kustomization.yaml"
    )


def test_the_csidriver_is_node_only_for_inline_and_persistent_volumes() -> None:
    driver = one("CSIDriver", "csidriver.yaml")
    assert driver["apiVersion"] == "storage.k8s.io/v1"
    assert driver["metadata"]["name"] == DRIVER
    assert driver["spec"]["attachRequired"] is False
    assert sorted(driver["spec"]["volumeLifecycleModes"]) == ["Ephemeral", "Persistent"]


def test_the_plugin_container_is_privileged_with_fuse_and_bidirectional_pods(
    daemonset: dict[str, Any],
) -> None:
    plugin = containers(daemonset)["kitfs-csi"]
    assert plugin["securityContext"]["privileged"] is True
    vols = volumes(daemonset)
    plugin_mounts = mounts(plugin)
    assert vols[plugin_mounts["/dev/fuse"]["name"]]["hostPath"] == {
        "path": "/dev/fuse",
        "type": "CharDevice",
    }
    pods = plugin_mounts["/var/lib/kubelet/pods"]
    assert pods["mountPropagation"] == "Bidirectional"
    assert vols[pods["name"]]["hostPath"]["path"] == "/var/lib/kubelet/pods"
    cache = vols[plugin_mounts["/var/cache/kitfs"]["name"]]["hostPath"]
    assert cache["path"] == "/var/cache/kitfs"
    assert (
        vols[plugin_mounts["/var/lib/kitfs-csi"]["name"]]["hostPath"]["path"]
        == "/var/lib/kitfs-csi"
    )
    assert vols[plugin_mounts["/etc/kitfs/keys"]["name"]]["configMap"]["optional"] is True


def test_the_plugins_arguments_parse_as_kitfs_csi(daemonset: dict[str, Any]) -> None:
    plugin = containers(daemonset)["kitfs-csi"]
    env = {e["name"]: e for e in plugin["env"]}
    assert env["CSI_ENDPOINT"]["value"] == "unix:///csi/csi.sock"
    assert env["NODE_ID"]["valueFrom"]["fieldRef"]["fieldPath"] == "spec.nodeName"
    argv = [a.replace("$(CSI_ENDPOINT)", env["CSI_ENDPOINT"]["value"]) for a in plugin["args"]]
    argv = [a.replace("$(NODE_ID)", "node-a") for a in argv]
    args = build_parser().parse_args(["csi", *argv])  # the image's entrypoint is `kitfs csi`
    assert args.endpoint == "unix:///csi/csi.sock" and args.node_id == "node-a"
    assert args.cache_dir == "/var/cache/kitfs" and args.state_dir == "/var/lib/kitfs-csi"
    assert mounts(plugin)["/csi"]["name"] == "plugin-dir"


def test_the_sidecars_share_the_socket_and_the_health_port(daemonset: dict[str, Any]) -> None:
    sidecars = containers(daemonset)
    registrar = sidecars["node-driver-registrar"]
    assert "sig-storage/csi-node-driver-registrar:" in registrar["image"]
    assert "--csi-address=/csi/csi.sock" in registrar["args"]
    registration = f"--kubelet-registration-path=/var/lib/kubelet/plugins/{DRIVER}/csi.sock"
    assert registration in registrar["args"]
    vols = volumes(daemonset)
    assert vols["plugin-dir"]["hostPath"]["path"] == f"/var/lib/kubelet/plugins/{DRIVER}"
    assert vols[mounts(registrar)["/registration"]["name"]]["hostPath"]["path"] == (
        "/var/lib/kubelet/plugins_registry"
    )
    probe = sidecars["liveness-probe"]
    assert "sig-storage/livenessprobe:" in probe["image"]
    assert "--csi-address=/csi/csi.sock" in probe["args"]
    port = next(a.split("=")[1] for a in probe["args"] if a.startswith("--health-port="))
    plugin = sidecars["kitfs-csi"]
    named = {p["name"]: p["containerPort"] for p in plugin["ports"]}
    assert named[plugin["livenessProbe"]["httpGet"]["port"]] == int(port)
    assert plugin["livenessProbe"]["httpGet"]["path"] == "/healthz"


def test_rbac_is_a_service_account_with_nothing_bound(daemonset: dict[str, Any]) -> None:
    account = one("ServiceAccount", "rbac.yaml")
    spec = daemonset["spec"]["template"]["spec"]
    assert spec["serviceAccountName"] == account["metadata"]["name"]
    assert account["metadata"]["namespace"] == daemonset["metadata"]["namespace"]
    assert account["automountServiceAccountToken"] is False
    kinds = {o["kind"] for o in objects(*(p.name for p in DEPLOY.glob("*.yaml")))}
    assert not kinds & {"ClusterRoleBinding", "RoleBinding"}  # no API access is needed
    namespace = one("Namespace", "namespace.yaml")
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "privileged"


def test_the_examples_use_the_driver_read_only_with_a_valid_reference() -> None:
    pod = one("Pod", "examples/pod-inline.yaml")
    volume = pod["spec"]["volumes"][0]["csi"]
    assert volume["driver"] == DRIVER and volume["readOnly"] is True
    parse(volume["volumeAttributes"]["reference"])
    assert volume["nodePublishSecretRef"]["name"] == "registry-credentials"
    assert pod["spec"]["containers"][0]["volumeMounts"][0]["readOnly"] is True

    pv = one("PersistentVolume", "examples/pv-pvc.yaml")
    pvc = one("PersistentVolumeClaim", "examples/pv-pvc.yaml")
    assert pv["spec"]["csi"]["driver"] == DRIVER and pv["spec"]["csi"]["readOnly"] is True
    assert pv["spec"]["csi"]["volumeHandle"]
    parse(pv["spec"]["csi"]["volumeAttributes"]["reference"])
    assert pv["spec"]["accessModes"] == ["ReadOnlyMany"] == pvc["spec"]["accessModes"]
    assert pvc["spec"]["volumeName"] == pv["metadata"]["name"]
    assert pvc["spec"]["storageClassName"] == "" == pv["spec"]["storageClassName"]
    claim_pod = one("Pod", "examples/pv-pvc.yaml")
    claim = claim_pod["spec"]["volumes"][0]["persistentVolumeClaim"]
    assert claim["claimName"] == pvc["metadata"]["name"] and claim["readOnly"] is True

    secret = one("Secret", "examples/secret.yaml")
    assert secret["type"] == "kubernetes.io/dockerconfigjson"
    assert ".dockerconfigjson" in secret["stringData"]


def test_the_containerfile_builds_debian_slim_with_fuse3_and_runs_kitfs_csi() -> None:
    text = (DEPLOY / "Containerfile").read_text()
    froms = [line.split()[1] for line in text.splitlines() if line.startswith("FROM ")]
    assert froms and all(f.endswith("debian:bookworm-slim") for f in froms)
    assert "fuse3" in text and "libfuse3-dev" in text and "python3" in text
    assert 'ENTRYPOINT ["/usr/bin/tini", "--", "/opt/kitfs/bin/kitfs", "csi"]' in text
