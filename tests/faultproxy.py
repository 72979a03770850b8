"""A fault-injecting HTTP/1.1 proxy to put in front of a real registry.

Clients talk to the proxy as if it were the registry (``proxy.host``). For every request the proxy
asks its rules, in order, for a ``Fault``; the first rule that returns one decides what happens:
forward normally, delay, drop or reset the connection (also after part of the request body), answer by itself (a 5xx/429 with or without
``Retry-After``, a manifest that is not JSON), forward another path instead (a different blob for a
digest), or forward and then rewrite headers (a wrong media type), cut, reset, stall, truncate or
corrupt the response body. ``proxy.refuse_connections()`` closes the listening port so that new
connections are refused outright. Every request is recorded in ``proxy.requests`` for assertions.
The small constructors at the end of the module (``status``, ``stall``, ``truncate``...) name the
faults the reliability suite uses.

Each client connection carries one request: the proxy forwards it with ``Connection: close`` so
the registry closes after answering, which tells the proxy where each response ends.
"""

from __future__ import annotations

import contextlib
import json
import socket
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

HEAD_LIMIT = 64 * 1024
IO_SIZE = 64 * 1024
ACCEPT_POLL = 0.05


@dataclass(frozen=True)
class ProxyRequest:
    """One request as the proxy saw it (header names lowercased)."""

    index: int
    method: str
    path: str
    headers: dict[str, str] = field(default_factory=dict, compare=False, hash=False)


@dataclass(frozen=True)
class Response:
    """An answer the proxy gives by itself, without contacting the registry."""

    status: int
    headers: dict[str, str] = field(default_factory=dict, compare=False, hash=False)
    body: bytes = b""


@dataclass(frozen=True)
class Fault:
    """What to do with one request; the default forwards it untouched."""

    delay: float = 0.0  # seconds to wait before doing anything else
    drop: bool = False  # close the client connection without answering
    respond: Response | None = None  # answer with this instead of forwarding
    cut_after: int | None = None  # forward this many response body bytes, then drop the connection
    corrupt_at: int | None = None  # flip the bits of the response body byte at this offset
    reset: bool = (
        False  # with drop or cut_after: end with a TCP reset (RST) instead of a close (FIN)
    )
    stall_after: int | None = None  # forward this many body bytes, then send nothing more ...
    stall: float = 0.0  # ... for this many seconds (then drop the connection)
    truncate_to: int | None = None  # send only this many body bytes, as a complete response
    path: str | None = None  # forward the request for this path instead of the one asked for
    cut_request_after: int | None = None  # forward this many request body bytes, then reset both
    set_headers: dict[str, str] | None = field(default=None, compare=False, hash=False)


Rule = Callable[[ProxyRequest], Fault | None]


def once(predicate: Callable[[ProxyRequest], bool], fault: Fault, times: int = 1) -> Rule:
    """A rule that applies ``fault`` to the first ``times`` requests matching ``predicate``."""
    remaining = [times]
    lock = threading.Lock()

    def rule(request: ProxyRequest) -> Fault | None:
        if not predicate(request):
            return None
        with lock:
            if remaining[0] <= 0:
                return None
            remaining[0] -= 1
        return fault

    return rule


def always(predicate: Callable[[ProxyRequest], bool], fault: Fault) -> Rule:
    """A rule that applies ``fault`` to every request matching ``predicate``."""
    return lambda request: fault if predicate(request) else None


def blob_get(request: ProxyRequest) -> bool:
    return request.method == "GET" and "/blobs/sha256:" in request.path


def manifest_get(request: ProxyRequest) -> bool:
    return request.method == "GET" and "/manifests/" in request.path


def for_digest(digest: str, method: str = "GET") -> Callable[[ProxyRequest], bool]:
    """Requests (``method``) for the blob or manifest named by ``digest``."""
    return lambda request: (
        request.method == method and request.path.split("?", 1)[0].endswith("/" + digest)
    )


class FaultProxy:
    """Listens on 127.0.0.1:PORT and forwards to ``upstream`` (``host:port``), applying rules."""

    def __init__(self, upstream: str) -> None:
        host, _, port = upstream.rpartition(":")
        self.upstream = (host, int(port))
        self.rules: list[Rule] = []
        self.requests: list[ProxyRequest] = []
        self._lock = threading.Lock()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._port = int(self._listener.getsockname()[1])
        self._sockets: set[socket.socket] = set()
        self._threads: list[threading.Thread] = []
        self._closed = False
        self._held: socket.socket | None = None  # the port while refusing: bound, not listening
        self._stopping = threading.Event()  # wakes stalled responses when the proxy stops
        self._accepter = threading.Thread(target=self._accept_loop, name="fault-proxy", daemon=True)

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self._port}"

    @property
    def url(self) -> str:
        return f"http://{self.host}"

    def add_rule(self, rule: Rule) -> None:
        self.rules.append(rule)

    def clear(self) -> None:
        self.rules.clear()
        self.requests.clear()

    def matching(self, method: str, fragment: str = "") -> list[ProxyRequest]:
        return [r for r in self.requests if r.method == method and fragment in r.path]

    def start(self) -> FaultProxy:
        self._accepter.start()
        return self

    def refuse_connections(self, refuse: bool = True) -> None:
        """Stop listening (new connections are refused) but keep the port, bound, so that no
        other server takes it meanwhile; or listen on it again (``refuse=False``)."""
        if refuse == self._closed:
            return
        self._closed = True
        self._accepter.join(5)
        self._listener.close()
        if refuse:
            self._held = _bound(self._port)
        else:
            if self._held is not None:
                self._held.close()
                self._held = None
            self._listener = socket.create_server(("127.0.0.1", self._port))
            self._closed = False
            self._accepter = threading.Thread(
                target=self._accept_loop, name="fault-proxy", daemon=True
            )
            self._accepter.start()

    def stop(self) -> None:
        self._stopping.set()
        self._closed = True
        if self._accepter.is_alive():
            self._accepter.join(5)
        self._listener.close()
        if self._held is not None:
            self._held.close()
            self._held = None
        with self._lock:
            for sock in list(self._sockets):
                _close(sock)
        for thread in list(self._threads):
            thread.join(5)

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _accept_loop(self) -> None:
        self._listener.settimeout(ACCEPT_POLL)  # close() does not wake a blocked accept()
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            client.settimeout(None)
            thread = threading.Thread(target=self._serve, args=(client,), daemon=True)
            self._threads = [t for t in self._threads if t.is_alive()] + [thread]
            thread.start()

    def _track(self, sock: socket.socket) -> socket.socket:
        with self._lock:
            self._sockets.add(sock)
        return sock

    def _serve(self, client: socket.socket) -> None:
        self._track(client)
        upstream: socket.socket | None = None
        try:
            head, rest = _read_head(client)
            if head is None:
                return
            request = self._record(head)
            fault = self._fault(request)
            if fault.delay:
                time.sleep(fault.delay)
            if fault.drop:
                if fault.reset:
                    _reset(client)
                return
            if fault.respond is not None:
                _drain(client, rest, request)
                client.sendall(_render(fault.respond, request.method))
                return
            if fault.path is not None:
                head = _replace_path(head, fault.path)
            upstream = self._track(socket.create_connection(self.upstream, timeout=30))
            if fault.cut_request_after is not None:
                _forward_part(client, upstream, _close_connection(head), rest, fault)
                return
            upstream.sendall(_close_connection(head) + rest)
            threading.Thread(target=_pipe, args=(client, upstream), daemon=True).start()
            _relay_response(upstream, client, fault, self._stopping.wait)
        except OSError:
            pass
        finally:
            for sock in (client, upstream):
                if sock is not None:
                    _close(sock)
                    with self._lock:
                        self._sockets.discard(sock)

    def _record(self, head: bytes) -> ProxyRequest:
        lines = head.decode("latin-1").split("\r\n")
        method, path, _ = (lines[0].split(" ", 2) + ["", ""])[:3]
        headers = {}
        for line in lines[1:]:
            name, sep, value = line.partition(":")
            if sep:
                headers[name.strip().lower()] = value.strip()
        with self._lock:
            request = ProxyRequest(len(self.requests), method, path, headers)
            self.requests.append(request)
        return request

    def _fault(self, request: ProxyRequest) -> Fault:
        for rule in list(self.rules):
            fault = rule(request)
            if fault is not None:
                return fault
        return Fault()


def _read_head(sock: socket.socket) -> tuple[bytes | None, bytes]:
    """The request or response head (up to the blank line) and whatever bytes followed it."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(IO_SIZE)
        if not chunk or len(data) > HEAD_LIMIT:
            return None, b""
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    return head + b"\r\n\r\n", rest


def _drain(client: socket.socket, received: bytes, request: ProxyRequest) -> None:
    """Read the request body before answering it ourselves (unread data would turn our close
    into a reset that hides the answer from the client)."""
    length = request.headers.get("content-length", "0")
    remaining = (int(length) if length.isdigit() else 0) - len(received)
    while remaining > 0:
        chunk = client.recv(min(IO_SIZE, remaining))
        if not chunk:
            return
        remaining -= len(chunk)


def _close_connection(head: bytes) -> bytes:
    lines = [
        line for line in head.split(b"\r\n") if line and not line.lower().startswith(b"connection:")
    ]
    return b"\r\n".join(lines + [b"Connection: close", b"", b""])


def _render(response: Response, method: str) -> bytes:
    headers = {"Content-Length": str(len(response.body)), "Connection": "close", **response.headers}
    lines = [f"HTTP/1.1 {response.status} Fault"] + [f"{k}: {v}" for k, v in headers.items()]
    head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    return head if method == "HEAD" else head + response.body


def _pipe(source: socket.socket, sink: socket.socket) -> None:
    """Copy the rest of the request (its body) to the registry until either side closes."""
    with contextlib.suppress(OSError):
        while chunk := source.recv(IO_SIZE):
            sink.sendall(chunk)


def _forward_part(
    client: socket.socket, upstream: socket.socket, head: bytes, received: bytes, fault: Fault
) -> None:
    """Forward the head and the first ``cut_request_after`` body bytes, then reset the client
    (the registry sees its request end early when the caller closes the upstream socket)."""
    limit = fault.cut_request_after or 0
    upstream.sendall(head + received[:limit])
    sent = min(len(received), limit)
    while sent < limit:
        chunk = client.recv(min(IO_SIZE, limit - sent))
        if not chunk:
            break
        upstream.sendall(chunk)
        sent += len(chunk)
    _reset(client)


def _replace_path(head: bytes, path: str) -> bytes:
    first, sep, rest = head.partition(b"\r\n")
    method, _, version = first.split(b" ", 2)
    return b" ".join([method, path.encode("latin-1"), version]) + sep + rest


def _rewrite_head(head: bytes, fault: Fault) -> bytes:
    """Apply ``set_headers`` and, for ``truncate_to``, a Content-Length that matches the cut body."""
    headers = dict(fault.set_headers or {})
    lines = head.split(b"\r\n")
    if fault.truncate_to is not None:
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = min(int(value.strip()), fault.truncate_to)
                headers["Content-Length"] = str(length)
    if not headers:
        return head
    names = {name.lower().encode("latin-1") for name in headers}
    kept = [
        line for line in lines[1:] if line and line.partition(b":")[0].strip().lower() not in names
    ]
    added = [f"{name}: {value}".encode("latin-1") for name, value in headers.items()]
    return b"\r\n".join([lines[0], *kept, *added, b"", b""])


def _relay_response(
    upstream: socket.socket, client: socket.socket, fault: Fault, wait: Callable[[float], object]
) -> None:
    head, body = _read_head(upstream)
    if head is None:
        return
    client.sendall(_rewrite_head(head, fault))
    sent = 0
    stop = min(
        (n for n in (fault.cut_after, fault.stall_after, fault.truncate_to) if n is not None),
        default=None,
    )
    while True:
        if body:
            body = _apply(body, sent, fault)
            if stop is not None and sent + len(body) >= stop:
                client.sendall(body[: stop - sent])
                _end_early(client, fault, wait)
                return
            client.sendall(body)
            sent += len(body)
        body = upstream.recv(IO_SIZE)
        if not body:
            if stop is not None and sent >= stop:
                _end_early(client, fault, wait)
            return


def _end_early(client: socket.socket, fault: Fault, wait: Callable[[float], object]) -> None:
    """What happens where the body stops: a stall, a reset, or (cut, truncate) a plain close."""
    if fault.stall_after is not None:
        wait(fault.stall)
    elif fault.reset:
        _reset(client)


def _apply(chunk: bytes, offset: int, fault: Fault) -> bytes:
    at = fault.corrupt_at
    if at is None or not offset <= at < offset + len(chunk):
        return chunk
    data = bytearray(chunk)
    data[at - offset] ^= 0xFF
    return bytes(data)


def _bound(port: int) -> socket.socket:
    """A socket bound to 127.0.0.1:``port`` that never listens: connections to the port are
    refused, and while it is open no other socket can bind there, nor is the port handed out as
    a free one. Connections the listener just closed may linger in TIME_WAIT on the port: then
    it binds with SO_REUSEADDR, which still keeps out any socket that does not ask for it."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.bind(("127.0.0.1", port))
    except OSError:
        sock.close()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", port))
    return sock


def _reset(sock: socket.socket) -> None:
    """Close with a TCP reset: the peer sees ECONNRESET rather than an orderly end of stream."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        # Wake the thread copying the request body (a blocked recv keeps the socket alive, and
        # the reset is only sent when the last reference goes), then close.
        sock.shutdown(socket.SHUT_RD)
        time.sleep(0.01)
        sock.close()


def _close(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    with contextlib.suppress(OSError):
        sock.close()


# -- the faults by name ------------------------------------------------------------------------


def refuse() -> Fault:
    """Reset the connection as soon as the request arrives (nothing is answered)."""
    return Fault(drop=True, reset=True)


def reset_midway(after: int) -> Fault:
    """Forward ``after`` body bytes, then reset the connection."""
    return Fault(cut_after=after, reset=True)


def cut_request(after: int) -> Fault:
    """Forward ``after`` bytes of the request body to the registry, then reset the connection."""
    return Fault(cut_request_after=after)


def stall(seconds: float, after: int = 0) -> Fault:
    """Forward ``after`` body bytes, then send nothing for ``seconds`` (then close)."""
    return Fault(stall_after=after, stall=seconds)


def status(code: int, retry_after: str | None = None, body: bytes | None = None) -> Fault:
    """Answer ``code`` (429, 500, 502, 503...) with a Distribution error body."""
    headers = {"Content-Type": "application/json"}
    if retry_after is not None:
        headers["Retry-After"] = retry_after
    error = {"errors": [{"code": "UNAVAILABLE", "message": f"injected {code}"}]}
    payload = json.dumps(error).encode() if body is None else body
    return Fault(respond=Response(code, headers, payload))


def truncate(size: int) -> Fault:
    """Forward only the first ``size`` body bytes, as a complete response (Content-Length fixed)."""
    return Fault(truncate_to=size)


def flip(offset: int) -> Fault:
    """Flip the bits of the body byte at ``offset``."""
    return Fault(corrupt_at=offset)


def other_blob(repository: str, digest: str) -> Fault:
    """Serve the registry's blob ``digest`` (with its own headers) whatever blob was asked for."""
    return Fault(path=f"/v2/{repository}/blobs/{digest}")


def media_type(value: str) -> Fault:
    """Forward the real answer with another ``Content-Type``."""
    return Fault(set_headers={"Content-Type": value})


def invalid_json(media_type: str = "application/vnd.oci.image.manifest.v1+json") -> Fault:
    """A 200 whose body is not JSON, under a manifest media type."""
    return Fault(respond=Response(200, {"Content-Type": media_type}, b'{"schemaVersion": 2, "lay'))


def ranges_asked(proxy: FaultProxy, digest: str) -> list[tuple[int, int]]:
    """The (first, last) byte ranges of ``digest`` that blob GETs through ``proxy`` asked for, in
    order (a GET without a Range as (0, -1))."""
    found = []
    for request in proxy.requests:
        if blob_get(request) and request.path.endswith(digest):
            header = request.headers.get("range", "")
            if not header:
                found.append((0, -1))
                continue
            start, _, end = header.removeprefix("bytes=").partition("-")
            found.append((int(start), int(end) if end else -1))
    return found
