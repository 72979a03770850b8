"""Helpers for the signature tests: the real cosign, key pairs, and hand-built signature artifacts
(legacy ``.sig`` manifests and sigstore bundle v0.3 referrers) pushed to a real registry."""

from __future__ import annotations

import base64
import json
import os
import subprocess
from pathlib import Path
from typing import Any

from reliability.helpers import run_client

from kitfs.oci import media
from kitfs.oci.client import RegistryClient
from kitfs.oci.manifest import Descriptor, sha256_digest
from kitfs.signing.bundle import BUNDLE_V03, INTOTO_PAYLOAD_TYPE, SIGN_PREDICATE, pae
from kitfs.signing.keys import PrivateKey, generate_key_pair, load_private_key
from kitfs.signing.locate import fallback_tag, legacy_tag

ROOT = Path(__file__).resolve().parents[2]
COSIGN = ROOT / ".tools" / "cosign" / "usr" / "bin" / "cosign"
PASSWORD = "correct horse"
EMPTY_CONFIG = "application/vnd.oci.empty.v1+json"


def cosign(*args: str, password: str = PASSWORD) -> subprocess.CompletedProcess[str]:
    """Run the real cosign offline (no tlog, no network but the loopback registry)."""
    env = {
        **os.environ,
        "COSIGN_PASSWORD": password,
        "COSIGN_YES": "true",
        "TUF_ROOT": str(ROOT / ".tools" / "cosign" / "tuf"),
        "SIGSTORE_NO_CACHE": "true",
    }
    return subprocess.run(
        [str(COSIGN), *args], capture_output=True, text=True, env=env, timeout=60, check=False
    )


def write_key_pair(
    directory: Path, name: str = "cosign", password: str = PASSWORD, *, cheap: bool = False
) -> Path:
    """``name.key`` and ``name.pub`` made by kitfs's generator; returns the private key path.
    ``cheap`` keys cost 1/64 of cosign's scrypt work (fast tests; cosign refuses such keys)."""
    private_pem, public_pem = generate_key_pair(
        password.encode(), **({"scrypt_n": 1024} if cheap else {})
    )
    directory.mkdir(parents=True, exist_ok=True)
    (directory / f"{name}.key").write_bytes(private_pem)
    (directory / f"{name}.pub").write_bytes(public_pem)
    return directory / f"{name}.key"


def private_key(path: Path, password: str = PASSWORD) -> PrivateKey:
    return load_private_key(path, password.encode())


def _go_json(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


async def _put_blob(client: RegistryClient, repository: str, data: bytes, tmp: Path) -> Descriptor:
    desc = Descriptor("application/octet-stream", sha256_digest(data), len(data))
    tmp.mkdir(parents=True, exist_ok=True)
    path = tmp / desc.hex
    path.write_bytes(data)
    await client.upload_blob(repository, desc, path)
    return desc


def put_blob(host: str, repository: str, data: bytes, tmp: Path) -> Descriptor:
    async def body(client: RegistryClient) -> Descriptor:
        return await _put_blob(client, repository, data, tmp)

    result: Descriptor = run_client(host, body)
    return result


def get_manifest(host: str, repository: str, reference: str) -> bytes:
    async def body(client: RegistryClient) -> bytes:
        return (await client.get_manifest(repository, reference))[0]

    result: bytes = run_client(host, body)
    return result


def put_manifest(host: str, repository: str, reference: str, manifest: dict[str, Any]) -> str:
    data = _go_json(manifest)

    async def body(client: RegistryClient) -> str:
        return await client.put_manifest(
            repository, reference, data, manifest.get("mediaType", media.OCI_MANIFEST)
        )

    result: str = run_client(host, body)
    return result


def sig_manifest(host: str, repository: str, digest: str) -> dict[str, Any]:
    """The legacy signature manifest of ``digest`` as stored."""
    result: dict[str, Any] = json.loads(get_manifest(host, repository, legacy_tag(digest)))
    return result


def dsse_bundle(key: PrivateKey, digest: str) -> bytes:
    """A bundle v0.3 as cosign 3 signs an image: a DSSE envelope of an in-toto statement of
    predicate type cosign/sign/v1 whose subject is the manifest digest (no tlog entries)."""
    statement = _go_json(
        {
            "_type": "https://in-toto.io/Statement/v1",
            "subject": [{"digest": {"sha256": digest.removeprefix("sha256:")}}],
            "predicateType": SIGN_PREDICATE,
            "predicate": {},
        }
    )
    signature = key.sign(pae(INTOTO_PAYLOAD_TYPE, statement))
    return _go_json(
        {
            "mediaType": BUNDLE_V03,
            "verificationMaterial": {"publicKey": {"hint": ""}, "tlogEntries": []},
            "dsseEnvelope": {
                "payload": base64.b64encode(statement).decode(),
                "payloadType": INTOTO_PAYLOAD_TYPE,
                "signatures": [{"sig": base64.b64encode(signature).decode(), "keyid": ""}],
            },
        }
    )


def message_bundle(key: PrivateKey, digest: str, manifest: bytes) -> bytes:
    """A bundle v0.3 with a message signature over the manifest bytes."""
    return _go_json(
        {
            "mediaType": BUNDLE_V03,
            "verificationMaterial": {"publicKey": {"hint": ""}},
            "messageSignature": {
                "messageDigest": {
                    "algorithm": "SHA2_256",
                    "digest": base64.b64encode(bytes.fromhex(digest.split(":")[1])).decode(),
                },
                "signature": base64.b64encode(key.sign(manifest)).decode(),
            },
        }
    )


def referrer_manifest(
    host: str, repository: str, subject: str, bundle: bytes, tmp: Path
) -> tuple[dict[str, Any], str, int]:
    """Push ``bundle`` as an OCI 1.1 referrer of ``subject`` (BUNDLE_SPEC.md); returns the
    referrer manifest, its digest and size. The index that lists it is the caller's business."""
    bundle_desc = put_blob(host, repository, bundle, tmp)
    empty = put_blob(host, repository, b"{}", tmp)
    subject_size = len(get_manifest(host, repository, subject))
    manifest = {
        "mediaType": media.OCI_MANIFEST,
        "schemaVersion": 2,
        "artifactType": BUNDLE_V03,
        "config": {"mediaType": EMPTY_CONFIG, "digest": empty.digest, "size": 2},
        "layers": [
            {
                "digest": bundle_desc.digest,
                "mediaType": BUNDLE_V03,
                "size": bundle_desc.size,
                "annotations": {
                    "org.opencontainers.image.title": f"{fallback_tag(bundle_desc.digest)}.sigstore.json"
                },
            }
        ],
        "subject": {"digest": subject, "mediaType": media.OCI_MANIFEST, "size": subject_size},
    }
    digest = put_manifest(host, repository, sha256_digest(_go_json(manifest)), manifest)
    return manifest, digest, len(_go_json(manifest))


def referrers_index(entries: list[tuple[str, int]]) -> dict[str, Any]:
    return {
        "schemaVersion": 2,
        "mediaType": media.OCI_INDEX,
        "manifests": [
            {
                "mediaType": media.OCI_MANIFEST,
                "digest": digest,
                "size": size,
                "artifactType": BUNDLE_V03,
                "annotations": {"dev.sigstore.bundle.content": "dsse-envelope"},
            }
            for digest, size in entries
        ],
    }


def attach_bundle(host: str, repository: str, subject: str, bundle: bytes, tmp: Path) -> str:
    """Attach ``bundle`` to ``subject`` as a registry without the referrers API needs: the
    referrer manifest plus the index under the fallback tag ``sha256-<hex>``."""
    _, digest, size = referrer_manifest(host, repository, subject, bundle, tmp)
    put_manifest(host, repository, fallback_tag(subject), referrers_index([(digest, size)]))
    return digest
