"""Errors of the shim layer.

The hierarchy::

    Error                   anything corral.shim reports to its caller
     ├── InvalidArgument    a command-line option, restart policy or request
     │                      that makes no sense
     ├── RuntimeFailed      a corral-runtime verb failed; the message is the
     │                      runtime's own last error line
     └── ShimUnavailable    the shim's socket is gone or answered nonsense
                            (the shim died, or never started)

An answer ``{"error": ...}`` from a live shim is raised as ``Error`` with the
shim's message. Messages are lowercase with no trailing period and name the
container or path they concern (docs/dev/errors.md).
"""

from __future__ import annotations


class Error(Exception):
    """Base class of every error the shim layer reports."""


class InvalidArgument(Error):
    pass


class RuntimeFailed(Error):
    pass


class ShimUnavailable(Error):
    pass
