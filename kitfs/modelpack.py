"""CNCF ModelPack artifacts (modelpack/model-spec v1): their Kitfile, their config, their layers.

A manifest is a kit ModelKit or a ModelPack by its artifactType, else its config media type (kit's
mediatype.ModelFormatForManifest); anything else is refused. A ModelPack's Kitfile is the JSON kit
stores in the ``ml.kitops.modelkit.kitfile`` manifest annotation when it packed it; a ModelPack from
another tool (modctl, Docker) has none, and its Kitfile is derived from the layers' filepath
annotations and the config's diffIds as kit's GenerateKitfileForModelPack does (pkg/artifact): the
first weight layer is the model, further weight and weight.config layers are its parts. Both sources
are covered by the manifest digest (the annotation is in the manifest, the config is named by it).
"""

from __future__ import annotations

import os
from datetime import UTC, datetime
from typing import Any

from kitfs.errors import KitfileError
from kitfs.kitfile import Kitfile, go_json
from kitfs.limits import MAX_CONFIG_SIZE, load_json
from kitfs.oci import media
from kitfs.oci.manifest import Manifest, ManifestError

DERIVED_MANIFEST_VERSION = "1.0.0"
_SECTION_OF_KIND = {"code": "code", "dataset": "datasets", "docs": "docs"}


def check_model_artifact(manifest: Manifest, name: str) -> str:
    """The artifact's format (``kit`` or ``modelpack``); a one-line refusal for anything else."""
    fmt = manifest.model_format
    if fmt is None:
        shown = f"artifactType {manifest.artifact_type!r}, " if manifest.artifact_type else ""
        raise ManifestError(
            f"{name} is not a ModelKit or ModelPack: {shown}config media type "
            f"{manifest.config.media_type!r}"
        )
    return fmt


def kitfile_for(
    manifest: Manifest, config: bytes, name: str, config_what: str | None = None
) -> Kitfile:
    """The Kitfile of a ModelKit or ModelPack, from its (verified) config blob and manifest;
    ``config_what`` names a kit config in messages (default ``config of NAME``)."""
    if check_model_artifact(manifest, name) == media.KIT_FORMAT:
        return Kitfile.from_config_json(config, config_what or f"config of {name}")
    annotation = manifest.annotations.get(media.KITFILE_ANNOTATION)
    if annotation:
        return Kitfile.from_config_json(
            annotation.encode("utf-8"), f"the {media.KITFILE_ANNOTATION} annotation of {name}"
        )
    return derive_kitfile(manifest, config, name)


def config_diff_ids(config: bytes, name: str) -> list[str] | None:
    """The ``modelfs.diffIds`` of a model-spec config, None when it records none."""
    raw = load_json(config, f"the ModelPack config of {name}", KitfileError, MAX_CONFIG_SIZE)
    modelfs = raw.get("modelfs") if isinstance(raw, dict) else None
    if modelfs is None:
        return None
    diff_ids = modelfs.get("diffIds") if isinstance(modelfs, dict) else []
    if diff_ids is None:
        return None
    if not isinstance(diff_ids, list) or not all(
        isinstance(d, str) and d.startswith("sha256:") for d in diff_ids
    ):
        raise KitfileError(f"the ModelPack config of {name} has invalid modelfs.diffIds")
    return diff_ids


def derive_kitfile(manifest: Manifest, config: bytes, name: str) -> Kitfile:
    """A Kitfile for a ModelPack that carries none, as kit's GenerateKitfileForModelPack (a config
    without ``modelfs`` gives entries without diffIds, as kit's generation without a config)."""
    if manifest.model_format != media.MODELPACK_FORMAT:
        raise KitfileError(f"{name} is not a modelpack artifact")
    diff_ids = config_diff_ids(config, name)
    if diff_ids is not None and len(diff_ids) != len(manifest.layers):
        raise KitfileError(
            f"invalid ModelPack config of {name}: number of layers does not match DiffIDs"
        )
    model: dict[str, Any] = {}
    data: dict[str, Any] = {"manifestVersion": DERIVED_MANIFEST_VERSION, "model": model}
    for index, desc in enumerate(manifest.layers):
        path = desc.annotations.get(media.MODELPACK_FILEPATH_ANNOTATION, "")
        if not path:
            raise KitfileError(
                f"{name}: unknown file path for layer {desc.digest}: no "
                f"{media.MODELPACK_FILEPATH_ANNOTATION} annotation"
            )
        layer_type = media.parse_layer_media_type(desc.media_type)
        if layer_type is None:
            raise KitfileError(f"{name}: failed to parse media type {desc.media_type}")
        entry = {"path": path, "digest": desc.digest}
        if diff_ids is not None:
            entry["diffId"] = diff_ids[index]
        if layer_type.kind == "model" and "path" not in model:
            model.update(entry)
        elif layer_type.kind in ("model", "modelpart"):
            model.setdefault("parts", []).append(entry)
        else:
            data.setdefault(_SECTION_OF_KIND[layer_type.kind], []).append(entry)
    return Kitfile.from_config_json(go_json(data).encode("utf-8"), f"Kitfile derived for {name}")


def layer_kinds(manifest: Manifest) -> list[str | None]:
    """The Kitfile kind each layer pairs with, in order (None: not a layer kitfs reads).

    A ModelPack may hold several weight layers; the Kitfile has one model, so the weight layers
    after the first pair with model parts, as kit's derived Kitfile records them.
    """
    kinds: list[str | None] = []
    seen_model = False
    for desc in manifest.layers:
        layer_type = media.parse_layer_media_type(desc.media_type)
        if layer_type is None:
            kinds.append(None)
            continue
        kind = layer_type.kind
        if kind == "model" and layer_type.modelpack:
            kind = "modelpart" if seen_model else "model"
            seen_model = True
        kinds.append(kind)
    return kinds


# -- writing -------------------------------------------------------------------------------------


def model_config_json(kitfile: Kitfile, diff_ids: list[str], created: datetime | None) -> bytes:
    """The model-spec config kit writes for a Kitfile (kit's KitFile.ToModelPackConfig), as Go's
    ``json.Marshal`` of modelspecv1.Model: descriptor, modelfs, config, in field order.

    kit stamps ``createdAt`` with the current time; kitfs only with ``created`` (from
    ``SOURCE_DATE_EPOCH``), so that a pack is reproducible, as it does for the manifest.
    """
    package = kitfile.package
    descriptor: dict[str, Any] = {}
    if created is not None:
        descriptor["createdAt"] = go_time(created)
    for key, value in (
        ("authors", list(package.get("authors") or [])),
        ("name", package.get("name", "")),
        ("version", package.get("version", "")),
        ("licenses", _licenses(kitfile)),
        ("title", package.get("name", "")),
        ("description", package.get("description", "")),
    ):
        if value:
            descriptor[key] = value
    config: dict[str, Any] = {}
    if (kitfile.model or {}).get("format"):
        config["format"] = kitfile.model["format"]  # type: ignore[index]
    body = {
        "descriptor": descriptor,
        "modelfs": {"type": "layers", "diffIds": list(diff_ids)},
        "config": config,
    }
    return go_json(body).encode("utf-8")


def _licenses(kitfile: Kitfile) -> list[str]:
    """kit's collectLicenses: package, model, parts, datasets and code licenses, sorted, unique."""
    model = kitfile.model or {}
    found = [kitfile.package.get("license"), model.get("license")]
    found += [part.get("license") for part in model.get("parts") or []]
    found += [ds.get("license") for ds in kitfile.section("datasets")]
    found += [code.get("license") for code in kitfile.section("code")]
    return sorted({str(x) for x in found if x})


def go_time(moment: datetime, nanoseconds: int | None = None) -> str:
    """Go's ``time.Time`` JSON form (RFC 3339, fraction to the nanosecond with trailing zeros
    dropped), in UTC; ``nanoseconds`` replaces the fraction of a second when given."""
    moment = moment.astimezone(UTC)
    fraction = moment.microsecond * 1000 if nanoseconds is None else nanoseconds
    text = moment.strftime("%Y-%m-%dT%H:%M:%S")
    if fraction:
        text += f".{fraction:09d}".rstrip("0")
    return text + "Z"


def file_metadata(name: str, st: os.stat_result) -> str:
    """The ``org.cncf.model.file.metadata+json`` annotation kit puts on a raw layer
    (pkg/lib/filesystem fillDescAnnotations): name, permission bits, uid/gid 0, size, mtime and
    the tar typeflag of a regular file ('0')."""
    meta = {
        "name": name,
        "mode": st.st_mode & 0o777,
        "uid": 0,
        "gid": 0,
        "size": st.st_size,
        "mtime": go_time(
            datetime.fromtimestamp(st.st_mtime_ns // 1_000_000_000, UTC),
            st.st_mtime_ns % 1_000_000_000,
        ),
        "typeflag": ord("0"),
    }
    return go_json(meta)
