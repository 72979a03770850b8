"""An async client for the OCI Distribution API (manifests, blobs, ranges, uploads, tags) on httpx.

It runs under trio (httpx picks its trio backend through anyio). Every request goes through one retry
loop that answers 401 challenges (``kitfs.oci.auth``), retries dropped connections and 429/5xx
answers with capped exponential backoff (honouring ``Retry-After``) and turns everything else into a
one-line ``RegistryError`` that names the registry and the repository.
"""

from __future__ import annotations

import contextlib
import email.utils
import ipaddress
import json
import logging
import os
import random
import re
import socket
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import TypeVar
from urllib.parse import quote

import certifi
import httpx
import trio

from kitfs import limits
from kitfs.errors import (
    AuthError,
    DigestMismatchError,
    KitfsError,
    NotFoundError,
    RegistryError,
    StorageError,
    TransientError,
    UsageError,
    leading_error,
)
from kitfs.oci import media
from kitfs.oci.auth import CredentialSource, RegistryAuth, Scope
from kitfs.oci.body import body_pieces
from kitfs.oci.deadline import SLOW_ATTEMPTS, TransferGuard, TransferTooSlow, activate, received
from kitfs.oci.deadline import current as current_guard
from kitfs.oci.deadline import reset as reset_guard
from kitfs.oci.download import RESUME_MIN, Download, Tee
from kitfs.oci.download import ByteProgress as _Progress
from kitfs.oci.download import hasher_for as _hasher
from kitfs.oci.manifest import Descriptor
from kitfs.oci.options import RegistryOptions
from kitfs.oci.upload import ChunkLimits, UploadSource, read_verified

log = logging.getLogger(__name__)

T = TypeVar("T")
Progress = Callable[[int], None]
Headers = dict[str, str]
Body = bytes | Callable[[], AsyncIterator[bytes]] | None

MAX_MANIFEST_SIZE = limits.MAX_MANIFEST_SIZE
MAX_SMALL_BLOB = 64 * 1024 * 1024
FALLBACK_CHUNK = 16 * 1024 * 1024  # PATCH size for a registry that refuses a whole blob (413)
MAX_ERROR_BODY = 64 * 1024
MAX_TAG_PAGES = 10_000
IO_CHUNK = 1024 * 1024
CONNECT_ATTEMPTS = 3
TRANSIENT_STATUS = frozenset({429, 500, 502, 503, 504})
ACCEPT_MANIFESTS = ", ".join(media.MANIFEST_TYPES)
USER_AGENT = "kitfs/0.1"
_DOCKER_HUB_ENDPOINT = "registry-1.docker.io"
_LINK_NEXT_RE = re.compile(r'<([^>]*)>\s*;[^,]*\brel="?next"?', re.IGNORECASE)
_CONTENT_RANGE_RE = re.compile(r"^bytes (\d+)-(\d+)/(\d+|\*)$")

# httpcore reads HTTP/1.1 responses 64 KiB at a time, and per read the Python cost of h11 and the
# event loop then caps a blob download near 100 MiB/s. Reading 1 MiB at a time lets a body arrive at
# a few times that (measured on loopback: 94 -> 301 MiB/s for 16 MiB ranges).
with contextlib.suppress(ImportError, AttributeError):
    from httpcore._async.http11 import AsyncHTTP11Connection

    AsyncHTTP11Connection.READ_NUM_BYTES = max(AsyncHTTP11Connection.READ_NUM_BYTES, IO_CHUNK)


@dataclass
class _UploadSession:
    """An open upload: where to send the next request (each answer moves it) and the registry's
    chunk limits."""

    location: str
    limits: ChunkLimits


@dataclass(frozen=True)
class _Target:
    """What a request is about, for error messages: ``registry R: fetching manifest a/b:v1 ...``."""

    repository: str
    noun: str
    action: str


def endpoint_host(registry: str) -> str:
    """The host to connect to for ``registry`` (Docker Hub's API lives at registry-1.docker.io)."""
    return _DOCKER_HUB_ENDPOINT if registry in ("docker.io", "index.docker.io") else registry


def _is_loopback(host: str) -> bool:
    """Whether ``host[:port]`` is this machine (environment proxies are never used for it)."""
    name = host[1:].split("]", 1)[0] if host.startswith("[") else host.split(":", 1)[0]
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def _ssl_context(options: RegistryOptions) -> ssl.SSLContext:
    context = ssl.create_default_context()
    if not options.tls_verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    else:
        context.load_verify_locations(certifi.where())
        if options.ca_file:
            _load(context.load_verify_locations, "--ca-file", options.ca_file)
    if options.cert:
        _load(lambda path: context.load_cert_chain(path, options.key), "--cert", options.cert)
    return context


def _load(loader: Callable[[str], None], flag: str, path: str) -> None:
    try:
        loader(path)
    except (OSError, ssl.SSLError) as exc:
        raise UsageError(f"cannot load {flag} {path}: {exc.strerror or exc}") from None


def _ref_text(repository: str, reference: str) -> str:
    return f"{repository}@{reference}" if ":" in reference else f"{repository}:{reference}"


def _digest_of(data: bytes, like: str = "sha256:") -> str:
    hasher = _hasher(like)
    hasher.update(data)
    return f"{hasher.name}:{hasher.hexdigest()}"


def _is_digest(reference: str) -> bool:
    return reference.startswith(("sha256:", "sha512:"))


def _with_query(url: str, name: str, value: str) -> str:
    """Append a query parameter to an upload location, which may already carry a query string."""
    return f"{url}{'&' if '?' in url else '?'}{name}={quote(value, safe='')}"


def _exception_chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    stack = [exc]
    while stack:
        current = stack.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        stack.extend(getattr(current, "exceptions", ()) or ())
        for linked in (current.__cause__, current.__context__):
            if linked is not None:
                stack.append(linked)


def _current_guard() -> TransferGuard:
    guard = current_guard()
    assert guard is not None, "a request is sent only inside _exchange"
    return guard


async def _counted(source: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    """A request body, counted against the transfer guard as the sender takes each next piece
    (the one before it is then sent)."""
    async for chunk in source:
        yield chunk
        received(len(chunk))
    guard = current_guard()
    if guard is not None:
        guard.sent()


def _transport_reason(exc: BaseException) -> str:
    """A short reason for a transport failure: the innermost OS or TLS error, not httpx's wrapper."""
    if isinstance(exc, TransferTooSlow):
        return str(exc)
    chain = list(_exception_chain(exc))
    for kind, reason in (
        (ConnectionRefusedError, "connection refused"),
        (socket.gaierror, "host name does not resolve"),
        (ConnectionResetError, "connection reset"),
        (httpx.TimeoutException, "timed out"),
        (httpx.RemoteProtocolError, "connection closed by the server"),
    ):
        if any(isinstance(e, kind) for e in chain):
            return reason
    return str(exc).strip().splitlines()[0][:200] if str(exc).strip() else exc.__class__.__name__


_PLAIN_HTTP_REASONS = ("WRONG_VERSION_NUMBER", "RECORD_LAYER_FAILURE", "PACKET_LENGTH_TOO_LONG")
_CLIENT_CERT_REASONS = (
    "BAD_CERTIFICATE",
    "CERTIFICATE_REQUIRED",
    "UNKNOWN_CA",
    "HANDSHAKE_FAILURE",
)


def _tls_failure(registry: str, exc: BaseException, has_cert: bool) -> RegistryError | None:
    """A one-line error for a TLS failure anywhere in ``exc``'s chain; None when it is not one."""
    chain = list(_exception_chain(exc))
    if any(isinstance(e, ssl.SSLCertVerificationError) for e in chain):
        return RegistryError(
            f"registry {registry}: TLS certificate verification failed (use --tls-verify=false or --ca-file)"
        )
    failure = next((e for e in chain if isinstance(e, ssl.SSLError)), None)
    if failure is None:
        return None
    reason = str(getattr(failure, "reason", None) or failure)
    if any(r in reason.upper() for r in _PLAIN_HTTP_REASONS):
        return RegistryError(f"registry {registry} does not speak TLS (use --plain-http)")
    if any(r in reason.upper() for r in _CLIENT_CERT_REASONS):
        if has_cert:
            return RegistryError(
                f"registry {registry} refused the TLS client certificate (check --cert and --key)"
            )
        return RegistryError(
            f"registry {registry} requires a TLS client certificate (use --cert and --key)"
        )
    return RegistryError(f"registry {registry}: TLS handshake failed ({_one_line(reason)})")


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after")
    if not value:
        return None
    with contextlib.suppress(ValueError):
        return max(0.0, float(value))
    with contextlib.suppress(TypeError, ValueError):
        moment = email.utils.parsedate_to_datetime(value)
        return max(0.0, moment.timestamp() - time.time())
    return None


def _error_entries(body: bytes) -> list[tuple[str, str]]:
    """(code, message) pairs of a Distribution error body ``{"errors": [...]}``."""
    try:
        raw = json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return []
    errors = raw.get("errors") if isinstance(raw, dict) else None
    if not isinstance(errors, list):
        return []
    return [
        (str(e.get("code", "")), str(e.get("message", ""))) for e in errors if isinstance(e, dict)
    ]


def _one_line(text: str, limit: int = 200) -> str:
    return " ".join(text.split())[:limit]


async def _read_limited(response: httpx.Response, limit: int) -> bytes | None:
    """The body, or None when it is longer than ``limit`` (read stops there)."""
    declared = response.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        return None
    parts: list[bytes] = []
    total = 0
    async for chunk in response.aiter_bytes():
        received(len(chunk))
        total += len(chunk)
        if total > limit:
            return None
        parts.append(chunk)
    return b"".join(parts)


class RegistryClient:
    """One registry's Distribution API; use as ``async with RegistryClient(host) as client``."""

    def __init__(
        self,
        registry: str,
        options: RegistryOptions | None = None,
        credentials: CredentialSource | None = None,
    ) -> None:
        self.registry = registry
        self.options = options or RegistryOptions()
        scheme = "http" if self.options.plain_http else "https"
        self.base_url = f"{scheme}://{endpoint_host(registry)}"
        try:
            self._http = self._http_client()
        except ValueError as exc:  # --proxy is checked (RegistryOptions); this is the environment's
            raise UsageError(
                f"cannot use the proxy from the environment (HTTPS_PROXY, HTTP_PROXY, ALL_PROXY): "
                f"{_one_line(str(exc))}"
            ) from None
        self._auth = RegistryAuth(registry, self._http, credentials)
        self._ignores_range = False  # set when the registry answered a Range request with 200

    def _http_client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(
            verify=True if self.options.plain_http else _ssl_context(self.options),
            proxy=self.options.proxy,
            timeout=httpx.Timeout(self.options.timeout),
            follow_redirects=True,
            trust_env=self.options.proxy is None and not _is_loopback(self.registry),
            headers={"User-Agent": USER_AGENT},
            limits=httpx.Limits(max_connections=max(10, 2 * self.options.concurrency)),
        )

    async def __aenter__(self) -> RegistryClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    # --- the request loop ------------------------------------------------------------------------

    async def ping(self) -> None:
        """Check that the registry answers the Distribution API and accepts our credentials."""
        target = _Target("", "the Distribution API endpoint /v2/", "checking")
        await self._exchange(
            "GET", f"{self.base_url}/v2/", scopes=[], handle=self._expect((200,), target)
        )

    def _url(self, repository: str, kind: str, reference: str = "") -> str:
        return f"{self.base_url}/v2/{repository}/{kind}/{reference}"

    async def _exchange(
        self,
        method: str,
        url: str,
        *,
        scopes: Sequence[Scope],
        handle: Callable[[httpx.Response], Awaitable[T]],
        headers: Headers | Callable[[], Headers] | None = None,
        body: Body = None,
        resend: bool = True,
    ) -> T:
        """Send a request until it gets a final answer, then ``handle`` it (inside the retry loop:
        a connection dropped while ``handle`` reads the body is retried too). With ``resend``
        False a dropped connection is raised instead, for an upload that resumes where the
        registry says it stopped rather than from the start of its body."""
        failures = 0
        auth_rounds = 0
        while True:
            token = activate(self._guard())
            try:
                response = await self._send(method, url, scopes, headers, body)
                try:
                    status = response.status_code
                    log.debug("%s %s -> %d", method, url.split("?", 1)[0], status)
                    if status == 401:
                        with trio.move_on_after(self.options.timeout) as token_wait:
                            await self._auth.on_unauthorized(
                                response, scopes, retried=auth_rounds > 0
                            )
                        if token_wait.cancelled_caught:  # a token server that trickles
                            raise TransferTooSlow(
                                f"registry {self.registry}: no token within "
                                f"{self.options.timeout:g} s (--idle-timeout)"
                            )
                        auth_rounds += 1
                        continue
                    if status in TRANSIENT_STATUS and failures + 1 < self.options.retries:
                        failures += 1
                        await self._backoff(failures, _retry_after(response))
                        continue
                    return await handle(response)
                finally:
                    await response.aclose()
            except (httpx.TransportError, TransferTooSlow) as exc:
                if not resend:
                    raise
                failures += 1
                self._give_up(exc, failures)
                log.info(
                    "registry %s: %s, retrying (%d)",
                    self.registry,
                    _transport_reason(exc),
                    failures,
                )
                await self._backoff(failures, None)
            finally:
                reset_guard(token)

    def _guard(self) -> TransferGuard:
        options = self.options
        return TransferGuard(self.registry, options.min_rate, options.rate_window, options.timeout)

    async def _send(
        self,
        method: str,
        url: str,
        scopes: Sequence[Scope],
        headers: Headers | Callable[[], Headers] | None,
        body: Body,
    ) -> httpx.Response:
        """Build and send a request, until its answer's headers: bounded by the transfer guard
        (kitfs.oci.deadline), so that a registry trickling its headers, or taking a request body
        slower than the minimum rate, fails as TransferTooSlow instead of stretching the idle
        timeout byte by byte. A bytes body may take its length at the minimum rate on top."""
        guard = _current_guard()
        with trio.CancelScope() as scope:
            allowance = (
                len(body) / guard.min_rate if isinstance(body, bytes) and guard.min_rate else 0
            )

            def follow() -> None:
                scope.deadline = trio.current_time() + guard.remaining() + allowance

            follow()
            guard.listener = follow
            try:
                request = await self._build(method, url, scopes, headers, body)
                response = await self._http.send(request, stream=True)
            finally:
                guard.listener = None
        if scope.cancelled_caught:
            raise guard.error()
        guard.responded()
        return response

    async def _build(
        self,
        method: str,
        url: str,
        scopes: Sequence[Scope],
        headers: Headers | Callable[[], Headers] | None,
        body: Body,
    ) -> httpx.Request:
        merged = dict(headers() if callable(headers) else headers or {})
        authorization = await self._auth.authorization(scopes)
        if authorization:
            merged["Authorization"] = authorization
        content: bytes | AsyncIterator[bytes] | None = body() if callable(body) else body
        if content is not None and not isinstance(content, bytes):
            content = _counted(content)
        if content is None and method in ("POST", "PUT", "PATCH"):
            content = b""
        return self._http.build_request(method, url, headers=merged, content=content)

    def _give_up(self, exc: httpx.TransportError | TransferTooSlow, failures: int) -> None:
        if isinstance(exc, TransferTooSlow):
            if failures >= min(SLOW_ATTEMPTS, self.options.retries):
                raise exc
            return
        tls = _tls_failure(self.registry, exc, bool(self.options.cert))
        if tls is not None:
            raise tls from None
        # A refused or unresolvable connection is retried briefly (a registry restarting), not for
        # the full budget: "unreachable" should be said within 1-1.5 s (kit does at once).
        limit = self.options.retries
        if isinstance(exc, httpx.ConnectError):
            limit = min(limit, CONNECT_ATTEMPTS)
        if failures < limit:
            return
        reason = _transport_reason(exc)
        if isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout):
            raise TransientError(f"registry {self.registry} is unreachable: {reason}") from None
        raise TransientError(
            f"registry {self.registry}: the connection kept failing ({reason}) after {failures} attempts"
        ) from None

    async def _backoff(self, failures: int, retry_after: float | None) -> None:
        if retry_after is not None:
            delay = min(self.options.backoff_cap, retry_after)
        else:
            delay = min(self.options.backoff_cap, self.options.backoff * 2 ** (failures - 1))
            delay *= 0.5 + random.random() / 2
        await trio.sleep(delay)

    # --- answers ---------------------------------------------------------------------------------

    async def _fail(self, response: httpx.Response, target: _Target) -> KitfsError:
        """The error for an unexpected answer (reads a bounded part of the error body)."""
        body = (
            b""
            if response.request.method == "HEAD"
            else await _read_limited(response, MAX_ERROR_BODY) or b""
        )
        entries = _error_entries(body)
        codes = {code for code, _ in entries}
        status = response.status_code
        where = f"registry {self.registry}"
        if status == 404:
            if "NAME_UNKNOWN" in codes:
                return NotFoundError(f"{where}: repository {target.repository} not found")
            return NotFoundError(f"{where}: {target.noun} not found")
        if status == 400 and b"HTTP request to an HTTPS server" in body:
            return RegistryError(f"{where} serves HTTPS: drop --plain-http")
        if status in (401, 403):
            subject = f" to {target.repository}" if target.repository else ""
            return AuthError(
                f"{where} denied access{subject}: check your permissions or run `kitfs login {self.registry}`"
            )
        detail = (
            "; ".join(_one_line(f"{c} {m}".strip()) for c, m in entries[:3])
            or response.reason_phrase
        )
        message = f"{where}: {target.action} {target.noun} failed: HTTP {status} {detail}".rstrip()
        if status in TRANSIENT_STATUS:
            return TransientError(
                f"{message} (gave up after {self.options.retries} attempts)", _retry_after(response)
            )
        return RegistryError(message)

    def _expect(
        self,
        ok: tuple[int, ...],
        target: _Target,
        limit: int = 0,
        oversize: Callable[[], KitfsError] | None = None,
    ) -> Callable[[httpx.Response], Awaitable[tuple[httpx.Response, bytes]]]:
        """A handler that accepts statuses in ``ok`` and reads up to ``limit`` bytes of the body
        (a longer body raises ``oversize()``, by default a RegistryError)."""

        async def handle(response: httpx.Response) -> tuple[httpx.Response, bytes]:
            if response.status_code not in ok:
                raise await self._fail(response, target)
            if not limit:
                return response, b""
            body = await _read_limited(response, limit)
            if body is None:
                raise (
                    oversize()
                    if oversize
                    else RegistryError(
                        f"registry {self.registry}: {target.noun} is larger than {limit} bytes"
                    )
                )
            return response, body

        return handle

    # --- manifests -------------------------------------------------------------------------------

    async def get_manifest(self, repository: str, reference: str) -> tuple[bytes, str, str]:
        """Fetch a manifest or index: (body, media type, digest), verified when asked by digest."""
        target = _Target(repository, f"manifest {_ref_text(repository, reference)}", "fetching")
        response, body = await self._exchange(
            "GET",
            self._url(repository, "manifests", reference),
            scopes=[Scope(repository)],
            headers={"Accept": ACCEPT_MANIFESTS},
            handle=self._expect((200,), target, MAX_MANIFEST_SIZE),
        )
        media_type = self._manifest_media_type(response, body, target)
        return body, media_type, self._verify_manifest(response, body, reference, target)

    def _manifest_media_type(
        self, response: httpx.Response, body: bytes | None, target: _Target
    ) -> str:
        declared = response.headers.get("content-type", "").split(";", 1)[0].strip()
        if declared in media.MANIFEST_TYPES:
            return declared
        with contextlib.suppress(ValueError, UnicodeDecodeError, AttributeError, RecursionError):
            inner = json.loads(body).get("mediaType") if body else None
            if inner in media.MANIFEST_TYPES:
                return str(inner)
        raise RegistryError(
            f"registry {self.registry}: {target.noun} is not an OCI manifest (media type {declared or 'unknown'})"
        )

    def _verify_manifest(
        self, response: httpx.Response, body: bytes, reference: str, target: _Target
    ) -> str:
        expected = (
            reference
            if _is_digest(reference)
            else response.headers.get("docker-content-digest", "")
        )
        if _is_digest(expected):
            actual = _digest_of(body, expected)
            if actual != expected:
                raise DigestMismatchError(
                    expected, actual, f"{target.noun} from registry {self.registry}"
                )
            if _is_digest(reference):
                return reference
        return _digest_of(body)

    async def head_manifest(self, repository: str, reference: str) -> Descriptor | None:
        """The descriptor of a manifest without fetching it; None when it does not exist."""
        target = _Target(repository, f"manifest {_ref_text(repository, reference)}", "checking")
        response, _ = await self._exchange(
            "HEAD",
            self._url(repository, "manifests", reference),
            scopes=[Scope(repository)],
            headers={"Accept": ACCEPT_MANIFESTS},
            handle=self._expect((200, 404), target),
        )
        if response.status_code == 404:
            return None
        digest = response.headers.get("docker-content-digest", "")
        if _is_digest(reference):
            digest = reference
        size = response.headers.get("content-length", "")
        if not _is_digest(digest) or not size.isdigit():
            body, media_type, digest = await self.get_manifest(repository, reference)
            return Descriptor(media_type, digest, len(body))
        return Descriptor(self._manifest_media_type(response, None, target), digest, int(size))

    async def put_manifest(
        self, repository: str, reference: str, body: bytes, media_type: str
    ) -> str:
        """Upload a manifest under a tag or its digest; returns its digest."""
        target = _Target(repository, f"manifest {_ref_text(repository, reference)}", "pushing")
        if len(body) > MAX_MANIFEST_SIZE:
            raise RegistryError(f"{target.noun} is larger than {MAX_MANIFEST_SIZE} bytes")
        digest = _digest_of(body, reference if _is_digest(reference) else "sha256:")
        if _is_digest(reference) and digest != reference:
            raise DigestMismatchError(reference, digest, target.noun)
        response, _ = await self._exchange(
            "PUT",
            self._url(repository, "manifests", reference),
            scopes=[Scope(repository, ("pull", "push"))],
            headers={"Content-Type": media_type},
            body=body,
            handle=self._expect((200, 201, 202, 204), target),
        )
        returned = response.headers.get("docker-content-digest", "")
        if returned.startswith("sha256:") and digest.startswith("sha256:") and returned != digest:
            raise DigestMismatchError(
                digest, returned, f"{target.noun} as stored by registry {self.registry}"
            )
        return digest

    async def delete_manifest(self, repository: str, digest: str) -> None:
        """Delete a manifest by digest (the registry must allow deletes)."""
        target = _Target(repository, f"manifest {repository}@{digest}", "deleting")
        await self._exchange(
            "DELETE",
            self._url(repository, "manifests", digest),
            scopes=[Scope(repository, ("delete",))],
            handle=self._expect((200, 202, 204), target),
        )

    # --- blobs -----------------------------------------------------------------------------------

    def _blob_target(self, repository: str, digest: str, action: str) -> _Target:
        return _Target(repository, f"blob {digest} in {repository}", action)

    async def blob_exists(self, repository: str, digest: str) -> bool:
        target = self._blob_target(repository, digest, "checking")
        response, _ = await self._exchange(
            "HEAD",
            self._url(repository, "blobs", digest),
            scopes=[Scope(repository)],
            handle=self._expect((200, 404), target),
        )
        return response.status_code == 200

    async def fetch_blob(self, repository: str, digest: str, size: int | None = None) -> bytes:
        """A small blob (a config) in memory, verified against its digest and ``size``."""
        target = self._blob_target(repository, digest, "fetching")
        limit = size if size is not None else MAX_SMALL_BLOB

        def oversize() -> KitfsError:
            return DigestMismatchError(digest, f"more than {size} bytes", target.noun)

        _, body = await self._exchange(
            "GET",
            self._url(repository, "blobs", digest),
            scopes=[Scope(repository)],
            handle=self._expect(
                (200,), target, max(limit, 1), oversize if size is not None else None
            ),
        )
        actual = _digest_of(body, digest)
        if actual != digest or (size is not None and len(body) != size):
            raise DigestMismatchError(
                digest, actual, f"{target.noun} from registry {self.registry}"
            )
        return body

    async def read_blob_range(
        self, repository: str, digest: str, offset: int, length: int
    ) -> bytes:
        """``length`` bytes of a blob from ``offset`` (fewer only at its end), unverified: the caller
        checks them against something it trusts (a layer index built from verified bytes)."""
        if length <= 0:
            return b""
        target = self._blob_target(
            repository, digest, f"reading bytes {offset}-{offset + length - 1} of"
        )
        partial = self._expect((206,), target, length)

        async def handle(response: httpx.Response) -> tuple[httpx.Response, bytes]:
            if response.status_code == 200:
                raise RegistryError(
                    f"registry {self.registry} ignored a Range request for {target.noun}: it cannot serve partial reads"
                )
            return await partial(response)

        response, body = await self._exchange(
            "GET",
            self._url(repository, "blobs", digest),
            scopes=[Scope(repository)],
            headers={"Range": f"bytes={offset}-{offset + length - 1}"},
            handle=handle,
        )
        match = _CONTENT_RANGE_RE.match(response.headers.get("content-range", ""))
        if match is None or int(match.group(1)) != offset:
            raise RegistryError(
                f"registry {self.registry} answered a Range request for {target.noun} with the wrong range"
            )
        return body

    async def stream_blob_range(
        self,
        repository: str,
        digest: str,
        offset: int,
        length: int,
        consume: Callable[[bytes], Awaitable[None]],
        *,
        origin_only: bool = False,
    ) -> int:
        """Pass bytes [offset, offset + length) of a blob to ``consume`` in order, unverified (the
        caller checks them against digests it trusts); return how many arrived. (``origin_only``
        matters to a client with mirrors, kitfs.oci.endpoints; this one talks to one registry.)

        One range per request (some registries refuse multi-range). A dropped connection resumes
        after the last byte delivered; a registry that ignores Range and answers 200 is read as a
        stream, skipping to ``offset``. A short 206 returns fewer bytes, for the caller to retry.
        """
        delivered = 0
        target = self._blob_target(repository, digest, f"reading bytes {offset}- of")

        def headers() -> Headers:
            return {"Range": f"bytes={offset + delivered}-{offset + length - 1}"}

        async def handle(response: httpx.Response) -> None:
            nonlocal delivered
            skip = 0
            if response.status_code == 200:
                skip = offset + delivered
                self._ignores_range = True
                log.info(
                    "registry %s ignored a Range request: reading %s as a stream",
                    self.registry,
                    digest,
                )
            elif response.status_code == 206:
                match = _CONTENT_RANGE_RE.match(response.headers.get("content-range", ""))
                if match is None or int(match.group(1)) != offset + delivered:
                    raise RegistryError(
                        f"registry {self.registry} answered a Range request for {target.noun} with the wrong range"
                    )
            else:
                raise await self._fail(response, target)
            async with contextlib.aclosing(body_pieces(response, self.options.timeout)) as body:
                async for chunk in body:
                    if skip:
                        dropped = min(skip, len(chunk))
                        chunk, skip = chunk[dropped:], skip - dropped
                    chunk = chunk[: length - delivered]
                    if chunk:
                        delivered += len(chunk)
                        await consume(chunk)
                    if delivered >= length:
                        return

        if length > 0:
            await self._exchange(
                "GET",
                self._url(repository, "blobs", digest),
                scopes=[Scope(repository)],
                headers=headers,
                handle=handle,
            )
        return delivered

    async def download_blob(
        self,
        repository: str,
        descriptor: Descriptor,
        dest: Path,
        progress: Progress | None = None,
        *,
        tee: Tee | None = None,
        durable: bool = True,
    ) -> None:
        """Stream a blob to ``dest``: resumes dropped transfers with Range, verifies size and digest,
        and only then renames the temp file into place (nothing appears at ``dest`` otherwise).

        ``tee`` also gets every byte in order as it is written (kitfs.oci.download), for a reader
        that must not use them before this returns. ``durable=False`` skips the final fsync, for a
        file that is deleted after one read (it still resumes after a crash, not a power cut)."""
        state = Download(descriptor, dest, progress, tee=tee, durable=durable)
        try:
            await trio.to_thread.run_sync(state.prepare)
            if state.resumed:
                log.info(
                    "resuming %s after the %d bytes already here", descriptor.digest, state.resumed
                )
            await state.run(lambda: self._fetch_rest(repository, state))
            await trio.to_thread.run_sync(state.finish)
            self._check_download(state, repository)
            os.replace(state.temp, dest)
        except (KitfsError, Exception) as exc:
            state.discard(keep=isinstance(exc, TransientError))
            raise
        except BaseException:
            # Interrupted (Ctrl-C, or cancelled because another blob of the same pull failed):
            # keep what arrived to resume after, unless it is too little to be worth it.
            state.discard(keep=state.written >= RESUME_MIN)
            raise
        log.debug("downloaded %s (%d bytes) to %s", descriptor.digest, descriptor.size, dest)

    async def _fetch_rest(self, repository: str, state: Download) -> None:
        """Everything after what ``state`` holds: parallel parts for a large rest, then (or else)
        one stream; each byte goes to ``state.put`` in order."""
        size = state.descriptor.size
        if size - state.received >= self.options.parallel_min > 0:
            await self._download_parts(repository, state)
        if state.received < size or not size:
            await self._exchange(
                "GET",
                self._url(repository, "blobs", state.descriptor.digest),
                scopes=[Scope(repository)],
                headers=state.range_headers,
                handle=lambda response: self._receive(response, state, repository),
            )

    async def _download_parts(self, repository: str, state: Download) -> None:
        """The rest of a large blob as several Range requests at once (``concurrency``), handed
        on in order as each next part completes, so the file is always a clean prefix. The first
        part goes alone: a registry that answers it with the whole blob (it ignores Range) gets
        no more parallel requests, and the download goes on as one stream."""
        size = state.descriptor.size
        part = max(IO_CHUNK, self.options.range_part)
        starts = list(range(state.received, size, part))
        data: dict[int, list[bytes]] = {}
        done = {start: trio.Event() for start in starts}
        slots = trio.Semaphore(max(1, self.options.concurrency) + 1)  # parts held in memory

        async def fetch(start: int) -> None:
            data[start] = await self._fetch_part(
                repository, state.descriptor.digest, start, part, size
            )
            done[start].set()

        async def commit(start: int) -> None:
            await done[start].wait()
            await state.put(data.pop(start))

        await fetch(starts[0])
        await commit(starts[0])
        if self._ignores_range or len(starts) == 1:
            return
        try:
            async with trio.open_nursery() as nursery:

                async def produce() -> None:
                    for start in starts[1:]:
                        await slots.acquire()
                        nursery.start_soon(fetch, start)

                nursery.start_soon(produce)
                for start in starts[1:]:
                    await commit(start)
                    slots.release()
        except BaseExceptionGroup as group:
            raise leading_error(group) from None

    async def _fetch_part(
        self, repository: str, digest: str, start: int, part: int, size: int
    ) -> list[bytes]:
        length = min(part, size - start)
        pieces: list[bytes] = []
        got = 0

        async def keep(chunk: bytes) -> None:
            nonlocal got
            pieces.append(chunk)
            got += len(chunk)

        for _attempt in range(self.options.retries):
            await self.stream_blob_range(repository, digest, start + got, length - got, keep)
            if got >= length:
                return pieces
        raise TransientError(
            f"registry {self.registry} kept ending its answers early for bytes {start}- of {digest}"
        )

    async def _receive(self, response: httpx.Response, state: Download, repository: str) -> None:
        target = self._blob_target(repository, state.descriptor.digest, "downloading")
        if response.status_code == 416 and state.received == state.descriptor.size:
            return  # the connection dropped after the last byte: nothing is left to fetch
        if response.status_code not in (200, 206):
            raise await self._fail(response, target)
        if response.status_code == 200 and state.received:
            await state.restart()
        elif response.status_code == 206:
            match = _CONTENT_RANGE_RE.match(response.headers.get("content-range", ""))
            if match is None or int(match.group(1)) != state.received:
                raise RegistryError(
                    f"registry {self.registry} resumed {target.noun} at the wrong offset"
                )
        pieces: list[bytes] = []
        held = 0
        try:
            async for chunk in body_pieces(response, self.options.timeout):
                pieces.append(chunk)
                held += len(chunk)
                if held >= IO_CHUNK:
                    await self._flush(state, pieces, held, target)
                    pieces, held = [], 0
        except (httpx.TransportError, TransferTooSlow):
            # The bytes that arrived before the drop are good: keep them and resume after them.
            await self._flush(state, pieces, held, target)
            raise
        await self._flush(state, pieces, held, target)

    async def _flush(
        self, state: Download, pieces: list[bytes], held: int, target: _Target
    ) -> None:
        if not pieces:
            return
        if state.received + held > state.descriptor.size:
            raise DigestMismatchError(
                state.descriptor.digest, f"more than {state.descriptor.size} bytes", target.noun
            )
        await state.put(pieces)

    def _check_download(self, state: Download, repository: str) -> None:
        noun = self._blob_target(repository, state.descriptor.digest, "").noun
        actual = f"{state.hasher.name}:{state.hasher.hexdigest()}"
        if state.written != state.descriptor.size:
            raise DigestMismatchError(
                state.descriptor.digest,
                f"{state.written} bytes instead of {state.descriptor.size}",
                noun,
            )
        if actual != state.descriptor.digest:
            raise DigestMismatchError(
                state.descriptor.digest, actual, f"{noun} from registry {self.registry}"
            )

    # --- uploads ---------------------------------------------------------------------------------

    async def upload_blob(
        self,
        repository: str,
        descriptor: Descriptor,
        source: Path,
        progress: Progress | None = None,
        mount_from: str | None = None,
    ) -> None:
        """Upload ``source`` as ``descriptor``'s blob unless the registry has it: mount it from
        ``mount_from`` when possible; else a small blob is read, verified and sent in one PUT, and
        a larger one streams in one PUT too (or in the chunks the registry asks for), hashed as it
        is read. Either way the upload is committed only when the bytes sent hash to the digest: a
        damaged ``source`` raises DigestMismatchError and its upload session is cancelled."""
        tracker = _Progress(progress)
        actual_size = (await trio.to_thread.run_sync(os.stat, source)).st_size
        if actual_size != descriptor.size:
            raise StorageError(
                f"{source} is {actual_size} bytes but its descriptor says {descriptor.size}"
            )
        if await self.blob_exists(repository, descriptor.digest):
            tracker.reached(descriptor.size)
            return
        data = None
        if descriptor.size <= self.options.chunked_threshold:
            data = await trio.to_thread.run_sync(
                read_verified, source, descriptor, _hasher(descriptor.digest)
            )
        session = await self._start_upload(repository, descriptor, mount_from)
        if session is not None:
            if data is not None:
                await self._put_whole(repository, descriptor, data, session.location)
            else:
                await self._put_streamed(repository, descriptor, source, session, tracker)
        tracker.reached(descriptor.size)

    async def _start_upload(
        self, repository: str, descriptor: Descriptor, mount_from: str | None
    ) -> _UploadSession | None:
        """Open an upload session; None when a cross-repo mount did it all."""
        target = self._blob_target(repository, descriptor.digest, "uploading")
        url = self._url(repository, "blobs", "uploads/")
        scopes = [Scope(repository, ("pull", "push"))]
        if mount_from and mount_from != repository:
            url = _with_query(_with_query(url, "mount", descriptor.digest), "from", mount_from)
            scopes.append(Scope(mount_from))
        response, _ = await self._exchange(
            "POST", url, scopes=scopes, handle=self._expect((201, 202), target)
        )
        if response.status_code == 201:
            log.debug("mounted %s into %s from %s", descriptor.digest, repository, mount_from)
            return None
        return _UploadSession(
            self._location(response, target), ChunkLimits.from_headers(response.headers)
        )

    def _location(self, response: httpx.Response, target: _Target) -> str:
        location = response.headers.get("location")
        if not location:
            raise RegistryError(
                f"registry {self.registry}: {target.action} {target.noun} failed: no upload location"
            )
        return str(response.url.join(location))

    async def _put_whole(
        self, repository: str, descriptor: Descriptor, data: bytes, location: str
    ) -> None:
        target = self._blob_target(repository, descriptor.digest, "uploading")
        await self._exchange(
            "PUT",
            _with_query(location, "digest", descriptor.digest),
            scopes=[Scope(repository, ("pull", "push"))],
            headers={"Content-Type": "application/octet-stream"},
            body=data,
            handle=self._expect((201, 204), target),
        )

    async def _put_streamed(
        self,
        repository: str,
        descriptor: Descriptor,
        source: Path,
        session: _UploadSession,
        tracker: _Progress,
    ) -> None:
        """Stream the blob, hashed as it is read: in one PUT that carries it and its digest when
        the registry takes it whole, else in PATCH chunks committed by a PUT once the hash of what
        was sent matches. On any failure but cancellation the session is cancelled, so nothing
        half-done remains."""
        target = self._blob_target(repository, descriptor.digest, "uploading")
        try:
            async with trio.open_nursery() as nursery:
                blob = UploadSource(
                    source, descriptor, lambda: _hasher(descriptor.digest), nursery, tracker.reached
                )
                try:
                    committed = await self._send_blob(repository, blob, session, target)
                    if not committed:
                        blob.verify()
                except Exception:
                    await self._cancel_upload(repository, session.location, target)
                    raise
                finally:
                    blob.close()
        except BaseExceptionGroup as group:
            raise leading_error(group) from None
        if not committed:
            await self._exchange(
                "PUT",
                _with_query(session.location, "digest", descriptor.digest),
                scopes=[Scope(repository, ("pull", "push"))],
                handle=self._expect((201, 204), target),
            )

    async def _send_blob(
        self, repository: str, blob: UploadSource, session: _UploadSession, target: _Target
    ) -> bool:
        """Send the blob's bytes in order, following the session's location; True when the
        upload is committed too (a monolithic PUT). A dropped connection or a refused range (416)
        asks the registry how much it holds and goes on from there; a registry that dropped the
        session (404: distribution does when a body is cut short) gets a new one and the blob from
        the start; one that refuses a whole blob as too large (413) gets chunks. A whole-blob PUT whose
        answer was lost is done if the registry now has the blob."""
        size = blob.descriptor.size
        length = session.limits.chunk_length(self.options.chunk_size, size)
        offset = failures = 0
        monolithic = True
        while offset < size:
            end = min(offset + length, size)
            whole = monolithic and offset == 0 and end == size
            try:
                response = await self._send_part(
                    repository, blob, session, (offset, end), whole, target
                )
            except httpx.TransportError as exc:
                failures += 1
                self._give_up(exc, failures)
                log.info(
                    "registry %s: %s while uploading %s, resuming (%d)",
                    self.registry,
                    _transport_reason(exc),
                    blob.descriptor.digest,
                    failures,
                )
                await self._backoff(failures, None)
                if whole and await self.blob_exists(repository, blob.descriptor.digest):
                    return True  # the answer was lost, not the upload (its last block was verified)
            else:
                status = response.status_code
                if whole and status in (201, 204):
                    blob.acknowledge(end)
                    return True
                if status == 202:
                    session.location = self._location(response, target)
                    offset = end
                    blob.acknowledge(end)
                    continue
                failures += 1
                if status == 413:
                    monolithic = False
                    length = session.limits.chunk_length(FALLBACK_CHUNK, size)
                    log.info(
                        "registry %s refused a whole blob as too large: chunks of %d bytes",
                        self.registry,
                        length,
                    )
                elif failures >= self.options.retries:
                    raise RegistryError(
                        f"registry {self.registry}: {target.action} {target.noun} failed: "
                        f"it kept refusing bytes {offset}-{end - 1} (HTTP {status})"
                    )
            offset = await self._resume(repository, session, target)
        return False

    async def _send_part(
        self,
        repository: str,
        blob: UploadSource,
        session: _UploadSession,
        span: tuple[int, int],
        whole: bool,
        target: _Target,
    ) -> httpx.Response:
        """One request with the blob's bytes ``span``: a PUT with the digest for the ``whole``
        blob, else a PATCH with its Content-Range. Dropped connections are raised, not re-sent."""
        offset, end = span
        headers = {"Content-Type": "application/octet-stream", "Content-Length": str(end - offset)}
        ok: tuple[int, ...]
        if whole:
            method, url, ok = (
                "PUT",
                _with_query(session.location, "digest", blob.descriptor.digest),
                (201, 204, 404, 413),
            )
        else:
            method, url, ok = "PATCH", session.location, (202, 404, 416)
            headers["Content-Range"] = f"{offset}-{end - 1}"
        response, _ = await self._exchange(
            method,
            url,
            scopes=[Scope(repository, ("pull", "push"))],
            headers=headers,
            body=blob.body(offset, end),
            handle=self._expect(ok, target),
            resend=False,
        )
        return response

    async def _resume(self, repository: str, session: _UploadSession, target: _Target) -> int:
        """How many bytes an interrupted upload session holds (its ``Range``), following its new
        location; a new session (at 0) when the registry no longer knows it."""
        scopes = [Scope(repository, ("pull", "push"))]
        response, _ = await self._exchange(
            "GET", session.location, scopes=scopes, handle=self._expect((204, 404), target)
        )
        if response.status_code == 404:
            log.info("registry %s dropped the upload session of %s", self.registry, target.noun)
            started, _ = await self._exchange(
                "POST",
                self._url(repository, "blobs", "uploads/"),
                scopes=scopes,
                handle=self._expect((202,), target),
            )
            session.location = self._location(started, target)
            return 0
        if response.headers.get("location"):
            session.location = self._location(response, target)
        # distribution answers "0-0" for an empty session as well as for one byte: read it as 0.
        end = response.headers.get("range", "0-0").rpartition("-")[2]
        if not end.isdigit():
            raise RegistryError(
                f"registry {self.registry}: {target.action} {target.noun} failed: bad upload status"
            )
        return int(end) + 1 if int(end) > 0 else 0

    async def _cancel_upload(self, repository: str, location: str, target: _Target) -> None:
        """Cancel an upload session (best effort: registries also expire abandoned ones)."""
        with contextlib.suppress(KitfsError):
            await self._exchange(
                "DELETE",
                location,
                scopes=[Scope(repository, ("pull", "push"))],
                handle=self._expect((204, 404), target),
            )

    # --- tags ------------------------------------------------------------------------------------

    async def list_tags(self, repository: str, page_size: int | None = None) -> list[str]:
        """All tags of a repository, following ``Link: <...>; rel="next"`` pages."""
        target = _Target(repository, f"tags of {repository}", "listing")
        url: str | None = self._url(repository, "tags", "list")
        if page_size:
            url = _with_query(str(url), "n", str(page_size))
        tags: list[str] = []
        seen: set[str] = set()
        while url and url not in seen and len(seen) < MAX_TAG_PAGES:
            seen.add(url)
            response, body = await self._exchange(
                "GET",
                url,
                scopes=[Scope(repository)],
                handle=self._expect((200,), target, MAX_MANIFEST_SIZE),
            )
            tags.extend(self._parse_tags(body, target))
            url = self._next_page(response)
        return tags

    def _parse_tags(self, body: bytes, target: _Target) -> list[str]:
        try:
            raw = json.loads(body)
        except (ValueError, UnicodeDecodeError, RecursionError):
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
        target = _Target(repository, f"referrers of {repository}@{digest}", "listing")
        url = self._url(repository, "referrers", digest)
        if artifact_type:
            url = _with_query(url, "artifactType", artifact_type)
        response, body = await self._exchange(
            "GET",
            url,
            scopes=[Scope(repository)],
            headers={"Accept": media.OCI_INDEX},
            handle=self._expect((200, 404), target, MAX_MANIFEST_SIZE),
        )
        return body if response.status_code == 200 else None
