"""The Distribution API's lists: a repository's tags (following ``Link`` pages) and the referrers
of a manifest (OCI distribution 1.1)."""

from __future__ import annotations

import json
import re

import httpx

from kitfs.errors import RegistryError
from kitfs.oci import media
from kitfs.oci.auth import Scope
from kitfs.oci.transport import MAX_MANIFEST_SIZE, Target, Transport, with_query

MAX_TAG_PAGES = 10_000
_LINK_NEXT_RE = re.compile(r'<([^>]*)>\s*;[^,]*\brel="?next"?', re.IGNORECASE)


class Lister:
    """Lists one registry's tags and referrers through ``transport``."""

    def __init__(self, transport: Transport) -> None:
        self._transport = transport
        self.registry = transport.registry

    async def list_tags(self, repository: str, page_size: int | None = None) -> list[str]:
        """All tags of a repository, following ``Link: <...>; rel="next"`` pages."""
        target = Target(repository, f"tags of {repository}", "listing")
        url: str | None = self._transport.url(repository, "tags", "list")
        if page_size:
            url = with_query(str(url), "n", str(page_size))
        tags: list[str] = []
        seen: set[str] = set()
        while url and url not in seen and len(seen) < MAX_TAG_PAGES:
            seen.add(url)
            response, body = await self._transport.exchange(
                "GET",
                url,
                scopes=[Scope(repository)],
                handle=self._transport.expect((200,), target, MAX_MANIFEST_SIZE),
            )
            tags.extend(self._parse_tags(body, target))
            url = self._next_page(response)
        return tags

    def _parse_tags(self, body: bytes, target: Target) -> list[str]:
        try:
            raw = json.loads(body)
        except (ValueError, UnicodeDecodeError):
            raw = None
        if not isinstance(raw, dict) or not isinstance(raw.get("tags") or [], list):
            raise RegistryError(
                f"registry {self.registry}: {target.action} {target.noun} failed: not a tag list"
            )
        return [str(tag) for tag in raw.get("tags") or []]

    def _next_page(self, response: httpx.Response) -> str | None:
        for value in response.headers.get_list("link"):
            match = _LINK_NEXT_RE.search(value)
            if match:
                return str(response.url.join(match.group(1)))
        return None

    # --- referrers -------------------------------------------------------------------------------

    async def list_referrers(
        self, repository: str, digest: str, artifact_type: str | None = None
    ) -> bytes | None:
        """The referrers API's image index for ``digest`` (OCI distribution 1.1), unparsed; None
        when the registry has no referrers API (it answers 404: use the ``sha256-<hex>`` tag)."""
        target = Target(repository, f"referrers of {repository}@{digest}", "listing")
        url = self._transport.url(repository, "referrers", digest)
        if artifact_type:
            url = with_query(url, "artifactType", artifact_type)
        response, body = await self._transport.exchange(
            "GET",
            url,
            scopes=[Scope(repository)],
            headers={"Accept": media.OCI_INDEX},
            handle=self._transport.expect((200, 404), target, MAX_MANIFEST_SIZE),
        )
        return body if response.status_code == 200 else None
