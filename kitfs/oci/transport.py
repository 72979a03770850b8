"""The HTTP side of one registry: the connection pool and its TLS context, credentials, one retry
loop for every request, and the mapping of failures to one-line errors.

Every request goes through ``Transport.exchange``, which answers 401 challenges (``kitfs.oci.auth``),
retries dropped connections and 429/5xx answers with capped exponential backoff (honouring
``Retry-After``) and turns everything else into a ``RegistryError`` that names the registry and the
repository. The pull, push and listing sides (``kitfs.oci.pull``, ``push``, ``listing``) build their
requests on it; ``kitfs.oci.client.RegistryClient`` puts them together.
"""

from __future__ import annotations

import contextlib
import email.utils
import ipaddress
import json
import logging
import random
import re
import socket
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TypeVar
from urllib.parse import quote

import certifi
import httpx
import trio

from kitfs.errors import (
    AuthError,
    KitfsError,
    NotFoundError,
    RegistryError,
    TransientError,
    UsageError,
)
from kitfs.oci.auth import CredentialSource, RegistryAuth, Scope
from kitfs.oci.download import hasher_for
from kitfs.oci.options import RegistryOptions

log = logging.getLogger(__name__)

T = TypeVar("T")
Headers = dict[str, str]
Body = bytes | Callable[[], AsyncIterator[bytes]] | None

MAX_MANIFEST_SIZE = 4 * 1024 * 1024
MAX_ERROR_BODY = 64 * 1024
IO_CHUNK = 1024 * 1024
CONNECT_ATTEMPTS = 3
TRANSIENT_STATUS = frozenset({429, 500, 502, 503, 504})
USER_AGENT = "kitfs/0.1"
_DOCKER_HUB_ENDPOINT = "registry-1.docker.io"
CONTENT_RANGE_RE = re.compile(r"^bytes (\d+)-(\d+)/(\d+|\*)$")

# httpcore reads HTTP/1.1 responses 64 KiB at a time, and per read the Python cost of h11 and the
# event loop then caps a blob download near 100 MiB/s. Reading 1 MiB at a time lets a body arrive at
# a few times that (measured on loopback: 94 -> 301 MiB/s for 16 MiB ranges).
with contextlib.suppress(ImportError, AttributeError):
    from httpcore._async.http11 import AsyncHTTP11Connection

    AsyncHTTP11Connection.READ_NUM_BYTES = max(AsyncHTTP11Connection.READ_NUM_BYTES, IO_CHUNK)


@dataclass(frozen=True)
class Target:
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


def ref_text(repository: str, reference: str) -> str:
    return f"{repository}@{reference}" if ":" in reference else f"{repository}:{reference}"


def digest_of(data: bytes, like: str = "sha256:") -> str:
    hasher = hasher_for(like)
    hasher.update(data)
    return f"{hasher.name}:{hasher.hexdigest()}"


def is_digest(reference: str) -> bool:
    return reference.startswith(("sha256:", "sha512:"))


def with_query(url: str, name: str, value: str) -> str:
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


def transport_reason(exc: BaseException) -> str:
    """A short reason for a transport failure: the innermost OS or TLS error, not httpx's wrapper."""
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
    except (ValueError, UnicodeDecodeError):
        return []
    errors = raw.get("errors") if isinstance(raw, dict) else None
    if not isinstance(errors, list):
        return []
    return [
        (str(e.get("code", "")), str(e.get("message", ""))) for e in errors if isinstance(e, dict)
    ]


def _one_line(text: str, limit: int = 200) -> str:
    return " ".join(text.split())[:limit]


async def read_limited(response: httpx.Response, limit: int) -> bytes | None:
    """The body, or None when it is longer than ``limit`` (read stops there)."""
    declared = response.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        return None
    parts: list[bytes] = []
    total = 0
    async for chunk in response.aiter_bytes():
        total += len(chunk)
        if total > limit:
            return None
        parts.append(chunk)
    return b"".join(parts)


def blob_target(repository: str, digest: str, action: str) -> Target:
    """The target of a request about a blob, for error messages."""
    return Target(repository, f"blob {digest} in {repository}", action)


class Transport:
    """One registry's connection pool, credentials and request loop (no knowledge of what the
    requests mean: that is the pull, push and listing sides')."""

    def __init__(
        self,
        registry: str,
        options: RegistryOptions,
        credentials: CredentialSource | None = None,
    ) -> None:
        self.registry = registry
        self.options = options
        scheme = "http" if options.plain_http else "https"
        self.base_url = f"{scheme}://{endpoint_host(registry)}"
        self.http = httpx.AsyncClient(
            verify=True if options.plain_http else _ssl_context(options),
            proxy=options.proxy,
            timeout=httpx.Timeout(options.timeout),
            follow_redirects=True,
            trust_env=options.proxy is None and not _is_loopback(registry),
            headers={"User-Agent": USER_AGENT},
            limits=httpx.Limits(max_connections=max(10, 2 * options.concurrency)),
        )
        self._auth = RegistryAuth(registry, self.http, credentials)

    async def aclose(self) -> None:
        await self.http.aclose()

    async def ping(self) -> None:
        """Check that the registry answers the Distribution API and accepts our credentials."""
        target = Target("", "the Distribution API endpoint /v2/", "checking")
        await self.exchange(
            "GET", f"{self.base_url}/v2/", scopes=[], handle=self.expect((200,), target)
        )

    def url(self, repository: str, kind: str, reference: str = "") -> str:
        return f"{self.base_url}/v2/{repository}/{kind}/{reference}"

    async def exchange(
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
            try:
                request = await self._build(method, url, scopes, headers, body)
                response = await self.http.send(request, stream=True)
                try:
                    status = response.status_code
                    log.debug("%s %s -> %d", method, url.split("?", 1)[0], status)
                    if status == 401:
                        await self._auth.on_unauthorized(response, scopes, retried=auth_rounds > 0)
                        auth_rounds += 1
                        continue
                    if status in TRANSIENT_STATUS and failures + 1 < self.options.retries:
                        failures += 1
                        await self.backoff(failures, _retry_after(response))
                        continue
                    return await handle(response)
                finally:
                    await response.aclose()
            except httpx.TransportError as exc:
                if not resend:
                    raise
                failures += 1
                self.give_up(exc, failures)
                log.info(
                    "registry %s: %s, retrying (%d)",
                    self.registry,
                    transport_reason(exc),
                    failures,
                )
                await self.backoff(failures, None)

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
        if content is None and method in ("POST", "PUT", "PATCH"):
            content = b""
        return self.http.build_request(method, url, headers=merged, content=content)

    def give_up(self, exc: httpx.TransportError, failures: int) -> None:
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
        reason = transport_reason(exc)
        if isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout):
            raise TransientError(f"registry {self.registry} is unreachable: {reason}") from None
        raise TransientError(
            f"registry {self.registry}: the connection kept failing ({reason}) after {failures} attempts"
        ) from None

    async def backoff(self, failures: int, retry_after: float | None) -> None:
        if retry_after is not None:
            delay = min(self.options.backoff_cap, retry_after)
        else:
            delay = min(self.options.backoff_cap, self.options.backoff * 2 ** (failures - 1))
            delay *= 0.5 + random.random() / 2
        await trio.sleep(delay)

    async def fail(self, response: httpx.Response, target: Target) -> KitfsError:
        """The error for an unexpected answer (reads a bounded part of the error body)."""
        body = (
            b""
            if response.request.method == "HEAD"
            else await read_limited(response, MAX_ERROR_BODY) or b""
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

    def expect(
        self,
        ok: tuple[int, ...],
        target: Target,
        limit: int = 0,
        oversize: Callable[[], KitfsError] | None = None,
    ) -> Callable[[httpx.Response], Awaitable[tuple[httpx.Response, bytes]]]:
        """A handler that accepts statuses in ``ok`` and reads up to ``limit`` bytes of the body
        (a longer body raises ``oversize()``, by default a RegistryError)."""

        async def handle(response: httpx.Response) -> tuple[httpx.Response, bytes]:
            if response.status_code not in ok:
                raise await self.fail(response, target)
            if not limit:
                return response, b""
            body = await read_limited(response, limit)
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
