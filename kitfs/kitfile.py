"""The Kitfile: strict YAML parsing, validation, and the JSON config form kit stores in a ModelKit.

Field order, omission rules and encoding follow kit's ``pkg/artifact/kitfile.go`` and
``pkg/lib/kitfile/validate.go``: unknown fields are errors (yaml.v3 ``KnownFields(true)``), the config
blob is Go's compact ``json.Marshal`` of the struct (struct fields in declaration order, map keys
sorted, HTML characters escaped), and ``kit info`` prints YAML with a two-space indent.
"""

from __future__ import annotations

import copy
import json
import math
import posixpath
import re
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import yaml

from kitfs.errors import KitfileError

DEFAULT_NAMES = ("Kitfile", "kitfile", ".kitfile")

ANY = "any"
STR = "str"
STRLIST = "strlist"

_LAYER_INFO = {"digest": STR, "diffId": STR}
PACKAGE = {"name": STR, "version": STR, "description": STR, "license": STR, "authors": STRLIST}
PART = {"name": STR, "path": STR, "license": STR, "type": STR, **_LAYER_INFO}
MODEL: dict[str, Any] = {
    "name": STR,
    "path": STR,
    "license": STR,
    "framework": STR,
    "format": STR,
    "version": STR,
    "description": STR,
    "parts": [PART],
    "parameters": ANY,
    **_LAYER_INFO,
}
CODE = {"path": STR, "description": STR, "license": STR, **_LAYER_INFO}
DATASET = {
    "name": STR,
    "path": STR,
    "description": STR,
    "license": STR,
    "parameters": ANY,
    **_LAYER_INFO,
}
DOCS = {"path": STR, "description": STR, **_LAYER_INFO}
KITFILE: dict[str, Any] = {
    "manifestVersion": STR,
    "package": PACKAGE,
    "model": MODEL,
    "code": [CODE],
    "datasets": [DATASET],
    "docs": [DOCS],
}
# Go type names, used in error messages the way yaml.v3 names them.
_TYPE_NAMES = {
    id(KITFILE): "Kitfile",
    id(PACKAGE): "package",
    id(MODEL): "model",
    id(PART): "model part",
    id(CODE): "code",
    id(DATASET): "dataset",
    id(DOCS): "docs",
}
# Fields emitted even when empty (no ``omitempty`` in kit's struct tags).
_ALWAYS = {id(KITFILE): ("manifestVersion", "package"), id(DOCS): ("path",)}
_PART_TYPE_RE = re.compile(r"^[\w][\w.-]*$")


@dataclass(frozen=True)
class Entry:
    """One layer-producing Kitfile entry: its kind, the index within its section, path and name."""

    kind: str  # model, modelpart, code, dataset, docs
    index: int
    path: str
    name: str
    data: dict[str, Any]


class Kitfile:
    """A parsed Kitfile, kept as ordered plain data in kit's field order."""

    def __init__(self, data: dict[str, Any]) -> None:
        self.data = data

    # -- construction -------------------------------------------------------------------------

    @classmethod
    def from_yaml(cls, text: str | bytes, source: str = "Kitfile") -> Kitfile:
        """Parse YAML strictly; raise KitfileError naming the line and the field on any problem."""
        try:
            node = yaml.compose(text, Loader=yaml.SafeLoader)
        except yaml.YAMLError as exc:
            raise KitfileError(f"{source}: invalid YAML: {_one_line(exc)}") from None
        if node is None:
            raise KitfileError(f"{source}: the Kitfile is empty")
        data = _convert(node, KITFILE, source)
        kitfile = cls(data)
        kitfile.validate(source)
        return kitfile

    @classmethod
    def from_config_json(cls, blob: bytes, source: str = "config") -> Kitfile:
        """Read the Kitfile from a ModelKit config blob (its JSON form)."""
        try:
            raw = json.loads(blob)
        except (ValueError, UnicodeDecodeError) as exc:
            raise KitfileError(f"{source} is not valid JSON: {exc}") from None
        if not isinstance(raw, dict):
            raise KitfileError(f"{source} is not a Kitfile: expected a JSON object")
        return cls(_from_plain(raw, KITFILE, source))

    # -- access ---------------------------------------------------------------------------------

    @property
    def manifest_version(self) -> str:
        return str(self.data.get("manifestVersion", ""))

    @property
    def package(self) -> dict[str, Any]:
        return dict(self.data.get("package") or {})

    @property
    def model(self) -> dict[str, Any] | None:
        return self.data.get("model")

    def section(self, name: str) -> list[dict[str, Any]]:
        return list(self.data.get(name) or [])

    def entries(self) -> list[Entry]:
        """The layer-producing entries, in kit's layer order: model, parts, code, datasets, docs."""
        out: list[Entry] = []
        model = self.model
        if model is not None:
            if model.get("path") and not is_modelkit_reference(model["path"]):
                out.append(Entry("model", 0, model["path"], model.get("name", ""), model))
            for i, part in enumerate(model.get("parts") or []):
                out.append(Entry("modelpart", i, part.get("path", ""), part.get("name", ""), part))
        for i, code in enumerate(self.section("code")):
            out.append(Entry("code", i, code.get("path", ""), code.get("path", ""), code))
        for i, ds in enumerate(self.section("datasets")):
            out.append(Entry("dataset", i, ds.get("path", ""), ds.get("name", ""), ds))
        for i, doc in enumerate(self.section("docs")):
            out.append(Entry("docs", i, doc.get("path", ""), doc.get("path", ""), doc))
        return out

    def copy(self) -> Kitfile:
        return Kitfile(copy.deepcopy(self.data))

    def without_layer_info(self) -> Kitfile:
        """A copy with every digest and diffId removed (what ``kit info`` shows)."""
        return Kitfile(_strip_layer_info(copy.deepcopy(self.data)))

    # -- validation -----------------------------------------------------------------------------

    def validate(self, source: str = "Kitfile") -> None:
        """Check what kit checks before packing (pkg/lib/kitfile/validate.go), all errors at once."""
        errors: list[str] = []
        if not self.manifest_version:
            errors.append("manifestVersion is required")
        if not any(self.data.get(k) for k in ("model", "code", "datasets", "docs")):
            errors.append("at least one of model, code, datasets or docs is required")
        paths: dict[str, list[str]] = {}
        for entry in self.entries():
            label = _entry_label(entry)
            paths.setdefault(entry.path or ".", []).append(label)
            if entry.kind == "modelpart":
                _check_part_type(entry, errors)
        for path, labels in paths.items():
            if len(labels) > 1:
                errors.append(f"{', '.join(labels[:-1])} and {labels[-1]} use the same path {path}")
            if posixpath.isabs(path):
                errors.append(
                    f"absolute paths are not supported in a Kitfile (path {path} in {labels[0]})"
                )
        if errors:
            raise KitfileError(f"{source}: invalid Kitfile: " + "; ".join(sorted(errors)))

    # -- serialisation -------------------------------------------------------------------------

    def to_config_json(self) -> bytes:
        """The config blob: Go's compact ``json.Marshal`` of kit's KitFile struct."""
        return go_json(_ordered(self.data, KITFILE)).encode("utf-8")

    def to_yaml(self) -> str:
        """YAML as ``kit info`` prints it (yaml.v3, indent 2, no digests)."""
        data = _ordered(self.without_layer_info().data, KITFILE)
        if not data.get("package"):
            data.pop("package", None)  # yaml.v3 omits a zero struct, encoding/json does not
        return yaml.dump(
            _mark_flow(data),
            Dumper=_KitDumper,
            sort_keys=False,
            allow_unicode=True,
            width=10**9,
            indent=2,
        )


def is_modelkit_reference(path: str) -> bool:
    """Whether a model path names another ModelKit (``registry/repo:tag``) rather than a file."""
    from kitfs import reference

    if ":" not in path and "@" not in path:
        return False
    try:
        reference.parse(path)
    except Exception:
        return False
    return True


def _entry_label(entry: Entry) -> str:
    if entry.kind == "model":
        return f"model {entry.name}"
    if entry.kind == "modelpart":
        return f"modelpart {entry.name}"
    if entry.kind == "dataset":
        return f"dataset {entry.name}"
    return f"{'code' if entry.kind == 'code' else 'docs'} layer {entry.index}"


def _check_part_type(entry: Entry, errors: list[str]) -> None:
    part_type = entry.data.get("type", "")
    if not part_type:
        return
    if not _PART_TYPE_RE.match(part_type):
        errors.append(
            f"modelpart {entry.name} has invalid type "
            "(must be alphanumeric with dots, dashes, and underscores)"
        )
    if len(part_type) > 64:
        errors.append(f"modelpart {entry.name} type is too long (must be fewer than 64 characters)")


# -- YAML node conversion (strict) ------------------------------------------------------------


def _where(node: yaml.Node) -> str:
    return f"line {node.start_mark.line + 1}"


def _convert(node: yaml.Node, schema: Any, source: str) -> Any:
    if schema == ANY:
        return _construct_any(node, source)
    if schema == STR:
        if not isinstance(node, yaml.ScalarNode):
            raise KitfileError(
                f"{source}: {_where(node)}: expected a string, found a {_kind(node)}"
            )
        if node.tag == "tag:yaml.org,2002:null" and node.value in ("", "~", "null", "Null", "NULL"):
            return ""
        return str(node.value)
    if schema == STRLIST:
        if not isinstance(node, yaml.SequenceNode):
            raise KitfileError(f"{source}: {_where(node)}: expected a list of strings")
        return [_convert(item, STR, source) for item in node.value]
    if isinstance(schema, list):
        if isinstance(node, yaml.ScalarNode) and node.tag.endswith(":null"):
            return []
        if not isinstance(node, yaml.SequenceNode):
            raise KitfileError(f"{source}: {_where(node)}: expected a list, found a {_kind(node)}")
        return [_convert(item, schema[0], source) for item in node.value]
    return _convert_mapping(node, schema, source)


def _convert_mapping(node: yaml.Node, schema: dict[str, Any], source: str) -> dict[str, Any]:
    type_name = _TYPE_NAMES.get(id(schema), "object")
    if isinstance(node, yaml.ScalarNode) and node.tag.endswith(":null"):
        return {}
    if not isinstance(node, yaml.MappingNode):
        raise KitfileError(
            f"{source}: {_where(node)}: expected a mapping for {type_name}, found a {_kind(node)}"
        )
    out: dict[str, Any] = {}
    for key_node, value_node in node.value:
        key = key_node.value
        if key not in schema or key in _LAYER_INFO:
            raise KitfileError(
                f"{source}: {_where(key_node)}: unknown field {key!r} in {type_name}"
            )
        if key in out:
            raise KitfileError(
                f"{source}: {_where(key_node)}: field {key!r} is defined twice in {type_name}"
            )
        out[key] = _convert(value_node, schema[key], source)
    return out


def _construct_any(node: yaml.Node, source: str) -> Any:
    loader = yaml.SafeLoader("")
    try:
        return loader.construct_object(node, deep=True)
    except yaml.YAMLError as exc:
        raise KitfileError(f"{source}: invalid parameters: {_one_line(exc)}") from None
    finally:
        loader.dispose()


def _kind(node: yaml.Node) -> str:
    if isinstance(node, yaml.MappingNode):
        return "mapping"
    if isinstance(node, yaml.SequenceNode):
        return "list"
    return "scalar"


def _one_line(exc: Exception) -> str:
    return " ".join(str(exc).split())


# -- plain data (config JSON) ----------------------------------------------------------------


def _from_plain(raw: Any, schema: Any, source: str) -> Any:
    if schema == ANY:
        return raw
    if schema == STR:
        if raw is None:
            return ""
        if not isinstance(raw, str):
            raise KitfileError(f"{source} is not a Kitfile: expected a string, found {raw!r}")
        return raw
    if schema == STRLIST:
        return [_from_plain(x, STR, source) for x in (raw or [])]
    if isinstance(schema, list):
        if raw is None:
            return []
        if not isinstance(raw, list):
            raise KitfileError(
                f"{source} is not a Kitfile: expected a list, found {type(raw).__name__}"
            )
        return [_from_plain(x, schema[0], source) for x in raw]
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise KitfileError(
            f"{source} is not a Kitfile: expected an object, found {type(raw).__name__}"
        )
    out: dict[str, Any] = {}
    for key, value in raw.items():
        if key in schema:  # encoding/json ignores unknown fields; so do we
            out[key] = _from_plain(value, schema[key], source)
    return out


def _strip_layer_info(data: Any) -> Any:
    if isinstance(data, dict):
        return {k: _strip_layer_info(v) for k, v in data.items() if k not in _LAYER_INFO}
    if isinstance(data, list):
        return [_strip_layer_info(x) for x in data]
    return data


def _ordered(data: Any, schema: Any) -> Any:
    """``data`` in the schema's field order with empty fields omitted, as Go's omitempty does."""
    if schema == ANY:
        return sort_maps(data)
    if schema in (STR, STRLIST):
        return data
    if isinstance(schema, list):
        return [_ordered(x, schema[0]) for x in data]
    always = _ALWAYS.get(id(schema), ())
    out: dict[str, Any] = {}
    for key, sub in schema.items():
        value = data.get(key)
        if _is_empty(value) and key not in always:
            continue
        if value is None:
            value = {} if isinstance(sub, dict) else ""
        out[key] = _ordered(value, sub)
    return out


def _is_empty(value: Any) -> bool:
    return value is None or (isinstance(value, str | list | dict) and len(value) == 0)


# -- Go encoding/json ------------------------------------------------------------------------

_GO_ESCAPES = {
    "<": "\\u003c",
    ">": "\\u003e",
    "&": "\\u0026",
    "\u2028": "\\u2028",
    "\u2029": "\\u2029",
}


def go_json(value: Any, *, indent: int | None = None) -> str:
    """Encode like Go's ``json.Marshal``/``MarshalIndent``: HTML escaping, Go float formatting.

    Dicts keep their order (struct fields); callers sort maps that Go would sort.
    """
    text = _go_encode(value, indent, 0)
    for char, escaped in _GO_ESCAPES.items():
        text = text.replace(char, escaped)
    return text


def _go_encode(value: Any, indent: int | None, level: int) -> str:
    if isinstance(value, dict):
        if not value:
            return "{}"
        items = [
            f"{json.dumps(str(k), ensure_ascii=False)}:{' ' if indent is not None else ''}"
            f"{_go_encode(v, indent, level + 1)}"
            for k, v in value.items()
        ]
        return _join("{", items, "}", indent, level)
    if isinstance(value, list | tuple):
        if not value:
            return "[]"
        return _join("[", [_go_encode(v, indent, level + 1) for v in value], "]", indent, level)
    if isinstance(value, bool) or value is None:
        return json.dumps(value)
    if isinstance(value, float):
        return go_float(value)
    if isinstance(value, int):
        return str(value)
    return json.dumps(str(value), ensure_ascii=False)


def _join(open_: str, items: list[str], close: str, indent: int | None, level: int) -> str:
    if indent is None:
        return open_ + ",".join(items) + close
    pad = "\n" + " " * (indent * (level + 1))
    return open_ + pad + ("," + pad).join(items) + "\n" + " " * (indent * level) + close


def go_float(value: float) -> str:
    """Format a float as Go's encoding/json does: shortest digits, 'e' form outside [1e-6, 1e21)."""
    if math.isnan(value) or math.isinf(value):
        raise KitfileError(f"unsupported number in parameters: {value}")
    if value == 0:
        return "-0" if math.copysign(1.0, value) < 0 else "0"
    digits = Decimal(repr(value))
    if 1e-6 <= abs(value) < 1e21:
        text = format(digits, "f")
        return text.rstrip("0").rstrip(".") if "." in text else text
    mantissa, exponent = format(digits, "e").split("e")
    mantissa = mantissa.rstrip("0").rstrip(".") if "." in mantissa else mantissa
    exp = int(exponent)
    # Go writes at least two exponent digits, then json.Marshal trims "e-07" to "e-7".
    return f"{mantissa}e-{-exp}" if exp < 0 else f"{mantissa}e+{exp:02d}"


def sort_maps(value: Any) -> Any:
    """Sort the keys of every mapping, as Go does when marshalling ``map[string]any``."""
    if isinstance(value, dict):
        return {k: sort_maps(value[k]) for k in sorted(value)}
    if isinstance(value, list):
        return [sort_maps(v) for v in value]
    return value


# -- YAML output in yaml.v3's shape ----------------------------------------------------------


class _KitDumper(yaml.SafeDumper):
    """Indents block sequences under their key and writes ``authors`` in flow style, as yaml.v3."""

    def increase_indent(self, flow: bool = False, indentless: bool = False) -> None:
        super().increase_indent(flow, False)

    def choose_scalar_style(self) -> str:
        style = super().choose_scalar_style()
        return '"' if style == "'" else style  # yaml.v3 quotes with double quotes


class _FlowList(list):  # type: ignore[type-arg]
    pass


def _represent_flow(dumper: yaml.SafeDumper, data: _FlowList) -> yaml.Node:
    return dumper.represent_sequence("tag:yaml.org,2002:seq", data, flow_style=True)


_KitDumper.add_representer(_FlowList, _represent_flow)


def _mark_flow(data: dict[str, Any]) -> dict[str, Any]:
    package = data.get("package")
    if isinstance(package, dict) and "authors" in package:
        package["authors"] = _FlowList(package["authors"])
    return data
