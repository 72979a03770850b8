"""Media types of OCI manifests and of ModelKit configs and layers (kit's pkg/lib/constants/mediaType.go)."""

from __future__ import annotations

from dataclasses import dataclass

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
MANIFEST_TYPES = (OCI_MANIFEST, OCI_INDEX, DOCKER_MANIFEST, DOCKER_MANIFEST_LIST)

KIT_CONFIG = "application/vnd.kitops.modelkit.config.v1+json"
MODELPACK_CONFIG = "application/vnd.cncf.model.config.v1+json"
MODELPACK_ARTIFACT = "application/vnd.cncf.model.manifest.v1+json"

CLI_VERSION_ANNOTATION = "ml.kitops.modelkit.cli-version"
MODELPACK_FILEPATH_ANNOTATION = "org.cncf.model.filepath"
MODELPACK_FILE_METADATA_ANNOTATION = "org.cncf.model.file.metadata+json"
# kit's prompts travel as code layers marked with this annotation (pkg/lib/constants/consts.go).
LAYER_SUBTYPE_ANNOTATION = "ml.kitops.modelkit.layer-subtype"
LAYER_SUBTYPE_PROMPT = "prompt"
# An MCP bundle is stored verbatim, one raw uncompressed layer (pkg/lib/constants/mediatype).
MCPB_LAYER = "application/vnd.kitops.modelkit.mcpb.v1.raw"

# Kinds of Kitfile entry, in the order kit writes their layers.
KINDS = ("model", "modelpart", "code", "dataset", "docs")
COMPRESSIONS = ("none", "gzip", "gzip-fastest", "zstd")

_MODELPACK_KINDS = {
    "weight": "model",
    "weight.config": "modelpart",
    "doc": "docs",
    "code": "code",
    "dataset": "dataset",
}


@dataclass(frozen=True)
class LayerType:
    """What a layer media type says: the Kitfile kind it holds and how it is compressed."""

    kind: str
    compression: str  # "none", "gzip" or "zstd"
    modelpack: bool = False
    raw: bool = False  # ``.raw``: the blob is the file itself, not a tar


def layer_media_type(kind: str, compression: str) -> str:
    """The media type kit writes for a layer of ``kind`` compressed with ``compression``."""
    if kind not in KINDS:
        raise ValueError(f"unknown layer kind {kind!r}")
    base = f"application/vnd.kitops.modelkit.{kind}.v1.tar"
    suffix = {"none": "", "gzip": "+gzip", "gzip-fastest": "+gzip", "zstd": "+zstd"}[compression]
    return base + suffix


def parse_layer_media_type(media_type: str) -> LayerType | None:
    """Classify a layer media type; None when it is not a ModelKit or ModelPack layer."""
    base, _, suffix = media_type.partition("+")
    compression = {"": "none", "gzip": "gzip", "zstd": "zstd"}.get(suffix)
    if compression is None:
        return None
    if media_type == MCPB_LAYER:
        return LayerType("mcpserver", "none", raw=True)
    prefix = "application/vnd.kitops.modelkit."
    if base.startswith(prefix) and base.endswith(".v1.tar"):
        kind = base[len(prefix) : -len(".v1.tar")]
        return LayerType(kind, compression) if kind in KINDS else None
    prefix = "application/vnd.cncf.model."
    if base.startswith(prefix):
        rest = base[len(prefix) :]
        for ending, raw in ((".v1.tar", False), (".v1.raw", True)):
            if rest.endswith(ending):
                mp_kind = _MODELPACK_KINDS.get(rest[: -len(ending)])
                if mp_kind:
                    return LayerType(mp_kind, compression, modelpack=True, raw=raw)
    return None


def is_modelkit_config(media_type: str) -> bool:
    return media_type in (KIT_CONFIG, MODELPACK_CONFIG)
