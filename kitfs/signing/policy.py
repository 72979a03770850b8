"""Which signatures a ModelKit needs before kitfs serves or writes it: a policy in the spirit of
containers-policy.json (containers/image ``docs/containers-policy.json.5.md``).

::

    {
      "default": [{"type": "reject"}],
      "transports": {
        "docker": {
          "registry.example.com/acme": [{"type": "sigstoreSigned", "keyPath": "/etc/kitfs/acme.pub"}],
          "registry.example.com": [{"type": "insecureAcceptAnything"}],
          "*.internal.example.com": [{"type": "sigstoreSigned", "keyPaths": ["a.pub", "b.pub"]}]
        }
      }
    }

A reference takes the requirements of its most specific scope: ``host/repository``, then each
parent namespace, then ``host``, then ``*.domain`` wildcards (longest first), then the transport's
``""`` scope, then ``default``. Every requirement in the list must hold. ``sigstoreSigned`` holds
when a signature by one of its keys (``keyPath``, ``keyPaths`` or PEM ``keyData`` in base64)
verifies for the digest. Relative key paths are relative to the policy file.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kitfs.errors import UsageError
from kitfs.signing import POLICY_ENV, SigningKeyError
from kitfs.signing.keys import PublicKey, load_public_key, parse_public_key

MAX_POLICY_SIZE = 1024 * 1024
ACCEPT, REJECT, SIGNED = "insecureAcceptAnything", "reject", "sigstoreSigned"
TRANSPORT = "docker"


class PolicyError(UsageError):
    """A policy file cannot be read or does not parse."""


@dataclass(frozen=True)
class Requirement:
    """One requirement: accept anything, reject everything, or a signature by one of ``keys``."""

    kind: str
    keys: tuple[PublicKey, ...] = ()


@dataclass(frozen=True)
class Policy:
    """Requirements by scope, with a default; ``source`` names where the policy came from."""

    default: tuple[Requirement, ...]
    scopes: Mapping[str, tuple[Requirement, ...]] = field(default_factory=dict)
    source: str = "--verify-key"

    def requirements_for(self, name: str) -> tuple[str, tuple[Requirement, ...]]:
        """(the scope that matched, its requirements) for ``registry/repository``."""
        for scope in _candidate_scopes(name):
            if scope in self.scopes:
                return scope, self.scopes[scope]
        wildcards = sorted((s for s in self.scopes if s.startswith("*.")), key=len, reverse=True)
        host = name.split("/", 1)[0].split(":", 1)[0]
        for scope in wildcards:
            if host.endswith(scope[1:]):
                return scope, self.scopes[scope]
        if "" in self.scopes:
            return '""', self.scopes[""]
        return "default", self.default

    def with_key(self, key: PublicKey) -> Policy:
        """This policy plus a signature by ``key`` required everywhere (``--verify-key``)."""
        extra = Requirement(SIGNED, (key,))
        return Policy(
            (*self.default, extra),
            {scope: (*reqs, extra) for scope, reqs in self.scopes.items()},
            f"{self.source} and --verify-key {key.name}",
        )


def _candidate_scopes(name: str) -> list[str]:
    parts = name.split("/")
    return ["/".join(parts[:i]) for i in range(len(parts), 0, -1)]


def key_policy(key: PublicKey) -> Policy:
    """The policy ``--verify-key PUB`` means on its own: everything needs a signature by PUB."""
    return Policy((Requirement(SIGNED, (key,)),), {}, f"--verify-key {key.name}")


def _key_from_data(text: Any, where: str) -> PublicKey:
    if not isinstance(text, str):
        raise PolicyError(f"{where}: keyData must be a base64 string")
    try:
        pem = base64.b64decode(text, validate=True)
    except binascii.Error:
        raise PolicyError(f"{where}: keyData is not base64") from None
    return parse_public_key(pem, f"keyData of {where}")


def _requirement(raw: Any, where: str, base: Path) -> Requirement:
    if not isinstance(raw, dict) or not isinstance(raw.get("type"), str):
        raise PolicyError(f"{where}: a requirement must be an object with a 'type'")
    kind = raw["type"]
    if kind in (ACCEPT, REJECT):
        if set(raw) != {"type"}:
            raise PolicyError(f"{where}: {kind} takes no other fields")
        return Requirement(kind)
    if kind != SIGNED:
        raise PolicyError(
            f"{where}: unsupported requirement type {kind!r} (kitfs knows {ACCEPT}, {REJECT}, {SIGNED})"
        )
    unknown = set(raw) - {"type", "keyPath", "keyPaths", "keyData"}
    if unknown:
        raise PolicyError(
            f"{where}: unsupported {SIGNED} fields {sorted(unknown)} (kitfs verifies keys offline only)"
        )
    paths = list(raw.get("keyPaths") or [])
    if "keyPath" in raw:
        paths.insert(0, raw["keyPath"])
    if not all(isinstance(p, str) and p for p in paths):
        raise PolicyError(f"{where}: keyPath and keyPaths must be file names")
    try:
        keys = [load_public_key(base / os.path.expanduser(p)) for p in paths]
        if "keyData" in raw:
            keys.append(_key_from_data(raw["keyData"], where))
    except SigningKeyError as exc:
        raise PolicyError(f"{where}: {exc}") from None
    if not keys:
        raise PolicyError(f"{where}: {SIGNED} needs keyPath, keyPaths or keyData")
    return Requirement(SIGNED, tuple(keys))


def _requirements(raw: Any, where: str, base: Path) -> tuple[Requirement, ...]:
    if not isinstance(raw, list) or not raw:
        raise PolicyError(f"{where}: requirements must be a non-empty list")
    return tuple(_requirement(r, f"{where}[{i}]", base) for i, r in enumerate(raw))


def parse_policy(data: bytes, source: str, base: Path) -> Policy:
    """A policy from JSON text; ``base`` is where relative key paths start."""
    try:
        raw = json.loads(data)
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise PolicyError(f"policy {source} is not valid JSON") from None
    if not isinstance(raw, dict) or "default" not in raw:
        raise PolicyError(f"policy {source} needs a 'default' list of requirements")
    unknown = set(raw) - {"default", "transports"}
    if unknown:
        raise PolicyError(f"policy {source}: unknown top-level fields {sorted(unknown)}")
    default = _requirements(raw["default"], f"policy {source}: default", base)
    transports = raw.get("transports") or {}
    if not isinstance(transports, dict) or set(transports) - {TRANSPORT}:
        raise PolicyError(f"policy {source}: only the {TRANSPORT!r} transport is supported")
    scoped = transports.get(TRANSPORT) or {}
    if not isinstance(scoped, dict):
        raise PolicyError(f"policy {source}: transports.{TRANSPORT} must map scopes to lists")
    scopes = {
        str(scope): _requirements(reqs, f"policy {source}: {TRANSPORT} scope {scope!r}", base)
        for scope, reqs in scoped.items()
    }
    return Policy(default, scopes, source)


def load_policy_file(path: str | os.PathLike[str]) -> Policy:
    file = Path(path).expanduser()
    try:
        with file.open("rb") as handle:
            data = handle.read(MAX_POLICY_SIZE + 1)
    except OSError as exc:
        raise PolicyError(f"cannot read policy {file}: {exc.strerror}") from None
    if len(data) > MAX_POLICY_SIZE:
        raise PolicyError(f"policy {file} is larger than {MAX_POLICY_SIZE} bytes")
    return parse_policy(data, str(file), file.absolute().parent)


def resolve_policy(
    verify_key: str | None,
    policy_file: str | None,
    environ: Mapping[str, str] | None = None,
) -> Policy | None:
    """The policy a command enforces: ``--policy`` (else ``$KITFS_POLICY``), plus ``--verify-key``;
    None when neither asks for anything."""
    env = os.environ if environ is None else environ
    source = policy_file or env.get(POLICY_ENV) or None
    policy = load_policy_file(source) if source else None
    if verify_key:
        try:
            key = load_public_key(verify_key)
        except SigningKeyError as exc:
            raise UsageError(f"--verify-key: {exc}") from None
        policy = policy.with_key(key) if policy else key_policy(key)
    return policy
