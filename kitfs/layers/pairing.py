"""Pairs a ModelKit's layers with their Kitfile entries, by kind and in order, as ``kit unpack``
does (pkg/lib/filesystem/unpack/core.go): the n-th code layer with the n-th ``code`` entry, and so
on. The mount's tree (``kitfs.fs.tree``) and ``unpack`` both read layers through this one pairing.

A layer whose media type is not a ModelKit or ModelPack layer pairs with nothing (kit skips it);
kit's prompts travel as code layers marked by an annotation and pair with the Kitfile's prompts;
several ModelPack weight layers pair with the model and then its parts (``kitfs.modelpack``).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from kitfs.errors import KitfsError
from kitfs.kitfile import Kitfile
from kitfs.modelpack import layer_kinds
from kitfs.oci import media
from kitfs.oci.manifest import Descriptor, Manifest


class LayerPairingError(KitfsError):
    """The config's Kitfile records a digest for a layer that the manifest does not have there."""

    def __init__(self, kind: str, number: int, recorded: str, actual: str) -> None:
        super().__init__(
            f"digest in config and manifest do not match in {kind} layer {number}: "
            f"{recorded} against {actual}"
        )
        self.kind = kind
        self.number = number
        self.recorded = recorded
        self.actual = actual


@dataclass(frozen=True)
class LayerPair:
    """A layer and the Kitfile entry it pairs with (``{}`` when the Kitfile lists fewer)."""

    position: int  # index in the manifest's layers
    descriptor: Descriptor
    layer_type: media.LayerType  # its ``kind`` is the Kitfile kind the layer pairs with
    number: int  # which layer of its kind, from 0
    entry: dict[str, object]

    @property
    def kind(self) -> str:
        return self.layer_type.kind

    @property
    def recorded_digest(self) -> str:
        """The digest the Kitfile entry records for the layer ("" for ModelKits of older kit)."""
        return str(self.entry.get("digest") or "")


@dataclass(frozen=True)
class Pairing:
    """Every layer kitfs reads, paired, in manifest order; and the layers it skips."""

    pairs: tuple[LayerPair, ...]
    skipped: tuple[Descriptor, ...]


def kitfile_sections(kitfile: Kitfile) -> dict[str, list[dict[str, object]]]:
    """The Kitfile's entries per layer kind, in the order their layers appear."""
    model = kitfile.model or {}
    return {
        "model": [model] if model else [],
        "modelpart": list(model.get("parts") or []),
        "code": kitfile.section("code"),
        "dataset": [d for d in kitfile.section("datasets") if not d.get("remotePath")],
        "docs": kitfile.section("docs"),
        "prompt": kitfile.section("prompts"),
        "mcpserver": kitfile.section("mcpServers"),
    }


def pair_layers(manifest: Manifest, kitfile: Kitfile) -> Pairing:
    """Pair each layer of ``manifest`` with its entry in ``kitfile``; raise LayerPairingError when
    an entry records a digest other than its layer's."""
    sections = kitfile_sections(kitfile)
    counters: dict[str, int] = {}
    pairs: list[LayerPair] = []
    skipped: list[Descriptor] = []
    for position, (desc, kind) in enumerate(
        zip(manifest.layers, layer_kinds(manifest), strict=True)
    ):
        layer_type = media.parse_layer_media_type(desc.media_type)
        if layer_type is None or kind is None:
            skipped.append(desc)
            continue
        if desc.annotations.get(media.LAYER_SUBTYPE_ANNOTATION) == media.LAYER_SUBTYPE_PROMPT:
            kind = "prompt"  # kit's prompts are code layers marked as such
        number = counters.get(kind, 0)
        counters[kind] = number + 1
        entries = sections[kind]
        pair = LayerPair(
            position=position,
            descriptor=desc,
            layer_type=replace(layer_type, kind=kind),
            number=number,
            entry=entries[number] if number < len(entries) else {},
        )
        if pair.recorded_digest and pair.recorded_digest != desc.digest:
            raise LayerPairingError(kind, number, pair.recorded_digest, desc.digest)
        pairs.append(pair)
    return Pairing(tuple(pairs), tuple(skipped))
