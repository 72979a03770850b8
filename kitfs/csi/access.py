"""Whether a volume may read the ModelKit it names, asked of the registry with the volume's own
credentials before its daemon mounts.

Every volume on a node shares one cache, and a cached ModelKit mounts without the registry: by
digest always, by tag when the registry is away (``refresh: auto``) or never asked
(``refresh: never``). On a node shared by tenants, that would hand one pod's private ModelKit to any
pod that names it. So a volume's daemon first asks the registry for the manifest (a HEAD request)
with the volume's credentials: a denial refuses the volume (PermissionDenied), a missing manifest too
(NotFound). When the registry cannot be reached, the volume goes on from the cache only if the same
credentials were granted the same repository before: a grant is a file named by a salted hash of
registry, repository and credentials (no secret is stored), written after each granted check. So a
warm node keeps serving its pods while the registry is away, and nobody else's.
"""

from __future__ import annotations

import hashlib
import logging
import os
import secrets
from pathlib import Path

from kitfs.errors import AuthError, NotFoundError, RegistryError
from kitfs.fs.options import MountOptions
from kitfs.reference import Reference, parse

log = logging.getLogger(__name__)

SALT_FILE = "salt"


class AccessUnknownError(RegistryError):
    """The registry cannot be asked, and these credentials were never granted this repository."""


def ensure_salt(grants: Path) -> None:
    """The grants directory (0700) and its random salt (0600), made once per plugin state."""
    grants.mkdir(mode=0o700, parents=True, exist_ok=True)
    salt = grants / SALT_FILE
    if not salt.exists():
        fd = os.open(salt, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(secrets.token_bytes(32))


def grant_name(salt: bytes, ref: Reference, credentials: tuple[str, str] | None) -> str:
    user, password = credentials or ("", "")
    digest = hashlib.sha256(salt)
    for part in (
        ref.registry,
        ref.repository,
        "user" if credentials else "anonymous",
        user,
        password,
    ):
        digest.update(part.encode() + b"\0")
    return digest.hexdigest()


async def check_access(options: MountOptions, grants: Path) -> None:
    """Raise unless the registry lets this volume's credentials read its ModelKit (or, while the
    registry cannot be reached, it did so before). Local storage references are not checked."""
    ref = parse(options.reference)
    if ref.is_local:
        return
    from kitfs.oci.auth import CredentialStore
    from kitfs.oci.endpoints import open_client

    store = CredentialStore.for_paths(options.paths)
    credentials = store.get(ref.registry)
    grant = grants / grant_name((grants / SALT_FILE).read_bytes(), ref, credentials)
    client = open_client(ref, options.registry, store)
    try:
        await _ask(client, ref)
    except (AuthError, NotFoundError):
        raise
    except RegistryError as exc:
        if not grant.exists():
            raise AccessUnknownError(
                f"{exc}; this volume's credentials were never granted {ref.registry}/"
                f"{ref.repository} on this node, so its cached copy is not served"
            ) from None
        log.warning("%s; serving the cached copy: these credentials were granted it before", exc)
        return
    finally:
        await client.aclose()
    grant.touch()


async def _ask(client: object, ref: Reference) -> None:
    if ref.reference is None:
        await client.list_tags(ref.repository)  # type: ignore[attr-defined]
        return
    found = await client.head_manifest(ref.repository, ref.reference)  # type: ignore[attr-defined]
    if found is None:
        raise NotFoundError(f"{ref.registry}/{ref.repository} has no manifest {ref.reference}")
