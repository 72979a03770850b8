"""Download one repository file into its place in a layer file, in a worker thread.

The bytes go from the connection to ``os.pwrite`` at the file's offset in its layer (nothing else
holds them), never past the file's published size. A file that was partly downloaded before
continues with a Range request; a server that answers the whole file instead restarts it from its
first byte. Dropped connections, 5xx and 429 answers are retried (continuing where the bytes
stopped); a refused token, a missing file or a size that does not match are not. Redirects (LFS
files answer with one to their CDN) are followed by httpx, which sends ``Authorization`` only to
the origin that was asked (it drops the header on a redirect to another host).

Verification of the bytes themselves happens when the layer is sealed (kitfs.hub.seal): that pass
reads them anyway, so a byte kept from an interrupted run is checked exactly like a fresh one.
"""

from __future__ import annotations

import logging
import os
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx

from kitfs.hub.errors import HubError, Stopped, VerificationError

log = logging.getLogger(__name__)

ATTEMPTS = 4
BACKOFF = 0.5
_RANGE_RE = re.compile(r"^bytes (\d+)-(\d+)/(\d+|\*)$")


@dataclass(frozen=True)
class FileJob:
    """One file to download: from ``url``, ``size`` bytes, to ``layer_file`` at ``offset``."""

    key: str
    path: str
    url: str
    size: int
    layer_file: Path
    offset: int


@dataclass(frozen=True)
class Transfer:
    """What every download of one import shares: the client, headers, the stop flag, and where
    received bytes are reported (the journal and the progress display)."""

    client: httpx.Client
    headers: dict[str, str]
    stop: threading.Event
    report: Callable[[str, int], None]
    restart: Callable[[str], None]
    refused: Callable[[int, bytes, str], HubError]  # status, error body, file path


class _Transient(Exception):
    """Worth another attempt: the connection dropped, the server is busy."""


class _Cursor:
    """How many bytes of the file are on disk; survives a failed attempt."""

    def __init__(self, done: int) -> None:
        self.done = done


def download(job: FileJob, done: int, transfer: Transfer) -> None:
    """Bring the file from ``done`` bytes to all of them, retrying transient failures."""
    cursor = _Cursor(done)
    fd = os.open(job.layer_file, os.O_WRONLY | os.O_CLOEXEC)
    try:
        for attempt in range(ATTEMPTS):
            try:
                _attempt(job, cursor, fd, transfer)
                return
            except _Transient as exc:
                if attempt + 1 == ATTEMPTS:
                    raise HubError(
                        f"downloading {job.path} failed after {ATTEMPTS} attempts: {exc}"
                    ) from None
                log.info(
                    "retrying %s after %s (%d of %d bytes)", job.path, exc, cursor.done, job.size
                )
                if transfer.stop.wait(BACKOFF * 2**attempt):
                    raise Stopped("stopped") from None
    finally:
        os.close(fd)


def _attempt(job: FileJob, cursor: _Cursor, fd: int, transfer: Transfer) -> None:
    headers = dict(transfer.headers)
    if cursor.done:
        headers["Range"] = f"bytes={cursor.done}-"
    try:
        with transfer.client.stream(
            "GET", job.url, headers=headers, follow_redirects=True
        ) as response:
            _check_status(job, cursor, response, transfer)
            _receive(job, cursor, fd, response, transfer)
    except httpx.TransportError as exc:
        raise _Transient(str(exc) or type(exc).__name__) from None
    if cursor.done != job.size:
        raise _Transient(f"the body ended after {cursor.done} of {job.size} bytes")


def _check_status(
    job: FileJob, cursor: _Cursor, response: httpx.Response, transfer: Transfer
) -> None:
    status = response.status_code
    if status == 206 and cursor.done:
        _check_content_range(job, cursor.done, response.headers.get("Content-Range", ""))
        return
    if status == 200:
        if cursor.done:
            log.info("%s: the server ignored Range; starting the file again", job.path)
            cursor.done = 0
            transfer.restart(job.key)
        length = response.headers.get("Content-Length")
        if length is not None and length.isdigit() and int(length) != job.size:
            raise VerificationError(
                f"{job.path}: the server sends {length} bytes, the Hub API lists {job.size}; "
                "nothing was stored"
            )
        return
    if status == 416 and cursor.done:  # the bytes we hold are not a prefix the server knows
        cursor.done = 0
        transfer.restart(job.key)
        raise _Transient("the server refused to continue the file; starting it again")
    if status == 429 or status >= 500:
        raise _Transient(f"HTTP {status}")
    raise transfer.refused(status, _head(response), job.path)


def _head(response: httpx.Response, limit: int = 4096) -> bytes:
    """The start of an error body (enough for its JSON message), not all of it."""
    data = b""
    for chunk in response.iter_raw():
        data += chunk
        if len(data) >= limit:
            break
    return data[:limit]


def _check_content_range(job: FileJob, start: int, value: str) -> None:
    match = _RANGE_RE.match(value.strip())
    total = match.group(3) if match else ""
    if match is None or int(match.group(1)) != start or (total != "*" and int(total) != job.size):
        raise HubError(f"{job.path}: the server answered Range {start}- with {value!r}: refused")


def _receive(
    job: FileJob, cursor: _Cursor, fd: int, response: httpx.Response, transfer: Transfer
) -> None:
    encoding = response.headers.get("Content-Encoding", "identity").strip().lower()
    if encoding not in ("", "identity"):
        raise HubError(f"{job.path}: the server sent it {encoding}-encoded though asked not to")
    for chunk in response.iter_raw():  # as received: a chunker would hold back bytes a cut loses
        if transfer.stop.is_set():
            raise Stopped("stopped")
        if cursor.done + len(chunk) > job.size:
            raise VerificationError(
                f"{job.path}: the server sent more than the {job.size} bytes the Hub API lists; "
                "nothing was stored"
            )
        _write_at(fd, chunk, job.offset + cursor.done, job)
        cursor.done += len(chunk)
        transfer.report(job.key, len(chunk))


def _write_at(fd: int, chunk: bytes, offset: int, job: FileJob) -> None:
    view = memoryview(chunk)
    written = 0
    try:
        while written < len(chunk):
            written += os.pwrite(fd, view[written:], offset + written)
    except OSError as exc:
        raise HubError(
            f"cannot write {job.path} into its layer in {job.layer_file.parent}: {exc.strerror}"
        ) from None
