"""A stand-in for the Hugging Face Hub on loopback: the real service cannot be reached from here.

It speaks the two endpoints kit (and ``kitfs import``) use, as huggingface.co answers them:

- ``GET /api/models/{org}/{name}/tree/{rev}[/{dir}]``: the JSON list of one directory's items,
  ``{"type", "oid", "size", "path"}``, with ``"lfs": {"oid", "size", "pointerSize"}`` for LFS
  files (whose ``oid`` is the git blob sha1 of their pointer file); 404 ``{"error": "Invalid rev
  id: X"}`` for an unknown revision; 401 for a gated repository without a valid Bearer token.
- ``GET /{org}/{name}/resolve/{rev}/{path}``: a regular file's bytes; an LFS file answers 302 to a
  second server (the "CDN", another port, so another origin) that serves the object by sha256.

Both honour ``Range: bytes=N-``. Faults for tests: bytes that do not match the published digest,
a connection cut after N bytes. Every request is recorded (path, headers) with the body bytes sent.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote, urlsplit

LFS_SUFFIXES = (".safetensors", ".onnx", ".bin", ".gguf")


def git_blob_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def lfs_pointer(data: bytes) -> bytes:
    digest = hashlib.sha256(data).hexdigest()
    return f"version https://git-lfs.github.com/spec/v1\noid sha256:{digest}\nsize {len(data)}\n".encode()


@dataclass
class Repo:
    """One model repository: revision -> path -> bytes; LFS by suffix, as .gitattributes would say."""

    revisions: dict[str, dict[str, bytes]]
    token: str | None = None  # gated: this Bearer token is required

    def is_lfs(self, path: str) -> bool:
        return path.endswith(LFS_SUFFIXES)


@dataclass
class Request:
    server: str
    path: str
    headers: dict[str, str]
    sent: int = 0


@dataclass
class Hub:
    """The fake Hub's state: repositories, faults, and the request log."""

    repos: dict[str, Repo] = field(default_factory=dict)
    prefix: str = ""  # a mirror serving under a path prefix
    corrupt: set[str] = field(default_factory=set)  # paths whose bytes differ from the listing
    cut_after: dict[str, int] = field(default_factory=dict)  # path -> bytes sent before a cut
    cut_times: dict[str, int] = field(default_factory=dict)  # path -> how many requests to cut
    ignore_range: bool = False  # answer every Range request with the whole file (200)
    stall_after: dict[str, int] = field(default_factory=dict)  # path -> bytes sent, then a hang
    stalled: threading.Event = field(default_factory=threading.Event)  # a body is hanging
    release: threading.Event = field(default_factory=threading.Event)  # ends every hang
    raw_trees: dict[str, object] = field(default_factory=dict)  # directory -> listing sent as is
    page_size: int = 0  # listings longer than this come in pages linked by Link: rel="next"
    requests: list[Request] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    endpoint: str = ""
    cdn: str = ""
    objects: dict[str, tuple[str, bytes]] = field(default_factory=dict)  # sha256 -> (path, bytes)

    def log(self, server: str, path: str, headers: dict[str, str]) -> Request:
        request = Request(server, path, headers)
        with self.lock:
            self.requests.append(request)
        return request

    def file_requests(self, path: str) -> list[Request]:
        """Requests that fetched ``path`` (from the Hub or, by its object, the CDN)."""
        with self.lock:
            return [r for r in self.requests if r.path.endswith("/" + path) or r.path == path]

    def resolve_requests(self) -> list[Request]:
        with self.lock:
            return [r for r in self.requests if "/resolve/" in r.path]

    def bytes_sent(self, path: str) -> int:
        return sum(r.sent for r in self.file_requests(path))


def _items(repo: Repo, files: dict[str, bytes], directory: str) -> list[dict[str, object]] | None:
    prefix = "" if directory == "" else directory + "/"
    if directory and not any(p.startswith(prefix) for p in files):
        return None
    items: list[dict[str, object]] = []
    seen_dirs: set[str] = set()
    for path in sorted(files):
        if not path.startswith(prefix):
            continue
        rest = path[len(prefix) :]
        if "/" in rest:
            sub = prefix + rest.split("/", 1)[0]
            if sub not in seen_dirs:
                seen_dirs.add(sub)
                items.append(
                    {
                        "type": "directory",
                        "oid": hashlib.sha1(sub.encode()).hexdigest(),
                        "size": 0,
                        "path": sub,
                    }
                )
            continue
        data = files[path]
        if repo.is_lfs(path):
            pointer = lfs_pointer(data)
            items.append({
                "type": "file", "oid": git_blob_sha1(pointer), "size": len(data), "path": path,
                "lfs": {"oid": hashlib.sha256(data).hexdigest(), "size": len(data), "pointerSize": len(pointer)},
            })  # fmt: skip
        else:
            items.append(
                {"type": "file", "oid": git_blob_sha1(data), "size": len(data), "path": path}
            )
    # Directories first, as the Hub lists them.
    return sorted(items, key=lambda i: i["type"] != "directory")


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    hub: Hub
    role: str

    def log_message(self, format: str, *args: object) -> None:
        return None

    def do_GET(self) -> None:
        path = unquote(urlsplit(self.path).path)
        request = self.hub.log(self.role, path, {k.lower(): v for k, v in self.headers.items()})
        if self.role == "cdn":
            self._cdn(path, request)
        else:
            self._hub(path, request)

    # -- the Hub --------------------------------------------------------------------------------

    def _hub(self, path: str, request: Request) -> None:
        if not path.startswith(self.hub.prefix + "/"):
            return self._json(404, {"error": "Not Found"})
        path = path[len(self.hub.prefix) :]
        if path.startswith("/api/models/"):
            return self._tree(path[len("/api/models/") :].split("/"))
        parts = path.lstrip("/").split("/")
        if len(parts) >= 5 and parts[2] == "resolve":
            return self._resolve(parts, request)
        return self._json(404, {"error": "Not Found"})

    def _repo(self, org: str, name: str) -> Repo | None:
        repo = self.hub.repos.get(f"{org}/{name}")
        if repo is None:
            self._json(401, {"error": "Repository not found"})
            return None
        if repo.token and self.headers.get("Authorization") != f"Bearer {repo.token}":
            self._json(
                401,
                {
                    "error": f"Access to model {org}/{name} is restricted. You must have access to it and be authenticated to access it. Please log in."
                },
            )
            return None
        return repo

    def _tree(self, parts: list[str]) -> None:
        if len(parts) < 4 or parts[2] != "tree":
            return self._json(404, {"error": "Not Found"})
        org, name, rev, directory = parts[0], parts[1], parts[3], "/".join(parts[4:])
        repo = self._repo(org, name)
        if repo is None:
            return None
        files = repo.revisions.get(rev)
        if files is None:
            return self._json(404, {"error": f"Invalid rev id: {rev}"})
        if directory in self.hub.raw_trees:
            return self._json(200, self.hub.raw_trees[directory])
        items = _items(repo, files, directory)
        if items is None:
            return self._json(404, {"error": f"Entry not found: {directory}"})
        size = self.hub.page_size
        if not size or len(items) <= size:
            return self._json(200, items)
        query = urlsplit(self.path).query
        start = int(query.removeprefix("cursor=")) if query.startswith("cursor=") else 0
        link = None
        if start + size < len(items):
            link = f'<{urlsplit(self.path).path}?cursor={start + size}>; rel="next"'
        return self._json(200, items[start : start + size], link)

    def _resolve(self, parts: list[str], request: Request) -> None:
        org, name, rev, file_path = parts[0], parts[1], parts[3], "/".join(parts[4:])
        repo = self._repo(org, name)
        if repo is None:
            return None
        files = repo.revisions.get(rev)
        if files is None or file_path not in files:
            return self._json(404, {"error": "Entry not found"})
        data = files[file_path]
        if repo.is_lfs(file_path):
            digest = hashlib.sha256(data).hexdigest()
            self.hub.objects[digest] = (file_path, data)
            self.send_response(302)
            self.send_header("Location", f"{self.hub.cdn}/repos/{digest}?sig=abc")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return None
        return self._body(file_path, data, request)

    # -- the CDN --------------------------------------------------------------------------------

    def _cdn(self, path: str, request: Request) -> None:
        digest = path.rsplit("/", 1)[-1]
        found = self.hub.objects.get(digest)
        if found is None:
            return self._json(404, {"error": "no such object"})
        request.path = found[0]  # counted under the file's path
        return self._body(found[0], found[1], request)

    # -- bodies ---------------------------------------------------------------------------------

    def _body(self, file_path: str, data: bytes, request: Request) -> None:
        if file_path in self.hub.corrupt:
            data = bytes(b ^ 0xFF for b in data[:16]) + data[16:]
        start = 0
        wanted = self.headers.get("Range", "")
        if wanted.startswith("bytes=") and wanted.endswith("-") and not self.hub.ignore_range:
            start = int(wanted[6:-1])
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        body = data[start:]
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Content-Type", "application/octet-stream")
        self.end_headers()
        cut = self.hub.cut_after.get(file_path, self.hub.stall_after.get(file_path))
        if cut is not None and file_path in self.hub.cut_times:
            with self.hub.lock:
                if self.hub.cut_times[file_path] <= 0:
                    cut = None
                self.hub.cut_times[file_path] -= 1
        if cut is not None and cut < len(body):
            self.wfile.write(body[:cut])
            self.wfile.flush()
            request.sent += cut
            if file_path in self.hub.stall_after:
                self.hub.stalled.set()
                self.hub.release.wait(60)
            self.close_connection = True
            return None
        self.wfile.write(body)
        request.sent += len(body)
        return None

    def _json(self, status: int, value: object, link: str | None = None) -> None:
        body = json.dumps(value).encode()
        self.send_response(status)
        if link:
            self.send_header("Link", link)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: object, client_address: object) -> None:
        """A client that hangs up mid-body (a stopped download) is not worth a traceback."""


@contextmanager
def serve_hub(hub: Hub) -> Iterator[Hub]:
    """Run the Hub and its CDN on free loopback ports until the block ends."""
    servers = []
    for role in ("hub", "cdn"):
        handler = type(f"{role}Handler", (_Handler,), {"hub": hub, "role": role})
        server = _Server(("127.0.0.1", 0), handler)
        threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
        servers.append(server)
    hub.endpoint = f"http://127.0.0.1:{servers[0].server_address[1]}{hub.prefix}"
    hub.cdn = f"http://127.0.0.1:{servers[1].server_address[1]}"
    try:
        yield hub
    finally:
        hub.release.set()
        for server in servers:
            server.shutdown()
            server.server_close()
