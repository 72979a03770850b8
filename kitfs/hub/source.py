"""The repository argument of ``kitfs import``, read with kit's rules (pkg/cmd/kitimport/cmd.go,
util.go in kit v1.7.0): the default tag, which tool fetches it, and what a git clone is given.

kit sends everything without a URL host (``org/repo``) and every URL whose host names Hugging Face
to the Hub API, anything else to git. kitfs adds two cases kit cannot import at all: a ``file://``
URL or an scp-like address (``git@host:org/repo``) goes to git (kit sends the first to the Hub API
and refuses the second), and a URL on the ``HF_ENDPOINT`` mirror's host goes to the Hub API.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import urlsplit

from kitfs.hub.errors import HubError

TOOLS = ("git", "hf")
_SCHEME_RE = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")
_SCP_RE = re.compile(r"^[^/@:]+@[^/:]+:")


@dataclass(frozen=True)
class ParsedURL:
    """The parts of Go's url.Parse that kit looks at."""

    scheme: str
    host: str
    path: str


def parse_url(raw: str) -> ParsedURL:
    """Go's url.Parse, as far as kit relies on it: a scheme, then ``//host``, then a path; a
    colon in the first path segment of a scheme-less reference is an error."""
    match = _SCHEME_RE.match(raw)
    if match is None:
        first = raw.split("/", 1)[0]
        if ":" in first:
            raise HubError(f"failed to parse {raw}: first path segment in URL cannot contain colon")
        return ParsedURL("", "", raw.split("?", 1)[0].split("#", 1)[0])
    parts = urlsplit(raw)
    return ParsedURL(parts.scheme.lower(), parts.hostname or "", parts.path)


def extract_repo(raw: str) -> str:
    """kit's extractRepoFromURL: ``org/repo`` from a repository name or a URL with two path
    segments (``https://huggingface.co/org/repo``); anything else is refused."""
    try:
        path = parse_url(raw).path.strip("/")
    except HubError as exc:
        raise HubError(f"failed to parse url: {exc}") from None
    if len(path.split("/")) != 2:
        raise HubError(f"could not extract organization and repository from '{path}'")
    return path


def default_tag(raw: str) -> str:
    """kit's default ModelKit tag: the repository, lower-cased, ``:latest``."""
    try:
        repo = extract_repo(raw)
    except HubError as exc:
        raise HubError(
            f"could not generate tag from URL: {exc}: use flag --tag to set a tag for ModelKit"
        ) from None
    return f"{repo.lower()}:latest"


def detect_tool(raw: str, endpoint_host: str) -> str:
    """Which tool imports ``raw`` when ``--tool`` is not given (kit's getImporter, see above)."""
    if _SCP_RE.match(raw):
        return "git"
    url = parse_url(raw)
    if url.scheme == "file":
        return "git"
    host = url.host.lower()
    if not host or "huggingface" in host or host == endpoint_host.lower():
        return "hf"
    return "git"


def git_url(raw: str, endpoint: str) -> str:
    """What git clones: a URL, an scp-like address or a local path as given; a bare ``org/repo``
    on the Hub (kit prefixes everything not starting with ``http``, which breaks other URLs)."""
    if _SCHEME_RE.match(raw) or _SCP_RE.match(raw) or raw.startswith(("/", "./", "../")):
        return raw
    return f"{endpoint.rstrip('/')}/{raw.strip('/')}"


def on_endpoint(raw: str, endpoint: str) -> str:
    """A URL under the Hub endpoint (a mirror may serve under a path prefix) as ``org/repo``;
    anything else unchanged."""
    base = endpoint.rstrip("/") + "/"
    return raw[len(base) :].strip("/") if raw.startswith(base) else raw


def package_for(repo: str) -> dict[str, object]:
    """kit's generateKitfile package: the last path segment names it, the one before is its
    author (nothing for a single segment)."""
    sections = repo.split("/")
    if len(sections) < 2:
        return {}
    return {"name": sections[-1], "authors": [sections[-2]]}
