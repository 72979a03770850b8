"""``kitfs sign`` and ``kitfs verify`` against a real registry, and the signatures verify refuses.

Each hostile signature is built the way an attacker with push access would build it (real pushes
to docker-registry 2.8); only the referrers API is played by the fault proxy, because Debian's
registry has none (it answers 404, which sends clients to the ``sha256-<hex>`` fallback tag).
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from faultproxy import Fault, FaultProxy, Response, always
from helpers import cli, fails, ok, sha256
from registry import RegistryServer
from reliability.helpers import Kit, run_client

from kitfs.oci import media
from kitfs.oci.client import RegistryClient
from kitfs.signing.locate import MAX_SIGNATURE_BLOB, fallback_tag, legacy_tag

from .helpers import (
    PASSWORD,
    attach_bundle,
    dsse_bundle,
    get_manifest,
    message_bundle,
    private_key,
    put_blob,
    put_manifest,
    referrer_manifest,
    referrers_index,
    sig_manifest,
)


@pytest.fixture(autouse=True)
def _password(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COSIGN_PASSWORD", PASSWORD)


def sign(home: Path, kit: Kit, key: Path) -> None:
    ok(cli(home, "sign", kit.ref(), "--key", str(key), "--plain-http"))


def verify(home: Path, ref: str, key: Path) -> subprocess.CompletedProcess[str]:
    return cli(home, "verify", ref, "--key", str(key), "--plain-http")


def test_sign_then_verify_names_the_digest(make, key_dir: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    kit = make()
    signed = ok(
        cli(tmp_path, "sign", kit.ref(), "--key", str(key_dir / "good.key"), "--plain-http")
    )
    assert signed.stdout == (
        f"Signed {kit.digest} (signature pushed to {kit.registry}/{kit.repository}:{legacy_tag(kit.digest)})\n"
    )
    result = ok(verify(tmp_path, kit.ref(), key_dir / "good.pub"))  # type: ignore[arg-type]
    assert result.stdout == (
        f"Verified {kit.digest}: cosign signature by {key_dir / 'good.pub'} "
        f"(tag {legacy_tag(kit.digest)} layer 0)\n"
    )
    by_digest = ok(
        verify(tmp_path, f"{kit.registry}/{kit.repository}@{kit.digest}", key_dir / "good.pub")
    )
    assert by_digest.stdout.startswith(f"Verified {kit.digest}:")


def test_verifying_a_legacy_signature_takes_three_requests(
    make,
    key_dir: Path,
    tmp_path: Path,
    fault_proxy: FaultProxy,  # type: ignore[no-untyped-def]
) -> None:
    kit = make()
    sign(tmp_path, kit, key_dir / "good.key")
    payload_digest = sig_manifest(kit.registry, kit.repository, kit.digest)["layers"][0]["digest"]
    ok(verify(tmp_path, f"{fault_proxy.host}/{kit.repository}:{kit.tag}", key_dir / "good.pub"))  # type: ignore[arg-type]
    assert [(r.method, r.path) for r in fault_proxy.requests] == [
        ("GET", f"/v2/{kit.repository}/manifests/{kit.tag}"),
        ("GET", f"/v2/{kit.repository}/manifests/{legacy_tag(kit.digest)}"),
        ("GET", f"/v2/{kit.repository}/blobs/{payload_digest}"),
    ]


def test_a_second_signature_is_appended(make, key_dir: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    kit = make()
    sign(tmp_path, kit, key_dir / "good.key")
    sign(tmp_path, kit, key_dir / "other.key")
    layers = sig_manifest(kit.registry, kit.repository, kit.digest)["layers"]
    assert len(layers) == 2 and layers[0]["digest"] == layers[1]["digest"]  # same payload
    ok(verify(tmp_path, kit.ref(), key_dir / "good.pub"))  # type: ignore[arg-type]
    assert "layer 1" in ok(verify(tmp_path, kit.ref(), key_dir / "other.pub")).stdout  # type: ignore[arg-type, attr-defined]


def test_unsigned_modelkit_is_refused(make, key_dir: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    kit = make()
    line = fails(verify(tmp_path, kit.ref(), key_dir / "good.pub"))  # type: ignore[arg-type]
    assert line == (
        f"kitfs: {kit.registry}/{kit.repository}@{kit.digest}: no signature found "
        f"(no tag {legacy_tag(kit.digest)}, no sigstore bundle referring to it)"
    )


def test_wrong_key_is_refused(make, key_dir: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    kit = make()
    sign(tmp_path, kit, key_dir / "other.key")
    line = fails(verify(tmp_path, kit.ref(), key_dir / "good.pub"))  # type: ignore[arg-type]
    assert line == (
        f"kitfs: {kit.registry}/{kit.repository}@{kit.digest}: 1 signature found, none verifies "
        f"with {key_dir / 'good.pub'} (signed with another key, or the signed payload was altered)"
    )


def test_signature_of_another_digest_copied_here_is_refused(
    make, key_dir: Path, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    signed, target = make("v1"), make("v2", seed="other")
    sign(tmp_path, signed, key_dir / "good.key")
    stolen = sig_manifest(signed.registry, signed.repository, signed.digest)
    put_manifest(target.registry, target.repository, legacy_tag(target.digest), stolen)
    line = fails(verify(tmp_path, target.ref(), key_dir / "good.pub"))  # type: ignore[arg-type]
    assert line == (
        f"kitfs: {target.registry}/{target.repository}@{target.digest}: the signature at tag "
        f"{legacy_tag(target.digest)} layer 0 is for another digest ({signed.digest}), not this one: refusing it"
    )


def test_tampered_payload_is_refused(make, key_dir: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    kit, other = make("v1"), make("v2", seed="other")
    sign(tmp_path, kit, key_dir / "good.key")
    manifest = sig_manifest(kit.registry, kit.repository, kit.digest)
    layer = manifest["layers"][0]
    original = json.loads(get_payload(kit, layer["digest"]))
    original["critical"]["image"]["docker-manifest-digest"] = other.digest
    forged = json.dumps(original, separators=(",", ":")).encode()
    desc = put_blob(kit.registry, kit.repository, forged, tmp_path / "blobs")
    layer.update(digest=desc.digest, size=desc.size)  # the signature annotation stays
    put_manifest(kit.registry, kit.repository, legacy_tag(other.digest), manifest)
    line = fails(verify(tmp_path, other.ref(), key_dir / "good.pub"))  # type: ignore[arg-type]
    assert "1 signature found, none verifies with" in line
    assert "the signed payload was altered" in line


def get_payload(kit: Kit, digest: str) -> bytes:
    async def body(client: RegistryClient) -> bytes:
        return await client.fetch_blob(kit.repository, digest)

    result: bytes = run_client(kit.registry, body)
    return result


def test_huge_signature_layer_is_refused_without_fetching_it(
    make,
    key_dir: Path,
    tmp_path: Path,
    fault_proxy: FaultProxy,  # type: ignore[no-untyped-def]
) -> None:
    kit = make()
    sign(tmp_path, kit, key_dir / "good.key")
    manifest = sig_manifest(kit.registry, kit.repository, kit.digest)
    payload_digest = manifest["layers"][0]["digest"]
    manifest["layers"][0]["size"] = 10 << 30
    put_manifest(kit.registry, kit.repository, legacy_tag(kit.digest), manifest)
    via_proxy = f"{fault_proxy.host}/{kit.repository}:{kit.tag}"
    line = fails(verify(tmp_path, via_proxy, key_dir / "good.pub"))  # type: ignore[arg-type]
    assert line == (
        f"kitfs: {fault_proxy.host}/{kit.repository}@{kit.digest}: malformed signature at tag "
        f"{legacy_tag(kit.digest)} layer 0: its blob declares {10 << 30} bytes, more than the "
        f"{MAX_SIGNATURE_BLOB} a signature may have"
    )
    assert not [r for r in fault_proxy.requests if payload_digest in r.path]


def test_signature_blob_larger_than_declared_is_cut_off(
    make,
    key_dir: Path,
    tmp_path: Path,
    fault_proxy: FaultProxy,  # type: ignore[no-untyped-def]
) -> None:
    kit = make()
    sign(tmp_path, kit, key_dir / "good.key")
    payload_digest = sig_manifest(kit.registry, kit.repository, kit.digest)["layers"][0]["digest"]
    endless = b"{" * (4 << 20)
    fault_proxy.add_rule(
        always(
            lambda r: r.method == "GET" and r.path.endswith(payload_digest),
            Fault(respond=Response(200, {"Content-Type": "application/octet-stream"}, endless)),
        )
    )
    line = fails(
        verify(tmp_path, f"{fault_proxy.host}/{kit.repository}:{kit.tag}", key_dir / "good.pub")
    )
    assert "malformed signature at tag" in line and "does not match its digest" in line


def test_missing_signature_layer_is_refused(
    make, key_dir: Path, tmp_path: Path, registry: RegistryServer
) -> None:  # type: ignore[no-untyped-def]
    kit = make()
    sign(tmp_path, kit, key_dir / "good.key")
    payload_digest = sig_manifest(kit.registry, kit.repository, kit.digest)["layers"][0]["digest"]

    async def delete(client: RegistryClient) -> int:
        response = await client._http.delete(  # the registry allows deletes (tests/registry.py)
            f"{client.base_url}/v2/{kit.repository}/blobs/{payload_digest}"
        )
        return response.status_code

    assert run_client(registry.host, delete) == 202
    line = fails(verify(tmp_path, kit.ref(), key_dir / "good.pub"))  # type: ignore[arg-type]
    assert line.endswith(
        f"malformed signature at tag {legacy_tag(kit.digest)} layer 0: its blob {payload_digest} is missing from the registry"
    )


def test_signature_manifest_without_layers_is_refused(make, key_dir: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    kit = make()
    sign(tmp_path, kit, key_dir / "good.key")
    manifest = sig_manifest(kit.registry, kit.repository, kit.digest)
    manifest["layers"] = []
    put_manifest(kit.registry, kit.repository, legacy_tag(kit.digest), manifest)
    line = fails(verify(tmp_path, kit.ref(), key_dir / "good.pub"))  # type: ignore[arg-type]
    assert line.endswith(f"the manifest of tag {legacy_tag(kit.digest)} has no signature layers")


# -- sigstore bundles v0.3 ----------------------------------------------------------------------


def test_dsse_bundle_through_the_fallback_tag_verifies(make, key_dir: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    kit = make()
    bundle = dsse_bundle(private_key(key_dir / "good.key"), kit.digest)
    referrer = attach_bundle(kit.registry, kit.repository, kit.digest, bundle, tmp_path / "blobs")
    result = ok(verify(tmp_path, kit.ref(), key_dir / "good.pub"))  # type: ignore[arg-type]
    assert result.stdout == (  # type: ignore[attr-defined]
        f"Verified {kit.digest}: sigstore bundle by {key_dir / 'good.pub'} (bundle referrer "
        f"{referrer} via referrers tag {fallback_tag(kit.digest)})\n"
    )
    line = fails(verify(tmp_path, kit.ref(), key_dir / "other.pub"))  # type: ignore[arg-type]
    assert "1 signature found, none verifies with" in line


def test_message_signature_bundle_verifies(make, key_dir: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    kit = make()
    manifest = get_manifest(kit.registry, kit.repository, kit.digest)
    bundle = message_bundle(private_key(key_dir / "good.key"), kit.digest, manifest)
    attach_bundle(kit.registry, kit.repository, kit.digest, bundle, tmp_path / "blobs")
    assert "sigstore bundle by" in ok(verify(tmp_path, kit.ref(), key_dir / "good.pub")).stdout  # type: ignore[arg-type, attr-defined]


def test_bundle_of_another_digest_is_refused(make, key_dir: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    kit, other = make("v1"), make("v2", seed="other")
    bundle = dsse_bundle(private_key(key_dir / "good.key"), other.digest)
    attach_bundle(kit.registry, kit.repository, kit.digest, bundle, tmp_path / "blobs")
    line = fails(verify(tmp_path, kit.ref(), key_dir / "good.pub"))  # type: ignore[arg-type]
    assert f"is for another digest ({other.digest}), not this one" in line


def test_malformed_bundle_is_refused(make, key_dir: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    kit = make()
    bundle = json.dumps({"mediaType": "application/vnd.dev.sigstore.bundle.v0.3+json"}).encode()
    attach_bundle(kit.registry, kit.repository, kit.digest, bundle, tmp_path / "blobs")
    line = fails(verify(tmp_path, kit.ref(), key_dir / "good.pub"))  # type: ignore[arg-type]
    assert line.endswith("the bundle holds neither a DSSE envelope nor a message signature")


def test_bundle_through_the_referrers_api_verifies(
    make,
    key_dir: Path,
    tmp_path: Path,
    fault_proxy: FaultProxy,  # type: ignore[no-untyped-def]
) -> None:
    # docker-registry 2.8 has no referrers API: the proxy answers GET /v2/<repo>/referrers/<digest>
    # as an OCI 1.1 registry would, with the index of the referrer manifest pushed for real.
    kit = make()
    bundle = dsse_bundle(private_key(key_dir / "good.key"), kit.digest)
    _, referrer, size = referrer_manifest(
        kit.registry, kit.repository, kit.digest, bundle, tmp_path
    )
    index = json.dumps(referrers_index([(referrer, size)])).encode()
    referrers_path = f"/v2/{kit.repository}/referrers/{kit.digest}"
    fault_proxy.add_rule(
        always(
            lambda r: r.path.split("?")[0] == referrers_path,
            Fault(respond=Response(200, {"Content-Type": media.OCI_INDEX}, index)),
        )
    )
    result = ok(
        verify(tmp_path, f"{fault_proxy.host}/{kit.repository}:{kit.tag}", key_dir / "good.pub")
    )
    assert f"(bundle referrer {referrer} via the referrers API)" in result.stdout  # type: ignore[attr-defined]
    paths = [r.path for r in fault_proxy.requests]
    assert (
        f"{referrers_path}?artifactType=application%2Fvnd.dev.sigstore.bundle.v0.3%2Bjson" in paths
    )
    assert not [p for p in paths if p.endswith(f"/manifests/{fallback_tag(kit.digest)}")]
    assert sha256(bundle) in " ".join(paths)
