"""Errors of the image layer.

The hierarchy::

    Error                       anything the image layer reports to its caller
     ├── InvalidArgument        a reference, platform or option that makes no sense
     ├── NotFound               no such image, tag, blob or snapshot
     ├── AlreadyExists          a name or snapshot key that is taken
     ├── FailedPrecondition     the operation is refused in the current state
     │                          (an image in use, a snapshot with children)
     ├── Unauthorized           the registry refused our credentials
     ├── Unavailable            the registry is down or keeps failing (after retries)
     ├── RegistryError          the registry answered something we cannot use
     ├── BadContent             content that fails its checks: digest or size
     │    │                     mismatch, a malformed or unknown manifest
     │    └── LayerError        a layer tar that is broken or hostile
     ├── NotSupported           a valid thing we do not implement (schema 1)
     └── NoSpace                the disk of the store is full (ENOSPC, EDQUOT)

The manager maps these to HTTP statuses at its edge (NotFound 404,
AlreadyExists and FailedPrecondition 409, InvalidArgument 400); nothing in
this package knows about HTTP statuses of its own API.

Messages are lowercase with no trailing period and name the image, blob or
path they concern (docs/dev/errors.md).
"""

from __future__ import annotations

import errno
import sqlite3


class Error(Exception):
    """Base class of every error the image layer reports."""


class InvalidArgument(Error):
    pass


class NotFound(Error):
    pass


class AlreadyExists(Error):
    pass


class FailedPrecondition(Error):
    pass


class Unauthorized(Error):
    pass


class Unavailable(Error):
    pass


class RegistryError(Error):
    pass


class BadContent(Error):
    pass


class LayerError(BadContent):
    """A layer that cannot be applied; names the entry where it went wrong."""

    def __init__(self, message: str, *, entry: str | None = None) -> None:
        super().__init__(message)
        self.entry = entry


class NotSupported(Error):
    pass


class NoSpace(Error):
    """The disk holding the store is full; the message says what to do."""


def is_no_space(exc: BaseException) -> bool:
    """Whether ``exc`` is a full disk: a write's ENOSPC or EDQUOT, or SQLite's
    "database or disk full"."""
    if isinstance(exc, OSError):
        return exc.errno in (errno.ENOSPC, errno.EDQUOT)
    return (isinstance(exc, sqlite3.Error)
            and getattr(exc, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL)


def no_space(what: str, where) -> NoSpace:
    """The NoSpace error for ``what`` (the image and its blob or layer)."""
    return NoSpace(f"{what}: no space left on device (the disk of '{where}' is "
                   f"full): free some space on it and pull again")
