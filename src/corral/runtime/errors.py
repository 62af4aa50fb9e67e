"""Errors of the runtime layer.

The hierarchy::

    Error                     anything the runtime reports to its caller
     ├── InvalidSpec          config.json is missing, malformed or inconsistent
     ├── NotSupported         a valid spec field this runtime does not implement
     ├── NotFound             no container with that id
     ├── AlreadyExists        the id is taken
     ├── FailedPrecondition   the container is in the wrong state for the verb
     ├── HookError            a hook failed or timed out
     ├── SetupError           building the container failed (a syscall, a path)
     └── CorruptState         a state.json that cannot be read

Messages are lowercase with no trailing period. Some phrases are matched by
containerd and must not change: ``does not exist`` and ``container not
running`` (see docs/dev/errors.md).
"""

from __future__ import annotations


class Error(Exception):
    """Base class of every error the runtime reports."""


class InvalidSpec(Error):
    """config.json is wrong; the message names the field."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field


class NotSupported(Error):
    def __init__(self, field: str, detail: str = "not supported by corral-runtime") -> None:
        super().__init__(f"{field}: {detail}")
        self.field = field


class NotFound(Error):
    def __init__(self, container_id: str) -> None:
        super().__init__(f'container "{container_id}" does not exist')
        self.container_id = container_id


class AlreadyExists(Error):
    def __init__(self, container_id: str) -> None:
        super().__init__(f'container with id "{container_id}" already exists')
        self.container_id = container_id


class FailedPrecondition(Error):
    pass


class HookError(Error):
    pass


class SetupError(Error):
    pass


class CorruptState(Error):
    def __init__(self, container_id: str, path: str) -> None:
        super().__init__(
            f"state of container \"{container_id}\" is unreadable: '{path}' is not "
            "valid JSON; `delete --force` removes the record (not the processes)"
        )
        self.container_id = container_id
