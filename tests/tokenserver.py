"""A small bearer-token server for a real docker-registry configured with ``auth: token``.

It issues JWTs the way distribution 2.8 verifies them (registry/auth/token/token.go): ES256 signed,
the signing certificate in the ``x5c`` header, chained to the ``rootcertbundle`` CA; claims ``iss``,
``aud`` (the service), ``exp``/``nbf``/``iat`` and ``access`` (the granted repository actions).
Known users get every action they ask for; anonymous callers get ``anonymous_actions`` only; wrong
passwords get a 401, as the token spec says.
"""

from __future__ import annotations

import base64
import json
import threading
import time
import uuid
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import trustme
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


@dataclass(frozen=True)
class TokenRequest:
    """What a client asked the token server for."""

    user: str | None
    service: str | None
    scopes: tuple[str, ...]
    authorized: bool


class TokenServer:
    """Issues registry tokens on ``http://127.0.0.1:PORT/token``; a thread serves it."""

    def __init__(
        self,
        *,
        service: str = "test-registry",
        issuer: str = "test-issuer",
        users: dict[str, str] | None = None,
        anonymous_actions: tuple[str, ...] = (),
        expires_in: int = 300,
    ) -> None:
        self.service = service
        self.issuer = issuer
        self.users = dict(users or {})
        self.anonymous_actions = anonymous_actions
        self.expires_in = expires_in
        self.token_field = "token"  # "access_token" answers the OAuth2 way
        self.requests: list[TokenRequest] = []
        self.ca = trustme.CA()
        # An identity is needed: Go rejects a critical subjectAltName extension with no names in it.
        signer = self.ca.issue_cert("token-signer.kitfs.test")
        self._key = serialization.load_pem_private_key(
            signer.private_key_pem.bytes(), password=None
        )
        cert = x509.load_pem_x509_certificate(signer.cert_chain_pems[0].bytes())
        self._x5c = [
            base64.b64encode(cert.public_bytes(serialization.Encoding.DER)).decode("ascii")
        ]
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="token-server", daemon=True
        )

    @property
    def realm(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/token"

    def write_root_bundle(self, path: Path) -> Path:
        self.ca.cert_pem.write_to_path(str(path))
        return path

    def start(self) -> TokenServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)

    def issue(self, user: str | None, scopes: list[str]) -> str:
        """A signed JWT granting ``user`` (None: anonymous) the actions of ``scopes``."""
        now = int(time.time())
        claims = {
            "iss": self.issuer,
            "sub": user or "",
            "aud": self.service,
            "exp": now + self.expires_in,
            "nbf": now - 5,
            "iat": now,
            "jti": uuid.uuid4().hex,
            "access": [self._grant(scope, user) for scope in scopes],
        }
        header = {"typ": "JWT", "alg": "ES256", "x5c": self._x5c}
        signing_input = (
            f"{b64url(json.dumps(header).encode())}.{b64url(json.dumps(claims).encode())}"
        )
        return f"{signing_input}.{b64url(self._sign(signing_input.encode()))}"

    def _sign(self, data: bytes) -> bytes:
        # JWS wants ES256 signatures as r || s (32 bytes each), not DER.
        assert isinstance(self._key, ec.EllipticCurvePrivateKey)
        r, s = decode_dss_signature(self._key.sign(data, ec.ECDSA(hashes.SHA256())))
        return r.to_bytes(32, "big") + s.to_bytes(32, "big")

    def _grant(self, scope: str, user: str | None) -> dict[str, Any]:
        kind, _, rest = scope.partition(":")
        name, _, actions = rest.rpartition(":")
        wanted = [a for a in actions.split(",") if a]
        granted = wanted if user else [a for a in wanted if a in self.anonymous_actions]
        return {"type": kind, "name": name, "actions": granted}

    def _answer(self, query: str, authorization: str | None) -> tuple[int, dict[str, Any]]:
        params = parse_qsl(query)
        scopes = [value for key, value in params if key == "scope"]
        service = next((value for key, value in params if key == "service"), None)
        user, ok = self._check(authorization)
        self.requests.append(TokenRequest(user, service, tuple(scopes), ok))
        if not ok:
            return 401, {"details": "incorrect username or password"}
        token = self.issue(user, scopes)
        return 200, {self.token_field: token, "expires_in": self.expires_in}

    def _check(self, authorization: str | None) -> tuple[str | None, bool]:
        if not authorization:
            return None, True
        scheme, _, value = authorization.partition(" ")
        if scheme.lower() != "basic":
            return None, False
        user, _, password = base64.b64decode(value).decode().partition(":")
        return user, self.users.get(user) == password

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
                parts = urlsplit(self.path)
                status, body = (
                    (404, {})
                    if parts.path != "/token"
                    else server._answer(parts.query, self.headers.get("Authorization"))
                )
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                pass

        return Handler
