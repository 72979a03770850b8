"""Read a blob once, as it downloads: the download feeds a pipe, a worker thread consumes it.

The consumer (decompress, hash, index, stage files) must treat what it reads as unverified: it
writes only temp files, which its caller commits after :func:`read_while_downloading` returned,
that is after the download's own size and digest check passed. The order of errors follows the
bytes: when the download fails, its error is the one raised even if the consumer failed first (a
corrupted blob reads as corruption, not as hostile content). When the stream had to restart from
byte 0 (kitfs.oci.download breaks the pipe), the consumer is abandoned and ``fallback`` reads the
finished, verified file instead: correct, only slower. The same happens when a download goes on
from another endpoint after a mirror failed (the reader may have failed on the mirror's bytes).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import BinaryIO, TypeVar, cast

import trio

from kitfs.errors import leading_error
from kitfs.layers.pipe import BytePipe, PipeBroken
from kitfs.oci.download import Tee

log = logging.getLogger(__name__)

T = TypeVar("T")
PIPE_LIMIT = 32 << 20  # bytes in flight between a download and its reader


async def read_while_downloading(
    download: Callable[[Tee], Awaitable[None]],
    consume: Callable[[BinaryIO], T],
    fallback: Callable[[], T],
    what: str,
) -> T:
    """Run ``download(tee)`` while ``consume(stream)`` reads the same bytes in a worker thread;
    return what ``consume`` returned (or ``fallback()``, in a worker thread, see above)."""
    pipe = BytePipe(PIPE_LIMIT)
    done: list[T] = []
    failed: list[Exception] = []

    def reader() -> None:
        try:
            done.append(consume(cast(BinaryIO, pipe)))
        except Exception as exc:  # raised by the caller, after the download's outcome
            failed.append(exc)
        finally:
            pipe.abandon()

    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(trio.to_thread.run_sync, reader)
            try:
                await download(pipe)
            except BaseException:
                pipe.fail(PipeBroken("the download failed"))
                raise
            pipe.close()
    except BaseExceptionGroup as group:
        raise leading_error(group) from None
    if pipe.broken_reason:  # whatever the reader made of it, it was not (only) the blob's bytes
        log.info("%s: %s; reading the downloaded file again", what, pipe.broken_reason)
        return await trio.to_thread.run_sync(fallback)
    if failed:
        raise failed[0]
    log.info("%s: read in one pass as it arrived", what)
    return done[0]
