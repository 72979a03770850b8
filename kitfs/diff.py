"""``kitfs diff``: compare two ModelKits' manifests as ``kit diff`` does (pkg/cmd/diff).

Layers are matched by digest and, when both carry one, by their ``org.cncf.model.filepath``
annotation; the report is kit's text, byte for byte: configs, annotations, then shared layers and
the layers unique to each side, each table sorted by media type.
"""

from __future__ import annotations

import posixpath
from dataclasses import dataclass, field

from kitfs.catalog import format_bytes
from kitfs.oci import media
from kitfs.oci.manifest import Descriptor, Manifest

LOCAL_PREFIX = "local://"
REMOTE_PREFIX = "remote://"
_HEADINGS = "Type    | Digest             | Size"
_RULE = "---------------------------------------"


@dataclass
class DiffResult:
    same_config: bool
    annotations_match: bool
    shared: list[Descriptor] = field(default_factory=list)
    only_a: list[Descriptor] = field(default_factory=list)
    only_b: list[Descriptor] = field(default_factory=list)


def split_prefix(arg: str) -> tuple[str | None, str]:
    """``local://REF`` or ``remote://REF`` -> (where, REF); no prefix means local, then remote."""
    for where, prefix in (("remote", REMOTE_PREFIX), ("local", LOCAL_PREFIX)):
        if arg.startswith(prefix):
            return where, arg[len(prefix) :]
    return None, arg


def compare(a: Manifest, b: Manifest) -> DiffResult:
    """kit's CompareManifests: a layer of B is shared when A has one with its digest whose path
    annotation agrees (or either has none, as ModelKits from before kit v1.10)."""
    result = DiffResult(a.config.digest == b.config.digest, a.annotations == b.annotations)
    remaining: dict[str, list[Descriptor]] = {}
    for layer in a.layers:
        remaining.setdefault(layer.digest, []).append(layer)
    for layer in b.layers:
        path_b = layer.annotations.get(media.MODELPACK_FILEPATH_ANNOTATION, "")
        candidates = remaining.get(layer.digest, [])
        match = next(
            (
                i
                for i, other in enumerate(candidates)
                if _paths_agree(
                    other.annotations.get(media.MODELPACK_FILEPATH_ANNOTATION, ""), path_b
                )
            ),
            None,
        )
        if match is None:
            result.only_b.append(layer)
        else:
            result.shared.append(layer)
            del candidates[match]
    result.only_a = [layer for layers in remaining.values() for layer in layers]
    for layers in (result.shared, result.only_a, result.only_b):
        layers.sort(key=lambda d: d.media_type)  # Go's sort.Slice; equal types keep no set order
    return result


def _paths_agree(a: str, b: str) -> bool:
    return not a or not b or posixpath.normpath(a) == posixpath.normpath(b)


def user_media_type(media_type: str) -> str:
    """kit's FormatMediaTypeForUser: the base type (``model``, ``code``, ``mcpb``, ...)."""
    if media_type == media.OCI_MANIFEST:
        return "manifest"
    for prefix in ("application/vnd.kitops.modelkit.", "application/vnd.cncf.model."):
        if media_type.startswith(prefix):
            return media_type[len(prefix) :].split(".v1", 1)[0]
    return "(invalid media type)"


def report(name_a: str, name_b: str, digest_a: str, digest_b: str, a: Manifest, b: Manifest) -> str:
    """The text ``kit diff`` prints for two ModelKits."""
    if digest_a == digest_b:
        return "ModelKits are identical\n"
    result = compare(a, b)
    out = ["Comparing:\n", f"  ModelKit1: {name_a}\n", f"  ModelKit2: {name_b}\n\n"]
    out += ["Configurations:\n", _RULE + "\n"]
    if result.same_config:
        out.append(f"  Configs are identical (Digest: {a.config.digest[:17]})\n\n")
    else:
        out.append("Configs differ:\n")
        out.append(f"  ModelKit1 Config Digest: {a.config.digest[:17]}\n")
        out.append(f"  ModelKit2 Config Digest: {b.config.digest[:17]}\n\n")
    out += ["Annotations:\n", _RULE + "\n"]
    if result.annotations_match:
        out.append("  Annotations are identical \n\n")
    else:
        out.append("  Annotations does not match\n\n")
    out += _layers("Shared Layers", result.shared)
    out += _layers(f"Unique Layers to ModelKit1 ({name_a})", result.only_a)
    out += _layers(f"Unique Layers to ModelKit2 ({name_b})", result.only_b)
    return "".join(out)


def _layers(title: str, layers: list[Descriptor]) -> list[str]:
    out = [title + "\n", _RULE + "\n"]
    if layers:
        out.append(_HEADINGS + "\n")  # output.Infof ends every line
        for layer in layers:
            kind = user_media_type(layer.media_type)
            out.append(f"{kind:<7} | {layer.digest[:17]:<18} | {format_bytes(layer.size)}\n")
    else:
        out.append("<none>\n")
    out.append("\n")
    return out
