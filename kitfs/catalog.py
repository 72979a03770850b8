"""Local catalog verbs: list, tag, remove, and the info/inspect views of a stored ModelKit.

Semantics follow kit's pkg/kit/{list,tag,remove,inspect}.go: ``remove`` by tag only untags while other
tags remain; by digest or with ``force`` it drops the manifest and every tag; blobs go once no
manifest uses them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from kitfs.errors import UsageError
from kitfs.kitfile import Kitfile
from kitfs.oci.manifest import Manifest
from kitfs.reference import Reference, is_digest
from kitfs.storage.local import LocalStore, ModelKitInfo, display_repository


def format_bytes(size: int) -> str:
    """kit's output.FormatBytes: binary units, one decimal rounded down."""
    if size < 1024:
        return f"{size} B"
    value = size / 1024
    for suffix in ("KiB", "MiB", "GiB", "TiB"):
        if value < 1024:
            return f"{math.floor(value * 10) / 10:.1f} {suffix}"
        value /= 1024
    return f"{value:.1f} PiB"


@dataclass(frozen=True)
class ListRow:
    repository: str
    tags: tuple[str, ...]
    maintainer: str
    name: str
    size: int
    digest: str

    def to_json(self) -> dict[str, Any]:
        """kit's ModelInfo JSON (pkg/kit/list.go): one object per manifest, tags null if none."""
        return {
            "repo": self.repository,
            "digest": self.digest,
            "tags": list(self.tags) or None,
            "modelName": self.name,
            "size": format_bytes(self.size),
            "author": self.maintainer,
        }


def row_for(
    repository: str, digest: str, tags: tuple[str, ...], manifest: Manifest, kitfile: Kitfile | None
) -> ListRow:
    package = kitfile.package if kitfile else {}
    authors = package.get("authors") or []
    return ListRow(
        repository=repository,
        tags=tags,
        maintainer=authors[0] if authors else "<none>",
        name=package.get("name") or "<none>",
        size=sum(layer.size for layer in manifest.layers),
        digest=digest,
    )


def local_rows(store: LocalStore, repository: str | None = None) -> list[ListRow]:
    infos: list[ModelKitInfo] = store.list_modelkits(repository)
    return [
        row_for(
            display_repository(i.repository) or "<none>", i.digest, i.tags, i.manifest, i.kitfile
        )
        for i in infos
    ]


def format_table(rows: list[ListRow]) -> str:
    """Go tabwriter output (padding 3), one line per tag, ``<none>`` for untagged."""
    lines = [("REPOSITORY", "TAG", "MAINTAINER", "NAME", "SIZE", "DIGEST")]
    for row in rows:
        for tag in row.tags or ("<none>",):
            lines.append(
                (row.repository, tag, row.maintainer, row.name, format_bytes(row.size), row.digest)
            )
    widths = [max(len(line[i]) for line in lines) for i in range(5)]
    return (
        "\n".join(
            "".join(cell.ljust(widths[i] + 3) for i, cell in enumerate(line[:5])) + line[5]
            for line in lines
        )
        + "\n"
    )


def tag(store: LocalStore, source: Reference, target: Reference) -> str:
    """Give the ModelKit at ``source`` the reference ``target``; return its digest."""
    if not source.reference:
        raise UsageError(f"source ModelKit reference requires a tag or digest ({source}:<tag>)")
    if not target.tag or target.digest:
        raise UsageError(f"target ModelKit reference requires a tag ({target}:<tag>)")
    _, desc = store.resolve(source)
    store.require_blobs(store.load_manifest(desc), display_repository(str(source)))
    store.repo_for(target).add(desc, [target.tag, *target.extra_tags])
    return desc.digest


@dataclass(frozen=True)
class Removed:
    reference: str
    digest: str
    untagged_only: bool
    untagged: tuple[str, ...] = ()  # ``repo:tag`` references dropped first (remove --all --force)


def remove(store: LocalStore, ref: Reference, *, force: bool = False) -> list[Removed]:
    """Remove a tag (or the manifest, by digest or with ``force``), plus any extra tags named."""
    if not ref.reference:
        raise UsageError(f"tag or digest is required when removing ({ref}:<tag>)")
    out = [_remove_one(store, ref, force)]
    for extra in ref.extra_tags:
        out.append(_remove_one(store, ref.with_tag(extra), force))
    return out


def _remove_one(store: LocalStore, ref: Reference, force: bool) -> Removed:
    repo, desc = store.resolve(ref)
    display = display_repository(str(ref))
    target = ref.reference or ""
    if is_digest(target) or force or len(repo.tags_for(desc.digest)) <= 1:
        repo.delete(desc.digest)
        return Removed(display, desc.digest, untagged_only=False)
    repo.untag(target)
    return Removed(display, desc.digest, untagged_only=True)


def remove_all(store: LocalStore, *, force: bool = False) -> list[Removed]:
    """``remove --all``: untagged ModelKits; with ``force``, everything."""
    out = []
    for repo in store.repos():
        display = display_repository(repo.name)
        for desc in repo.manifests():
            tags = repo.tags_for(desc.digest)
            if tags and not force:
                continue
            repo.delete(desc.digest)
            out.append(
                Removed(
                    f"{display}@{desc.digest}",
                    desc.digest,
                    untagged_only=False,
                    untagged=tuple(f"{display}:{tag}" for tag in tags),
                )
            )
    return out


def inspect_view(digest: str, manifest: Manifest, kitfile: Kitfile | None) -> dict[str, Any]:
    """kit inspect's JSON: digest, cliVersion, kitfile (config form) and manifest."""
    import json

    out: dict[str, Any] = {"digest": digest, "cliVersion": manifest.cli_version}
    if kitfile is not None:
        out["kitfile"] = json.loads(kitfile.to_config_json())
    out["manifest"] = manifest.to_dict()
    return out
