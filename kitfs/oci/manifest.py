"""OCI descriptors and manifests as records, serialised in Go's field order (image-spec v1.1).

kit writes manifests with Go's ``json.Marshal`` of ``ocispec.Manifest``; we do the same so that the
manifest digest (the ModelKit ID) of a ModelKit packed by kitfs is what kit would compute.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

from kitfs.errors import KitfsError
from kitfs.kitfile import go_json
from kitfs.limits import MAX_MANIFEST_SIZE, load_json
from kitfs.oci import media


class ManifestError(KitfsError):
    """A manifest is not valid JSON or not an OCI image manifest we can use."""


def sha256_digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@dataclass(frozen=True)
class Descriptor:
    """An OCI content descriptor."""

    media_type: str
    digest: str
    size: int
    annotations: dict[str, str] = field(default_factory=dict, compare=False, hash=False)
    artifact_type: str | None = None

    @property
    def hex(self) -> str:
        return self.digest.split(":", 1)[1]

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "mediaType": self.media_type,
            "digest": self.digest,
            "size": self.size,
        }
        if self.annotations:
            out["annotations"] = dict(sorted(self.annotations.items()))
        if self.artifact_type:
            out["artifactType"] = self.artifact_type
        return out

    @classmethod
    def from_dict(cls, raw: Any, what: str = "descriptor") -> Descriptor:
        if not isinstance(raw, dict):
            raise ManifestError(f"{what} is not a JSON object")
        digest = raw.get("digest")
        size = raw.get("size")
        if not isinstance(digest, str) or ":" not in digest:
            raise ManifestError(f"{what} has no valid digest")
        algorithm, _, hexpart = digest.partition(":")
        if (
            algorithm != "sha256"
            or len(hexpart) != 64
            or not all(c in "0123456789abcdef" for c in hexpart)
        ):
            raise ManifestError(f"{what} has an unsupported digest {digest!r} (sha256 expected)")
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise ManifestError(f"{what} has no valid size")
        annotations = raw.get("annotations") or {}
        if not isinstance(annotations, dict):
            raise ManifestError(f"{what} has invalid annotations")
        return cls(
            media_type=str(raw.get("mediaType", "")),
            digest=digest,
            size=size,
            annotations={str(k): str(v) for k, v in annotations.items()},
            artifact_type=raw.get("artifactType"),
        )


MAX_LAYERS = 10_000


@dataclass(frozen=True)
class Manifest:
    """An OCI image manifest (schemaVersion 2) with its config and layer descriptors."""

    config: Descriptor
    layers: tuple[Descriptor, ...]
    annotations: dict[str, str] = field(default_factory=dict, compare=False, hash=False)
    media_type: str | None = media.OCI_MANIFEST
    artifact_type: str | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"schemaVersion": 2}
        if self.media_type:
            out["mediaType"] = self.media_type
        if self.artifact_type:
            out["artifactType"] = self.artifact_type
        out["config"] = self.config.to_dict()
        out["layers"] = [layer.to_dict() for layer in self.layers]
        if self.annotations:
            out["annotations"] = dict(sorted(self.annotations.items()))
        return out

    def to_bytes(self) -> bytes:
        """Go's compact ``json.Marshal`` of the manifest: the bytes whose digest is the ModelKit ID."""
        return go_json(self.to_dict()).encode("utf-8")

    @property
    def model_format(self) -> str | None:
        """``kit``, ``modelpack`` or None (not a model artifact): see :func:`media.model_format`."""
        return media.model_format(self.artifact_type, self.config.media_type)

    @property
    def is_modelkit(self) -> bool:
        """A kit ModelKit or a ModelPack: an artifact kitfs reads."""
        return self.model_format is not None

    @property
    def is_modelpack(self) -> bool:
        return self.model_format == media.MODELPACK_FORMAT

    @property
    def cli_version(self) -> str:
        return self.annotations.get(media.CLI_VERSION_ANNOTATION, "unknown")

    @classmethod
    def from_bytes(cls, data: bytes, what: str = "manifest") -> Manifest:
        """Parse and check a manifest; refuse indexes, other schema versions and absurd layer counts."""
        raw = load_json(data, what, ManifestError, MAX_MANIFEST_SIZE)
        if not isinstance(raw, dict):
            raise ManifestError(f"{what} is not a JSON object")
        media_type = raw.get("mediaType")
        if media_type in (media.OCI_INDEX, media.DOCKER_MANIFEST_LIST) or "manifests" in raw:
            raise ManifestError(f"{what} is an image index, not a ModelKit manifest")
        if raw.get("schemaVersion") != 2:
            raise ManifestError(f"{what} is not an OCI image manifest (schemaVersion 2)")
        layers_raw = raw.get("layers") or []
        if not isinstance(layers_raw, list):
            raise ManifestError(f"{what} has invalid layers")
        if len(layers_raw) > MAX_LAYERS:
            raise ManifestError(
                f"{what} has {len(layers_raw)} layers; at most {MAX_LAYERS} are accepted"
            )
        annotations = raw.get("annotations") or {}
        if not isinstance(annotations, dict):
            raise ManifestError(f"{what} has invalid annotations")
        return cls(
            config=Descriptor.from_dict(raw.get("config"), f"{what} config"),
            layers=tuple(
                Descriptor.from_dict(layer, f"{what} layer {i}")
                for i, layer in enumerate(layers_raw)
            ),
            annotations={str(k): str(v) for k, v in annotations.items()},
            media_type=media_type,
            artifact_type=raw.get("artifactType"),
        )

    def descriptor(self, data: bytes | None = None) -> Descriptor:
        """The descriptor that points at this manifest (of ``data`` when given, else our bytes)."""
        body = data if data is not None else self.to_bytes()
        return Descriptor(self.media_type or media.OCI_MANIFEST, sha256_digest(body), len(body))
