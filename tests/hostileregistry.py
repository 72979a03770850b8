"""A hostile OCI registry for the tests: a small Python HTTP server on loopback that serves
hand-made manifests and blobs, and can send any of them slowly or not at all.

It speaks the read side of the Distribution API (``/v2/``, manifests and blobs by GET and HEAD,
``Range``) well enough for kitfs's client, and nothing else: what it serves is whatever the test
hands it, valid or not. A behaviour per manifest or blob says how to send it: ``trickle`` (headers
at once, then the body one piece every ``interval`` seconds), ``trickle_headers`` (the status line
and headers themselves that way), ``stall`` (headers and the first ``after`` bytes, then nothing until
the server stops). Every request is counted by path, so a test can assert how often kitfs asked.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
from collections import Counter
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
_RANGE_RE = re.compile(r"^bytes=(\d+)-(\d*)$")
_PATH_RE = re.compile(r"^/v2/(?P<repo>.+)/(?P<kind>manifests|blobs)/(?P<ref>[^/]+)$")
STALL_LIMIT = 300.0  # a stalled answer is dropped after this long even if nobody stops the server


def digest_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@dataclass(frozen=True)
class Behaviour:
    """How to send one manifest or blob."""

    kind: str = "normal"  # normal, trickle, trickle_headers, stall
    interval: float = 1.0  # seconds between pieces (trickle, trickle_headers)
    piece: int = 1  # bytes per piece
    after: int = 0  # bytes sent at once before a stall or a trickle


NORMAL = Behaviour()


def trickle(interval: float = 1.0, piece: int = 1, after: int = 0) -> Behaviour:
    return Behaviour("trickle", interval, piece, after)


def trickle_headers(interval: float = 1.0) -> Behaviour:
    return Behaviour("trickle_headers", interval)


def stall(after: int = 0) -> Behaviour:
    return Behaviour("stall", after=after)


class HostileRegistry:
    """Start with ``with HostileRegistry() as registry``; ``registry.host`` is ``127.0.0.1:PORT``."""

    def __init__(self) -> None:
        self.manifests: dict[tuple[str, str], bytes] = {}  # (repo, tag or digest) -> body
        self.blobs: dict[str, bytes] = {}
        self.behaviours: dict[str, Behaviour] = {}  # digest, or "repo:tag" -> behaviour
        self.requests: Counter[str] = Counter()
        self.stopping = threading.Event()
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self) -> HostileRegistry:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        self.stopping.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)

    # -- content ----------------------------------------------------------------------------

    def add_blob(self, data: bytes, behaviour: Behaviour = NORMAL) -> dict[str, Any]:
        """Serve ``data``; returns its descriptor fields (digest, size)."""
        digest = digest_of(data)
        self.blobs[digest] = data
        if behaviour is not NORMAL:
            self.behaviours[digest] = behaviour
        return {"digest": digest, "size": len(data)}

    def add_manifest(
        self, repository: str, tag: str, body: bytes, behaviour: Behaviour = NORMAL
    ) -> str:
        """Serve ``body`` as the manifest ``repository:tag`` (and by its digest)."""
        digest = digest_of(body)
        self.manifests[(repository, tag)] = body
        self.manifests[(repository, digest)] = body
        if behaviour is not NORMAL:
            self.behaviours[f"{repository}:{tag}"] = behaviour
            self.behaviours[f"{repository}:{digest}"] = behaviour
        return digest

    def add_modelkit(
        self,
        repository: str,
        tag: str,
        config: bytes,
        layers: list[tuple[str, bytes, Behaviour]],
        manifest_behaviour: Behaviour = NORMAL,
        config_media_type: str = "application/vnd.kitops.modelkit.config.v1+json",
    ) -> str:
        """A ModelKit made of ``config`` and ``layers`` (media type, blob, behaviour)."""
        manifest = {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": config_media_type, **self.add_blob(config)},
            "layers": [
                {"mediaType": media_type, **self.add_blob(data, behaviour)}
                for media_type, data, behaviour in layers
            ],
        }
        body = json.dumps(manifest, separators=(",", ":")).encode()
        return self.add_manifest(repository, tag, body, manifest_behaviour)

    def count(self, kind: str, reference: str) -> int:
        """GET and HEAD requests for a manifest (``kind`` manifests) or blob (``blobs``)."""
        return sum(n for path, n in self.requests.items() if path.endswith(f"/{kind}/{reference}"))

    # -- serving ----------------------------------------------------------------------------

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        registry = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                return

            def do_HEAD(self) -> None:
                self._answer(with_body=False)

            def do_GET(self) -> None:
                self._answer(with_body=True)

            def _answer(self, with_body: bool) -> None:
                path = self.path.split("?", 1)[0]
                with registry._lock:
                    registry.requests[path] += 1
                if path in ("/v2", "/v2/"):
                    self._send(200, {"Content-Type": "application/json"}, b"{}", with_body)
                    return
                match = _PATH_RE.match(path)
                found = self._lookup(match) if match else None
                if found is None:
                    body = b'{"errors":[{"code":"NOT_FOUND","message":"not here"}]}'
                    self._send(404, {"Content-Type": "application/json"}, body, with_body)
                    return
                data, headers, behaviour = found
                status, data, headers = self._ranged(data, headers)
                self._send(status, headers, data, with_body, behaviour)

            def _lookup(
                self, match: re.Match[str]
            ) -> tuple[bytes, dict[str, str], Behaviour] | None:
                repo, kind, ref = match.group("repo"), match.group("kind"), match.group("ref")
                if kind == "manifests":
                    body = registry.manifests.get((repo, ref))
                    if body is None:
                        return None
                    try:
                        media_type = json.loads(body).get("mediaType") or OCI_MANIFEST
                    except (ValueError, AttributeError, RecursionError):
                        media_type = OCI_MANIFEST
                    headers = {"Content-Type": media_type, "Docker-Content-Digest": digest_of(body)}
                    return body, headers, registry.behaviours.get(f"{repo}:{ref}", NORMAL)
                blob = registry.blobs.get(ref)
                if blob is None:
                    return None
                headers = {"Content-Type": "application/octet-stream", "Docker-Content-Digest": ref}
                return blob, headers, registry.behaviours.get(ref, NORMAL)

            def _ranged(
                self, data: bytes, headers: dict[str, str]
            ) -> tuple[int, bytes, dict[str, str]]:
                match = _RANGE_RE.match(self.headers.get("Range", ""))
                if not match:
                    return 200, data, headers
                start = int(match.group(1))
                end = int(match.group(2)) if match.group(2) else len(data) - 1
                end = min(end, len(data) - 1)
                if start > end:
                    return 416, b"", {"Content-Range": f"bytes */{len(data)}"}
                ranged = {**headers, "Content-Range": f"bytes {start}-{end}/{len(data)}"}
                return 206, data[start : end + 1], ranged

            def _send(
                self,
                status: int,
                headers: dict[str, str],
                body: bytes,
                with_body: bool,
                behaviour: Behaviour = NORMAL,
            ) -> None:
                head = [f"HTTP/1.1 {status} {self.responses.get(status, ('',))[0]}"]
                head += [f"{k}: {v}" for k, v in {**headers, "Content-Length": len(body)}.items()]
                raw_head = ("\r\n".join(head) + "\r\n\r\n").encode()
                try:
                    if behaviour.kind == "trickle_headers":
                        self._dribble(raw_head, behaviour)
                    else:
                        self.wfile.write(raw_head)
                        self.wfile.flush()
                    if not with_body:
                        return
                    if behaviour.kind == "trickle":
                        self.wfile.write(body[: behaviour.after])
                        self._dribble(body[behaviour.after :], behaviour)
                    elif behaviour.kind == "stall":
                        self.wfile.write(body[: behaviour.after])
                        self.wfile.flush()
                        registry.stopping.wait(STALL_LIMIT)
                        self.close_connection = True
                    else:
                        self.wfile.write(body)
                except (BrokenPipeError, ConnectionResetError):
                    self.close_connection = True

            def _dribble(self, data: bytes, behaviour: Behaviour) -> None:
                for start in range(0, len(data), behaviour.piece):
                    self.wfile.write(data[start : start + behaviour.piece])
                    self.wfile.flush()
                    if registry.stopping.wait(behaviour.interval):
                        self.close_connection = True
                        return

        return Handler
