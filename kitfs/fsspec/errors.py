"""kitfs errors as the exceptions Python's file APIs raise, in one place.

fsspec, pandas and pyarrow expect ``FileNotFoundError`` for what does not exist and ``OSError`` for
what cannot be read; a refused signature is a ``PermissionError``, a malformed URL or option a
``ValueError``. Every message is kitfs's own, naming the ModelKit, the layer and the span.
"""

from __future__ import annotations

import errno

from kitfs.errors import (
    AuthError,
    InvalidReferenceError,
    KitfsError,
    NotFoundError,
    UsageError,
)
from kitfs.signing import SignatureError, SigningKeyError


def as_python_error(exc: KitfsError) -> Exception:
    """The built-in exception to raise for ``exc`` (with ``exc`` as its cause)."""
    message = str(exc)
    if isinstance(exc, NotFoundError):
        return FileNotFoundError(errno.ENOENT, message)
    if isinstance(exc, (SignatureError, AuthError)):
        return PermissionError(errno.EACCES, message)
    if isinstance(exc, (UsageError, InvalidReferenceError, SigningKeyError)):
        return ValueError(message)
    return OSError(errno.EIO, message)
