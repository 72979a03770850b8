"""Registry credentials and the challenge flow: basic auth and bearer tokens per scope.

Credentials come from kit's ``credentials.json`` (written by ``kitfs login``), then from docker's
``config.json``: its ``credHelpers``/``credsStore`` helpers (``docker-credential-<name> get``) and its
``auths`` entries. The flow follows the distribution token spec (distribution's
``docs/spec/auth/token.md``): a 401 names a scheme; ``Bearer`` means fetch a token for the scopes from
the realm, ``Basic`` means send the credentials.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import os
import re
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import httpx
import trio

from kitfs.atomic import write_atomic
from kitfs.config import Paths
from kitfs.errors import AuthError, RegistryError, StorageError, TransientError

log = logging.getLogger(__name__)

DOCKER_HUB = "docker.io"
DOCKER_HUB_KEY = "https://index.docker.io/v1/"
_DOCKER_HUB_ALIASES = frozenset({"docker.io", "index.docker.io", "registry-1.docker.io"})
HELPER_TIMEOUT = 30.0
DEFAULT_TOKEN_LIFETIME = 60.0
_HELPER_NOT_FOUND = "credentials not found"

Credentials = tuple[str, str]


def canonical_host(key: str) -> str:
    """A registry key as a bare ``host[:port]`` (docker keys may carry a scheme and a path)."""
    host = key.strip()
    for scheme in ("https://", "http://"):
        if host.startswith(scheme):
            host = host[len(scheme) :]
    host = host.split("/", 1)[0].lower()
    return DOCKER_HUB if host in _DOCKER_HUB_ALIASES else host


def basic_authorization(credentials: Credentials) -> str:
    user, password = credentials
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode("ascii")


def _decode_auth(value: str) -> Credentials | None:
    try:
        text = base64.b64decode(value, validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None
    user, sep, password = text.partition(":")
    return (user, password) if sep and user else None


def _entry_credentials(entry: Any) -> Credentials | None:
    """Credentials of one ``auths`` entry: ``auth`` (base64 user:pass) or ``username``/``password``."""
    if not isinstance(entry, dict):
        return None
    if isinstance(entry.get("auth"), str) and entry["auth"]:
        return _decode_auth(entry["auth"])
    user, password = entry.get("username"), entry.get("password")
    if isinstance(user, str) and user and isinstance(password, str):
        return (user, password)
    return None


def _lookup(mapping: Any, registry: str) -> Any:
    """The value of ``mapping`` whose key names ``registry`` (keys compared as canonical hosts)."""
    if not isinstance(mapping, dict):
        return None
    wanted = canonical_host(registry)
    for key, value in mapping.items():
        if isinstance(key, str) and canonical_host(key) == wanted:
            return value
    return None


def _read_json(path: Path, what: str) -> dict[str, Any]:
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise StorageError(
            f"{what} {path} cannot be read ({exc.__class__.__name__}): fix or remove it"
        ) from None
    if not isinstance(raw, dict):
        raise StorageError(f"{what} {path} is not a JSON object: fix or remove it")
    return raw


def default_docker_config() -> Path:
    """docker's config file: ``$DOCKER_CONFIG/config.json``, else ``~/.docker/config.json``."""
    directory = os.environ.get("DOCKER_CONFIG")
    base = Path(directory) if directory else Path.home() / ".docker"
    return base / "config.json"


def run_credential_helper(helper: str, registry: str) -> Credentials | None:
    """Ask ``docker-credential-<helper> get`` for ``registry``; None when it has no entry."""
    program = f"docker-credential-{helper}"
    server = DOCKER_HUB_KEY if canonical_host(registry) == DOCKER_HUB else registry
    try:
        done = subprocess.run(
            [program, "get"],
            input=server.encode(),
            capture_output=True,
            timeout=HELPER_TIMEOUT,
            check=False,
        )
    except FileNotFoundError:
        raise AuthError(
            f"credential helper {program} is not installed: install it or fix the docker config"
        ) from None
    except subprocess.TimeoutExpired:
        raise AuthError(
            f"credential helper {program} did not answer within {HELPER_TIMEOUT:.0f}s"
        ) from None
    if done.returncode != 0:
        output = (done.stdout + done.stderr).decode(errors="replace")
        if _HELPER_NOT_FOUND in output.lower():
            return None
        first = (
            output.strip().splitlines()[0][:200]
            if output.strip()
            else f"exit status {done.returncode}"
        )
        raise AuthError(f"credential helper {program} failed for {registry}: {first}")
    return _parse_helper_output(done.stdout, program)


def _parse_helper_output(stdout: bytes, program: str) -> Credentials | None:
    try:
        raw = json.loads(stdout)
    except ValueError:
        raise AuthError(f"credential helper {program} printed something that is not JSON") from None
    user, secret = (
        (raw.get("Username"), raw.get("Secret")) if isinstance(raw, dict) else (None, None)
    )
    if not isinstance(user, str) or not isinstance(secret, str) or not secret:
        return None
    # "<token>" marks an identity token (OAuth2 refresh token), which this client does not exchange.
    return None if user == "<token>" else (user, secret)


class CredentialSource(Protocol):
    """Anything that can name the user and password for a registry (None: log in anonymously)."""

    def get(self, registry: str) -> Credentials | None: ...


@dataclass(frozen=True)
class StaticCredentials:
    """One user and password for any registry: credentials under trial during ``kitfs login``."""

    username: str
    password: str = field(repr=False)

    def get(self, registry: str) -> Credentials | None:
        return (self.username, self.password)


class CredentialStore:
    """Registry logins: kit's ``credentials.json`` first, then docker's config and helpers."""

    def __init__(
        self,
        path: Path | None = None,
        *,
        docker_config: Path | None = None,
        use_docker: bool = True,
    ) -> None:
        self.path = path if path is not None else Paths.resolve().credentials
        self._docker_config = docker_config
        self._use_docker = use_docker

    @classmethod
    def for_paths(cls, paths: Paths, **kwargs: Any) -> CredentialStore:
        return cls(paths.credentials, **kwargs)

    @property
    def docker_config(self) -> Path:
        return self._docker_config if self._docker_config is not None else default_docker_config()

    def get(self, registry: str) -> Credentials | None:
        """The user and password for ``registry``, or None when no source has them."""
        kit = _entry_credentials(
            _lookup(_read_json(self.path, "credentials file").get("auths"), registry)
        )
        if kit or not self._use_docker:
            return kit
        return self._docker_credentials(registry)

    def _docker_credentials(self, registry: str) -> Credentials | None:
        config = _read_json(self.docker_config, "docker config")
        helper = _lookup(config.get("credHelpers"), registry)
        if isinstance(helper, str) and helper:
            return run_credential_helper(helper, registry)
        found = _entry_credentials(_lookup(config.get("auths"), registry))
        if found:
            return found
        store = config.get("credsStore")
        if isinstance(store, str) and store:
            return run_credential_helper(store, registry)
        return None

    def login(self, registry: str, username: str, password: str) -> None:
        """Store credentials for ``registry`` in kit's credentials file (mode 0600, atomic)."""
        if not username or ":" in username:
            raise AuthError("user names must be non-empty and must not contain ':'")
        raw = _read_json(self.path, "credentials file")
        auths = {
            k: v for k, v in _auths(raw).items() if canonical_host(k) != canonical_host(registry)
        }
        token = base64.b64encode(f"{username}:{password}".encode()).decode("ascii")
        auths[registry] = {"auth": token}
        raw["auths"] = auths
        self._write(raw)
        log.info("stored credentials for %s in %s", registry, self.path)

    def logout(self, registry: str) -> bool:
        """Forget ``registry``'s credentials in kit's file; False when there were none."""
        raw = _read_json(self.path, "credentials file")
        auths = _auths(raw)
        kept = {k: v for k, v in auths.items() if canonical_host(k) != canonical_host(registry)}
        if len(kept) == len(auths):
            return False
        raw["auths"] = kept
        self._write(raw)
        return True

    def _write(self, raw: dict[str, Any]) -> None:
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        # write_atomic's temp file is created 0600, so the secret is never readable by others.
        write_atomic(self.path, json.dumps(raw, indent=2).encode(), mode=0o600)


def _auths(raw: dict[str, Any]) -> dict[str, Any]:
    auths = raw.get("auths")
    return dict(auths) if isinstance(auths, dict) else {}


# --- challenges -------------------------------------------------------------------------------

_TOKEN_RE = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_PARAM_RE = re.compile(
    r'\s*([!#$%&\'*+.^_`|~0-9A-Za-z-]+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s,]*))\s*(?:,|$)'
)


@dataclass(frozen=True)
class Challenge:
    """One ``WWW-Authenticate`` challenge: a lowercase scheme and its parameters."""

    scheme: str
    params: dict[str, str] = field(default_factory=dict, compare=False, hash=False)


def parse_challenges(values: Sequence[str]) -> list[Challenge]:
    """Parse ``WWW-Authenticate`` header values (RFC 7235), each possibly holding several challenges."""
    challenges: list[Challenge] = []
    for value in values:
        pos = 0
        while pos < len(value):
            scheme = _TOKEN_RE.match(value, pos)
            if not scheme:
                pos += 1
                continue
            params: dict[str, str] = {}
            pos = scheme.end()
            while (param := _PARAM_RE.match(value, pos)) is not None:
                raw = param.group(2)
                params[param.group(1).lower()] = (
                    re.sub(r"\\(.)", r"\1", raw) if raw is not None else param.group(3)
                )
                pos = param.end()
            challenges.append(Challenge(scheme.group(0).lower(), params))
    return challenges


# --- the flow used by the client ----------------------------------------------------------------


@dataclass(frozen=True)
class Scope:
    """Access to one repository, as the token spec writes it: ``repository:NAME:ACTION[,ACTION]``."""

    repository: str
    actions: tuple[str, ...] = ("pull",)

    def __str__(self) -> str:
        return f"repository:{self.repository}:{','.join(self.actions)}"


def _grants(scopes: Sequence[Scope] | Sequence[str]) -> frozenset[tuple[str, str]]:
    """(resource, action) pairs of scopes given as records or as scope strings."""
    pairs: set[tuple[str, str]] = set()
    for scope in scopes:
        text = str(scope)
        resource, _, actions = text.rpartition(":")
        pairs.update((resource, action) for action in actions.split(",") if action)
    return frozenset(pairs)


@dataclass(frozen=True)
class _Token:
    value: str
    grants: frozenset[tuple[str, str]]
    expires: float


class RegistryAuth:
    """Answers one registry's 401 challenges for a client and authorises its later requests.

    After the first challenge the scheme is remembered, so later requests (uploads with bodies in
    particular) are sent authorised instead of being bounced by a 401 first.
    """

    def __init__(
        self, registry: str, http: httpx.AsyncClient, credentials: CredentialSource | None
    ) -> None:
        self.registry = registry
        self._http = http
        self._store = credentials
        self._credentials: Credentials | None = None
        self._loaded = False
        self._bearer: Challenge | None = None
        self._basic = False
        self._tokens: list[_Token] = []
        self._lock = trio.Lock()

    async def credentials(self) -> Credentials | None:
        if not self._loaded and self._store is not None:
            self._credentials = await trio.to_thread.run_sync(self._store.get, self.registry)
        self._loaded = True
        return self._credentials

    async def authorization(self, scopes: Sequence[Scope]) -> str | None:
        """The ``Authorization`` header for a request needing ``scopes``, once a scheme is known."""
        if self._bearer is not None:
            return "Bearer " + await self._token(scopes, ())
        if self._basic:
            creds = await self.credentials()
            return basic_authorization(creds) if creds else None
        return None

    async def on_unauthorized(
        self, response: httpx.Response, scopes: Sequence[Scope], *, retried: bool
    ) -> None:
        """Prepare to retry after a 401, or raise AuthError when retrying cannot help."""
        creds = await self.credentials()
        if retried:
            raise self._failure(scopes, creds)
        challenges = parse_challenges(response.headers.get_list("www-authenticate"))
        bearer = next(
            (c for c in challenges if c.scheme == "bearer" and c.params.get("realm")), None
        )
        if bearer is not None:
            self._bearer = bearer
            self._forget(scopes)
            await self._token(scopes, bearer.params.get("scope", "").split())
            return
        if any(c.scheme == "basic" for c in challenges):
            if creds is None:
                raise self._failure(scopes, None)
            self._basic = True
            return
        names = ", ".join(sorted({c.scheme for c in challenges})) or "none"
        raise AuthError(
            f"registry {self.registry} asks for an unsupported authentication scheme ({names})"
        )

    def _failure(self, scopes: Sequence[Scope], creds: Credentials | None) -> AuthError:
        target = f" for {scopes[0].repository}" if scopes else ""
        if creds is None:
            return AuthError(
                f"registry {self.registry} requires authentication{target}: run `kitfs login {self.registry}`"
            )
        return AuthError(
            f"registry {self.registry} refused the credentials{target}: run `kitfs login {self.registry}`"
        )

    def _forget(self, scopes: Sequence[Scope]) -> None:
        needed = _grants(scopes)
        self._tokens = [t for t in self._tokens if not needed <= t.grants]

    def _cached(self, needed: frozenset[tuple[str, str]]) -> str | None:
        now = time.monotonic()
        self._tokens = [t for t in self._tokens if t.expires > now]
        return next((t.value for t in self._tokens if needed <= t.grants), None)

    async def _token(self, scopes: Sequence[Scope], extra: Sequence[str]) -> str:
        """A bearer token covering ``scopes`` (and the challenge's own ``extra`` scopes)."""
        needed = _grants(scopes) | _grants(extra)
        async with self._lock:
            cached = self._cached(needed)
            if cached is not None:
                return cached
            wanted = list(dict.fromkeys([str(s) for s in scopes] + list(extra)))
            token = await self._fetch_token(wanted, scopes)
            self._tokens.append(token)
            return token.value

    async def _fetch_token(self, wanted: list[str], scopes: Sequence[Scope]) -> _Token:
        assert self._bearer is not None
        realm = self._bearer.params["realm"]
        creds = await self.credentials()
        params: list[tuple[str, str | int | float | bool | None]] = [("scope", s) for s in wanted]
        if self._bearer.params.get("service"):
            params.insert(0, ("service", self._bearer.params["service"]))
        if creds:
            params.append(("account", creds[0]))
        headers = {"Authorization": basic_authorization(creds)} if creds else {}
        log.debug("fetching a token from %s for %s", realm, " ".join(wanted) or "(no scope)")
        try:
            response = await self._http.get(realm, params=params, headers=headers)
        except httpx.TransportError as exc:
            raise TransientError(
                f"registry {self.registry}: token service {_origin(realm)} is unreachable ({exc.__class__.__name__})"
            ) from None
        if response.status_code in (401, 403):
            raise self._failure(scopes, creds)
        if response.status_code != 200:
            kind = (
                TransientError
                if response.status_code in (429, 500, 502, 503, 504)
                else RegistryError
            )
            raise kind(
                f"registry {self.registry}: token service {_origin(realm)} answered HTTP {response.status_code}"
            )
        return _parse_token(response, _grants(wanted), self.registry)


def _parse_token(
    response: httpx.Response, grants: frozenset[tuple[str, str]], registry: str
) -> _Token:
    try:
        raw = response.json()
    except ValueError:
        raw = None
    value = (raw.get("token") or raw.get("access_token")) if isinstance(raw, dict) else None
    if not isinstance(value, str) or not value:
        raise RegistryError(f"registry {registry}: token service answered without a token")
    lifetime = raw.get("expires_in") if isinstance(raw, dict) else None
    seconds = (
        float(lifetime)
        if isinstance(lifetime, int | float) and lifetime > 0
        else DEFAULT_TOKEN_LIFETIME
    )
    margin = min(10.0, seconds / 10)
    return _Token(value, grants, time.monotonic() + seconds - margin)


def _origin(url: str) -> str:
    parsed = httpx.URL(url)
    return f"{parsed.scheme}://{parsed.netloc.decode('ascii')}"
