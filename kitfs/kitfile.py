"""The Kitfile: strict YAML parsing, validation, and the JSON config form kit stores in a ModelKit.

Field order, omission rules and encoding follow kit's ``pkg/artifact/kitfile.go`` and
``pkg/lib/kitfile/validate.go``: unknown fields are errors (yaml.v3 ``KnownFields(true)``), the config
blob is Go's compact ``json.Marshal`` of the struct (struct fields in declaration order, map keys
sorted, HTML characters escaped), and ``kit info`` prints YAML with a two-space indent.
"""

from __future__ import annotations

import copy
import datetime
import json
import math
import posixpath
import re
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import yaml

from kitfs.errors import KitfileError
from kitfs.limits import MAX_CONFIG_SIZE, YamlLimitError, check_yaml, load_json

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
    "remotePath": STR,
    "remoteHash": STR,
    "description": STR,
    "license": STR,
    "parameters": ANY,
    **_LAYER_INFO,
}
DOCS = {"path": STR, "description": STR, **_LAYER_INFO}
# Sections added after kit v1.7 (kitops-ml pkg/artifact/kitfile.go: Prompt, MCPServer).
PROMPT = {"name": STR, "path": STR, "description": STR, **_LAYER_INFO}
MCPSERVER = {"name": STR, "path": STR, "description": STR, **_LAYER_INFO}
KITFILE: dict[str, Any] = {
    "manifestVersion": STR,
    "package": PACKAGE,
    "model": MODEL,
    "code": [CODE],
    "datasets": [DATASET],
    "docs": [DOCS],
    "prompts": [PROMPT],
    "mcpServers": [MCPSERVER],
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
    id(PROMPT): "prompt",
    id(MCPSERVER): "mcpServer",
}
# Fields emitted even when empty (no ``omitempty`` in kit's struct tags).
_ALWAYS = {id(KITFILE): ("manifestVersion", "package"), id(DOCS): ("path",)}
_PART_TYPE_RE = re.compile(r"^[\w][\w.-]*$", re.ASCII)
_URL_SCHEME_RE = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*):")
MANIFEST_VERSION = "1.0.0"
_MODEL_PATHS = ("local", "reference")


@dataclass(frozen=True)
class Entry:
    """One layer-producing Kitfile entry: its kind, the index within its section, path and name."""

    kind: str  # model, modelpart, code, dataset, docs, prompt, mcpserver
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
        node = _first_document(text, source)
        if node is None:
            raise KitfileError(f"{source}: the Kitfile is empty")
        data = _convert(node, KITFILE, source, "the Kitfile")
        kitfile = cls(data)
        kitfile.validate(source)
        return kitfile

    @classmethod
    def from_config_json(cls, blob: bytes, source: str = "config") -> Kitfile:
        """Read the Kitfile from a ModelKit config blob (its JSON form)."""
        # Go decodes config JSON numbers into float64 (``parameters`` is ``any``); so do we, so
        # that ``kit info`` and unpacked Kitfiles print numbers as kit does.
        raw = load_json(blob, source, KitfileError, MAX_CONFIG_SIZE, parse_int=float)
        if not isinstance(raw, dict):
            raise KitfileError(f"{source} is not a Kitfile: expected a JSON object")
        kitfile = cls(_from_plain(raw, KITFILE, source))
        kitfile.check_config(source)
        return kitfile

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
        """The layer-producing entries, in kit's layer order: model, parts, code, datasets, docs,
        prompts, MCP servers (pkg/lib/filesystem/local-storage.go). A remote dataset has no layer."""
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
            if not ds.get("remotePath"):
                out.append(Entry("dataset", i, ds.get("path", ""), ds.get("name", ""), ds))
        for i, doc in enumerate(self.section("docs")):
            out.append(Entry("docs", i, doc.get("path", ""), doc.get("path", ""), doc))
        for i, prompt in enumerate(self.section("prompts")):
            path = prompt.get("path", "")
            out.append(Entry("prompt", i, path, prompt.get("name", "") or path, prompt))
        for i, server in enumerate(self.section("mcpServers")):
            out.append(
                Entry("mcpserver", i, server.get("path", ""), server.get("name", ""), server)
            )
        return out

    def remote_datasets(self) -> list[dict[str, Any]]:
        """Datasets kept outside the ModelKit (``remotePath``): in the Kitfile, with no layer."""
        return [ds for ds in self.section("datasets") if ds.get("remotePath")]

    def copy(self) -> Kitfile:
        return Kitfile(copy.deepcopy(self.data))

    def without_layer_info(self) -> Kitfile:
        """A copy with every digest and diffId removed (what ``kit info`` shows)."""
        return Kitfile(_strip_layer_info(copy.deepcopy(self.data)))

    # -- validation -----------------------------------------------------------------------------

    def validate(self, source: str = "Kitfile") -> None:
        """Check what kit checks (kitops-ml pkg/artifact/kitfile.go ``Validate``), all errors at once.

        A Kitfile without any layer section is valid: kit packs it as a ModelKit with no layers.
        """
        errors: list[str] = []
        version = self.manifest_version
        if not version:
            errors.append("manifestVersion is required")
        elif version != MANIFEST_VERSION:
            errors.append(f"invalid manifestVersion: expect {MANIFEST_VERSION} but got {version}")
        paths: dict[str, list[str]] = {}

        def add(path: str, label: str, what: str, allowed: tuple[str, ...] = ("local",)) -> None:
            paths.setdefault(_clean_path(path or "."), []).append(label)
            kind, problem = path_type(path)
            problem = problem or impossible_path(path)
            if problem:
                errors.append(f"invalid path for {what}: {problem}")
            if kind not in allowed:
                if what == "model":
                    errors.append(
                        "invalid path for model: only local paths and ModelKit references are permitted"
                    )
                else:
                    errors.append(f"invalid path for {what}: only local paths are permitted")

        model = self.model
        if model is not None:
            add(model.get("path", ""), f"model {model.get('name', '')}", "model", _MODEL_PATHS)
            for part in model.get("parts") or []:
                path = part.get("path", "")
                add(path, f"modelpart {part.get('name', '')}", f"model part ({path})")
                _check_part_type(part, errors)
        for what, section, label in (
            ("code", "code", "code layer"),
            ("dataset", "datasets", "dataset layer"),
            ("doc", "docs", "docs layer"),
        ):
            for i, item in enumerate(self.section(section)):
                path = item.get("path", "")
                add(path, f"{label} {i}", f"{what} ({path})")
        remote_paths = _check_remote_datasets(self.section("datasets"), errors)
        for i, prompt in enumerate(self.section("prompts")):
            path = prompt.get("path", "")
            add(path, f"prompt layer {i}", f"prompt ({path})")
        _check_mcp_servers(self.section("mcpServers"), errors, add)
        for path, labels in paths.items():
            for remote in remote_paths:
                if path != remote and is_within_path(path, remote):
                    errors.append(
                        f"{labels[0]} uses a path ({path}) that is within the path for a remote dataset"
                    )
            if len(labels) > 1:
                errors.append(f"{', '.join(labels[:-1])} and {labels[-1]} use the same path {path}")
            if posixpath.isabs(path):
                errors.append(
                    f"absolute paths are not supported in a Kitfile (path {path} in {labels[0]})"
                )
            elif path == ".." or path.startswith("../"):
                errors.append(
                    "paths outside the context directory are not supported in a Kitfile "
                    f"(path {path} in {labels[0]})"
                )
        if errors:
            raise KitfileError(f"{source}: invalid Kitfile: " + "; ".join(sorted(errors)))

    def check_config(self, source: str = "config") -> None:
        """The checks a config read from storage or a registry must pass: it names a
        manifestVersion (another artifact's config does not) and no path that is absolute or
        climbs out of the context. Unknown fields are ignored, as kit's encoding/json does."""
        if not self.manifest_version:
            raise KitfileError(f"{source} is not a Kitfile: it has no manifestVersion")
        for entry in self.entries():
            problem = impossible_path(entry.path)
            if problem:
                raise KitfileError(f"{source} is refused: the {entry.kind} path: {problem}")
            path = _clean_path(entry.path or ".")
            if posixpath.isabs(path) or path == ".." or path.startswith("../"):
                raise KitfileError(
                    f"{source} is refused: the {entry.kind} path {entry.path!r} is outside the "
                    "context directory"
                )

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


def path_type(path: str) -> tuple[str, str | None]:
    """kit's GetPathType: ``local``, ``reference`` (another ModelKit), ``s3`` or ``unknown``.

    The second item is the problem with the path, if any (kit refuses HTTP and other URLs).
    """
    if is_modelkit_reference(path):
        return "reference", None
    match = _URL_SCHEME_RE.match(path)
    if not match:
        return "local", None
    scheme = match.group(1).lower()
    if scheme == "s3":
        return "s3", None
    if scheme in ("http", "https"):
        return "unknown", f"HTTP urls are not supported in paths ({path})"
    return "unknown", f"unrecognized URL in path: {path}"


MAX_PATH_BYTES = 4095  # Linux's PATH_MAX less the terminating NUL
MAX_NAME_BYTES = 255


def impossible_path(path: str) -> str | None:
    """What makes ``path`` impossible as a file name on any system kit runs on (a NUL byte, a name
    or path longer than Linux allows, text that is not UTF-8); None for a possible one."""
    if "\0" in path:
        return f"{path!r} contains a NUL byte"
    try:
        raw = path.encode("utf-8")
    except UnicodeEncodeError:
        return f"{path!r} is not valid UTF-8"
    if len(raw) > MAX_PATH_BYTES:
        return f"a path of {len(raw)} bytes is longer than {MAX_PATH_BYTES}"
    longest = max((len(part) for part in raw.split(b"/")), default=0)
    if longest > MAX_NAME_BYTES:
        return f"a name of {longest} bytes in {path[:60]!r}... is longer than {MAX_NAME_BYTES}"
    return None


def _clean_path(path: str) -> str:
    """Go's filepath.Clean for slash paths."""
    cleaned = posixpath.normpath(path)
    return "/" + cleaned.lstrip("/") if cleaned.startswith("//") else cleaned


def is_within_path(path: str, root: str) -> bool:
    """Whether cleaned ``path`` is ``root`` or below it (Go's filepath.Rel does not climb)."""
    return root == "." or path == root or path.startswith(root.rstrip("/") + "/")


def _check_remote_datasets(datasets: list[dict[str, Any]], errors: list[str]) -> list[str]:
    """kit's checks on ``remotePath``/``remoteHash``; returns the paths of datasets that name
    another ModelKit, inside which no other layer may lie (pkg/artifact/kitfile.go)."""
    remote_paths = []
    for dataset in datasets:
        remote = dataset.get("remotePath", "")
        if not remote:
            if dataset.get("remoteHash"):
                errors.append("remote hash is only applicable when remotePath is set")
            continue
        kind, problem = path_type(remote)
        if problem:
            errors.append(f"invalid remote path for dataset ({remote}): {problem}")
        if kind == "s3":
            if not dataset.get("remoteHash"):
                errors.append(
                    f"remoteHash is required when remote dataset paths are used ({remote})"
                )
        elif kind == "reference":
            remote_paths.append(_clean_path(dataset.get("path", "") or "."))
        else:
            errors.append(
                "only S3 URLs and ModelKit references are supported for remote dataset paths "
                f"({remote})"
            )
    return remote_paths


def _check_mcp_servers(servers: list[dict[str, Any]], errors: list[str], add: Any) -> None:
    """Each MCP server names one ``.mcpb`` file and a name unique in the section."""
    names: set[str] = set()
    for i, server in enumerate(servers):
        path = server.get("path", "")
        paths_before = len(errors)
        add(path, f"mcpServer layer {i}", f"mcpServer ({path})")
        if len(errors) == paths_before and not path.endswith(".mcpb"):
            errors.append(
                f"invalid path for mcpServer ({path}): path must point to a single .mcpb file"
            )
        name = server.get("name", "")
        if not name:
            errors.append(f"mcpServer with path {path} must have a name")
        elif name in names:
            errors.append(f"duplicate mcpServer name {name}: names must be unique")
        names.add(name)


def _check_part_type(part: dict[str, Any], errors: list[str]) -> None:
    part_type = part.get("type", "")
    name = part.get("name", "")
    if not part_type:
        return
    if not _PART_TYPE_RE.match(part_type):
        errors.append(
            f"modelpart {name} has invalid type "
            "(must be alphanumeric with dots, dashes, and underscores)"
        )
    if len(part_type.encode()) > 64:
        errors.append(f"modelpart {name} type is too long (must be fewer than 64 characters)")


# -- YAML node conversion (strict) ------------------------------------------------------------


def _first_document(text: str | bytes, source: str) -> yaml.Node | None:
    """The first YAML document's node tree; like yaml.v3's Decoder, later documents are not read.
    Its size, depth and alias expansion are bounded first (kitfs.limits)."""
    try:
        check_yaml(text)
        loader = yaml.SafeLoader(text)
    except YamlLimitError as exc:
        raise KitfileError(f"{source}: refused: {exc}") from None
    except yaml.YAMLError as exc:  # the reader checks the encoding at once
        raise KitfileError(f"{source}: invalid YAML: {_one_line(exc)}") from None
    try:
        return loader.get_node() if loader.check_node() else None
    except yaml.YAMLError as exc:
        raise KitfileError(f"{source}: invalid YAML: {_one_line(exc)}") from None
    finally:
        loader.dispose()


def _where(node: yaml.Node) -> str:
    return f"line {node.start_mark.line + 1}"


def _convert(node: yaml.Node, schema: Any, source: str, field: str) -> Any:
    if schema == ANY:
        return _parameter(node, source, frozenset())
    if schema == STR:
        if not isinstance(node, yaml.ScalarNode):
            raise KitfileError(
                f"{source}: {_where(node)}: {field} must be a string, found a {_kind(node)}"
            )
        if _is_null(node):
            return ""
        return str(node.value)
    if isinstance(node, yaml.ScalarNode) and _is_null(node):
        return [] if schema == STRLIST or isinstance(schema, list) else {}
    if schema == STRLIST:
        if not isinstance(node, yaml.SequenceNode):
            raise KitfileError(
                f"{source}: {_where(node)}: {field} must be a list of strings, found a {_kind(node)}"
            )
        return [_convert(item, STR, source, f"an item of {field}") for item in node.value]
    if isinstance(schema, list):
        if not isinstance(node, yaml.SequenceNode):
            raise KitfileError(
                f"{source}: {_where(node)}: {field} must be a list, found a {_kind(node)}"
            )
        return [_convert(item, schema[0], source, f"an item of {field}") for item in node.value]
    return _convert_mapping(node, schema, source, field)


def _convert_mapping(
    node: yaml.Node, schema: dict[str, Any], source: str, field: str
) -> dict[str, Any]:
    type_name = _TYPE_NAMES.get(id(schema), "object")
    if not isinstance(node, yaml.MappingNode):
        raise KitfileError(
            f"{source}: {_where(node)}: {field} must be a mapping, found a {_kind(node)}"
        )
    out: dict[str, Any] = {}
    lines: dict[str, str] = {}
    for key_node, value_node in node.value:
        if not isinstance(key_node, yaml.ScalarNode):
            raise KitfileError(
                f"{source}: {_where(key_node)}: keys in {type_name} must be field names, "
                f"found a {_kind(key_node)}"
            )
        key = key_node.value
        if key not in schema or key in _LAYER_INFO:
            raise KitfileError(
                f"{source}: {_where(key_node)}: unknown field {key!r} in {type_name}"
            )
        if key in out:
            raise KitfileError(
                f'{source}: {_where(key_node)}: mapping key "{key}" already defined at {lines[key]}'
            )
        lines[key] = _where(key_node)
        out[key] = _convert(value_node, schema[key], source, key)
    return out


def _is_null(node: yaml.ScalarNode) -> bool:
    return node.style is None and node.value in _V3_NULLS


def _kind(node: yaml.Node) -> str:
    if isinstance(node, yaml.MappingNode):
        return "mapping"
    if isinstance(node, yaml.SequenceNode):
        return "list"
    return "scalar"


def _one_line(exc: Exception) -> str:
    return " ".join(str(exc).split())


# ``parameters`` are decoded as yaml.v3 decodes into ``any`` (YAML 1.2 core schema plus v3's quirks:
# ``yes``/``on`` stay strings, ``0755`` and ``0x1F`` are integers, ``1e3`` is a float, timestamps stay
# strings), so that their JSON form is what kit writes. Go's json.Marshal then refuses NaN, infinities
# and maps whose keys are not all strings; so do we, with the line named.
_V3_NULLS = frozenset(("", "~", "null", "Null", "NULL"))
_V3_CONSTANTS: dict[str, Any] = {
    **dict.fromkeys(("true", "True", "TRUE"), True),
    **dict.fromkeys(("false", "False", "FALSE"), False),
    **dict.fromkeys(_V3_NULLS, None),
    **dict.fromkeys((".nan", ".NaN", ".NAN"), math.nan),
    **dict.fromkeys((".inf", ".Inf", ".INF", "+.inf", "+.Inf", "+.INF"), math.inf),
    **dict.fromkeys(("-.inf", "-.Inf", "-.INF"), -math.inf),
}
_GO_INT_RE = re.compile(r"^[+-]?(?:0[xX][0-9a-fA-F]+|0[oO][0-7]+|0[bB][01]+|0[0-7]*|[1-9][0-9]*)$")
_V3_FLOAT_RE = re.compile(r"^[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?$")
_STR_TAG = "tag:yaml.org,2002:str"
_MERGE_TAG = "tag:yaml.org,2002:merge"


def v3_resolve(text: str) -> Any:
    """The value yaml.v3 gives a plain (unquoted) scalar decoded into ``any``."""
    if text in _V3_CONSTANTS:
        return _V3_CONSTANTS[text]
    first = text[0]
    if first == ".":
        if re.fullmatch(r"\.[0-9]+(?:[eE][-+]?[0-9]+)?", text):
            return float(text)
        return text
    if first not in "+-0123456789":
        return text
    plain = text.replace("_", "")
    if _GO_INT_RE.match(plain):
        value = _go_int(plain)
        if -(1 << 63) <= value < (1 << 64) and not (value >= 1 << 63 and plain[0] == "+"):
            return value
    if _V3_FLOAT_RE.match(plain):
        number = float(plain)
        if not math.isinf(number):  # Go's ParseFloat fails with a range error here
            return number
    return text


def _go_int(plain: str) -> int:
    sign = -1 if plain[0] == "-" else 1
    digits = plain.lstrip("+-")
    if len(digits) > 1 and digits[0] == "0" and digits[1] not in "xXoObB":
        return sign * int(digits, 8)
    return sign * int(digits, 0)


def _parameter(node: yaml.Node, source: str, active: frozenset[int]) -> Any:
    if isinstance(node, yaml.ScalarNode):
        return _parameter_scalar(node, source)
    if id(node) in active:
        raise KitfileError(f"{source}: {_where(node)}: parameters contain a recursive alias")
    active = active | {id(node)}
    if isinstance(node, yaml.SequenceNode):
        return [_parameter(item, source, active) for item in node.value]
    assert isinstance(node, yaml.MappingNode)
    merged: dict[str, Any] = {}
    out: dict[str, Any] = {}
    lines: dict[str, str] = {}
    for key_node, value_node in node.value:
        if key_node.tag == _MERGE_TAG:
            merged.update(_merge_source(value_node, source, active))
            continue
        key = _parameter(key_node, source, active)
        if not isinstance(key, str):
            raise KitfileError(
                f"{source}: {_where(key_node)}: parameter keys must be strings "
                f"(JSON has no other keys), found {key_node.value!r}"
            )
        if key in out:
            raise KitfileError(
                f'{source}: {_where(key_node)}: mapping key "{key}" already defined at {lines[key]}'
            )
        lines[key] = _where(key_node)
        out[key] = _parameter(value_node, source, active)
    return {**merged, **out}


def _merge_source(node: yaml.Node, source: str, active: frozenset[int]) -> dict[str, Any]:
    items = node.value if isinstance(node, yaml.SequenceNode) else [node]
    merged: dict[str, Any] = {}
    for item in reversed(items):  # earlier maps in a merge list win
        value = _parameter(item, source, active)
        if not isinstance(value, dict):
            raise KitfileError(f"{source}: {_where(item)}: only mappings can be merged with <<")
        merged.update(value)
    return merged


def _parameter_scalar(node: yaml.ScalarNode, source: str) -> Any:
    if node.style is not None:  # quoted or block scalars are strings
        return node.value
    if (
        node.tag == _STR_TAG
        and _PLAIN_RESOLVER.resolve(yaml.ScalarNode, node.value, (True, False)) != _STR_TAG
    ):
        return node.value  # an explicit !!str
    value = v3_resolve(node.value)
    if isinstance(value, float) and (math.isnan(value) or math.isinf(value)):
        raise KitfileError(
            f"{source}: {_where(node)}: parameters cannot hold {node.value} "
            "(JSON has no such number)"
        )
    return value


_PLAIN_RESOLVER = yaml.resolver.Resolver()


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
        # ``parameters`` is a Go ``any``: omitempty drops it only when nil, not when {} or "".
        empty = value is None if sub == ANY else _is_empty(value)
        if empty and key not in always:
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


_TIMESTAMP_RE = re.compile(
    r"^(\d{4})-(\d{1,2})-(\d{1,2})"
    r"(?:(?:[Tt](\d{1,2}):(\d{1,2}):(\d{1,2})(?:\.\d+)?(?:Z|[+-]\d{2}:\d{2}))"
    r"|(?: (\d{1,2}):(\d{1,2}):(\d{1,2})(?:\.\d+)?))?$"
)


def _is_v3_timestamp(text: str) -> bool:
    """yaml.v3's parseTimestamp (Go time.Parse with its four layouts), for quoting decisions."""
    match = _TIMESTAMP_RE.match(text)
    if not match:
        return False
    year, month, day = (int(g) for g in match.groups()[:3])
    clock = [int(g) for g in match.groups()[3:] if g is not None]
    try:
        datetime.date(year, month, day)
    except ValueError:
        return False
    return not clock or (clock[0] < 24 and clock[1] < 60 and clock[2] < 60)


def _v3_tag(text: str) -> str:
    """The tag yaml.v3 resolves a plain scalar to (YAML 1.2 core rules, not PyYAML's 1.1)."""
    if _is_v3_timestamp(text):
        return "tag:yaml.org,2002:timestamp"
    value = v3_resolve(text)
    if value is None:
        return "tag:yaml.org,2002:null"
    if isinstance(value, bool):
        return "tag:yaml.org,2002:bool"
    if isinstance(value, int):
        return "tag:yaml.org,2002:int"
    if isinstance(value, float):
        return "tag:yaml.org,2002:float"
    return _STR_TAG


# yaml.v3 (encode.go stringv) also quotes strings that YAML 1.1 would read as bools or base-60 numbers.
_V3_OLD_BOOLS = frozenset(
    [
        "y",
        "Y",
        "yes",
        "Yes",
        "YES",
        "on",
        "On",
        "ON",
        "n",
        "N",
        "no",
        "No",
        "NO",
        "off",
        "Off",
        "OFF",
    ]
)
_V3_BASE60_RE = re.compile(r"^[-+]?[0-9][0-9_]*(?::[0-5]?[0-9])+(?:\.[0-9_]*)?$")


def go_yaml_float(value: float) -> str:
    """yaml.v3's float text: Go's ``strconv.FormatFloat(f, 'g', -1, 64)`` with .inf/.nan."""
    if math.isnan(value):
        return ".nan"
    if math.isinf(value):
        return ".inf" if value > 0 else "-.inf"
    if value == 0:
        return "-0" if math.copysign(1.0, value) < 0 else "0"
    sign, digits, exponent = Decimal(repr(value)).normalize().as_tuple()
    assert isinstance(exponent, int)
    text = "".join(map(str, digits))
    point = len(text) + exponent  # Go's digs.dp
    if point - 1 < -4 or point - 1 >= 6:  # shortest 'g' switches to %e outside [1e-4, 1e6)
        mantissa = text[0] + ("." + text[1:] if len(text) > 1 else "")
        exp = point - 1
        body = f"{mantissa}e{'-' if exp < 0 else '+'}{abs(exp):02d}"
    else:
        body = format(Decimal(repr(abs(value))).normalize(), "f")
    return ("-" if sign else "") + body


class _KitDumper(yaml.SafeDumper):
    """yaml.v3's output shape: block sequences indented under their key, v3's quoting rules."""

    def increase_indent(self, flow: bool = False, indentless: bool = False) -> None:
        super().increase_indent(flow, False)

    def resolve(self, kind: Any, value: Any, implicit: Any) -> Any:
        if kind is yaml.ScalarNode and implicit[0]:
            return _v3_tag(value)
        return super().resolve(kind, value, implicit)

    def choose_scalar_style(self) -> str:
        style = super().choose_scalar_style()
        # v3 falls back from a literal block straight to double quotes, never to single quotes.
        if getattr(self.event, "style", None) == "|" and style == "'":
            return '"'
        return style


def _represent_str(dumper: yaml.SafeDumper, data: str) -> yaml.Node:
    style: str | None = None
    if "\n" in data:
        style = "|"
    elif _v3_tag(data) != _STR_TAG or data in _V3_OLD_BOOLS or _V3_BASE60_RE.match(data):
        style = '"'
    return dumper.represent_scalar(_STR_TAG, data, style=style)


def _represent_float(dumper: yaml.SafeDumper, data: float) -> yaml.Node:
    text = go_yaml_float(data)
    return dumper.represent_scalar(_v3_tag(text), text)


class _FlowList(list):  # type: ignore[type-arg]
    pass


def _represent_flow(dumper: yaml.SafeDumper, data: _FlowList) -> yaml.Node:
    return dumper.represent_sequence("tag:yaml.org,2002:seq", data, flow_style=True)


_KitDumper.add_representer(str, _represent_str)
_KitDumper.add_representer(float, _represent_float)
_KitDumper.add_representer(_FlowList, _represent_flow)


def _mark_flow(data: dict[str, Any]) -> dict[str, Any]:
    package = data.get("package")
    if isinstance(package, dict) and "authors" in package:
        package["authors"] = _FlowList(package["authors"])
    return data
