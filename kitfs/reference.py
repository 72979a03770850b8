"""Parse and format ModelKit references with kit's rules (pkg/lib/repo/util/reference.go).

A reference is ``[registry/]repository[:tag|@digest][,extra-tag...]``. The first path component is a
registry only when it contains ``.`` or ``:``; otherwise the registry is ``localhost``, which means
kit's local storage. As in kit, ``localhost/foo`` is therefore the local repository ``localhost/foo``
(stored as ``localhost/localhost/foo``), while ``localhost:5000/foo`` names a registry.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from kitfs.errors import InvalidReferenceError

LOCAL_REGISTRY = "localhost"
DEFAULT_TAG = "latest"

_TAG_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
_DIGEST_RE = re.compile(r"^sha256:[a-f0-9]{64}$|^sha512:[a-f0-9]{128}$")
_PATH_COMPONENT_RE = re.compile(r"^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*$")
_REGISTRY_RE = re.compile(
    r"^(?:[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9-]+)*|\[[0-9a-fA-F:]+\])(?::[0-9]+)?$"
)


@dataclass(frozen=True)
class Reference:
    """A parsed reference: ``registry/repository`` plus a tag or a digest (or neither)."""

    registry: str
    repository: str
    tag: str | None = None
    digest: str | None = None
    extra_tags: tuple[str, ...] = field(default=())

    @property
    def is_local(self) -> bool:
        return self.registry == LOCAL_REGISTRY

    @property
    def name(self) -> str:
        """``registry/repository``: the key kit uses for a repository in local storage."""
        return f"{self.registry}/{self.repository}"

    @property
    def reference(self) -> str | None:
        """The tag or digest to resolve, the digest winning when both are given."""
        return self.digest or self.tag

    def with_tag(self, tag: str | None) -> Reference:
        return Reference(self.registry, self.repository, tag, None)

    def __str__(self) -> str:
        text = self.name
        if self.tag:
            text += f":{self.tag}"
        if self.digest:
            text += f"@{self.digest}"
        return text


def is_digest(text: str) -> bool:
    return bool(_DIGEST_RE.match(text))


def is_valid_tag(tag: str) -> bool:
    return bool(_TAG_RE.match(tag))


def parse(text: str, *, default_tag: str | None = None) -> Reference:
    """Parse ``text``; ``default_tag`` fills in a missing tag/digest (kit uses ``latest``)."""
    raw = text.strip()
    if not raw:
        raise InvalidReferenceError("empty reference")
    if is_digest(raw):
        # A bare digest names a manifest anywhere in local storage (kit: localhost/_@digest).
        return Reference(LOCAL_REGISTRY, "_", None, raw)
    base, *extra = raw.split(",")
    for extra_tag in extra:
        if not is_valid_tag(extra_tag):
            raise InvalidReferenceError(f"invalid tag {extra_tag!r} in reference {text!r}")
    registry, rest = _split_registry(base)
    repository, tag, digest = _split_tag_digest(rest, text)
    _check_repository(repository, text)
    if registry != LOCAL_REGISTRY and not _REGISTRY_RE.match(registry):
        raise InvalidReferenceError(f"invalid registry {registry!r} in reference {text!r}")
    if tag is None and digest is None:
        tag = default_tag
    return Reference(registry, repository, tag, digest, tuple(extra))


def _split_registry(base: str) -> tuple[str, str]:
    first, sep, rest = base.partition("/")
    if sep and ("." in first or ":" in first):
        return first, rest
    return LOCAL_REGISTRY, base


def _split_tag_digest(rest: str, text: str) -> tuple[str, str | None, str | None]:
    digest = None
    if "@" in rest:
        rest, digest = rest.split("@", 1)
        if not is_digest(digest):
            raise InvalidReferenceError(f"invalid digest {digest!r} in reference {text!r}")
    tag = None
    last = rest.rsplit("/", 1)[-1]
    if ":" in last:
        rest, tag = rest.rsplit(":", 1)
        if not is_valid_tag(tag):
            raise InvalidReferenceError(f"invalid tag {tag!r} in reference {text!r}")
    return rest, tag, digest


def _check_repository(repository: str, text: str) -> None:
    if not repository:
        raise InvalidReferenceError(f"missing repository in reference {text!r}")
    if repository.lower() != repository:
        raise InvalidReferenceError(
            f"invalid reference {text!r}: repository ({repository}) name must be lowercase"
        )
    for part in repository.split("/"):
        if not _PATH_COMPONENT_RE.match(part):
            raise InvalidReferenceError(
                f"invalid repository {repository!r} in reference {text!r}: use lowercase letters, "
                "digits and separators (. _ -), starting and ending with a letter or digit"
            )
