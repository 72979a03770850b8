"""The kitfs error hierarchy: every error a user can meet carries a message they can act on."""

from __future__ import annotations


class KitfsError(Exception):
    """Base of all kitfs errors; the CLI prints the message and exits non-zero."""

    exit_code = 1


class UsageError(KitfsError):
    """The command line or an argument is wrong."""

    exit_code = 2


class InvalidReferenceError(KitfsError):
    """A ModelKit reference does not parse."""


class KitfileError(KitfsError):
    """A Kitfile is malformed or fails validation."""


class NotFoundError(KitfsError):
    """A ModelKit, tag, blob or file does not exist."""


class StorageError(KitfsError):
    """Local storage is damaged or cannot be written."""


class DigestMismatchError(KitfsError):
    """Bytes did not hash to the digest that named them."""

    def __init__(self, expected: str, actual: str, what: str = "blob") -> None:
        super().__init__(f"{what} failed verification: expected {expected}, got {actual}")
        self.expected = expected
        self.actual = actual


class UnsafeContentError(KitfsError):
    """A layer holds an entry that must not be extracted or served (escaping path, link, device)."""


class PackError(KitfsError):
    """A context directory cannot be packed as its Kitfile asks."""


class RegistryError(KitfsError):
    """A registry refused a request or answered something we cannot use."""


class AuthError(RegistryError):
    """A registry refused our credentials or demanded ones we do not have."""


class TransientError(RegistryError):
    """A failure worth retrying: a dropped connection, a 5xx, a 429."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class MountError(KitfsError):
    """A mount cannot be set up or torn down."""


def first_kitfs_error(group: BaseExceptionGroup[BaseException]) -> KitfsError | None:
    """The first kitfs error among concurrent tasks that failed together (trio's nurseries raise
    groups), so that a caller can raise it as itself and the user sees its one line."""
    matched, _ = group.split(KitfsError)
    while isinstance(matched, BaseExceptionGroup):
        matched = matched.exceptions[0]  # type: ignore[assignment]
    return matched


def leading_error(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """The one exception to raise for a group from a nursery: the first kitfs error, else the
    first other error, else (only cancellations inside) the group itself, for trio to handle."""
    first = first_kitfs_error(group)
    if first is not None:
        return first
    for leaf in _leaves(group):
        if isinstance(leaf, Exception):
            return leaf
    return group


def _leaves(group: BaseExceptionGroup[BaseException]) -> list[BaseException]:
    found: list[BaseException] = []
    for exc in group.exceptions:
        found.extend(_leaves(exc) if isinstance(exc, BaseExceptionGroup) else [exc])
    return found
