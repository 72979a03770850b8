"""The spawner: a small resident process that forks one kitfs mount daemon per volume.

gRPC's C core does not survive ``fork()``, so the plugin never forks itself. At start-up it runs this
module in a fresh interpreter (``python -m kitfs.csi.spawner FD``, a ``subprocess`` exec, not a bare
fork) connected by a SOCK_SEQPACKET socket pair. The spawner imports trio, pyfuse3 and the mount
daemon's code once; each request (one JSON message: reference, target, settings) is answered by a
fork whose child runs the daemon body of ``kitfs mount`` (kitfs.fs.mount and kitfs.fs.daemon) and the
read end of the child's readiness pipe, passed back to the plugin with SCM_RIGHTS. The plugin reads
"ready" or the daemon's error from that pipe itself, so a slow resolve holds up no other volume.

A daemon starts its own session (``setsid``), so it outlives the spawner and the plugin: a plugin
restart finds its volumes still served. The spawner ignores SIGCHLD, so the kernel reaps its
children; the child restores the default before it runs the daemon (libfuse waits for
``fusermount3``). When the plugin goes away the socket reads empty and the spawner exits.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import selectors
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from kitfs.csi.errors import CsiError, error_classes, status_for
from kitfs.errors import KitfsError

log = logging.getLogger(__name__)

MAX_MESSAGE = 1 << 16
READY_TIMEOUT = 300.0  # a cold resolve (manifest, config, signature) through retries


# -- the plugin's side ------------------------------------------------------------------------


@dataclass(frozen=True)
class MountRequest:
    """What one daemon serves: ``settings`` as kitfs.fs.mount.build_options takes them."""

    reference: str
    target: str
    settings: Mapping[str, object]
    docker_config: str | None = None  # a directory holding the volume's config.json, if any
    grants: str | None = None  # the access grants directory (kitfs.csi.access); None: no check

    def to_bytes(self) -> bytes:
        return json.dumps(
            {
                "reference": self.reference,
                "target": self.target,
                "settings": dict(self.settings),
                "docker_config": self.docker_config,
                "grants": self.grants,
            }
        ).encode()


class Spawner:
    """The plugin's handle on the spawner process: ``mount(request)`` returns the daemon's pid
    once its mount is ready, or raises the daemon's error as a CsiError."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._socket, self._process = self._start()

    @staticmethod
    def _start() -> tuple[socket.socket, subprocess.Popen[bytes]]:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        process = subprocess.Popen(
            [sys.executable, "-m", "kitfs.csi.spawner", str(theirs.fileno())],
            pass_fds=[theirs.fileno()],
            stdin=subprocess.DEVNULL,
            close_fds=True,
        )
        theirs.close()
        if ours.recv(MAX_MESSAGE) != b"hello":
            ours.close()
            process.kill()
            process.wait(10)
            raise CsiError("UNAVAILABLE", "the volume spawner did not start (see the plugin's log)")
        return ours, process

    def _restart_if_gone(self) -> None:
        """A spawner that died (killed, out of memory) is started again; its daemons live on."""
        if self._process.poll() is not None:
            log.warning(
                "the volume spawner exited (%s): starting it again", self._process.returncode
            )
            self._socket.close()
            self._socket, self._process = self._start()

    @property
    def pid(self) -> int:
        return self._process.pid

    def mount(self, request: MountRequest, timeout: float = READY_TIMEOUT) -> int:
        pid, pipe = self._fork(request)
        with os.fdopen(pipe, "rb") as answer_pipe:
            answer = _read_all(answer_pipe.fileno(), timeout)
        if answer is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
            raise CsiError(
                "DEADLINE_EXCEEDED",
                f"the mount of {request.reference} was not ready within {timeout:.0f}s",
            )
        return _ready_or_raise(answer.decode("utf-8", "replace"), pid)

    def _fork(self, request: MountRequest) -> tuple[int, int]:
        with self._lock:
            self._restart_if_gone()
            try:
                message, fds = self._exchange(request)
            except OSError:
                # Died just now (its exit not yet seen by poll): wait for it, start a new one.
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self._process.wait(5)
                self._restart_if_gone()
                try:
                    message, fds = self._exchange(request)
                except OSError as exc:
                    raise CsiError("UNAVAILABLE", f"the volume spawner is gone: {exc}") from None
        reply = json.loads(message)
        if "error" in reply or not fds:
            for fd in fds:
                os.close(fd)
            raise CsiError("INTERNAL", f"the volume spawner cannot fork: {reply.get('error')}")
        return int(reply["pid"]), fds[0]

    def _exchange(self, request: MountRequest) -> tuple[bytes, list[int]]:
        """Send one request; the reply and the readiness pipe's read end (OSError: spawner gone)."""
        self._socket.send(request.to_bytes())
        message, fds, _flags, _addr = socket.recv_fds(self._socket, MAX_MESSAGE, 1)
        if not message:
            raise ConnectionResetError("the volume spawner closed its socket")
        return message, fds

    def close(self) -> None:
        """Stop the spawner; the daemons it started keep serving."""
        self._socket.close()
        try:
            self._process.wait(10)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait(10)


def _read_all(fd: int, timeout: float) -> bytes | None:
    """Everything written to the pipe until its writer closes it; None after ``timeout``."""
    chunks: list[bytes] = []
    with selectors.DefaultSelector() as selector:
        selector.register(fd, selectors.EVENT_READ)
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not selector.select(remaining):
                return None
            chunk = os.read(fd, 65536)
            if not chunk:
                return b"".join(chunks)
            chunks.append(chunk)


def _ready_or_raise(answer: str, pid: int) -> int:
    first, _, rest = answer.partition("\n")
    if first == "ready":
        for line in rest.splitlines():
            log.warning("volume daemon %d: %s", pid, line.removeprefix("warning "))
        return pid
    if first.startswith("error "):
        classes, _, message = first[len("error ") :].partition(" ")
        raise CsiError(status_for(classes.split(",")), message)
    raise CsiError("INTERNAL", "the volume's mount daemon exited before mounting")


# -- the spawner process ------------------------------------------------------------------------


def _preload() -> None:
    """Import what every daemon needs, once: a forked child then starts with it loaded."""
    import kitfs.csi.access  # noqa: F401
    import kitfs.fs.daemon  # noqa: F401  (trio, pyfuse3, the layer store, operations)
    import kitfs.fs.registrysource  # noqa: F401  (httpx and the registry client)
    import kitfs.fs.verified  # noqa: F401
    import kitfs.signing.enforce  # noqa: F401  (cryptography)
    import kitfs.signing.policy  # noqa: F401


def serve(channel: socket.socket) -> None:
    """Answer fork requests until the plugin closes the socket."""
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # the kernel reaps the daemons we fork
    channel.send(b"hello")
    while True:
        try:
            message = channel.recv(MAX_MESSAGE)
        except InterruptedError:
            continue
        if not message:
            return
        _answer(channel, message)


def _answer(channel: socket.socket, message: bytes) -> None:
    read_end, write_end = os.pipe()
    try:
        pid = os.fork()
    except OSError as exc:
        os.close(read_end)
        os.close(write_end)
        channel.send(json.dumps({"error": str(exc)}).encode())
        return
    if pid == 0:
        os.close(read_end)
        code = 70
        try:
            channel.close()
            code = _child(json.loads(message), write_end)
        finally:
            os._exit(code)
    os.close(write_end)
    try:
        socket.send_fds(channel, [json.dumps({"pid": pid}).encode()], [read_end])
    finally:
        os.close(read_end)


def _child(request: dict[str, object], pipe: int) -> int:
    """The daemon: kitfs mount's daemon body, reporting errors with their class names so the
    plugin can answer with the right gRPC status."""
    from kitfs.fs import mount as mounting
    from kitfs.fs.options import build_options

    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    reported = False

    def notify(state: str) -> None:
        nonlocal reported
        if not reported:
            reported = True
            with contextlib.suppress(OSError):
                os.write(pipe, state.encode())
                os.close(pipe)

    try:
        os.setsid()
        if request.get("docker_config"):
            os.environ["DOCKER_CONFIG"] = str(request["docker_config"])
        settings = request["settings"]
        assert isinstance(settings, dict)
        options = build_options(str(request["reference"]), str(request["target"]), settings)
        mounting._detach(options.log_path)
        mounting._configure_logging(options.debug, options.log_path)
        if request.get("grants"):
            import trio

            from kitfs.csi.access import check_access

            trio.run(check_access, options, Path(str(request["grants"])))
        from kitfs.fs.daemon import run

        run(options, notify)
        return 0
    except KitfsError as exc:
        log.error("%s", exc)
        notify(_error_line(exc, str(exc)))
        return exc.exit_code
    except BaseException as exc:
        log.exception("the volume's mount daemon failed")
        notify(_error_line(exc, f"internal error: {type(exc).__name__}: {exc}"))
        return 70
    finally:
        notify("error MountError the mount daemon stopped")


def _error_line(exc: BaseException, message: str) -> str:
    one_line = " ".join(message.split())
    return f"error {','.join(error_classes(exc))} {one_line}"


def main(argv: list[str]) -> int:
    channel = socket.socket(fileno=int(argv[0]))
    logging.basicConfig(level=logging.INFO, format="%(asctime)s spawner %(levelname)s: %(message)s")
    _preload()
    with contextlib.suppress(KeyboardInterrupt):
        serve(channel)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
