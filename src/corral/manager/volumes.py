"""Named volumes (Docker's ``local`` driver) and a container's mounts.

A volume is a directory ``<root>/volumes/<name>/_data`` and a row of
``<root>/volumes.db`` (SQLite, WAL, shared by every process on the root):
name, driver, created, labels, options. Which containers use it is a second
table, ``users``: a row is written in the same transaction as the volume is
looked up or made for a create, and deleted when the container goes, so
``volume rm`` (which checks and deletes in one transaction too) can never
take a volume from under a container that is being made.

Anonymous volumes (64 hex digits, from ``Config.Volumes``, ``-v /path`` or
``--mount type=volume`` with no source) carry Docker's label
``com.docker.volume.anonymous``; ``rm -v`` and ``--rm`` remove them when no
other container uses them, and prune takes only them unless asked for all
(Docker's API 1.42 and later).

First use: a volume that is empty when a container is made gets the
content the image has at the mount point (owners, modes, times, xattrs,
symlinks as symlinks, hard links kept), unless ``nocopy``. The image is
hostile: the mount point is opened under the container's rootfs with
openat2 RESOLVE_IN_ROOT (a symlink ``/data -> /etc`` means the image's /etc,
never the host's), and below it every entry is opened by one name relative
to its parent's fd with O_NOFOLLOW, so nothing can lead the copy outside.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import stat
import threading
import time
from pathlib import Path

from .. import _syscalls
from .._sqlite import open_db, transaction
from . import volumes_model as model
from .docker_model import format_time
from .errors import Conflict, InvalidArgument, NotFound
from .volumes_model import ANONYMOUS_LABEL, MountPoint

_SCHEMA = """
CREATE TABLE IF NOT EXISTS volumes (
    name TEXT PRIMARY KEY,
    driver TEXT NOT NULL,
    created REAL NOT NULL,
    labels TEXT NOT NULL,           -- JSON object
    options TEXT NOT NULL,          -- JSON object
    made_for TEXT NOT NULL          -- the container whose create made it, or ''
);
CREATE TABLE IF NOT EXISTS users (
    volume TEXT NOT NULL,
    container TEXT NOT NULL,
    PRIMARY KEY (volume, container)
);
CREATE INDEX IF NOT EXISTS users_by_container ON users(container);
"""

LIST_FILTERS = ("dangling", "name", "label", "driver")
PRUNE_FILTERS = ("label", "label!", "all")
_TRUE, _FALSE = ("1", "true"), ("0", "false")


def no_such_volume(name: str) -> NotFound:
    return NotFound(f"get {name}: no such volume")


class VolumeStore:
    """The volumes of one root; one connection, safe across threads."""

    def __init__(self, root: Path) -> None:
        self.directory = Path(root) / "volumes"
        self.directory.mkdir(mode=0o701, parents=True, exist_ok=True)
        self._lock = threading.RLock()
        self._db = open_db(Path(root) / "volumes.db", _SCHEMA)

    def close(self) -> None:
        self._db.close()

    def _query(self, sql: str, args: tuple = ()) -> list[tuple]:
        with self._lock:
            return self._db.execute(sql, args).fetchall()

    def data(self, name: str) -> Path:
        return self.directory / name / "_data"

    # Records ---------------------------------------------------------------

    def document(self, row: tuple) -> dict:
        """``GET /volumes/{name}``'s body for a row."""
        name, driver, created, labels, options = row[:5]
        return {"CreatedAt": format_time(int(created)).replace(".000000000", ""),
                "Driver": driver, "Labels": json.loads(labels) or None,
                "Mountpoint": str(self.data(name)), "Name": name,
                "Options": json.loads(options) or None, "Scope": "local"}

    def row(self, name: str) -> tuple:
        rows = self._query("SELECT * FROM volumes WHERE name = ?", (name,))
        if not rows:
            raise no_such_volume(name)
        return rows[0]

    def rows(self) -> list[tuple]:
        return self._query("SELECT * FROM volumes ORDER BY name")

    def users(self, name: str) -> list[str]:
        return [r[0] for r in self._query(
            "SELECT container FROM users WHERE volume = ? ORDER BY container", (name,))]

    def create(self, name: str, *, labels: dict, options: dict,
               made_for: str = "", user: str = "") -> tuple:
        """The row of ``name``, made if missing; ``user`` (a container ID)
        recorded as using it in the same transaction."""
        with transaction(self._db, self._lock) as db:
            db.execute("INSERT OR IGNORE INTO volumes VALUES (?,?,?,?,?,?)",
                       (name, "local", time.time(), json.dumps(labels),
                        json.dumps(options), made_for))
            if user:
                db.execute("INSERT OR IGNORE INTO users VALUES (?,?)", (name, user))
            row = db.execute("SELECT * FROM volumes WHERE name = ?", (name,)).fetchone()
        # Made after the row: a row whose directory a crash left unmade gets
        # it on its next use.
        (self.directory / name).mkdir(mode=0o701, exist_ok=True)
        self.data(name).mkdir(mode=0o755, exist_ok=True)
        return row

    def remove(self, name: str, *, force: bool = False) -> int:
        """Delete an unused volume; the bytes freed. Conflict when in use."""
        with transaction(self._db, self._lock) as db:
            if not db.execute("SELECT 1 FROM volumes WHERE name = ?", (name,)).fetchone():
                if force:
                    return 0
                raise no_such_volume(name)
            users = [r[0] for r in db.execute(
                "SELECT container FROM users WHERE volume = ? ORDER BY container",
                (name,))]
            if users:
                raise Conflict(f"remove {name}: volume is in use - [{' '.join(users)}]")
            db.execute("DELETE FROM volumes WHERE name = ?", (name,))
        size = _usage(self.data(name))
        shutil.rmtree(self.directory / name, ignore_errors=True)
        return size

    def release(self, container_id: str, *, anonymous: bool = False,
                undo: bool = False) -> list[str]:
        """The container no longer uses its volumes. With ``anonymous`` its
        anonymous ones go too, with ``undo`` those its create made, when no
        other container uses them; the names removed."""
        with transaction(self._db, self._lock) as db:
            names = [r[0] for r in db.execute(
                "SELECT volume FROM users WHERE container = ?", (container_id,))]
            db.execute("DELETE FROM users WHERE container = ?", (container_id,))
            gone = []
            for name in names:
                row = db.execute("SELECT labels, made_for FROM volumes WHERE name = ?",
                                 (name,)).fetchone()
                if row is None or db.execute("SELECT 1 FROM users WHERE volume = ?",
                                             (name,)).fetchone():
                    continue
                if (anonymous and ANONYMOUS_LABEL in json.loads(row[0])) or \
                        (undo and row[1] == container_id):
                    db.execute("DELETE FROM volumes WHERE name = ?", (name,))
                    gone.append(name)
        for name in gone:
            shutil.rmtree(self.directory / name, ignore_errors=True)
        return gone

    def forget_users(self, known: set[str]) -> list[str]:
        """Drop the use of containers that have no record (a crash between
        a record's deletion and this store's); the IDs dropped."""
        stale = sorted({r[0] for r in self._query("SELECT container FROM users")} - known)
        for container_id in stale:
            self.release(container_id)
        return stale


# Filters -----------------------------------------------------------------------

def _normalize(filters: dict | None, known: tuple[str, ...]) -> dict[str, list[str]]:
    from .filters import parse

    result = parse(filters, known)
    for key in ("dangling", "all"):
        for value in result.get(key, []):
            if value.lower() not in _TRUE + _FALSE:
                raise InvalidArgument(f"invalid filter '{key}={value}'")
    return result


def _labels_match(labels: dict, wanted: list[str]) -> bool:
    for item in wanted:
        key, sep, value = item.partition("=")
        if key not in labels or (sep and labels[key] != value):
            return False
    return True


def _accept(document: dict, used: bool, filters: dict[str, list[str]]) -> bool:
    labels = document["Labels"] or {}
    if "dangling" in filters:
        wanted = {value.lower() in _TRUE for value in filters["dangling"]}
        if (not used) not in wanted:
            return False
    if "name" in filters and not any(n in document["Name"] for n in filters["name"]):
        return False
    if "driver" in filters and document["Driver"] not in filters["driver"]:
        return False
    if "label" in filters and not _labels_match(labels, filters["label"]):
        return False
    return not ("label!" in filters and filters["label!"]
                and _labels_match(labels, filters["label!"]))


def _usage(path: Path) -> int:
    total = 0
    for directory, _, files in os.walk(path):
        for name in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(directory, name)).st_blocks * 512
    return total


# The engine's volume operations ----------------------------------------------------

_store_lock = threading.Lock()


class VolumeOps:
    """Mixin of Engine: the ``/volumes`` endpoints and a container's mounts."""

    root: Path

    @property
    def volumes(self) -> VolumeStore:
        with _store_lock:
            store = self.__dict__.get("_volume_store")
            if store is None:
                store = self.__dict__["_volume_store"] = VolumeStore(self.root)
            return store

    def close_volumes(self) -> None:
        store = self.__dict__.pop("_volume_store", None)
        if store is not None:
            store.close()

    def volume_create(self, body: dict | None = None) -> dict:
        """``POST /volumes/create`` (Name, Driver, DriverOpts, Labels): the
        volume's document; an existing name is returned as it is."""
        body = body or {}
        name = body.get("Name") or secrets.token_hex(32)
        driver = body.get("Driver") or "local"
        labels, options = body.get("Labels") or {}, body.get("DriverOpts") or {}
        if not isinstance(name, str) or not isinstance(labels, dict) or \
                not isinstance(options, dict):
            raise InvalidArgument("volume create: Name must be a string, Labels and "
                                  "DriverOpts objects")
        model.check_volume_name(name)
        if driver != "local":
            raise NotFound(f'create {name}: error looking up volume plugin {driver}: '
                           f'plugin "{driver}" not found')
        if options:
            # TODO: the local driver's type/device/o options (mounting an NFS
            # share or a tmpfs as the volume) are refused: a user who passes
            # -o gets this error rather than a plain directory.
            raise InvalidArgument(f"create {name}: driver options "
                                  f"({', '.join(sorted(options))}) are not supported "
                                  f"by corral yet")
        if not body.get("Name"):
            labels = {**labels, ANONYMOUS_LABEL: ""}
        return self.volumes.document(self.volumes.create(name, labels=labels,
                                                         options={}))

    def volume_inspect(self, name: str) -> dict:
        """``GET /volumes/{name}``."""
        return self.volumes.document(self.volumes.row(name))

    def volume_list(self, filters: dict | None = None) -> dict:
        """``GET /volumes``: ``{"Volumes": [...], "Warnings": None}``."""
        wanted = _normalize(filters, LIST_FILTERS)
        store = self.volumes
        volumes = [store.document(row) for row in store.rows()]
        volumes = [v for v in volumes if _accept(v, bool(store.users(v["Name"])), wanted)]
        return {"Volumes": volumes, "Warnings": None}

    def volume_remove(self, name: str, *, force: bool = False) -> None:
        """``DELETE /volumes/{name}``: Conflict while a container uses it."""
        self.volumes.remove(name, force=force)

    def volume_prune(self, filters: dict | None = None, *,
                     all_by_default: bool = False) -> dict:
        """``POST /volumes/prune``: unused anonymous volumes (every unused one
        with ``all=true``, or by default before API 1.42)."""
        wanted = _normalize(filters, PRUNE_FILTERS)
        everything = all_by_default
        if wanted.get("all"):
            everything = any(v.lower() in _TRUE for v in wanted.pop("all"))
        store, deleted, reclaimed = self.volumes, [], 0
        for row in store.rows():
            document = store.document(row)
            anonymous = ANONYMOUS_LABEL in (document["Labels"] or {})
            if not (everything or anonymous) or store.users(document["Name"]):
                continue
            if not _accept(document, False, wanted):
                continue
            with contextlib.suppress(Conflict, NotFound):
                reclaimed += store.remove(document["Name"])
                deleted.append(document["Name"])
        return {"VolumesDeleted": deleted or None, "SpaceReclaimed": reclaimed}

    # A container's mounts -----------------------------------------------------

    def _container_mounts(self, container_id: str, host: dict, config_volumes: dict,
                          image_volumes: dict, bundle: Path, spec: dict) -> list[dict]:
        """Resolve, make and fill what the create asks; add the mounts to
        ``spec``; the records the container's document keeps."""
        inherited = []
        for text in host.get("VolumesFrom") or []:
            ref, rw = model.parse_volumes_from(text)
            source = self.resolve(ref)
            inherited += model.inherited(
                [model.from_record(d) for d in source.document.get("mounts") or []], rw)
        points = model.requested(host, config_volumes, image_volumes, inherited)
        for point in points:
            if point.type == "bind" and point.create_source:
                _make_source(point.source)
            if point.type == "bind":
                _check_propagation(point.source, point.propagation)
            elif point.type == "volume":
                self._use_volume(container_id, point, bundle / "rootfs")
        mounts = [model.spec_mount(point) for point in points]
        taken = {m["destination"] for m in mounts}
        kept = [m for m in spec["mounts"] if m["destination"] not in taken]
        spec["mounts"] = kept + model.by_depth(mounts)
        return [point.record() for point in points]

    def _use_volume(self, container_id: str, point: MountPoint, rootfs: Path) -> None:
        labels = dict(point.labels)
        if not point.name:
            point.name = secrets.token_hex(32)
            labels[ANONYMOUS_LABEL] = ""
        self.volumes.create(point.name, labels=labels, options={}, made_for=container_id,
                            user=container_id)
        point.source = str(self.volumes.data(point.name))
        if point.copy:
            copy_up(rootfs, point.destination, Path(point.source))

    def _release_mounts(self, container_id: str, *, anonymous: bool = False,
                        undo: bool = False) -> None:
        self.volumes.release(container_id, anonymous=anonymous, undo=undo)


def _make_source(path: str) -> None:
    """``-v /host:/ctr`` makes a missing host directory, as dockerd does; a
    file, or anything else already there, is bound as it is."""
    if os.path.lexists(path):
        return
    try:
        os.makedirs(path, mode=0o755, exist_ok=True)
    except OSError as exc:
        raise InvalidArgument(f"error while creating mount source path '{path}': "
                              f"mkdir {path}: {exc.strerror.lower()}") from exc


def _check_propagation(source: str, propagation: str) -> None:
    """A shared or slave bind needs a source whose mount propagates, else
    it would silently be private (dockerd refuses it the same way)."""
    if propagation not in ("shared", "rshared", "slave", "rslave"):
        return
    mount_point, fields = _mount_of(source)
    shared = any(f.startswith("shared:") for f in fields)
    if propagation.endswith("shared") and not shared:
        raise InvalidArgument(f"path {source} is mounted on {mount_point} but it is not "
                              f"a shared mount")
    if not shared and not any(f.startswith("master:") for f in fields):
        raise InvalidArgument(f"path {source} is mounted on {mount_point} but it is not "
                              f"a shared or slave mount")


def _mount_of(path: str) -> tuple[str, list[str]]:
    """The mount point holding ``path`` and its mountinfo optional fields."""
    real = os.path.realpath(path)
    best, fields = "/", []
    with open("/proc/self/mountinfo") as mountinfo:
        for line in mountinfo:
            words = line.split()
            point = words[4].replace("\\040", " ")
            inside = real == point or real.startswith(point.rstrip("/") + "/")
            if inside and len(point) >= len(best):
                best, fields = point, words[6:words.index("-")]
    return best, fields


# First use: the image's content into an empty volume -----------------------------

_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def copy_up(rootfs: Path, destination: str, data: Path) -> bool:
    """Copy what the image has at ``destination`` into ``data`` if ``data``
    is empty; whether anything was copied. Never follows a link outside
    ``rootfs`` (module docstring)."""
    root = os.open(rootfs, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        source = _syscalls.openat2(
            root, destination.lstrip("/") or ".", os.O_RDONLY | os.O_DIRECTORY,
            _syscalls.RESOLVE_IN_ROOT | _syscalls.RESOLVE_NO_MAGICLINKS)
    except (FileNotFoundError, NotADirectoryError):
        return False
    finally:
        os.close(root)
    try:
        target = os.open(data, _DIR)
        try:
            if os.listdir(target) or not os.listdir(source):
                return False
            links: dict[tuple[int, int], int] = {}
            try:
                _copy_tree(source, target, links)
            finally:
                for fd in links.values():
                    os.close(fd)
            _attributes(target, os.fstat(source), source)
            return True
        finally:
            os.close(target)
    finally:
        os.close(source)


def _copy_tree(source: int, target: int, links: dict[tuple[int, int], int]) -> None:
    for name in sorted(os.listdir(source)):
        info = os.stat(name, dir_fd=source, follow_symlinks=False)
        mode = info.st_mode
        if stat.S_ISDIR(mode):
            os.mkdir(name, 0o700, dir_fd=target)
            inner, outer = os.open(name, _DIR, dir_fd=source), os.open(name, _DIR,
                                                                        dir_fd=target)
            try:
                _copy_tree(inner, outer, links)
                _attributes(outer, info, inner)
            finally:
                os.close(inner)
                os.close(outer)
        elif stat.S_ISLNK(mode):
            os.symlink(os.readlink(name, dir_fd=source), name, dir_fd=target)
            os.chown(name, info.st_uid, info.st_gid, dir_fd=target, follow_symlinks=False)
            os.utime(name, ns=(info.st_atime_ns, info.st_mtime_ns), dir_fd=target,
                     follow_symlinks=False)
        elif stat.S_ISREG(mode):
            _copy_file(name, info, source, target, links)
        elif stat.S_ISCHR(mode) or stat.S_ISBLK(mode) or stat.S_ISFIFO(mode):
            os.mknod(name, mode, info.st_rdev, dir_fd=target)
            fd = os.open(name, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=target)
            try:
                _attributes(f"/proc/self/fd/{fd}", info, None)
            finally:
                os.close(fd)


def _copy_file(name: str, info: os.stat_result, source: int, target: int,
               links: dict[tuple[int, int], int]) -> None:
    key = (info.st_dev, info.st_ino)
    if info.st_nlink > 1 and key in links:
        # A hard link of a file already copied: linked by its fd, not a path.
        os.link(f"/proc/self/fd/{links[key]}", name, dst_dir_fd=target)
        return
    inner = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=source)
    outer = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW |
                    os.O_CLOEXEC, 0o600, dir_fd=target)
    try:
        _copy_data(inner, outer, info.st_size)
        _attributes(outer, info, inner)
        if info.st_nlink > 1:
            links[key] = os.open(name, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC,
                                 dir_fd=target)
    finally:
        os.close(inner)
        os.close(outer)


def _copy_data(inner: int, outer: int, size: int) -> None:
    done = 0
    while done < size:
        try:
            count = os.copy_file_range(inner, outer, size - done)
        except OSError:
            count = os.sendfile(outer, inner, None, size - done)
        if count == 0:
            break
        done += count


def _attributes(fd: int | str, info: os.stat_result, source: int | None) -> None:
    """Owner, then mode (a chown clears set-uid bits), xattrs, times."""
    os.chown(fd, info.st_uid, info.st_gid)
    os.chmod(fd, stat.S_IMODE(info.st_mode))
    if source is not None:
        with contextlib.suppress(OSError):
            for key in os.listxattr(source):
                os.setxattr(fd, key, os.getxattr(source, key))
    os.utime(fd, ns=(info.st_atime_ns, info.st_mtime_ns))
