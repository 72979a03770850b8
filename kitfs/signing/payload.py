"""cosign's "simple signing" payload: the JSON a legacy ``.sig`` layer holds and a signature signs.

cosign (sigstore/sigstore ``payload.Cosign``, specs/SIGNATURE_SPEC.md) marshals it with Go's
``encoding/json``: ``{"critical":{"identity":{"docker-reference":R},"image":{"docker-manifest-digest":
D},"type":"cosign container image signature"},"optional":null}``, where R is the repository without
tag or digest and ``optional`` holds the ``-a key=value`` annotations (sorted keys) or ``null``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

PAYLOAD_TYPE = "cosign container image signature"
MAX_PAYLOAD_SIZE = 1024 * 1024


class PayloadError(ValueError):
    """A payload is not a cosign simple-signing document."""


@dataclass(frozen=True)
class SimpleSigning:
    """The claims of one payload: which manifest digest it vouches for, under which name."""

    digest: str
    identity: str
    annotations: dict[str, str] = field(default_factory=dict)


def _go_string(text: str) -> str:
    """A JSON string as Go writes it: UTF-8, with <, >, & and U+2028/9 escaped."""
    encoded = json.dumps(text, ensure_ascii=False)
    for char, escape in (
        ("<", "\\u003c"),
        (">", "\\u003e"),
        ("&", "\\u0026"),
        ("\u2028", "\\u2028"),
        ("\u2029", "\\u2029"),
    ):
        encoded = encoded.replace(char, escape)
    return encoded


def build(digest: str, identity: str, annotations: dict[str, str] | None = None) -> bytes:
    """The payload bytes cosign 2.x writes for signing ``identity@digest``."""
    if annotations:
        items = ",".join(f"{_go_string(k)}:{_go_string(v)}" for k, v in sorted(annotations.items()))
        optional = "{" + items + "}"
    else:
        optional = "null"
    text = (
        '{"critical":{"identity":{"docker-reference":'
        + _go_string(identity)
        + '},"image":{"docker-manifest-digest":'
        + _go_string(digest)
        + '},"type":'
        + _go_string(PAYLOAD_TYPE)
        + '},"optional":'
        + optional
        + "}"
    )
    return text.encode("utf-8")


def _get(raw: Any, *names: str) -> Any:
    for name in names:
        if not isinstance(raw, dict):
            raise PayloadError(f"field {name!r} is missing")
        raw = raw.get(name)
    return raw


def parse(data: bytes) -> SimpleSigning:
    """The claims of a payload; PayloadError when it is not one cosign would accept."""
    if len(data) > MAX_PAYLOAD_SIZE:
        raise PayloadError(f"the payload is larger than {MAX_PAYLOAD_SIZE} bytes")
    try:
        raw = json.loads(data)
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise PayloadError("the payload is not JSON") from None
    kind = _get(raw, "critical", "type")
    if kind != PAYLOAD_TYPE:
        raise PayloadError(f"the payload type is {kind!r}, not {PAYLOAD_TYPE!r}")
    digest = _get(raw, "critical", "image", "docker-manifest-digest")
    if not isinstance(digest, str) or not digest:
        raise PayloadError("the payload names no docker-manifest-digest")
    named = _get(raw, "critical", "identity")
    identity = named.get("docker-reference") if isinstance(named, dict) else None
    optional = _get(raw, "optional")
    annotations = (
        {str(k): str(v) for k, v in optional.items()} if isinstance(optional, dict) else {}
    )
    return SimpleSigning(digest, identity if isinstance(identity, str) else "", annotations)
