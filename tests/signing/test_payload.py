"""The bytes cosign signs and stores: simple-signing payloads and the signature image's config.

The expected bytes were recorded from cosign 2.5.0 (`cosign sign --key ... --tlog-upload=false
-a team=ml -a 'x=<&>'` against docker-registry 2.8); tests/signing/test_cosign_interop.py checks
the same against the live cosign.
"""

from __future__ import annotations

import pytest

from kitfs.signing import payload
from kitfs.signing.sign import config_bytes

DIGEST = "sha256:3999caa2bbe82aaa41dd06d026af58e9fceeaedd405e63454b96ebd29af5a149"
PAYLOAD_DIGEST = "sha256:186ab8a59478631d711fe68b5a3ca9e95a2f1d684d97c0c40c57e20422c7dca3"
OTHER_PAYLOAD_DIGEST = "sha256:757a73f8c017286f2814f1816e8a4d5b9ed37d2f926cf935c2624d93c4d37c53"


def test_payload_without_annotations_is_cosigns() -> None:
    assert payload.build(DIGEST, "127.0.0.1:36657/acme/m") == (
        b'{"critical":{"identity":{"docker-reference":"127.0.0.1:36657/acme/m"},"image":'
        b'{"docker-manifest-digest":"' + DIGEST.encode() + b'"},"type":"cosign container image '
        b'signature"},"optional":null}'
    )
    assert (
        "sha256:"
        + __import__("hashlib").sha256(payload.build(DIGEST, "127.0.0.1:36657/acme/m")).hexdigest()
        == PAYLOAD_DIGEST
    )


def test_payload_annotations_are_sorted_and_escaped_as_go_does() -> None:
    built = payload.build(DIGEST, "127.0.0.1:36657/acme/m", {"x": "<&>", "team": "ml"})
    assert built.endswith(b'"optional":{"team":"ml","x":"\\u003c\\u0026\\u003e"}}')
    assert "sha256:" + __import__("hashlib").sha256(built).hexdigest() == OTHER_PAYLOAD_DIGEST
    assert payload.parse(built).annotations == {"team": "ml", "x": "<&>"}


def test_signature_config_is_cosigns() -> None:
    assert config_bytes([PAYLOAD_DIGEST, OTHER_PAYLOAD_DIGEST]) == (
        b'{"architecture":"","created":"0001-01-01T00:00:00Z","history":[{"created":'
        b'"0001-01-01T00:00:00Z"},{"created":"0001-01-01T00:00:00Z"}],"os":"","rootfs":{"type":'
        b'"layers","diff_ids":["'
        + PAYLOAD_DIGEST.encode()
        + b'","'
        + OTHER_PAYLOAD_DIGEST.encode()
        + b'"]},"config":{}}'
    )


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"not json", "not JSON"),
        (b'{"critical":{"type":"attestation"}}', "payload type is 'attestation'"),
        (
            b'{"critical":{"type":"cosign container image signature","image":{}}}',
            "no docker-manifest-digest",
        ),
        (b"[1]", "field 'critical' is missing"),
    ],
)
def test_payload_parse_refuses_what_cosign_would(data: bytes, message: str) -> None:
    with pytest.raises(payload.PayloadError, match=message):
        payload.parse(data)
