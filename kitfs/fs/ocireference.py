"""``oci:PATH[:TAG]`` and ``oci:PATH@DIGEST`` mount references: parsing, and the absolute form the
daemon needs (it works from "/"). Kept apart from the sources so that ``kitfs mount`` can make a
reference absolute before it forks, without loading the network and FUSE code."""

from __future__ import annotations

import os
import re
from pathlib import Path

from kitfs.errors import InvalidReferenceError
from kitfs.reference import is_digest

OCI_PREFIX = "oci:"
_OCI_TAG_RE = re.compile(r"^(.*):([A-Za-z0-9_][A-Za-z0-9_.-]{0,127})$")


def parse_oci_reference(text: str) -> tuple[Path, str | None]:
    """``oci:PATH[:TAG]`` or ``oci:PATH@DIGEST`` -> (PATH, TAG or DIGEST or None)."""
    rest = text[len(OCI_PREFIX) :]
    if "@" in rest:
        path, _, digest = rest.rpartition("@")
        if not is_digest(digest):
            raise InvalidReferenceError(f"invalid digest {digest!r} in {text!r}")
        return Path(path).expanduser().absolute(), digest
    match = _OCI_TAG_RE.match(rest)
    if match and "/" not in match.group(2) and not os.path.isdir(rest):
        return Path(match.group(1)).expanduser().absolute(), match.group(2)
    if not rest:
        raise InvalidReferenceError(f"{text!r} names no directory (oci:PATH[:TAG])")
    return Path(rest).expanduser().absolute(), None


def absolute_reference(text: str) -> str:
    """``text`` with an ``oci:`` layout path made absolute (other references are unchanged)."""
    if not text.startswith(OCI_PREFIX):
        return text
    root, target = parse_oci_reference(text)
    if target is None:
        return f"{OCI_PREFIX}{root}"
    return f"{OCI_PREFIX}{root}{'@' if is_digest(target) else ':'}{target}"
