"""Errors of ``kitfs import``."""

from __future__ import annotations

from kitfs.errors import KitfsError


class HubError(KitfsError):
    """A repository cannot be listed, fetched or imported."""


class HubAuthError(HubError):
    """The hub wants a token we do not have, or refused the one we sent."""


class VerificationError(HubError):
    """A downloaded file does not match the size or digest the hub published for it."""


class Stopped(HubError):
    """A download gave up because another one failed or the import was interrupted."""
