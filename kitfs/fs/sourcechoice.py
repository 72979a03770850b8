"""Which source a mount reference names: an OCI layout directory (``oci:PATH[:TAG]``), kit's local
storage (no registry, or ``localhost/...``), else a registry.

It sits above the sources (``kitfs.fs.source``, ``kitfs.fs.registrysource``) so that they depend on
nothing that chooses between them; the registry source loads only when a reference needs it, so
mounts of local storage and OCI layouts load no HTTP client.
"""

from __future__ import annotations

from kitfs.config import Paths, Refresh
from kitfs.errors import NotFoundError
from kitfs.fs.ocireference import OCI_PREFIX, parse_oci_reference
from kitfs.fs.source import LocalStorageSource, OciLayoutSource, Source
from kitfs.oci.options import RegistryOptions
from kitfs.reference import parse
from kitfs.storage.cache import BlobCache
from kitfs.storage.local import LocalStore


def open_source(
    text: str,
    paths: Paths,
    cache: BlobCache,
    registry_options: RegistryOptions | None = None,
    refresh: Refresh = "auto",
) -> Source:
    """The source a mount reference names (no I/O yet; enter it with ``async with``)."""
    if text.startswith(OCI_PREFIX):
        root, target = parse_oci_reference(text)
        if not root.is_dir():
            raise NotFoundError(f"OCI layout directory {root} does not exist")
        return OciLayoutSource(root, target)
    ref = parse(text)
    store = LocalStore(paths.storage)
    if ref.is_local:
        return LocalStorageSource(ref, store)
    from kitfs.fs.registrysource import open_registry_source  # httpx loads for registries only

    return open_registry_source(ref, paths, store, cache, registry_options, refresh)
