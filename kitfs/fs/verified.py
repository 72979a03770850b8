"""A mount source that refuses ModelKits whose signatures do not meet a policy.

It wraps the source a mount reference names and checks every ModelKit it resolves, by the
manifest digest that resolution verified, before the tree sees the ModelKit: the first resolve of
a single-ModelKit mount (so nothing is mounted when it fails), and each tag of a repository mount
when a reader first enters it (a tag that failed is checked again at the next access).
"""

from __future__ import annotations

import logging
from pathlib import Path

from kitfs.fs.registrysource import RegistrySource
from kitfs.fs.source import (
    LocalStorageSource,
    OciLayoutSource,
    Progress,
    ResolvedModelKit,
    Source,
)
from kitfs.oci.download import Tee
from kitfs.oci.manifest import Descriptor
from kitfs.oci.sink import Sink
from kitfs.signing import SignatureError
from kitfs.signing.enforce import Enforcer

log = logging.getLogger(__name__)


class VerifiedSource(Source):
    """``inner`` with a signature check on ``resolve``; everything else is ``inner``'s."""

    def __init__(self, inner: Source, enforcer: Enforcer) -> None:
        self.inner = inner
        self.enforcer = enforcer
        self.description = inner.description
        self.target = inner.target

    async def aclose(self) -> None:
        await self.inner.aclose()

    async def resolve(self, reference: str) -> ResolvedModelKit:
        kit = await self.inner.resolve(reference)
        try:
            await self._check(kit)
        except SignatureError as exc:
            log.warning("refusing %s: %s", kit.name, exc)
            raise
        return kit

    async def _check(self, kit: ResolvedModelKit) -> None:
        inner = self.inner
        if isinstance(inner, RegistrySource):
            await self.enforcer.check(
                inner.ref.name, kit.digest, inner.client, inner.ref.repository
            )
        elif isinstance(inner, LocalStorageSource):
            await self.enforcer.check(inner.ref.name, kit.digest)
        elif isinstance(inner, OciLayoutSource):
            await self.enforcer.check(f"oci:{inner.root}", kit.digest)
        else:
            await self.enforcer.check(inner.description, kit.digest)

    async def list_tags(self) -> list[str]:
        return await self.inner.list_tags()

    def local_blob(self, desc: Descriptor) -> Path | None:
        return self.inner.local_blob(desc)

    async def download(
        self,
        desc: Descriptor,
        dest: Path,
        progress: Progress | None,
        *,
        tee: Tee | None = None,
        durable: bool = True,
    ) -> None:
        await self.inner.download(desc, dest, progress, tee=tee, durable=durable)

    async def stream_range(
        self,
        desc: Descriptor,
        offset: int,
        length: int,
        sink: Sink,
        *,
        origin_only: bool = False,
    ) -> int:
        return await self.inner.stream_range(desc, offset, length, sink, origin_only=origin_only)

    def name_for(self, reference: str) -> str:
        return self.inner.name_for(reference)
