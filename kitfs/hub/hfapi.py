"""The Hugging Face Hub API as kit v1.7.0 uses it (pkg/lib/hf/list.go, download.go), plus the
``huggingface_hub`` conventions kit lacks: ``HF_ENDPOINT`` for a mirror, ``HF_TOKEN`` and the token
file for credentials.

Listing: ``GET {endpoint}/api/models/{repo}/tree/{rev}[/{dir}]``, one request per directory as kit
walks it, each answering a JSON list of ``{"type", "oid", "size", "path"}`` (LFS files add
``"lfs": {"oid": <sha256>, "size", "pointerSize"}``); ``.gitignore`` and ``.gitattributes`` are
skipped. Files: ``GET {endpoint}/{repo}/resolve/{rev}/{path}``. Every field of a listing is checked
before it is used: paths must be plain children of the directory listed, digests well formed.
"""

from __future__ import annotations

import json
import os
import posixpath
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote, urljoin, urlsplit

import httpx

from kitfs.hub.errors import HubAuthError, HubError
from kitfs.kitinit import DirectoryListing, FileListing
from kitfs.layers.tarindex import MAX_ENTRIES

DEFAULT_ENDPOINT = "https://huggingface.co"
SKIPPED_NAMES = (".gitignore", ".gitattributes")
MAX_DEPTH = 64
MAX_LISTING_BYTES = 64 << 20
MAX_PAGES = 10_000
_SHA1_RE = re.compile(r"^[0-9a-f]{40}$")
_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
_INVALID_REV = "Invalid rev id"


@dataclass(frozen=True)
class HubConfig:
    """Where the Hub is and how we authenticate to it (flag, then environment, then default)."""

    endpoint: str
    token: str | None
    token_source: str  # for messages: "--token", "HF_TOKEN", or the token file's path
    token_file: Path

    @property
    def host(self) -> str:
        return urlsplit(self.endpoint).hostname or ""

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}


def hf_home() -> Path:
    env = os.environ.get("HF_HOME")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "huggingface"


def hub_config(token_flag: str | None) -> HubConfig:
    """``HF_ENDPOINT`` (default huggingface.co); the token from ``--token``, ``HF_TOKEN``, then the
    token file (``HF_TOKEN_PATH``, else ``$HF_HOME/token``), as huggingface_hub looks for it."""
    endpoint = (os.environ.get("HF_ENDPOINT") or DEFAULT_ENDPOINT).rstrip("/")
    if urlsplit(endpoint).scheme not in ("http", "https") or not urlsplit(endpoint).hostname:
        raise HubError(f"HF_ENDPOINT {endpoint!r} is not an http(s) URL")
    path_env = os.environ.get("HF_TOKEN_PATH")
    token_file = Path(path_env).expanduser() if path_env else hf_home() / "token"
    if token_flag:
        return HubConfig(endpoint, token_flag, "--token", token_file)
    env_token = (os.environ.get("HF_TOKEN") or "").strip()
    if env_token:
        return HubConfig(endpoint, env_token, "HF_TOKEN", token_file)
    try:
        saved = token_file.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError):
        saved = ""
    return HubConfig(endpoint, saved or None, str(token_file), token_file)


@dataclass(frozen=True)
class RepoFile:
    """One file of a repository as the tree API describes it."""

    path: str
    size: int
    oid: str  # the git blob sha1 (of the pointer file, for LFS files)
    sha256: str | None  # the LFS object's sha256, for LFS files

    @property
    def name(self) -> str:
        return posixpath.basename(self.path)


@dataclass
class Listing:
    """A repository's tree: kit's DirectoryListing (for Kitfile generation, in the API's order)
    and every file by path."""

    tree: DirectoryListing
    files: dict[str, RepoFile] = field(default_factory=dict)
    directories: set[str] = field(default_factory=set)


def tree_url(config: HubConfig, repo: str, rev: str, directory: str = ".") -> str:
    base = f"{config.endpoint}/api/models/{repo}/tree/{quote(rev, safe='')}"
    return base if directory == "." else f"{base}/{quote(directory, safe='/')}"


def resolve_url(config: HubConfig, repo: str, rev: str, path: str) -> str:
    return f"{config.endpoint}/{repo}/resolve/{quote(rev, safe='')}/{quote(path, safe='/')}"


async def list_repository(
    client: httpx.AsyncClient, config: HubConfig, repo: str, rev: str
) -> Listing:
    """Walk the repository tree as kit does (directories in the order the API lists them)."""
    listing = Listing(DirectoryListing(".", ".", None))
    await _walk(client, config, repo, rev, listing, listing.tree, 0)
    return listing


async def _walk(
    client: httpx.AsyncClient,
    config: HubConfig,
    repo: str,
    rev: str,
    listing: Listing,
    node: DirectoryListing,
    depth: int,
) -> None:
    if depth > MAX_DEPTH:
        raise HubError(f"{repo}: the repository tree is deeper than {MAX_DEPTH} directories")
    for item in await _fetch_tree(client, config, repo, rev, node.path):
        kind, path = _check_item(item, node.path, repo)
        if kind == "directory":
            child = DirectoryListing(posixpath.basename(path), path, None)
            listing.directories.add(path)
            await _walk(client, config, repo, rev, listing, child, depth + 1)
            node.subdirs.append(child)
            continue
        repo_file = _repo_file(item, path, repo)
        if repo_file.name in SKIPPED_NAMES:
            continue
        if len(listing.files) >= MAX_ENTRIES:
            raise HubError(f"{repo}: the repository lists more than {MAX_ENTRIES} files")
        listing.files[path] = repo_file
        node.files.append(FileListing(repo_file.name, path, repo_file.size))


async def _fetch_tree(
    client: httpx.AsyncClient, config: HubConfig, repo: str, rev: str, directory: str
) -> list[Any]:
    """Every item of one directory, following ``Link: rel="next"`` pages on the same host."""
    url: str | None = tree_url(config, repo, rev, directory)
    items: list[Any] = []
    seen: set[str] = set()
    while url is not None:
        if url in seen or len(seen) >= MAX_PAGES:
            raise HubError(f"{repo}: the Hub API's listing pages of {directory!r} do not end")
        seen.add(url)
        status, body, response = await _get_capped(client, config, url)
        if status != 200:
            raise api_error(config, repo, rev, status, body, "list")
        try:
            page = json.loads(body)
        except ValueError:
            raise HubError(f"{repo}: the Hub API answered a listing that is not JSON") from None
        if not isinstance(page, list):
            raise HubError(f"{repo}: the Hub API answered a listing that is not a JSON list")
        items += page
        if len(items) > MAX_ENTRIES:
            raise HubError(f"{repo}: the repository lists more than {MAX_ENTRIES} files")
        url = _next_page(response, url)
    return items


async def _get_capped(
    client: httpx.AsyncClient, config: HubConfig, url: str
) -> tuple[int, bytes, httpx.Response]:
    """One GET whose body is read up to MAX_LISTING_BYTES (a larger one is refused)."""
    try:
        async with client.stream("GET", url, headers=config.headers()) as response:
            body = bytearray()
            async for chunk in response.aiter_bytes():
                body += chunk
                if len(body) > MAX_LISTING_BYTES:
                    raise HubError(
                        f"{url}: the Hub API's answer is larger than {MAX_LISTING_BYTES} bytes"
                    )
            return response.status_code, bytes(body), response
    except httpx.TransportError as exc:
        raise HubError(f"cannot reach {config.endpoint}: {exc or type(exc).__name__}") from None


def _next_page(response: httpx.Response, url: str) -> str | None:
    nxt = response.links.get("next", {}).get("url")
    if not nxt:
        return None
    target = urljoin(url, nxt)
    if urlsplit(target).netloc != urlsplit(url).netloc:
        raise HubError(f"the Hub API sent a listing page on another host: {target}")
    return target


def _check_item(item: Any, directory: str, repo: str) -> tuple[str, str]:
    if not isinstance(item, dict):
        raise HubError(f"{repo}: the Hub API listed an item that is not an object")
    kind, path = item.get("type"), item.get("path")
    if kind not in ("file", "directory"):
        raise HubError(f"unknown type in repository tree: {kind}")
    if not isinstance(path, str) or not _plain_child(path, directory):
        raise HubError(f"{repo}: the Hub API listed {path!r} inside {directory!r}: refused")
    return kind, path


def _plain_child(path: str, directory: str) -> bool:
    parent, _, name = path.rpartition("/")
    if (parent or ".") != directory or name in ("", ".", ".."):
        return False
    return "\\" not in path and "\0" not in path and not path.startswith("/")


def _repo_file(item: dict[str, Any], path: str, repo: str) -> RepoFile:
    size, oid, lfs = item.get("size"), item.get("oid"), item.get("lfs")
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise HubError(f"{repo}: the Hub API gave {path} no valid size")
    if not isinstance(oid, str) or not _SHA1_RE.match(oid):
        raise HubError(f"{repo}: the Hub API gave {path} no valid git oid")
    if lfs is None:
        return RepoFile(path, size, oid, None)
    sha = lfs.get("oid") if isinstance(lfs, dict) else None
    if not isinstance(sha, str) or not _SHA256_RE.match(sha) or lfs.get("size") != size:
        raise HubError(f"{repo}: the Hub API gave {path} LFS metadata that does not hold together")
    return RepoFile(path, size, oid, sha)


def api_error(
    config: HubConfig, repo: str, rev: str, status: int, body: bytes, action: str
) -> HubError:
    """One line for a refused request: a missing or refused token, an unknown rev, the rest."""
    message = _error_text(body)
    if status in (401, 403):
        return auth_error(config, repo)
    if status == 404 and message.startswith(_INVALID_REV):
        return HubError(f"reference '{rev}' not found in {repo} at {config.endpoint}")
    if status == 404:
        return HubError(
            f"{repo} not found at {config.endpoint}" + (f": {message}" if message else "")
        )
    detail = f": {message}" if message else ""
    return HubError(
        f"failed to {action} {repo} at {config.endpoint}: got error code {status}{detail}"
    )


def auth_error(config: HubConfig, repo: str) -> HubAuthError:
    if config.token is None:
        return HubAuthError(
            f"{repo} at {config.endpoint} is gated or private and needs a token: pass --token, "
            f"set HF_TOKEN, or save one in {config.token_file}"
        )
    return HubAuthError(
        f"{config.endpoint} refused the token from {config.token_source} for {repo} (for a gated "
        "model, accept its terms on the model page with the account the token belongs to)"
    )


def _error_text(body: bytes) -> str:
    try:
        parsed = json.loads(body)
    except ValueError:
        return ""
    error = parsed.get("error") if isinstance(parsed, dict) else None
    return " ".join(error.split())[:200] if isinstance(error, str) else ""
