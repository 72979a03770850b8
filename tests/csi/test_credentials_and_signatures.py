"""Registry credentials from a volume's dockerconfigjson secret (a private htpasswd registry), and
signature policy per volume (verifyKey): an unsigned or wrongly signed ModelKit is refused before a
byte is served. The kubelet is simulated by the gRPC client generated from csi.proto."""

from __future__ import annotations

import base64
import json
import stat
from pathlib import Path

import grpc
import pytest
from csi_plugin import Plugin, is_mounted, status_of
from helpers import cli, kitfs, ok
from registry import RegistryServer
from reliability.helpers import Kit, make_kit
from signing.helpers import PASSWORD, write_key_pair

FILES = {"model/weights.bin": b"private weights " * 1000}
KITFILE = "manifestVersion: 1.0.0\npackage:\n  name: priv\nmodel:\n  name: w\n  path: model\n"


def dockerconfigjson(host: str, user: str, password: str) -> str:
    auth = base64.b64encode(f"{user}:{password}".encode()).decode()
    return json.dumps({"auths": {host: {"auth": auth}}})


def test_a_private_registry_through_a_dockerconfigjson_secret(
    plugin: Plugin, auth_registry: RegistryServer, tmp_path: Path
) -> None:
    home = tmp_path / "home"
    login = ["login", auth_registry.host, "-u", auth_registry.username, "--password-stdin"]
    ok(kitfs(home, *login, "--plain-http", input=auth_registry.password.encode()))
    kit = make_kit(
        home,
        tmp_path / "ctx",
        auth_registry.host,
        "kitfs-csi/private",
        files=FILES,
        kitfile=KITFILE,
    )
    target = plugin.target("pod-private")
    code, message = status_of(lambda: plugin.publish(target, kit.ref()))
    assert code == grpc.StatusCode.PERMISSION_DENIED, message
    assert not is_mounted(target)

    secret = dockerconfigjson(auth_registry.host, auth_registry.username, auth_registry.password)
    secrets = {".dockerconfigjson": secret}
    plugin.publish(target, kit.ref(), secrets=secrets)
    assert (target / "model" / "model" / "weights.bin").read_bytes() == FILES["model/weights.bin"]

    record = plugin.records()[str(target)]
    config_dir = Path(str(record["docker_config"]))
    assert config_dir.is_relative_to(plugin.state)
    assert stat.S_IMODE(config_dir.stat().st_mode) == 0o700
    assert stat.S_IMODE((config_dir / "config.json").stat().st_mode) == 0o600
    token = base64.b64encode(f"{auth_registry.username}:{auth_registry.password}".encode())
    logs = plugin.log() + "".join(p.read_text() for p in (plugin.cache / "logs").glob("*.log"))
    assert auth_registry.password not in logs and token.decode() not in logs
    assert auth_registry.password not in json.dumps(plugin.records())

    # Another pod without the secret gets nothing from the node's cache, by tag or by digest,
    # even with refresh never: the registry decides, asked with that volume's credentials.
    by_digest = f"{kit.registry}/{kit.repository}@{kit.digest}"
    plugin.publish(plugin.target("pod-digest"), by_digest, volume_id="vol-3", secrets=secrets)
    other = plugin.target("pod-without-secret")
    for ref, attributes in ((by_digest, {}), (kit.ref(), {"refresh": "never"})):
        code, message = status_of(
            lambda: plugin.publish(other, ref, volume_id="vol-2", attributes=attributes)  # noqa: B023
        )
        assert code == grpc.StatusCode.PERMISSION_DENIED, message
        assert not is_mounted(other)

    plugin.unpublish(target)
    assert not config_dir.exists()  # the credentials go with the volume


@pytest.fixture
def signed(
    registry: RegistryServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> tuple[Kit, Kit, Path]:
    """(a ModelKit signed with keys/good.key, an unsigned one, the keys directory)."""
    monkeypatch.setenv("COSIGN_PASSWORD", PASSWORD)
    keys = tmp_path / "keys-src"
    write_key_pair(keys, "good", cheap=True)
    write_key_pair(keys, "other", cheap=True)
    files = {"model/weights.bin": b"signed weights\n" * 100}
    good = make_kit(
        tmp_path / "home",
        tmp_path / "ctx",
        registry.host,
        "kitfs-csi/signed",
        files=files,
        kitfile=KITFILE,
    )
    ok(cli(good.home, "sign", good.ref(), "--key", str(keys / "good.key"), "--plain-http"))
    unsigned = make_kit(
        tmp_path / "home2",
        tmp_path / "ctx2",
        registry.host,
        "kitfs-csi/unsigned",
        files=files,
        kitfile=KITFILE,
    )
    return good, unsigned, keys


def test_signature_policy_per_volume(plugin: Plugin, signed: tuple[Kit, Kit, Path]) -> None:
    good, unsigned, keys = signed
    for name in ("good.pub", "other.pub"):
        (plugin.keys / name).write_bytes((keys / name).read_bytes())
    target = plugin.target("pod-signed")

    code, message = status_of(
        lambda: plugin.publish(target, unsigned.ref(), attributes={"verifyKey": "good.pub"})
    )
    assert code == grpc.StatusCode.PERMISSION_DENIED, message
    assert "no signature found" in message
    assert not is_mounted(target)

    code, message = status_of(
        lambda: plugin.publish(target, good.ref(), attributes={"verifyKey": "other.pub"})
    )
    assert code == grpc.StatusCode.PERMISSION_DENIED, message
    assert not is_mounted(target)

    plugin.publish(target, good.ref(), attributes={"verifyKey": "good.pub"})
    assert (target / "model" / "model" / "weights.bin").read_bytes() == b"signed weights\n" * 100
    plugin.unpublish(target)


def test_a_node_wide_policy_holds_for_every_volume(
    plugin_factory,  # type: ignore[no-untyped-def]
    signed: tuple[Kit, Kit, Path],
    tmp_path: Path,
) -> None:
    good, unsigned, keys = signed
    policy = tmp_path / "node-policy.json"
    rule = {"type": "sigstoreSigned", "keyPath": str(keys / "good.pub")}
    policy.write_text(json.dumps({"default": [rule]}))
    plugin: Plugin = plugin_factory("--policy", str(policy))
    (plugin.keys / "loose.json").write_text(
        json.dumps({"default": [{"type": "insecureAcceptAnything"}]})
    )
    target = plugin.target("pod-node-policy")

    code, message = status_of(lambda: plugin.publish(target, unsigned.ref()))
    assert code == grpc.StatusCode.PERMISSION_DENIED, message
    code, message = status_of(
        lambda: plugin.publish(target, unsigned.ref(), attributes={"policy": "loose.json"})
    )
    assert code == grpc.StatusCode.INVALID_ARGUMENT, message
    assert "cannot replace" in message
    assert not is_mounted(target)

    plugin.publish(target, good.ref())
    assert (target / "model" / "model" / "weights.bin").read_bytes() == b"signed weights\n" * 100
