"""Media types of OCI manifests and of ModelKit and ModelPack configs and layers.

kit's pkg/lib/constants/mediatype/{kitops,modelpack,artifacttype}.go and the CNCF model-spec's
specs-go/v1/mediatype.go: ``application/vnd.kitops.modelkit.<base>.v1.<tar|raw>[+gzip|+zstd]`` and
``application/vnd.cncf.model.<weight|weight.config|dataset|code|doc>.v1.<raw|tar|tar+gzip|tar+zstd>``.
"""

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
KIT_ARTIFACT = "application/vnd.kitops.modelkit.manifest.v1+json"

CLI_VERSION_ANNOTATION = "ml.kitops.modelkit.cli-version"
MODELPACK_FILEPATH_ANNOTATION = "org.cncf.model.filepath"
MODELPACK_FILE_METADATA_ANNOTATION = "org.cncf.model.file.metadata+json"
# kit's constants.KitfileJsonAnnotation: the Kitfile (config JSON form) of a ModelPack kit packed.
KITFILE_ANNOTATION = "ml.kitops.modelkit.kitfile"

# What an artifact is (kit's mediatype.ModelFormat).
KIT_FORMAT = "kit"
MODELPACK_FORMAT = "modelpack"
LAYER_FORMATS = ("tar", "raw")

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
_MODELPACK_BASES = {kind: base for base, kind in _MODELPACK_KINDS.items()}
_SUFFIXES = {"none": "", "gzip": "+gzip", "gzip-fastest": "+gzip", "zstd": "+zstd"}


@dataclass(frozen=True)
class LayerType:
    """What a layer media type says: the Kitfile kind it holds and how it is compressed."""

    kind: str
    compression: str  # "none", "gzip" or "zstd"
    modelpack: bool = False
    raw: bool = False  # ``.raw``: the blob is one file itself (compressed, for kit's), not a tar


def layer_media_type(
    kind: str, compression: str, *, modelpack: bool = False, raw: bool = False
) -> str:
    """The media type kit writes for a layer of ``kind`` compressed with ``compression``:
    a kit tar by default, a raw file with ``raw``, the model-spec names with ``modelpack``
    (which has no compressed raw layers)."""
    if kind not in KINDS:
        raise ValueError(f"unknown layer kind {kind!r}")
    suffix = _SUFFIXES[compression]
    if modelpack:
        if raw and suffix:
            raise ValueError("ModelPack raw layers cannot be compressed")
        return f"application/vnd.cncf.model.{_MODELPACK_BASES[kind]}.v1.{'raw' if raw else 'tar'}{suffix}"
    return f"application/vnd.kitops.modelkit.{kind}.v1.{'raw' if raw else 'tar'}{suffix}"


def parse_layer_media_type(media_type: str) -> LayerType | None:
    """Classify a layer media type; None when it is not a ModelKit or ModelPack layer."""
    base, _, suffix = media_type.partition("+")
    compression = {"": "none", "gzip": "gzip", "zstd": "zstd"}.get(suffix)
    if compression is None:
        return None
    if media_type == MCPB_LAYER:
        return LayerType("mcpserver", "none", raw=True)
    prefix = "application/vnd.kitops.modelkit."
    if base.startswith(prefix):
        for ending, raw in ((".v1.tar", False), (".v1.raw", True)):
            kind = base[len(prefix) : -len(ending)]
            if base.endswith(ending) and kind in KINDS:
                return LayerType(kind, compression, raw=raw)
        return None
    prefix = "application/vnd.cncf.model."
    if base.startswith(prefix):
        rest = base[len(prefix) :]
        for ending, raw in ((".v1.tar", False), (".v1.raw", True)):
            if rest.endswith(ending):
                mp_kind = _MODELPACK_KINDS.get(rest[: -len(ending)])
                # model-spec has no compressed raw layers (kit's ParseMediaType refuses them too)
                if mp_kind and not (raw and compression != "none"):
                    return LayerType(mp_kind, compression, modelpack=True, raw=raw)
    return None


def is_modelkit_config(media_type: str) -> bool:
    return media_type in (KIT_CONFIG, MODELPACK_CONFIG)


def model_format(artifact_type: str | None, config_media_type: str) -> str | None:
    """Whether a manifest is a kit ModelKit or a ModelPack: by its artifactType, else by its
    config media type (kit's ModelFormatForManifest); None for any other artifact."""
    if artifact_type == KIT_ARTIFACT:
        return KIT_FORMAT
    if artifact_type == MODELPACK_ARTIFACT:
        return MODELPACK_FORMAT
    if config_media_type == KIT_CONFIG:
        return KIT_FORMAT
    if config_media_type == MODELPACK_CONFIG:
        return MODELPACK_FORMAT
    return None
