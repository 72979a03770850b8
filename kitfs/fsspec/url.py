"""How a ``kit://`` URL splits into a ModelKit reference and a path inside the ModelKit.

``kit://[REGISTRY/]REPOSITORY(:TAG|@DIGEST)[/PATH]``. The reference ends at the first path component
that carries a tag (``name:tag``) or a digest (``name@sha256:...``); everything after it is the path
inside the ModelKit, in the mount's layout. The first component names a registry (and is skipped
when looking for the tag) when it holds a ``.`` or is ``host:port`` with a numeric port, as
``127.0.0.1:5000`` or ``ghcr.io``; otherwise the reference names kit's local storage
(``kit://acme/film:v1/Kitfile``). A reference without a tag or digest is refused rather than
guessed: with no marker, nothing tells where the repository ends and the path begins.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from kitfs.errors import InvalidReferenceError, UsageError
from kitfs.reference import Reference, parse

PROTOCOL = "kit"
PREFIX = f"{PROTOCOL}://"
_PORT_RE = re.compile(r"^[A-Za-z0-9.-]+:[0-9]+$")


@dataclass(frozen=True)
class KitPath:
    """A ``kit://`` URL taken apart: the reference as kit writes it, and the path inside the
    ModelKit ("" for its root), without leading or trailing slashes."""

    reference: str
    path: str

    @property
    def parsed(self) -> Reference:
        return parse(self.reference)

    def join(self, name: str) -> str:
        """The fsspec path (no protocol) of ``name`` inside the ModelKit."""
        inner = f"{self.path}/{name}" if self.path else name
        return f"{self.reference}/{inner}" if inner else self.reference


def strip_protocol(url: str) -> str:
    """``kit://a/b:c/d/`` -> ``a/b:c/d``: the form fsspec keeps paths in."""
    text = url[len(PREFIX) :] if url.startswith(PREFIX) else url
    if text.startswith(f"{PROTOCOL}::"):
        text = text[len(PROTOCOL) + 2 :]
    return "/".join(part for part in text.split("/") if part)


def names_registry(component: str) -> bool:
    """Whether a URL's first component is a registry host (``ghcr.io``, ``127.0.0.1:5000``)."""
    return "." in component or bool(_PORT_RE.match(component))


def split_url(url: str) -> KitPath:
    """Split a ``kit://`` URL (or the path fsspec keeps, without the protocol); see the module
    docstring. Raises UsageError naming the expected form when no reference can be found."""
    parts = strip_protocol(url).split("/")
    if parts == [""]:
        raise UsageError(f"{url!r} names no ModelKit: use {PREFIX}[REGISTRY/]REPOSITORY:TAG/PATH")
    start = 1 if len(parts) > 1 and names_registry(parts[0]) else 0
    for position in range(start, len(parts)):
        if ":" in parts[position] or "@" in parts[position]:
            reference = "/".join(parts[: position + 1])
            _check(reference, url)
            return KitPath(reference, "/".join(parts[position + 1 :]))
    raise UsageError(
        f"{url!r} names no tag or digest: use {PREFIX}[REGISTRY/]REPOSITORY:TAG/PATH "
        f"or {PREFIX}[REGISTRY/]REPOSITORY@sha256:DIGEST/PATH"
    )


def _check(reference: str, url: str) -> None:
    try:
        ref = parse(reference)
    except InvalidReferenceError as exc:
        raise UsageError(f"{url!r}: {exc}") from None
    if ref.extra_tags:
        raise UsageError(f"{url!r}: a kit:// URL names one tag, not {', '.join(ref.extra_tags)}")
