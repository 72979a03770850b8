"""registries.conf in the containers format (containers-registries.conf(5)): mirrors and settings
per registry, read from ``--registries-conf``, else ``$KITFS_REGISTRIES_CONF``, else
``~/.config/kitfs/registries.conf``, else ``/etc/kitfs/registries.conf``.

Supported (version 2 of the format)::

    [[registry]]
    prefix = "registry.example.com/models"   # what references it applies to (default: location)
    location = "registry.example.com/models" # where to pull from instead (default: prefix)
    insecure = false                         # plain HTTP to this registry
    blocked = false                          # refuse references under this prefix
    pull-from-mirror = "all"                 # or "digest-only", "tag-only" (for manifests)

    [[registry.mirror]]
    location = "mirror.local:5000/models"
    insecure = true

``prefix`` may be ``*.example.com`` (any host under that domain; then ``location`` must be unset).
Top-level keys that concern short names (``unqualified-search-registries``, ``short-name-mode``,
``[aliases]``) and ``credential-helpers`` are accepted and ignored: kitfs references are always
fully qualified, and credentials come from kit's store and Docker's config.
"""

from __future__ import annotations

import logging
import os
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kitfs.errors import UsageError

log = logging.getLogger(__name__)

ENV_VAR = "KITFS_REGISTRIES_CONF"
SYSTEM_PATH = Path("/etc/kitfs/registries.conf")
PULL_FROM_MIRROR = ("all", "digest-only", "tag-only")
_IGNORED_TOP = frozenset(
    {"unqualified-search-registries", "short-name-mode", "aliases", "credential-helpers"}
)
_REGISTRY_KEYS = frozenset(
    {
        "prefix",
        "location",
        "insecure",
        "blocked",
        "mirror",
        "mirror-by-digest-only",
        "pull-from-mirror",
    }
)
_MIRROR_KEYS = frozenset({"location", "insecure", "pull-from-mirror"})
_LINE_RE = re.compile(r"\(at line (\d+), column (\d+)\)")
_HEADER_RE = re.compile(r"^[ \t]*\[\[[ \t]*registry(?:\.mirror)?[ \t]*\]\]", re.MULTILINE)


class RegistriesConfError(UsageError):
    """registries.conf does not parse or says something kitfs cannot do."""


@dataclass(frozen=True)
class Mirror:
    location: str
    insecure: bool = False
    pull_from: str = "all"


@dataclass(frozen=True)
class RegistryEntry:
    prefix: str
    location: str
    insecure: bool = False
    blocked: bool = False
    mirrors: tuple[Mirror, ...] = ()
    pull_from: str = "all"

    @property
    def wildcard(self) -> bool:
        return self.prefix.startswith("*.")

    def matches(self, name: str) -> int:
        """How long a match ``name`` (``host/repository``) is for this entry; 0 when none."""
        if self.wildcard:
            host = name.split("/", 1)[0]
            return len(self.prefix) if host.endswith(self.prefix[1:]) else 0
        if name == self.prefix or name.startswith(self.prefix + "/"):
            return len(self.prefix)
        return 0

    def rewrite(self, name: str, location: str) -> str:
        """``name`` with the matched prefix replaced by ``location`` (a mirror's, or ours)."""
        if self.wildcard:
            host, _, rest = name.partition("/")
            return f"{location or host}/{rest}"
        return location + name[len(self.prefix) :]


@dataclass(frozen=True)
class RegistriesConf:
    path: Path | None
    registries: tuple[RegistryEntry, ...] = ()

    def find(self, name: str) -> RegistryEntry | None:
        """The entry whose prefix matches ``name`` (``host/repository``) longest."""
        best: tuple[int, RegistryEntry | None] = (0, None)
        for entry in self.registries:
            length = entry.matches(name)
            if length > best[0]:
                best = (length, entry)
        return best[1]


def config_path(flag: str | None) -> Path | None:
    """The registries.conf to read: the flag, the environment, then the user's and the system's."""
    for given, source in ((flag, "--registries-conf"), (os.environ.get(ENV_VAR), f"${ENV_VAR}")):
        if given:
            path = Path(given).expanduser()
            if not path.is_file():
                raise RegistriesConfError(f"{source} names {path}, which does not exist")
            return path
    config_home = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config")
    for path in (config_home / "kitfs" / "registries.conf", SYSTEM_PATH):
        if path.is_file():
            return path
    return None


def load(flag: str | None = None) -> RegistriesConf:
    """The registries.conf in effect (an empty one when there is none)."""
    path = config_path(flag)
    if path is None:
        return RegistriesConf(None)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise RegistriesConfError(
            f"{path}: cannot be read: {getattr(exc, 'strerror', exc)}"
        ) from None
    return parse(text, path)


def parse(text: str, path: Path) -> RegistriesConf:
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        message = str(exc)
        match = _LINE_RE.search(message)
        where = f"line {match.group(1)}" if match else "somewhere"
        reason = _LINE_RE.sub("", message).strip()
        raise RegistriesConfError(f"{path}: {where}: {reason} (not valid TOML)") from None
    registry_lines = [
        text.count("\n", 0, m.start()) + 1
        for m in _HEADER_RE.finditer(text)
        if ".mirror" not in m.group(0)
    ]
    for key in raw:
        if key == "registries":
            raise RegistriesConfError(
                f"{path}: [registries.*] is version 1 of the format: write [[registry]] tables"
            )
        if key not in _IGNORED_TOP and key != "registry":
            raise RegistriesConfError(f"{path}: unknown top-level key {key!r}")
    tables = raw.get("registry", [])
    if not isinstance(tables, list):
        raise RegistriesConfError(f"{path}: 'registry' must be [[registry]] tables")
    entries = []
    for index, table in enumerate(tables):
        line = registry_lines[index] if index < len(registry_lines) else None
        where = f"{path}: line {line}" if line else f"{path}: [[registry]] number {index + 1}"
        entries.append(_entry(table, where))
    return RegistriesConf(path, tuple(entries))


def _entry(table: Any, where: str) -> RegistryEntry:
    if not isinstance(table, dict):
        raise RegistriesConfError(f"{where}: [[registry]] must be a table")
    unknown = set(table) - _REGISTRY_KEYS
    if unknown:
        raise RegistriesConfError(f"{where}: unknown key {sorted(unknown)[0]!r} in [[registry]]")
    prefix = _text(table, "prefix", where)
    location = _text(table, "location", where)
    if prefix.startswith("*.") and location:
        raise RegistriesConfError(f"{where}: a wildcard prefix ({prefix}) cannot have a location")
    if not prefix and not location:
        raise RegistriesConfError(f"{where}: [[registry]] needs a location or a prefix")
    if "*" in prefix.removeprefix("*.") or "*" in location:
        raise RegistriesConfError(f"{where}: '*' is allowed only as a leading '*.' of a prefix")
    pull_from = _pull_from(
        table, where, "digest-only" if _flag(table, "mirror-by-digest-only", where) else "all"
    )
    mirrors = table.get("mirror", [])
    if not isinstance(mirrors, list):
        raise RegistriesConfError(f"{where}: 'mirror' must be [[registry.mirror]] tables")
    return RegistryEntry(
        prefix=prefix or location,
        location=location if location or prefix.startswith("*.") else prefix,
        insecure=_flag(table, "insecure", where),
        blocked=_flag(table, "blocked", where),
        mirrors=tuple(_mirror(m, where, pull_from) for m in mirrors),
        pull_from=pull_from,
    )


def _mirror(table: Any, where: str, default_pull: str) -> Mirror:
    if not isinstance(table, dict):
        raise RegistriesConfError(f"{where}: [[registry.mirror]] must be a table")
    unknown = set(table) - _MIRROR_KEYS
    if unknown:
        raise RegistriesConfError(
            f"{where}: unknown key {sorted(unknown)[0]!r} in [[registry.mirror]]"
        )
    location = _text(table, "location", where)
    if not location:
        raise RegistriesConfError(f"{where}: a [[registry.mirror]] needs a location")
    return Mirror(location, _flag(table, "insecure", where), _pull_from(table, where, default_pull))


def _text(table: dict[str, Any], key: str, where: str) -> str:
    value = table.get(key, "")
    if not isinstance(value, str):
        raise RegistriesConfError(f"{where}: {key} must be a string")
    return value.strip().rstrip("/")


def _flag(table: dict[str, Any], key: str, where: str) -> bool:
    value = table.get(key, False)
    if not isinstance(value, bool):
        raise RegistriesConfError(f"{where}: {key} must be true or false")
    return value


def _pull_from(table: dict[str, Any], where: str, default: str) -> str:
    value = table.get("pull-from-mirror", default)
    if value not in PULL_FROM_MIRROR:
        raise RegistriesConfError(
            f"{where}: pull-from-mirror must be one of {', '.join(PULL_FROM_MIRROR)}"
        )
    return str(value)
