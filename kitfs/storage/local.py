"""kit's local storage, byte-compatible: one OCI image layout shared by every repository.

Layout (kit's pkg/lib/repo/local/*.go, newer scheme with ``-tags.json``)::

    storage/oci-layout                         {"imageLayoutVersion":"1.0.0"}
    storage/index.json                         every manifest in the store (oras-go's root index)
    storage/blobs/sha256/<hex>                 all blobs, shared
    storage/<base64url(repo)>-index.json       the manifests of one repository
    storage/<base64url(repo)>-tags.json        tag -> manifest descriptor for that repository

``repo`` is ``registry/repository`` (``localhost/_`` for untagged packs). Files are compact Go JSON.
A blob is removed when no manifest in the root index references it any more (oras-go's auto GC).
"""

from __future__ import annotations

import base64
import contextlib
import errno
import fcntl
import json
import os
import re
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from kitfs.atomic import write_atomic
from kitfs.errors import DigestMismatchError, NotFoundError, StorageError
from kitfs.kitfile import Kitfile, go_json
from kitfs.modelpack import kitfile_for
from kitfs.oci import media
from kitfs.oci.manifest import Descriptor, Manifest, ManifestError, sha256_digest
from kitfs.reference import LOCAL_REGISTRY, Reference, is_digest

DEFAULT_REPOSITORY = "_"
_INDEX_RE = re.compile(r"^([-A-Za-z0-9_]*={0,3})-index\.json$")


def repo_key(name: str) -> str:
    """The file-name key kit uses for a repository: URL-safe base64 with padding."""
    return base64.urlsafe_b64encode(name.encode()).decode()


def display_repository(name: str) -> str:
    """kit's FormatRepositoryForDisplay: drop ``localhost/`` and the default ``_`` repository."""
    if name.startswith(LOCAL_REGISTRY + "/"):
        name = name[len(LOCAL_REGISTRY) + 1 :]
    if name.startswith(DEFAULT_REPOSITORY):
        name = name[len(DEFAULT_REPOSITORY) :]
    return name.lstrip("@")


def _index_json(manifests: list[Descriptor], with_media_type: bool) -> bytes:
    body: dict[str, object] = {"schemaVersion": 2}
    if with_media_type:
        body["mediaType"] = media.OCI_INDEX
    body["manifests"] = [d.to_dict() for d in manifests]
    return go_json(body).encode()


def _read_index(path: Path) -> list[Descriptor]:
    try:
        raw = json.loads(path.read_bytes())
    except FileNotFoundError:
        return []
    except (ValueError, OSError, RecursionError) as exc:
        raise StorageError(f"local storage index {path} is unreadable: {exc}") from None
    return [Descriptor.from_dict(d, f"{path.name} entry") for d in (raw.get("manifests") or [])]


@dataclass(frozen=True)
class ModelKitInfo:
    """One local manifest with what ``kit list`` shows about it."""

    repository: str
    digest: str
    tags: tuple[str, ...]
    manifest: Manifest
    kitfile: Kitfile | None


class LocalRepo:
    """The per-repository index and tags of one ``registry/repository`` in local storage."""

    def __init__(self, store: LocalStore, name: str) -> None:
        self.store = store
        self.name = name
        key = repo_key(name)
        self.index_path = store.root / f"{key}-index.json"
        self.tags_path = store.root / f"{key}-tags.json"

    def manifests(self) -> list[Descriptor]:
        return _read_index(self.index_path)

    def tags(self) -> dict[str, Descriptor]:
        try:
            raw = json.loads(self.tags_path.read_bytes())
        except FileNotFoundError:
            return {}
        except (ValueError, OSError, RecursionError) as exc:
            raise StorageError(
                f"local storage tags {self.tags_path} are unreadable: {exc}"
            ) from None
        return {tag: Descriptor.from_dict(d, f"tag {tag}") for tag, d in raw.items()}

    def tags_for(self, digest: str) -> list[str]:
        return sorted(tag for tag, d in self.tags().items() if d.digest == digest)

    def resolve(self, reference: str) -> Descriptor:
        """The manifest descriptor for a tag or digest; NotFoundError when absent."""
        if is_digest(reference):
            for desc in self.manifests():
                if desc.digest == reference:
                    return desc
        else:
            found = self.tags().get(reference)
            if found is not None:
                return found
        raise NotFoundError(
            f"{display_repository(self.name)}:{reference} not found in local storage"
        )

    def _save(self, manifests: list[Descriptor], tags: dict[str, Descriptor]) -> None:
        seen: set[str] = set()
        unique = [d for d in manifests if not (d.digest in seen or seen.add(d.digest))]  # type: ignore[func-returns-value]
        if unique:
            write_atomic(self.index_path, _index_json(unique, with_media_type=False))
        else:
            with contextlib.suppress(FileNotFoundError):
                self.index_path.unlink()
        if tags:
            body = {t: tags[t].to_dict() for t in sorted(tags)}
            write_atomic(self.tags_path, go_json(body).encode())
        else:
            with contextlib.suppress(FileNotFoundError):
                self.tags_path.unlink()

    def add(self, desc: Descriptor, tags: list[str] | tuple[str, ...] = ()) -> None:
        """Record a manifest (already stored as a blob) in this repository, with tags."""
        plain = Descriptor(desc.media_type, desc.digest, desc.size)
        with self.store.lock():
            self.store._add_root(plain)
            manifests = self.manifests()
            if plain.digest not in {d.digest for d in manifests}:
                manifests.append(plain)
            current = self.tags()
            for tag in tags:
                current[tag] = plain
            self._save(manifests, current)

    def untag(self, tag: str) -> None:
        with self.store.lock():
            current = self.tags()
            if tag not in current:
                raise NotFoundError(f"tag {tag} not found in {display_repository(self.name)}")
            del current[tag]
            self._save(self.manifests(), current)

    def delete(self, digest: str) -> None:
        """Drop a manifest and all its tags from this repository; GC it if no repository uses it."""
        with self.store.lock():
            manifests = [d for d in self.manifests() if d.digest != digest]
            tags = {t: d for t, d in self.tags().items() if d.digest != digest}
            self._save(manifests, tags)
            if not any(digest in {d.digest for d in r.manifests()} for r in self.store.repos()):
                self.store._remove_root(digest)


class LocalStore:
    """The shared OCI layout under ``$KITOPS_HOME/storage``."""

    def __init__(self, root: Path) -> None:
        self.root = root

    # -- layout -------------------------------------------------------------------------------

    def ensure(self) -> None:
        """Create the layout if it does not exist yet (as oras-go's oci.New does)."""
        (self.root / "blobs" / "sha256").mkdir(parents=True, exist_ok=True)
        layout = self.root / "oci-layout"
        if not layout.exists():
            write_atomic(layout, b'{"imageLayoutVersion":"1.0.0"}')
        if not (self.root / "index.json").exists():
            write_atomic(self.root / "index.json", _index_json([], with_media_type=True))

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """Serialise index updates between kitfs processes (kit itself does not lock)."""
        self.ensure()
        with open(self.root / ".kitfs.lock", "a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def root_manifests(self) -> list[Descriptor]:
        return _read_index(self.root / "index.json")

    def _add_root(self, desc: Descriptor) -> None:
        manifests = self.root_manifests()
        if desc.digest not in {d.digest for d in manifests}:
            manifests.append(desc)
            write_atomic(self.root / "index.json", _index_json(manifests, with_media_type=True))

    def _remove_root(self, digest: str) -> None:
        manifests = [d for d in self.root_manifests() if d.digest != digest]
        write_atomic(self.root / "index.json", _index_json(manifests, with_media_type=True))
        self._collect_successors(digest)

    def _referenced(self) -> set[str]:
        """Every digest that a manifest still in the store uses (the manifests themselves too)."""
        keep: set[str] = set()
        listed = {d.digest for d in self.root_manifests()}
        for repo in self.repos():
            listed.update(d.digest for d in repo.manifests())
        for digest in listed:
            keep.add(digest)
            try:
                manifest = Manifest.from_bytes(self.read_blob(digest))
            except (NotFoundError, ManifestError, DigestMismatchError):
                continue
            keep.add(manifest.config.digest)
            keep.update(layer.digest for layer in manifest.layers)
        return keep

    def _collect_successors(self, digest: str) -> list[str]:
        """Delete a removed manifest's blob, config and layers unless another manifest uses them.

        Like oras-go's auto-GC, only what the removed manifest pointed at is considered: other
        unreferenced blobs (an interrupted pull, a concurrent pack) are left alone.
        """
        candidates = [digest]
        try:
            manifest = Manifest.from_bytes(self.read_blob(digest, verify=False))
            candidates += [manifest.config.digest, *(layer.digest for layer in manifest.layers)]
        except (NotFoundError, ManifestError):
            pass
        keep = self._referenced()
        removed = []
        for candidate in dict.fromkeys(candidates):
            if candidate in keep:
                continue
            with contextlib.suppress(FileNotFoundError, StorageError):
                self.blob_path(candidate).unlink()
                removed.append(candidate)
        return removed

    def collect_garbage(self) -> list[str]:
        """Remove every blob that no manifest in the store references; return their digests.

        Not used by ``remove`` (which only drops what it removed): call it when no other process
        is writing to the store.
        """
        keep = self._referenced()
        removed = []
        blob_dir = self.root / "blobs" / "sha256"
        for path in blob_dir.iterdir() if blob_dir.exists() else []:
            digest = f"sha256:{path.name}"
            if digest not in keep and not path.name.startswith("."):
                path.unlink()
                removed.append(digest)
        return removed

    # -- repositories -------------------------------------------------------------------------

    def repo(self, name: str) -> LocalRepo:
        return LocalRepo(self, name)

    def repo_for(self, ref: Reference) -> LocalRepo:
        return LocalRepo(self, ref.name)

    def repo_names(self) -> list[str]:
        if not self.root.exists():
            return []
        names = []
        for entry in self.root.iterdir():
            match = _INDEX_RE.match(entry.name)
            if match and entry.is_file():
                try:
                    names.append(base64.urlsafe_b64decode(match.group(1)).decode())
                except (ValueError, UnicodeDecodeError):
                    continue
        return sorted(names)

    def repos(self) -> list[LocalRepo]:
        return [self.repo(name) for name in self.repo_names()]

    # -- blobs --------------------------------------------------------------------------------

    def blob_path(self, digest: str) -> Path:
        algorithm, _, hexpart = digest.partition(":")
        if algorithm != "sha256" or not re.fullmatch(r"[0-9a-f]{64}", hexpart):
            raise StorageError(f"unsupported digest {digest!r}")
        return self.root / "blobs" / "sha256" / hexpart

    def has_blob(self, digest: str) -> bool:
        return self.blob_path(digest).is_file()

    def read_blob(self, digest: str, *, verify: bool = True) -> bytes:
        try:
            data = self.blob_path(digest).read_bytes()
        except FileNotFoundError:
            raise NotFoundError(f"blob {digest} is missing from local storage") from None
        if verify and sha256_digest(data) != digest:
            raise DigestMismatchError(digest, sha256_digest(data), f"local blob {digest}")
        return data

    def put_blob(self, data: bytes) -> str:
        """Store bytes as a blob (atomically); return the digest."""
        digest = sha256_digest(data)
        path = self.blob_path(digest)
        if not path.exists():
            self.ensure()
            write_atomic(path, data)
        return digest

    def adopt_blob(self, temp: Path, digest: str) -> None:
        """Move a verified temp file into the blob store (the caller hashed it while writing)."""
        path = self.blob_path(digest)
        self.ensure()
        if path.exists():
            temp.unlink()
            return
        os.chmod(
            temp, 0o644
        )  # mkstemp makes 0600; blobs are world-readable like oras-go writes them
        try:
            os.replace(temp, path)
        except OSError as exc:
            if exc.errno != errno.EXDEV:
                raise
            copy_blob_file(temp, path)  # scratch space on another filesystem, as kit falls back
            temp.unlink()

    # -- ModelKits ----------------------------------------------------------------------------

    def resolve(self, ref: Reference) -> tuple[LocalRepo, Descriptor]:
        """Find a reference in local storage. A bare digest may live in any repository."""
        if ref.repository == DEFAULT_REPOSITORY and ref.digest:
            for repo in self.repos():
                for desc in repo.manifests():
                    if desc.digest == ref.digest:
                        return repo, desc
        repo = self.repo_for(ref)
        target = ref.reference
        if target is None:
            raise NotFoundError(f"{ref} has no tag or digest")
        try:
            return repo, repo.resolve(target)
        except NotFoundError:
            raise NotFoundError(
                f"ModelKit {display_repository(str(ref))} not found in local storage"
            ) from None

    def require_blobs(self, manifest: Manifest, name: str) -> list[Descriptor]:
        """The manifest's distinct blobs (config first), refusing a ModelKit that lacks any."""
        blobs = list({d.digest: d for d in (manifest.config, *manifest.layers)}.values())
        for blob in blobs:
            if not self.has_blob(blob.digest):
                raise NotFoundError(f"ModelKit {name} is incomplete: blob {blob.digest} is missing")
        return blobs

    def load_manifest(self, desc: Descriptor) -> Manifest:
        return Manifest.from_bytes(self.read_blob(desc.digest), f"manifest {desc.digest}")

    def load_kitfile(self, manifest: Manifest) -> Kitfile:
        """The Kitfile of a stored ModelKit or ModelPack (see kitfs.modelpack)."""
        return kitfile_for(
            manifest, self.read_blob(manifest.config.digest), "ModelKit", "ModelKit config"
        )

    def list_modelkits(self, repository: str | None = None) -> list[ModelKitInfo]:
        """Every manifest in local storage (or in one repository), as ``kit list`` sorts them."""
        out: list[ModelKitInfo] = []
        for repo in self.repos():
            if repository and repo.name != repository:
                continue
            infos = []
            for desc in repo.manifests():
                try:
                    manifest = self.load_manifest(desc)
                except (NotFoundError, ManifestError, DigestMismatchError):
                    continue
                if not manifest.is_modelkit:
                    continue
                try:
                    kitfile: Kitfile | None = self.load_kitfile(manifest)
                except Exception:
                    kitfile = None
                infos.append(
                    ModelKitInfo(
                        repo.name, desc.digest, tuple(repo.tags_for(desc.digest)), manifest, kitfile
                    )
                )
            infos.sort(key=lambda i: (display_repository(i.repository), i.digest))
            out.extend(infos)
        return out


def copy_blob_file(src: Path, dest: Path) -> None:
    """Copy a file to ``dest`` atomically (temp beside it, then rename)."""
    tmp = dest.with_name(f".{dest.name}.tmp{os.getpid()}")
    shutil.copyfile(src, tmp)
    os.replace(tmp, dest)
