"""Which tags of a repository name models: the rest are artifacts attached to them or other images.

cosign stores signatures, attestations and SBOMs under tags ``sha256-<hex>.sig`` / ``.att`` /
``.sbom`` (sigstore/cosign pkg/oci/remote), and registries without the referrers API get the OCI
1.1 referrers fallback tag ``sha256-<hex>`` (image-spec, distribution-spec "referrers tag schema").
Neither is a model; nor is a tag whose manifest is some other artifact. A repository view (a
repository mount, ``list REPO``) leaves them all out rather than showing them as broken entries.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable

import trio

from kitfs.errors import KitfsError, NotFoundError
from kitfs.oci.manifest import Manifest, ManifestError

log = logging.getLogger(__name__)

ATTACHED_SUFFIXES = (".sig", ".att", ".sbom")
_DIGEST_TAG = re.compile(r"^sha256-[0-9a-f]{64}")
CHECK_CONCURRENCY = 4


def is_attached_tag(tag: str) -> bool:
    """Whether a tag names a signature, attestation, SBOM or referrers fallback, by its name."""
    return tag.endswith(ATTACHED_SUFFIXES) or bool(_DIGEST_TAG.match(tag))


async def model_tags(
    tags: list[str], manifest_of: Callable[[str], Awaitable[Manifest]], what: str
) -> list[str]:
    """The tags whose manifests are ModelKits or ModelPacks, in the given order (a few manifests
    fetched at a time); a tag whose manifest cannot be read or is another artifact is left out."""
    candidates = [t for t in tags if not is_attached_tag(t)]
    keep: dict[str, bool] = {}
    limiter = trio.CapacityLimiter(CHECK_CONCURRENCY)

    async def check(tag: str) -> None:
        async with limiter:
            try:
                keep[tag] = (await manifest_of(tag)).is_modelkit
            except (ManifestError, NotFoundError) as exc:
                log.info("%s:%s left out of the tag list: %s", what, tag, exc)
                keep[tag] = False
            except KitfsError as exc:  # a transient failure: keep it, opening it will tell
                log.warning("cannot check the manifest of %s:%s: %s", what, tag, exc)
                keep[tag] = True

    async with trio.open_nursery() as nursery:
        for tag in candidates:
            nursery.start_soon(check, tag)
    return [t for t in candidates if keep.get(t)]
