"""Errors of the container manager.

The hierarchy, with the HTTP status the API server maps each class to::

    Error                   500: anything the engine reports to its caller
     ├── NotFound           404: no such container, exec or image
     ├── Conflict           409: a name in use, a running container removed
     │                      without force, a paused container stopped
     ├── InvalidArgument    400: a create body, option or reference that
     │                      makes no sense, or a field of the wrong type
     ├── NotModified        304: start of a running container, stop of a
     │                      stopped one
     └── StartFailed        500: the runtime refused to start the process;
                            ``exit_status`` is what ``docker run`` exits
                            with (127: no such program, 126: not runnable)

Messages are Docker's where clients match them (the 409 of a name in use,
``No such container: x``), else ``<operation> '<id>': <cause>``, lowercase
with no trailing period (docs/dev/errors.md). Nothing in the engine knows
HTTP statuses: the ``status`` attribute is for the edge.
"""

from __future__ import annotations


class Error(Exception):
    """Base class of every error the manager reports."""

    status = 500


class NotFound(Error):
    status = 404


class Conflict(Error):
    status = 409


class InvalidArgument(Error):
    status = 400


class NotModified(Error):
    status = 304


class StartFailed(Error):
    """The runtime could not run the container's process.

    Attributes:
        exit_status: the status ``docker run`` gives for this failure: 127
            when the program is not found, 126 when it cannot be executed,
            125 otherwise (Docker's own error).
    """

    def __init__(self, message: str, *, exit_status: int = 125) -> None:
        super().__init__(message)
        self.exit_status = exit_status

    @classmethod
    def from_runtime(cls, container_id: str, message: str) -> StartFailed:
        """The error of a start that failed with the runtime's ``message``.

        The runtime says why only in words (as runc does), so they are read
        here, once; callers take ``exit_status``. An OS error's text is put
        in Go's lowercase (``permission denied '/x'``), as dockerd's would
        be: the docker CLI picks its exit status by matching those words."""
        if message[:1].isupper() and message.endswith("'"):
            message = message[0].lower() + message[1:]
        lowered = message.lower()
        if "executable file not found" in lowered or "no such file or directory" in lowered:
            status = 127
        elif any(cause in lowered for cause in ("permission denied", "is a directory",
                                                "exec format error")):
            status = 126
        else:
            status = 125
        return cls(f"start container '{container_id}': {message}", exit_status=status)


def no_such_container(ref: str) -> NotFound:
    """Docker's 404 for a container reference that matches nothing."""
    return NotFound(f"No such container: {ref}")


def name_in_use(name: str, container_id: str) -> Conflict:
    """Docker's 409 for a taken name, word for word (clients show it)."""
    return Conflict(f'Conflict. The container name "/{name}" is already in use by '
                    f'container "{container_id}". You have to remove (or rename) that '
                    f'container to be able to reuse that name.')
