"""Mount points of a container as the Docker Engine API describes them:
``HostConfig.Binds`` (``-v``), ``HostConfig.Mounts`` (``--mount``), the
image's and the body's ``Config.Volumes`` (anonymous volumes) and
``HostConfig.VolumesFrom``, parsed and checked into ``MountPoint`` records,
then turned into OCI runtime spec mounts (config.md, "Mounts") and into the
``Mounts`` of inspect.

Pure: nothing here touches the disk but ``os.path.exists`` of a ``--mount``
bind source. The rules and messages are dockerd's (its volume/mounts linux
parser: the code here is ours), since the docker CLI shows them as they are:
``invalid mode: x``, ``invalid mount config for type "bind": ...``,
``Duplicate mount point: /x``.
"""

from __future__ import annotations

import os
import re
from dataclasses import asdict, dataclass, field

from .errors import InvalidArgument

# Docker's local driver names: two characters at least, this alphabet.
_NAME = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9_.-]+")
ANONYMOUS_LABEL = "com.docker.volume.anonymous"

_RW_MODES = {"rw", "ro"}
_LABEL_MODES = {"z", "Z"}
_COPY_MODES = {"nocopy"}
_CONSISTENCY = {"consistent", "cached", "delegated"}
PROPAGATIONS = ("shared", "rshared", "slave", "rslave", "private", "rprivate")
_MOUNT_TYPES = ("bind", "volume", "tmpfs")


@dataclass
class MountPoint:
    """One mount of a container, as the engine keeps it in the record.

    ``source`` is the host path of a bind (or of a volume once resolved);
    ``name`` the volume's name (empty until an anonymous one is made).
    """

    type: str
    destination: str
    source: str = ""
    name: str = ""
    rw: bool = True
    mode: str = ""
    propagation: str = ""
    copy: bool = True
    anonymous: bool = False
    create_source: bool = False
    labels: dict = field(default_factory=dict)
    tmpfs: list = field(default_factory=list)

    def record(self) -> dict:
        return asdict(self)


def from_record(data: dict) -> MountPoint:
    return MountPoint(**data)


def check_volume_name(name: str) -> None:
    """Docker's local driver rule; InvalidArgument with its words."""
    if len(name) == 1:
        raise InvalidArgument(f"create {name}: volume name is too short, names should "
                              f"be at least two alphanumeric characters")
    if not _NAME.fullmatch(name):
        raise InvalidArgument(
            f'create {name}: "{name}" includes invalid characters for a local volume '
            f'name, only "[a-zA-Z0-9][a-zA-Z0-9_.-]" are allowed. If you intended to '
            f'pass a host directory, use absolute path')


def _invalid_config(kind: str, cause: str) -> InvalidArgument:
    return InvalidArgument(f'invalid mount config for type "{kind}": {cause}')


def _check_destination(destination: str, kind: str) -> str:
    if not destination:
        raise _invalid_config(kind, "field Target must not be empty")
    if not destination.startswith("/"):
        raise _invalid_config(kind, f"invalid mount path: '{destination}' mount path "
                                    f"must be absolute")
    clean = os.path.normpath(destination)
    if clean == "/":
        raise _invalid_config(kind, "invalid specification: destination can't be '/'")
    return clean


# -v / HostConfig.Binds -------------------------------------------------------------

def _modes(text: str) -> list[str]:
    """The mode list of ``-v``: at most one of each kind, else Docker's error."""
    words = text.split(",")
    kinds = (_RW_MODES, _LABEL_MODES, _COPY_MODES, _CONSISTENCY, set(PROPAGATIONS))
    for kind in kinds:
        if sum(word in kind for word in words) > 1:
            raise InvalidArgument(f"invalid mode: {text}")
    if not all(any(word in kind for kind in kinds) for word in words):
        raise InvalidArgument(f"invalid mode: {text}")
    return words


def parse_bind(text: str) -> MountPoint:
    """One ``-v`` item: ``/host:/ctr[:mode]``, ``name:/ctr[:mode]`` or ``/ctr``."""
    parts = text.split(":")
    if len(parts) > 3 or not all(parts):
        raise InvalidArgument(f"invalid volume specification: '{text}'")
    if len(parts) == 1:
        destination = _check_destination(parts[0], "volume")
        return MountPoint("volume", destination, anonymous=True)
    source, destination = parts[0], parts[1]
    modes = _modes(parts[2]) if len(parts) == 3 else []
    kind = "bind" if source.startswith("/") else "volume"
    try:
        destination = _check_destination(destination, kind)
        if kind == "bind" and "nocopy" in modes:
            raise _invalid_config(kind, "field VolumeOptions must not be specified")
    except InvalidArgument as exc:
        raise InvalidArgument(f"invalid volume specification: '{text}': {exc}") from None
    propagation = next((m for m in modes if m in PROPAGATIONS), "")
    point = MountPoint(kind, destination, rw="ro" not in modes, mode=",".join(modes))
    if kind == "bind":
        point.source = os.path.normpath(source)
        point.propagation = propagation or "rprivate"
        point.create_source = True
    else:
        check_volume_name(source)
        point.name = source
        point.copy = "nocopy" not in modes
        point.mode = point.mode or "z"
    return point


# --mount / HostConfig.Mounts -------------------------------------------------------

def parse_mount(mount: dict) -> MountPoint:
    """One ``HostConfig.Mounts`` entry (Docker's mount.Mount)."""
    kind = mount.get("Type") or ""
    if kind not in _MOUNT_TYPES:
        if kind in ("npipe", "cluster"):
            raise InvalidArgument(f"invalid mount config for type \"{kind}\": not "
                                  f"supported by corral")
        raise _invalid_config(kind, "mount type unknown")
    destination = _check_destination(_text(mount, "Target", kind), kind)
    source = _text(mount, "Source", kind)
    readonly = mount.get("ReadOnly") or False
    if not isinstance(readonly, bool):
        raise _invalid_config(kind, "field ReadOnly must be a boolean")
    for key in ("BindOptions", "VolumeOptions", "TmpfsOptions"):
        if mount.get(key) and not key.lower().startswith(kind):
            raise _invalid_config(kind, f"field {key} must not be specified")
    return {"bind": _bind_mount, "volume": _volume_mount,
            "tmpfs": _tmpfs_mount}[kind](mount, destination, source, not readonly)


def _text(mount: dict, key: str, kind: str) -> str:
    value = mount.get(key) or ""
    if not isinstance(value, str):
        raise _invalid_config(kind, f"field {key} must be a string")
    return value


def _bind_mount(mount: dict, destination: str, source: str, rw: bool) -> MountPoint:
    options = mount.get("BindOptions") or {}
    if not source:
        raise _invalid_config("bind", "field Source must not be empty")
    if not source.startswith("/"):
        raise _invalid_config("bind", f"invalid mount path: '{source}' mount path must "
                                      f"be absolute")
    if not os.path.exists(source):
        raise _invalid_config("bind", f"bind source path does not exist: {source}")
    propagation = options.get("Propagation") or "rprivate"
    if propagation not in PROPAGATIONS:
        raise _invalid_config("bind", f"invalid propagation mode: {propagation}")
    if options.get("NonRecursive") or options.get("ReadOnlyNonRecursive"):
        raise _invalid_config("bind", "non-recursive bind mounts are not supported by "
                                      "corral")
    return MountPoint("bind", destination, source=os.path.normpath(source), rw=rw,
                      propagation=propagation)


def _volume_mount(mount: dict, destination: str, source: str, rw: bool) -> MountPoint:
    options = mount.get("VolumeOptions") or {}
    driver = (options.get("DriverConfig") or {}).get("Name") or "local"
    if driver != "local":
        raise InvalidArgument(f'create {source}: error looking up volume plugin '
                              f'{driver}: plugin "{driver}" not found')
    if options.get("Subpath"):
        raise _invalid_config("volume", "field Subpath is not supported by corral")
    labels = options.get("Labels") or {}
    if not isinstance(labels, dict):
        raise _invalid_config("volume", "field VolumeOptions.Labels must be an object")
    point = MountPoint("volume", destination, name=source, rw=rw, mode="z",
                       copy=not options.get("NoCopy"), anonymous=not source,
                       labels=dict(labels))
    if source:
        check_volume_name(source)
    return point


def _tmpfs_mount(mount: dict, destination: str, source: str, rw: bool) -> MountPoint:
    if source:
        raise _invalid_config("tmpfs", "field Source must not be specified")
    options = mount.get("TmpfsOptions") or {}
    data = ["noexec", "nosuid", "nodev"]
    size, mode = options.get("SizeBytes") or 0, options.get("Mode") or 0
    if not isinstance(size, int) or not isinstance(mode, int) or size < 0 or mode < 0:
        raise _invalid_config("tmpfs", "TmpfsOptions: SizeBytes and Mode must be "
                                       "non-negative integers")
    if size:
        data.append(f"size={size}")
    if mode:
        data.append(f"mode={mode:o}")
    return MountPoint("tmpfs", destination, rw=rw, tmpfs=data)


# The whole set ----------------------------------------------------------------------

def parse_volumes_from(text: str) -> tuple[str, bool | None]:
    """``CONTAINER[:ro|rw]``: the reference and the RW asked (None: as it was)."""
    ref, _, mode = text.partition(":")
    if not ref:
        raise InvalidArgument(f"invalid volumes-from specification: '{text}'")
    if mode and mode not in _RW_MODES:
        raise InvalidArgument(f"invalid mode: {mode}")
    return ref, None if not mode else mode == "rw"


def requested(host: dict, config_volumes: dict | None, image_volumes: dict | None,
              inherited: list[MountPoint] = ()) -> list[MountPoint]:
    """What the body asks, Binds then Mounts, then the ``inherited`` ones of
    VolumesFrom, then anonymous volumes for the body's and the image's
    Volumes, each where nothing before covers its destination. Checked whole:
    a destination twice in Binds and Mounts is Docker's ``Duplicate mount
    point``."""
    points = [parse_bind(text) for text in host.get("Binds") or []]
    points += [parse_mount(mount) for mount in host.get("Mounts") or []]
    taken = {point.destination for point in points}
    if len(taken) < len(points):
        seen: set[str] = set()
        for point in points:
            if point.destination in seen:
                raise InvalidArgument(f"Duplicate mount point: {point.destination}")
            seen.add(point.destination)
    for destination in (host.get("Tmpfs") or {}):
        if os.path.normpath(destination) in taken:
            raise InvalidArgument(f"Duplicate mount point: {destination}")
    for point in inherited:
        if point.destination not in taken:
            taken.add(point.destination)
            points.append(point)
    for volumes in (config_volumes, image_volumes):
        for destination in sorted(volumes or {}):
            clean = _check_destination(destination, "volume")
            if clean not in taken:
                taken.add(clean)
                points.append(MountPoint("volume", clean, anonymous=True))
    return points


def inherited(points: list[MountPoint], rw: bool | None) -> list[MountPoint]:
    """The binds and volumes of a ``--volumes-from`` container, as the new
    container gets them (Mode shown empty, as dockerd does)."""
    result = []
    for point in points:
        if point.type == "tmpfs":
            continue
        copied = from_record(point.record())
        copied.mode, copied.copy, copied.create_source = "", False, False
        if rw is not None:
            copied.rw = rw
        result.append(copied)
    return result


def spec_mount(point: MountPoint) -> dict:
    """The OCI mount of a point (volumes are binds of their ``_data``)."""
    if point.type == "tmpfs":
        return {"destination": point.destination, "type": "tmpfs", "source": "tmpfs",
                "options": [*point.tmpfs, "rw" if point.rw else "ro"]}
    options = ["rbind", point.propagation or "rprivate", "rw" if point.rw else "ro"]
    return {"destination": point.destination, "type": "bind", "source": point.source,
            "options": options}


def by_depth(mounts: list[dict]) -> list[dict]:
    """Parents before children (/a before /a/b), as dockerd sorts them."""
    return sorted(mounts, key=lambda m: m["destination"].rstrip("/").count("/"))


def inspect_mount(point: MountPoint) -> dict:
    """One entry of inspect's ``Mounts``."""
    document = {"Type": point.type}
    if point.type == "volume":
        document["Name"] = point.name
    document.update({"Source": point.source, "Destination": point.destination})
    if point.type == "volume":
        document["Driver"] = "local"
    document.update({"Mode": point.mode, "RW": point.rw,
                     "Propagation": point.propagation if point.type == "bind" else ""})
    return document


def inspect_mounts(document: dict) -> list[dict]:
    """inspect's ``Mounts`` of a record's document."""
    return [inspect_mount(from_record(data)) for data in document.get("mounts") or []]
