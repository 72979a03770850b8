"""Interoperability with the real cosign 2.5.0 (Debian trixie's, fetched by scripts/fetch-cosign.sh),
offline: no transparency log, keys only. Both directions, both signature formats."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers import cli, fails, ok
from reliability.helpers import Kit, Mounts, is_mounted

from kitfs.signing.bundle import SIGN_PREDICATE
from kitfs.signing.locate import fallback_tag, legacy_tag
from kitfs.signing.sign import signature_manifest

from .conftest import SMALL_FILES
from .helpers import PASSWORD, attach_bundle, cosign, dsse_bundle, get_manifest, private_key

REGISTRY_FLAGS = ("--allow-insecure-registry", "--allow-http-registry")


@pytest.fixture(autouse=True)
def _cosign(cosign_binary: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COSIGN_PASSWORD", PASSWORD)


@pytest.fixture
def cosign_keys(tmp_path: Path) -> Path:
    """cosign.key / cosign.pub made by ``cosign generate-key-pair``."""
    directory = tmp_path / "cosign-keys"
    directory.mkdir()
    made = cosign("generate-key-pair", "--output-key-prefix", str(directory / "cosign"))
    assert made.returncode == 0, made.stderr
    return directory


def cosign_sign(kit: Kit, key: Path, *extra: str) -> None:
    ref = f"{kit.registry}/{kit.repository}@{kit.digest}"
    result = cosign("sign", "--key", str(key), "--tlog-upload=false", *REGISTRY_FLAGS, *extra, ref)
    assert result.returncode == 0, result.stderr


def cosign_verify(kit: Kit, key: Path) -> object:
    return cosign("verify", "--key", str(key), "--insecure-ignore-tlog", *REGISTRY_FLAGS, kit.ref())


def test_cosign_signs_kitfs_verifies_and_mounts(
    make,
    cosign_keys: Path,
    strong_key_dir: Path,
    tmp_path: Path,
    mounts: Mounts,  # type: ignore[no-untyped-def]
) -> None:
    kit = make()
    cosign_sign(kit, cosign_keys / "cosign.key")
    pub = cosign_keys / "cosign.pub"
    result = ok(cli(tmp_path, "verify", kit.ref(), "--key", str(pub), "--plain-http"))
    assert (
        result.stdout
        == f"Verified {kit.digest}: cosign signature by {pub} (tag {legacy_tag(kit.digest)} layer 0)\n"
    )
    mountpoint = mounts.mount(kit.ref(), "mnt", "--verify-key", str(pub))
    assert (mountpoint / "model" / "model" / "weights.bin").read_bytes() == SMALL_FILES[
        "model/weights.bin"
    ]
    refused, answer = mounts.try_mount(
        kit.ref(), "refused", "--verify-key", str(strong_key_dir / "good.pub")
    )
    assert answer.returncode == 1 and "none verifies with" in answer.stderr
    assert not is_mounted(refused)


def test_kitfs_signs_cosign_verifies(make, strong_key_dir: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    kit = make()
    ok(
        cli(
            tmp_path,
            "sign",
            kit.ref(),
            "--key",
            str(strong_key_dir / "good.key"),
            "--plain-http",
            "-a",
            "team=ml",
        )
    )
    verified = cosign_verify(kit, strong_key_dir / "good.pub")
    assert verified.returncode == 0, verified.stderr  # type: ignore[attr-defined]
    claims = json.loads(verified.stdout)  # type: ignore[attr-defined]
    assert claims == [
        {
            "critical": {
                "identity": {"docker-reference": f"{kit.registry}/{kit.repository}"},
                "image": {"docker-manifest-digest": kit.digest},
                "type": "cosign container image signature",
            },
            "optional": {"team": "ml"},
        }
    ]
    assert cosign_verify(kit, strong_key_dir / "other.pub").returncode != 0  # type: ignore[attr-defined]


def test_kitfs_key_pair_works_with_cosign_and_back(
    make, cosign_keys: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:  # type: ignore[no-untyped-def]
    kit = make()
    monkeypatch.chdir(tmp_path)
    ok(cli(tmp_path / "h", "generate-key-pair", "--output-key-prefix", "ours"))
    cosign_sign(kit, tmp_path / "ours.key")
    ok(cli(tmp_path, "verify", kit.ref(), "--key", str(tmp_path / "ours.pub"), "--plain-http"))
    ok(cli(tmp_path, "sign", kit.ref(), "--key", str(cosign_keys / "cosign.key"), "--plain-http"))
    assert cosign_verify(kit, cosign_keys / "cosign.pub").returncode == 0  # type: ignore[attr-defined]


def test_kitfs_writes_the_bytes_cosign_writes(make, strong_key_dir: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    kit = make()
    cosign_sign(kit, strong_key_dir / "good.key")
    ok(cli(tmp_path, "sign", kit.ref(), "--key", str(strong_key_dir / "good.key"), "--plain-http"))
    cosign_sign(kit, strong_key_dir / "other.key")  # cosign appends to what kitfs wrote
    stored = get_manifest(kit.registry, kit.repository, legacy_tag(kit.digest))
    layers = json.loads(stored)["layers"]
    assert len(layers) == 3
    assert (
        layers[0]["digest"] == layers[1]["digest"] == layers[2]["digest"]
    )  # one payload, byte for byte
    config, manifest = signature_manifest(layers)
    assert manifest == stored  # the manifest (and so its config) kitfs builds is cosign's
    assert json.loads(stored)["config"]["size"] == len(config)
    assert cosign_verify(kit, strong_key_dir / "good.pub").returncode == 0  # type: ignore[attr-defined]


def test_cosign_bundle_is_verified_by_kitfs(make, strong_key_dir: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    # cosign 2.5 writes sigstore bundles v0.3 as OCI referrers with `attest --new-bundle-format`;
    # with the predicate type of an image signature that is what cosign 3 writes for `sign`.
    kit = make()
    (tmp_path / "predicate.json").write_text("{}")
    ref = f"{kit.registry}/{kit.repository}@{kit.digest}"
    attested = cosign(
        "attest",
        "--new-bundle-format",
        "--key",
        str(strong_key_dir / "good.key"),
        "--tlog-upload=false",
        "--type",
        SIGN_PREDICATE,
        "--predicate",
        str(tmp_path / "predicate.json"),
        *REGISTRY_FLAGS,
        ref,
    )
    assert attested.returncode == 0, attested.stderr
    index = json.loads(get_manifest(kit.registry, kit.repository, fallback_tag(kit.digest)))
    assert len(index["manifests"]) == 1
    result = ok(
        cli(
            tmp_path, "verify", kit.ref(), "--key", str(strong_key_dir / "good.pub"), "--plain-http"
        )
    )
    assert result.stdout.startswith(
        f"Verified {kit.digest}: sigstore bundle by {strong_key_dir / 'good.pub'}"
    )
    assert "none verifies with" in fails(
        cli(
            tmp_path,
            "verify",
            kit.ref(),
            "--key",
            str(strong_key_dir / "other.pub"),
            "--plain-http",
        )
    )


def test_cosign_accepts_the_bundle_layout_kitfs_reads(
    make, strong_key_dir: Path, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    # The hand-built DSSE bundle referrer of the kitfs tests is one cosign verifies too (an empty
    # trusted root keeps cosign offline; keys need none).
    kit = make()
    bundle = dsse_bundle(private_key(strong_key_dir / "good.key"), kit.digest)
    attach_bundle(kit.registry, kit.repository, kit.digest, bundle, tmp_path / "blobs")
    root = tmp_path / "trusted_root.json"
    root.write_text('{"mediaType":"application/vnd.dev.sigstore.trustedroot+json;version=0.1"}')
    checked = cosign(
        "verify-attestation",
        "--new-bundle-format",
        "--trusted-root",
        str(root),
        "--key",
        str(strong_key_dir / "good.pub"),
        "--insecure-ignore-tlog",
        "--type",
        SIGN_PREDICATE,
        *REGISTRY_FLAGS,
        kit.ref(),
    )
    assert checked.returncode == 0, checked.stderr
