"""Lay a repository's files out as the layers ``kitfs pack`` would write for the same Kitfile.

kit's import downloads into a directory and packs it. kitfs decides from the listing alone what
that directory would hold (the files some layer takes, as kit's filterListingForKitfile, and their
parent directories) and walks it as pack walks a context directory (kitfs.pack.walk_layer: sorted,
pre-order, parents included, other layers' paths left out), so every tar header and every file's
offset in its layer is known before a byte is downloaded. Downloads then write each file straight
into its place in its layer (kitfs.hub.fetch); no copy of the model exists outside the layers.
"""

from __future__ import annotations

import hashlib
import json
import posixpath
from collections.abc import Iterator
from dataclasses import dataclass

from kitfs.hub.errors import HubError
from kitfs.hub.hfapi import Listing, RepoFile
from kitfs.kitfile import Entry, Kitfile
from kitfs.layers.ignore import IgnoreRules, clean, is_within
from kitfs.layers.tarwriter import BLOCK, header_bytes

FILE_MODE = 0o644  # kit creates downloaded files 0644 and their directories 0755 (download.go)
DIR_MODE = 0o755
END_OF_ARCHIVE = 2 * BLOCK


@dataclass(frozen=True)
class Member:
    """One tar entry of a layer and where its header and data sit in the layer's tar."""

    name: str
    is_dir: bool
    size: int
    header_offset: int
    header: bytes
    file: RepoFile | None

    @property
    def mode(self) -> int:
        return DIR_MODE if self.is_dir else FILE_MODE

    @property
    def data_offset(self) -> int:
        return self.header_offset + len(self.header)

    @property
    def total(self) -> int:
        """Header, data and padding: the bytes this entry takes in the tar."""
        return len(self.header) + self.size + (-self.size % BLOCK)


@dataclass(frozen=True)
class LayerPlan:
    """One Kitfile entry's layer: its members in tar order and the tar's full size."""

    number: int
    entry: Entry
    members: tuple[Member, ...]
    tar_size: int

    @property
    def base(self) -> str:
        return clean(self.entry.path)

    def files(self) -> Iterator[Member]:
        return (m for m in self.members if not m.is_dir)


@dataclass(frozen=True)
class ImportPlan:
    layers: tuple[LayerPlan, ...]

    def files(self) -> Iterator[tuple[LayerPlan, Member]]:
        for layer in self.layers:
            for member in layer.files():
                yield layer, member

    @property
    def total_bytes(self) -> int:
        return sum(m.size for _, m in self.files())

    def key(self, *parts: str) -> str:
        """A name for this plan's scratch state: the repository, revision and every file's
        identity (path, size, digest) and place, so a changed repository never resumes old bytes."""
        body = [
            list(parts),
            [[ly.base, [[m.name, m.size, _identity(m)] for m in ly.members]] for ly in self.layers],
        ]
        return hashlib.sha256(json.dumps(body).encode()).hexdigest()[:32]


def _identity(member: Member) -> str:
    if member.file is None:
        return ""
    return member.file.sha256 or member.file.oid


def plan_layers(
    listing: Listing, kitfile: Kitfile, extra_paths: list[str], repo: str
) -> ImportPlan:
    """The layers of ``kitfile`` over ``listing`` (``extra_paths``: layers a parent ModelKit holds)."""
    entries = kitfile.entries()
    for entry in entries:
        if entry.kind == "mcpserver":
            raise HubError(
                f"mcpServers entry {entry.path!r}: import packs tar layers only; download the "
                "bundle and use kitfs pack"
            )
    remote = [str(d.get("path", "")) for d in kitfile.remote_datasets()]
    rules = IgnoreRules([], [e.path for e in entries] + remote + extra_paths)
    tree = _Tree.of(listing, _downloaded(listing, rules))
    layers = []
    for number, entry in enumerate(entries):
        _check_entry(entry, tree, repo)
        layers.append(_layout(number, entry, list(tree.walk(clean(entry.path), rules))))
    return ImportPlan(tuple(layers))


def _downloaded(listing: Listing, rules: IgnoreRules) -> list[RepoFile]:
    """kit's filterListingForKitfile: every file when a layer is the whole repository (``.``),
    else the files some layer's path covers (its ignore rules, asked for no layer in particular)."""
    if "." in rules.layer_paths:
        return list(listing.files.values())
    return [f for f in listing.files.values() if rules.matches(f.path, "")]


def _check_entry(entry: Entry, tree: _Tree, repo: str) -> None:
    raw = entry.path or "."
    cleaned = clean(raw)
    label = f"{entry.kind} path {raw!r}"
    if posixpath.isabs(raw) or cleaned == ".." or cleaned.startswith("../"):
        raise HubError(f"{label} is outside the repository")
    if cleaned != "." and cleaned not in tree.kinds:
        raise HubError(f"{label} does not exist in {repo}")


def _layout(number: int, entry: Entry, walked: list[tuple[str, RepoFile | None]]) -> LayerPlan:
    members, offset = [], 0
    for name, repo_file in walked:
        is_dir = repo_file is None
        size = 0 if is_dir else repo_file.size  # type: ignore[union-attr]
        header = header_bytes(
            name, is_dir=is_dir, mode=DIR_MODE if is_dir else FILE_MODE, size=size
        )
        member = Member(name, is_dir, size, offset, header, repo_file)
        members.append(member)
        offset += member.total
    return LayerPlan(number, entry, tuple(members), offset + END_OF_ARCHIVE)


@dataclass(frozen=True)
class _Tree:
    """The directory kit would download into: the chosen files and their parent directories."""

    kinds: dict[str, RepoFile | None]  # path -> file (None: a directory)
    children: dict[str, list[str]]

    @classmethod
    def of(cls, listing: Listing, files: list[RepoFile]) -> _Tree:
        kinds: dict[str, RepoFile | None] = {}
        children: dict[str, set[str]] = {".": set()}
        for repo_file in files:
            kinds[repo_file.path] = repo_file
            path = repo_file.path
            while True:
                parent, _, name = path.rpartition("/")
                children.setdefault(parent or ".", set()).add(name)
                if not parent or parent in kinds:
                    break
                kinds[parent] = None
                path = parent
        return cls(kinds, {k: sorted(v) for k, v in children.items()})

    def walk(self, base: str, rules: IgnoreRules) -> Iterator[tuple[str, RepoFile | None]]:
        """kitfs.pack.walk_layer over this tree: the entries of the layer at ``base``."""

        def visit(rel_dir: str) -> Iterator[tuple[str, RepoFile | None]]:
            for name in self.children.get(rel_dir, []):
                rel = name if rel_dir == "." else f"{rel_dir}/{name}"
                is_dir = self.kinds[rel] is None
                if not (is_within(base, rel) or is_within(rel, base)):
                    continue
                if rules.matches(rel, base):
                    if is_dir and rules.has_exclusions:
                        yield from visit(rel)
                    continue
                yield rel, self.kinds[rel]
                if is_dir:
                    yield from visit(rel)

        yield from visit(".")
