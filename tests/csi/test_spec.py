"""The rules for a volume's request, without a plugin: attributes, capabilities, read-only, the
keys directory, the node's policy and cache bound, and the registry secret."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from kitfs.csi.errors import CsiError
from kitfs.csi.secrets import docker_auths, write_docker_config
from kitfs.csi.spec import Capability, NodeSettings, PublishRequest, check_request

REF = "registry.example.com/acme/model:1.0"


def request(**overrides: object) -> PublishRequest:
    fields: dict[str, object] = {
        "volume_id": "vol",
        "target_path": "/var/lib/kubelet/pods/u/volumes/kubernetes.io~csi/m/mount",
        "capability": Capability("mount", 1),
        "readonly": True,
        "attributes": {"reference": REF, "csi.storage.k8s.io/pod.name": "p"},
    }
    fields.update(overrides)
    return PublishRequest(**fields)  # type: ignore[arg-type]


def node(tmp_path: Path, **overrides: object) -> NodeSettings:
    fields: dict[str, object] = {"cache_dir": tmp_path / "cache", "keys_dir": tmp_path / "keys"}
    fields.update(overrides)
    return NodeSettings(**fields)  # type: ignore[arg-type]


def code_of(req: PublishRequest, settings: NodeSettings) -> tuple[str, str]:
    with pytest.raises(CsiError) as caught:
        check_request(req, settings)
    return caught.value.code, str(caught.value)


def test_an_inline_volume_becomes_mount_settings(tmp_path: Path) -> None:
    spec = check_request(
        request(attributes={"reference": REF, "layout": "unpack", "refresh": "never"}),
        node(tmp_path, network={"plain_http": True}),
    )
    assert spec.reference == REF
    assert spec.settings["layout"] == "unpack" and spec.settings["refresh"] == "never"
    assert spec.settings["allow_other"] is True and spec.settings["plain_http"] is True
    assert spec.settings["cache_dir"] == str(tmp_path / "cache")


def test_the_fingerprint_ignores_secrets_but_not_attributes(tmp_path: Path) -> None:
    settings = node(tmp_path)
    base = check_request(request(), settings).fingerprint
    assert check_request(request(secrets={"a": "b"}), settings).fingerprint == base
    other = request(attributes={"reference": REF, "layout": "unpack"})
    assert check_request(other, settings).fingerprint != base


@pytest.mark.parametrize(
    ("overrides", "code", "needle"),
    [
        ({"volume_id": ""}, "INVALID_ARGUMENT", "volume_id"),
        ({"target_path": "relative/mount"}, "INVALID_ARGUMENT", "absolute"),
        ({"capability": None}, "INVALID_ARGUMENT", "volume_capability is missing"),
        ({"capability": Capability("block", 2)}, "INVALID_ARGUMENT", "block"),
        ({"capability": Capability("mount", 0)}, "INVALID_ARGUMENT", "access mode"),
        ({"readonly": False}, "FAILED_PRECONDITION", "read-only"),
        ({"capability": Capability("mount", 2, ("rw",))}, "FAILED_PRECONDITION", "rw"),
        ({"capability": Capability("mount", 2, ("uid=5",))}, "INVALID_ARGUMENT", "uid=5"),
        ({"attributes": {}}, "INVALID_ARGUMENT", '"reference" is missing'),
        ({"attributes": {"reference": "oci:/srv/x"}}, "INVALID_ARGUMENT", "OCI layout"),
        ({"attributes": {"reference": REF, "layout": "flat"}}, "INVALID_ARGUMENT", "layout"),
        ({"attributes": {"reference": REF, "refresh": "x"}}, "INVALID_ARGUMENT", "refresh"),
        ({"attributes": {"reference": REF, "cacheDir": "/"}}, "INVALID_ARGUMENT", "cacheDir"),
        ({"attributes": {"reference": REF, "cacheSize": "lots"}}, "INVALID_ARGUMENT", "size"),
        ({"attributes": {"reference": REF, "verifyKey": "/etc/k"}}, "INVALID_ARGUMENT", "no path"),
        ({"attributes": {"reference": REF, "verifyKey": "none"}}, "INVALID_ARGUMENT", "no such"),
    ],
)
def test_bad_requests(tmp_path: Path, overrides: dict[str, object], code: str, needle: str) -> None:
    got, message = code_of(request(**overrides), node(tmp_path))
    assert got == code and needle in message, message


def test_reader_only_modes_need_no_readonly_flag(tmp_path: Path) -> None:
    for mode in (2, 3):
        check_request(request(readonly=False, capability=Capability("mount", mode)), node(tmp_path))


def test_a_volume_may_lower_the_cache_bound_never_raise_it(tmp_path: Path) -> None:
    settings = node(tmp_path, cache_size=10 << 30)
    lower = request(attributes={"reference": REF, "cacheSize": "1G"})
    higher = request(attributes={"reference": REF, "cacheSize": "1T"})
    assert check_request(lower, settings).settings["cache_size"] == str(1 << 30)
    assert check_request(higher, settings).settings["cache_size"] == str(10 << 30)
    assert check_request(request(), settings).settings["cache_size"] == str(10 << 30)


def test_keys_come_from_the_keys_directory_and_the_node_policy_stays(tmp_path: Path) -> None:
    (tmp_path / "keys").mkdir()
    (tmp_path / "keys" / "acme.pub").write_text("key")
    (tmp_path / "keys" / "loose.json").write_text("{}")
    attrs = {"reference": REF, "verifyKey": "acme.pub"}
    spec = check_request(request(attributes=attrs), node(tmp_path, node_policy="/etc/p.json"))
    assert spec.settings["verify_key"] == str(tmp_path / "keys" / "acme.pub")
    assert spec.settings["policy"] == "/etc/p.json"
    weaker = request(attributes={"reference": REF, "policy": "loose.json"})
    code, message = code_of(weaker, node(tmp_path, node_policy="/etc/p.json"))
    assert code == "INVALID_ARGUMENT" and "cannot replace" in message
    own = check_request(weaker, node(tmp_path)).settings["policy"]
    assert own == str(tmp_path / "keys" / "loose.json")


def test_the_secret_keeps_only_user_names_and_passwords(tmp_path: Path) -> None:
    auth = base64.b64encode(b"alice:s3cret").decode()
    secret = {
        "auths": {
            "r.example": {"auth": auth},
            "q.example": {"username": "bob", "password": "pw"},
            "bad.example": {"auth": "not base64!"},
        },
        "credHelpers": {"r.example": "evil"},
        "credsStore": "evil",
    }
    auths = docker_auths({".dockerconfigjson": json.dumps(secret)})
    assert auths == {
        "r.example": {"auth": auth},
        "q.example": {"auth": base64.b64encode(b"bob:pw").decode()},
    }
    written = write_docker_config(tmp_path / "creds", auths)
    assert json.loads((written / "config.json").read_text()) == {"auths": auths}
    assert docker_auths({}) is None


@pytest.mark.parametrize(
    "secrets",
    [
        {"token": "x"},
        {".dockerconfigjson": "{not json"},
        {".dockerconfigjson": json.dumps({"credsStore": "evil"})},
        {".dockerconfigjson": json.dumps({"auths": {"r": {"identitytoken": "t"}}})},
    ],
)
def test_unusable_secrets_are_invalid_arguments(secrets: dict[str, str]) -> None:
    with pytest.raises(CsiError) as caught:
        docker_auths(secrets)
    assert caught.value.code == "INVALID_ARGUMENT"
    for value in secrets.values():
        assert value not in str(caught.value) or len(value) < 3


def test_kitfs_errors_map_to_the_status_codes_a_kubelet_reads() -> None:
    from kitfs.csi.access import AccessUnknownError
    from kitfs.csi.errors import as_csi_error
    from kitfs.errors import (
        AuthError,
        InvalidReferenceError,
        MountError,
        NotFoundError,
        TransientError,
    )
    from kitfs.signing import SignatureError
    from kitfs.signing.policy import PolicyError

    expected = {
        InvalidReferenceError("x"): "INVALID_ARGUMENT",
        PolicyError("x"): "INVALID_ARGUMENT",
        NotFoundError("x"): "NOT_FOUND",
        AuthError("x"): "PERMISSION_DENIED",
        SignatureError("x"): "PERMISSION_DENIED",
        TransientError("x"): "UNAVAILABLE",
        AccessUnknownError("x"): "UNAVAILABLE",
        MountError("x"): "INTERNAL",
        CsiError("ALREADY_EXISTS", "x"): "ALREADY_EXISTS",
    }
    assert {type(e).__name__: as_csi_error(e).code for e in expected} == {
        type(e).__name__: code for e, code in expected.items()
    }


def test_access_grants_name_the_credentials_without_holding_them() -> None:
    from kitfs.csi.access import grant_name
    from kitfs.reference import parse

    ref = parse(REF)
    salt = b"s" * 32
    alice = grant_name(salt, ref, ("alice", "pw"))
    assert alice == grant_name(salt, ref, ("alice", "pw"))
    others = {
        grant_name(salt, ref, ("alice", "other")),
        grant_name(salt, ref, None),
        grant_name(salt, parse("registry.example.com/acme/other:1.0"), ("alice", "pw")),
        grant_name(b"t" * 32, ref, ("alice", "pw")),
    }
    assert alice not in others and len(others) == 4
    assert "alice" not in alice and "pw" not in alice
