"""Signature policies: parsing (strict, one-line errors) and which requirements a reference gets."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from kitfs.signing.policy import (
    ACCEPT,
    REJECT,
    SIGNED,
    PolicyError,
    load_policy_file,
    parse_policy,
    resolve_policy,
)


def write(path: Path, value: object) -> Path:
    path.write_text(json.dumps(value))
    return path


def test_most_specific_scope_wins(key_dir: Path, tmp_path: Path) -> None:
    policy = load_policy_file(
        write(
            tmp_path / "policy.json",
            {
                "default": [{"type": REJECT}],
                "transports": {
                    "docker": {
                        "reg.example.com:5000/acme": [
                            {"type": SIGNED, "keyPath": str(key_dir / "good.pub")}
                        ],
                        "reg.example.com:5000/acme/open": [{"type": ACCEPT}],
                        "reg.example.com:5000": [{"type": ACCEPT}],
                        "*.example.org": [
                            {
                                "type": SIGNED,
                                "keyPaths": [str(key_dir / "good.pub"), str(key_dir / "other.pub")],
                            }
                        ],
                        "*.eu.example.org": [{"type": REJECT}],
                    }
                },
            },
        )
    )
    scope, reqs = policy.requirements_for("reg.example.com:5000/acme/team/model")
    assert scope == "reg.example.com:5000/acme" and reqs[0].kind == SIGNED
    assert [k.name for k in reqs[0].keys] == [str(key_dir / "good.pub")]
    assert (
        policy.requirements_for("reg.example.com:5000/acme/open/x")[0]
        == "reg.example.com:5000/acme/open"
    )
    assert policy.requirements_for("reg.example.com:5000/elsewhere")[0] == "reg.example.com:5000"
    assert policy.requirements_for("hub.eu.example.org/a")[0] == "*.eu.example.org"
    scope, reqs = policy.requirements_for("hub.example.org/a")
    assert scope == "*.example.org" and len(reqs[0].keys) == 2
    assert policy.requirements_for("reg.example.com/acme")[0] == "default"


def test_relative_key_paths_and_key_data(key_dir: Path, tmp_path: Path) -> None:
    (tmp_path / "keys").mkdir()
    (tmp_path / "keys" / "k.pub").write_bytes((key_dir / "good.pub").read_bytes())
    data = base64.b64encode((key_dir / "other.pub").read_bytes()).decode()
    policy = load_policy_file(
        write(
            tmp_path / "policy.json",
            {"default": [{"type": SIGNED, "keyPath": "keys/k.pub", "keyData": data}]},
        )
    )
    keys = policy.default[0].keys
    assert [k.name for k in keys] == [
        str(tmp_path / "keys" / "k.pub"),
        "keyData of policy " + str(tmp_path / "policy.json") + ": default[0]",
    ]


@pytest.mark.parametrize(
    ("policy", "message"),
    [
        ({}, "needs a 'default' list"),
        ({"default": []}, "requirements must be a non-empty list"),
        (
            {"default": [{"type": "signedBy", "keyType": "GPGKeys"}]},
            "unsupported requirement type 'signedBy'",
        ),
        ({"default": [{"type": SIGNED}]}, "needs keyPath, keyPaths or keyData"),
        ({"default": [{"type": SIGNED, "keyPath": "missing.pub"}]}, "cannot read public key"),
        (
            {"default": [{"type": SIGNED, "keyPath": "k.pub", "fulcio": {}}]},
            "unsupported sigstoreSigned fields \\['fulcio'\\]",
        ),
        ({"default": [{"type": ACCEPT}], "transports": {"oci": {}}}, "only the 'docker' transport"),
        ({"default": [{"type": ACCEPT}], "extra": 1}, "unknown top-level fields"),
    ],
)
def test_bad_policies_are_refused(tmp_path: Path, policy: object, message: str) -> None:
    with pytest.raises(PolicyError, match=message):
        parse_policy(json.dumps(policy).encode(), "p.json", tmp_path)


def test_policy_comes_from_flag_then_environment(key_dir: Path, tmp_path: Path) -> None:
    accept = write(tmp_path / "accept.json", {"default": [{"type": ACCEPT}]})
    reject = write(tmp_path / "reject.json", {"default": [{"type": REJECT}]})
    assert resolve_policy(None, None, {}) is None
    from_env = resolve_policy(None, None, {"KITFS_POLICY": str(reject)})
    assert from_env is not None and from_env.default[0].kind == REJECT
    from_flag = resolve_policy(None, str(accept), {"KITFS_POLICY": str(reject)})
    assert from_flag is not None and from_flag.default[0].kind == ACCEPT
    both = resolve_policy(str(key_dir / "good.pub"), str(accept), {})
    assert both is not None and [r.kind for r in both.default] == [ACCEPT, SIGNED]
    with pytest.raises(PolicyError, match="is not valid JSON"):
        (tmp_path / "bad.json").write_text("{")
        resolve_policy(None, str(tmp_path / "bad.json"), {})
