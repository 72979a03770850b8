"""Enforce a signature policy on a resolved manifest digest, before any layer byte is used.

Callers resolve a reference to a verified manifest digest first and then ask ``Enforcer.check``
with that digest, so what is verified is exactly what will be served or written (a tag that moves
in between cannot slip another manifest past the check).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from kitfs.config import Paths
from kitfs.oci.auth import CredentialStore
from kitfs.oci.client import RegistryClient, RegistryOptions
from kitfs.reference import Reference
from kitfs.signing import SignatureError
from kitfs.signing.policy import REJECT, SIGNED, Policy
from kitfs.signing.verify import Verified, verify_digest

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Enforcer:
    """A policy, applied to one ModelKit digest at a time."""

    policy: Policy

    async def check(
        self,
        name: str,
        digest: str,
        client: RegistryClient | None = None,
        repository: str | None = None,
    ) -> list[Verified]:
        """Raise SignatureError unless ``name@digest`` meets the policy's requirements for
        ``name`` (``registry/repository``); signatures are looked up through ``client``."""
        scope, requirements = self.policy.requirements_for(name)
        verified: list[Verified] = []
        for requirement in requirements:
            if requirement.kind == REJECT:
                raise SignatureError(
                    f"{name}@{digest}: policy {self.policy.source} rejects scope {scope}"
                )
            if requirement.kind != SIGNED:
                continue
            if client is None or repository is None:
                raise SignatureError(
                    f"{name}@{digest}: policy {self.policy.source} requires a signature, and "
                    "signatures can only be checked for a ModelKit in a registry"
                )
            verified.append(await verify_digest(client, repository, digest, requirement.keys))
        for found in verified:
            log.info("verified %s@%s: %s by %s", name, digest, found.kind, found.key.name)
        return verified

    async def check_reference(
        self, ref: Reference, digest: str, paths: Paths, options: RegistryOptions
    ) -> list[Verified]:
        """``check`` for a registry reference, with a client of its own (for a ModelKit found in
        local storage: its signatures are still the registry's)."""
        if ref.is_local:
            return await self.check(ref.name, digest)
        async with RegistryClient(
            ref.registry, options, CredentialStore.for_paths(paths)
        ) as client:
            return await self.check(ref.name, digest, client, ref.repository)
