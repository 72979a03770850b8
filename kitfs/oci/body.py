"""Reading a large blob body at the speed of the socket.

httpx hands a response body over through httpcore and h11, which copy every byte four times on its
way (into h11's receive buffer, out of it twice, into a new bytes object), all on the event loop:
for a 1 GiB blob that was 0.4-1.1 s of CPU more than reading the socket directly (kitfs's download
of it: 2.85-3.6 s of CPU through httpx, 2.3-2.5 s this way), and the event loop is where every
download and every FUSE request waits its turn.

So a large answer whose length is known and whose body is sent as is (no content or transfer
encoding, HTTP/1.1) is read like this: the first piece comes through httpx as usual (it is all that
h11 holds buffered: h11 hands over everything buffered, up to the remaining length, in one event);
the rest is read straight from the connection (the ``network_stream`` extension httpcore gives
every HTTP/1.1 answer) in pieces of up to 1 MiB, each a fresh bytes object, copied once from the
kernel. h11 never learns that the body was read, so the connection is closed when the answer is,
not reused: worth it only for large bodies (a new connection costs a handshake).

Every byte still goes through the callers' digest checks (kitfs.oci.download, the span reader):
a piece lost or reordered here would fail those, never be used.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncGenerator, AsyncIterator
from typing import cast

import httpcore
import httpx

from kitfs.oci.deadline import received

FAST_MIN = 8 * 1024 * 1024  # bodies at least this large are read from the connection
PIECE = 1024 * 1024


def fast_path_applies(response: httpx.Response) -> bool:
    """Whether ``response``'s body may be read from its connection (see the module docstring)."""
    headers = response.headers
    length = headers.get("content-length", "")
    return (
        length.isdigit()
        and int(length) >= FAST_MIN
        and response.http_version == "HTTP/1.1"
        and headers.get("content-encoding", "identity").lower() == "identity"
        and "transfer-encoding" not in headers
        and response.extensions.get("network_stream") is not None
    )


async def body_pieces(
    response: httpx.Response, timeout: float | None
) -> AsyncGenerator[bytes, None]:
    """The body of ``response`` as it arrives (a streamed answer not yet read from). Errors are
    httpx's: a dropped connection is an ``httpx.TransportError``, as it would be through httpx."""
    if not fast_path_applies(response):
        async for chunk in response.aiter_raw():
            received(len(chunk))  # TransferTooSlow when the registry fell below the rate
            yield chunk
        return
    remaining = int(response.headers["content-length"])
    through_httpx = cast(AsyncGenerator[bytes, None], response.aiter_raw())
    # Closed only once the rest is read: closing it closes the connection the rest comes from.
    async with contextlib.aclosing(through_httpx):
        first = await anext(through_httpx, b"")
        received(len(first))
        remaining -= len(first)
        if first:
            yield first
        async for piece in _rest(response, remaining, timeout):
            yield piece


async def _rest(
    response: httpx.Response, remaining: int, timeout: float | None
) -> AsyncIterator[bytes]:
    stream: httpcore.AsyncNetworkStream = response.extensions["network_stream"]
    while remaining > 0:
        try:
            piece = await stream.read(min(PIECE, remaining), timeout)
        except httpcore.TimeoutException as exc:
            raise httpx.ReadTimeout(str(exc) or "timed out", request=response.request) from None
        except (httpcore.NetworkError, httpcore.ProtocolError) as exc:
            raise httpx.ReadError(
                str(exc) or type(exc).__name__, request=response.request
            ) from None
        if not piece:
            raise httpx.RemoteProtocolError(
                f"peer closed connection without sending complete message body "
                f"({remaining} bytes missing)",
                request=response.request,
            )
        remaining -= len(piece)
        received(len(piece))
        yield piece
