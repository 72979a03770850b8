"""Which digest a tag last resolved to, per registry and repository, kept beside the mount cache.

Layout under the cache directory::

    refs/<registry>/<repository>/@tags/<tag>    the manifest digest, one line

``@`` cannot occur in a repository name, so a tag file never collides with a nested repository.
A record is a hint, not a trust root: the manifest it names is read from the blob cache, which checks
it against that digest, so a damaged or forged record can only name a manifest the cache verified.
"""

from __future__ import annotations

import contextlib
import logging
import os
from pathlib import Path

from kitfs.atomic import write_atomic
from kitfs.reference import is_digest, is_valid_tag

log = logging.getLogger(__name__)

TAGS_DIR = "@tags"


class TagRecords:
    """Tag→digest records under ``<cache>/refs``; blocking (call from a worker thread under trio)."""

    def __init__(self, cache_root: Path, shared: bool = False) -> None:
        self.root = cache_root / "refs"
        # private like the rest of the cache (kitfs.storage.cache), unless the cache is shared
        self.dir_mode, self.file_mode = (0o755, 0o644) if shared else (0o700, 0o600)

    def _path(self, registry: str, repository: str, tag: str) -> Path | None:
        parts = repository.split("/")
        if not is_valid_tag(tag) or any(p in ("", ".", "..") for p in parts) or "/" in registry:
            return None
        return self.root.joinpath(registry, *parts, TAGS_DIR, tag)

    def record(self, registry: str, repository: str, tag: str, digest: str) -> None:
        """Remember that ``tag`` resolved to ``digest`` (best effort: a read-only cache is fine)."""
        path = self._path(registry, repository, tag)
        if path is None or not is_digest(digest):
            return
        try:
            for directory in reversed([path.parent, *path.parent.parents]):
                if not directory.is_dir():
                    directory.mkdir(mode=self.dir_mode, exist_ok=True)
            with contextlib.suppress(FileNotFoundError):
                if path.read_text().strip() == digest:
                    os.utime(path)
                    return
            write_atomic(path, f"{digest}\n".encode(), self.file_mode)
        except OSError as exc:
            log.info("cannot record %s:%s -> %s: %s", repository, tag, digest, exc.strerror)

    def lookup(self, registry: str, repository: str, tag: str) -> tuple[str, float] | None:
        """The digest ``tag`` last resolved to and when (seconds since the epoch), or None."""
        path = self._path(registry, repository, tag)
        if path is None:
            return None
        try:
            digest = path.read_text().strip()
            when = path.stat().st_mtime
        except (OSError, UnicodeDecodeError):
            return None
        return (digest, when) if is_digest(digest) else None

    def tags(self, registry: str, repository: str) -> list[str]:
        """The tags of a repository that have a record, sorted."""
        probe = self._path(registry, repository, "latest")
        if probe is None or not probe.parent.is_dir():
            return []
        return sorted(
            p.name
            for p in probe.parent.iterdir()
            if is_valid_tag(p.name) and self.lookup(registry, repository, p.name) is not None
        )

    def digests(self) -> set[str]:
        """Every digest a record names (``cache prune`` keeps what they point at)."""
        found: set[str] = set()
        if not self.root.is_dir():
            return found
        for path in self.root.rglob(f"{TAGS_DIR}/*"):
            if path.name.startswith("."):
                continue  # a record being written
            with contextlib.suppress(OSError, UnicodeDecodeError):
                digest = path.read_text().strip()
                if is_digest(digest):
                    found.add(digest)
        return found

    def entries(self) -> list[tuple[str, str, float]]:
        """(``registry/repository:tag``, digest, recorded at) for every record."""
        out: list[tuple[str, str, float]] = []
        if not self.root.is_dir():
            return out
        for path in sorted(self.root.rglob(f"{TAGS_DIR}/*")):
            rel = path.relative_to(self.root).parts
            name = "/".join(rel[:-2])
            found = self.lookup(rel[0], "/".join(rel[1:-2]), rel[-1])
            if found is not None:
                out.append((f"{name}:{rel[-1]}", found[0], found[1]))
        return out
