"""Errors a CSI call answers with: a gRPC status code name and the line ``kubectl describe pod``
shows. Kept free of grpc so the volume code can be used and tested without it."""

from __future__ import annotations

from kitfs.errors import KitfsError

# The status a kitfs error class maps to, most specific first (class names, because errors from a
# mount daemon reach the plugin as the names of their classes).
STATUS_BY_ERROR: tuple[tuple[str, str], ...] = (
    ("CsiError", ""),
    ("PolicyError", "INVALID_ARGUMENT"),
    ("UsageError", "INVALID_ARGUMENT"),
    ("InvalidReferenceError", "INVALID_ARGUMENT"),
    ("NotFoundError", "NOT_FOUND"),
    ("SignatureError", "PERMISSION_DENIED"),
    ("SigningKeyError", "INVALID_ARGUMENT"),
    ("AuthError", "PERMISSION_DENIED"),
    ("TransientError", "UNAVAILABLE"),
    ("RegistryError", "UNAVAILABLE"),
    ("DigestMismatchError", "FAILED_PRECONDITION"),
    ("UnsafeContentError", "FAILED_PRECONDITION"),
    ("KitfileError", "FAILED_PRECONDITION"),
)


class CsiError(KitfsError):
    """A CSI call failed with the gRPC status ``code`` (a ``grpc.StatusCode`` member's name)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def status_for(class_names: list[str]) -> str:
    """The status code for an error whose class and bases are ``class_names`` (INTERNAL if none)."""
    for name, code in STATUS_BY_ERROR:
        if name in class_names and code:
            return code
    return "INTERNAL"


def error_classes(exc: BaseException) -> list[str]:
    """The names of ``exc``'s class and its bases, as :func:`status_for` takes them."""
    return [cls.__name__ for cls in type(exc).__mro__]


def as_csi_error(exc: KitfsError) -> CsiError:
    """A kitfs error as the CSI error it answers with."""
    if isinstance(exc, CsiError):
        return exc
    return CsiError(status_for(error_classes(exc)), str(exc))
