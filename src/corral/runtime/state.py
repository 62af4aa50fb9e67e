"""Where the runtime keeps what it knows about each container.

One directory per container under the state root (``--root``, by default
/run/corral-runtime)::

    <root>/<id>/state.json   the record: pid, bundle, cgroups, created time
    <root>/<id>/spec.json    the spec the container was created from
    <root>/<id>/exec.fifo    exists from create until start

The OCI status is never stored: it is worked out each time from the init
process (alive, and the same process as recorded, by its start time), the
exec fifo, and the freezer.
"""

from __future__ import annotations

import os

from corral import _json as json

from .errors import CorruptState, InvalidSpec, NotFound

DEFAULT_ROOT = "/run/corral-runtime"
FIFO = "exec.fifo"


_ID_CHARACTERS = frozenset(
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_+-."
)


def check_id(container_id: str) -> str:
    """An id is what runc takes: ASCII letters, digits and _+-. , up to 255."""
    if (
        not container_id
        or container_id in (".", "..")
        or len(container_id) > 255
        or not _ID_CHARACTERS.issuperset(container_id)
    ):
        raise InvalidSpec(
            "container id",
            f"{container_id!r} is not a valid id (use letters, digits and _+-., "
            "at most 255)",
        )
    return container_id


def container_dir(root: str, container_id: str) -> str:
    return os.path.join(root, check_id(container_id))


def process_start_time(pid: int) -> str | None:
    """Field 22 of /proc/PID/stat, or None if PID is gone or a zombie."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return None
    fields = data[data.rindex(b")") + 2 :].split()
    if fields[0] in (b"Z", b"X"):
        return None
    return fields[19].decode()


def write_json(path: str, value: object) -> None:
    """Write JSON next to PATH and rename it into place."""
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        f.write(json.dumps(value))
    os.replace(tmp, path)


class State:
    """The record of one container, as kept in state.json."""

    def __init__(self, root: str, container_id: str, record: dict,
                 spec: dict | None = None) -> None:
        self.root = root
        self.id = container_id
        self.dir = container_dir(root, container_id)
        self.record = record
        self._spec = spec

    @classmethod
    def load(cls, root: str, container_id: str) -> State:
        path = os.path.join(container_dir(root, container_id), "state.json")
        try:
            with open(path) as f:
                record = json.loads(f.read())
        except (FileNotFoundError, NotADirectoryError):
            raise NotFound(container_id) from None
        except ValueError:
            raise CorruptState(container_id, path) from None
        return cls(root, container_id, record)

    def save(self) -> None:
        write_json(os.path.join(self.dir, "state.json"), self.record)

    @property
    def pid(self) -> int:
        return int(self.record.get("pid") or 0)

    def spec(self) -> dict:
        if self._spec is None:
            with open(os.path.join(self.dir, "spec.json")) as f:
                self._spec = json.loads(f.read())
        return self._spec

    def init_alive(self) -> bool:
        pid = self.pid
        if pid <= 0:
            return False
        started = process_start_time(pid)
        return started is not None and started == self.record.get("pid_start")

    def status(self) -> str:
        if not self.init_alive():
            return "stopped"
        if os.path.exists(os.path.join(self.dir, FIFO)):
            return "created"
        return "paused" if self._frozen() else "running"

    def _frozen(self) -> bool:
        cgroups = self.record.get("cgroups") or {}
        freezer = cgroups.get("freezer")
        try:
            if freezer:
                with open(os.path.join(freezer, "freezer.state")) as f:
                    return f.read().strip() in ("FROZEN", "FREEZING")
            if "" in cgroups:  # cgroup v2
                with open(os.path.join(cgroups[""], "cgroup.freeze")) as f:
                    return f.read().strip() == "1"
        except OSError:
            pass
        return False

    def oci_state(self, status: str | None = None) -> dict:
        """The state the spec defines, plus the fields runc adds."""
        status = status or self.status()
        record = self.record
        return {
            "ociVersion": record.get("ociVersion", "1.1.0"),
            "id": self.id,
            "pid": self.pid if status != "stopped" else 0,
            "status": status,
            "bundle": record.get("bundle", ""),
            "rootfs": record.get("rootfs", ""),
            "created": record.get("created", ""),
            "owner": record.get("owner", ""),
            "annotations": record.get("annotations") or {},
        }


def list_states(root: str) -> list[State]:
    try:
        names = sorted(os.listdir(root))
    except FileNotFoundError:
        return []
    states = []
    for name in names:
        if not os.path.isdir(os.path.join(root, name)):
            continue
        try:
            states.append(State.load(root, name))
        except (NotFound, InvalidSpec, CorruptState):
            continue
    return states





def remove_dir(directory: str) -> None:
    """Remove a container's state directory (flat, so no shutil needed)."""
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        return
    for name in names:
        path = os.path.join(directory, name)
        try:
            os.unlink(path)
        except IsADirectoryError:
            import shutil

            shutil.rmtree(path, ignore_errors=True)
        except FileNotFoundError:
            pass
    try:
        os.rmdir(directory)
    except FileNotFoundError:
        pass
