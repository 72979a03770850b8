"""A fault-injecting HTTP/1.1 proxy to put in front of a real registry.

Clients talk to the proxy as if it were the registry (``proxy.host``). For every request the proxy
asks its rules, in order, for a ``Fault``; the first rule that returns one decides what happens:
forward normally, delay, drop the connection, answer by itself, or forward and then cut or corrupt
the response body. Every request is recorded in ``proxy.requests`` for assertions.

Each client connection carries one request: the proxy forwards it with ``Connection: close`` so
the registry closes after answering, which tells the proxy where each response ends.
"""

from __future__ import annotations

import contextlib
import socket
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


def blob_get(request: ProxyRequest) -> bool:
    return request.method == "GET" and "/blobs/sha256:" in request.path


class FaultProxy:
    """Listens on 127.0.0.1:PORT and forwards to ``upstream`` (``host:port``), applying rules."""

    def __init__(self, upstream: str) -> None:
        host, _, port = upstream.rpartition(":")
        self.upstream = (host, int(port))
        self.rules: list[Rule] = []
        self.requests: list[ProxyRequest] = []
        self._lock = threading.Lock()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._sockets: set[socket.socket] = set()
        self._threads: list[threading.Thread] = []
        self._closed = False
        self._accepter = threading.Thread(target=self._accept_loop, name="fault-proxy", daemon=True)

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self._listener.getsockname()[1]}"

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

    def stop(self) -> None:
        self._closed = True
        self._accepter.join(5)
        self._listener.close()
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
                return
            if fault.respond is not None:
                _drain(client, rest, request)
                client.sendall(_render(fault.respond, request.method))
                return
            upstream = self._track(socket.create_connection(self.upstream, timeout=30))
            upstream.sendall(_close_connection(head) + rest)
            threading.Thread(target=_pipe, args=(client, upstream), daemon=True).start()
            _relay_response(upstream, client, fault)
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


def _relay_response(upstream: socket.socket, client: socket.socket, fault: Fault) -> None:
    head, body = _read_head(upstream)
    if head is None:
        return
    client.sendall(head)
    sent = 0
    while True:
        if body:
            body = _apply(body, sent, fault)
            if fault.cut_after is not None and sent + len(body) >= fault.cut_after:
                client.sendall(body[: fault.cut_after - sent])
                return
            client.sendall(body)
            sent += len(body)
        body = upstream.recv(IO_SIZE)
        if not body:
            return


def _apply(chunk: bytes, offset: int, fault: Fault) -> bytes:
    at = fault.corrupt_at
    if at is None or not offset <= at < offset + len(chunk):
        return chunk
    data = bytearray(chunk)
    data[at - offset] ^= 0xFF
    return bytes(data)


def _close(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    with contextlib.suppress(OSError):
        sock.close()
