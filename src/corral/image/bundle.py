"""From an image to a bundle the runtime can run: a config.json made from the
image config (OCI image spec, config.md, "Properties", and conversion.md),
and a root filesystem on a writable snapshot of the image.

Docker's rules, which the conversion document follows:

- the process is Entrypoint followed by Cmd; a Cmd given at run replaces
  the image's Cmd, an Entrypoint given at run replaces both;
- Env is the image's (with a default PATH when it has none), then the run's;
- WorkingDir is the cwd, made if the image lacks it;
- User is ``name``, ``uid``, ``name:group`` or ``uid:gid``, names looked up
  in the image's own /etc/passwd and /etc/group, never the host's; a user
  also gets the supplementary groups that /etc/group lists it in.

The image's files are hostile: /etc/passwd may be a symlink to a host path
or a huge file, so it is opened inside the rootfs (openat2 RESOLVE_IN_ROOT)
and read with a size limit.
"""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

from .. import _syscalls
from ..oci.spec import default_spec
from .errors import AlreadyExists, Error, InvalidArgument, NotFound
from .manifest import ImageConfig
from .mount import is_mount_point
from .store import Image, Store

DEFAULT_PATH = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
_MAX_ID_FILE = 4 << 20


@dataclass(frozen=True)
class RunOptions:
    """What a run may override of the image config (docker run's flags)."""

    command: tuple[str, ...] | None = None
    entrypoint: tuple[str, ...] | None = None
    env: tuple[str, ...] = ()
    user: str | None = None
    workdir: str | None = None
    terminal: bool = False
    hostname: str | None = None


@dataclass(frozen=True)
class ImageDefaults:
    """The parts of an image config that the manager keeps beside the spec."""

    stop_signal: str | None
    labels: dict
    volumes: tuple[str, ...]
    exposed_ports: tuple[str, ...]


def defaults(config: ImageConfig) -> ImageDefaults:
    inner = config.config
    return ImageDefaults(inner.get("StopSignal") or None, dict(inner.get("Labels") or {}),
                         tuple(sorted(inner.get("Volumes") or {})),
                         tuple(sorted(inner.get("ExposedPorts") or {})))


def process_args(config: ImageConfig, options: RunOptions) -> list[str]:
    inner = config.config
    if options.entrypoint is not None:
        entrypoint = list(options.entrypoint)
        cmd = list(options.command or ())
    else:
        entrypoint = list(inner.get("Entrypoint") or [])
        cmd = list(options.command) if options.command else list(inner.get("Cmd") or [])
    args = entrypoint + cmd
    if not args:
        raise InvalidArgument("no command: the image has neither Entrypoint nor Cmd, "
                              "and none was given")
    return args


def process_env(config: ImageConfig, options: RunOptions) -> list[str]:
    env: dict[str, str] = {}
    for item in [*(config.config.get("Env") or []), *options.env]:
        key, _, _ = item.partition("=")
        env[key] = item
    env.setdefault("PATH", DEFAULT_PATH)
    if options.terminal:
        env.setdefault("TERM", "TERM=xterm")
    return list(env.values())


def runtime_spec(config: ImageConfig, rootfs: Path, options: RunOptions = RunOptions()) -> dict:
    """The config.json for a container of this image whose root is ``rootfs``."""
    spec = default_spec(process_args(config, options), terminal=options.terminal)
    process = spec["process"]
    process["env"] = process_env(config, options)
    cwd = options.workdir or config.config.get("WorkingDir") or "/"
    if not cwd.startswith("/"):
        raise InvalidArgument(f"working directory '{cwd}': must be an absolute path")
    process["cwd"] = cwd
    uid, gid, groups = resolve_user(rootfs, options.user or config.config.get("User") or "")
    # As Docker: the supplementary groups include the primary one.
    process["user"] = {"uid": uid, "gid": gid, "additionalGids": sorted({gid, *groups})}
    spec["root"] = {"path": str(rootfs), "readonly": False}
    if options.hostname:
        spec["hostname"] = options.hostname
    make_dirs(rootfs, cwd)
    return spec


# Users and groups ---------------------------------------------------------

def resolve_user(rootfs: Path, user: str) -> tuple[int, int, list[int]]:
    """(uid, gid, supplementary gids) of ``user`` inside the image."""
    if not user:
        return 0, 0, []
    name, _, group = user.partition(":")
    passwd = _read_table(rootfs, "etc/passwd")
    uid, gid, login = _lookup_user(passwd, name, user)
    if group:
        gid = _lookup_group(_read_table(rootfs, "etc/group"), group, user)
        return uid, gid, []
    extra = []
    if login is not None:
        for entry in _read_table(rootfs, "etc/group"):
            members = entry[3].split(",") if len(entry) > 3 else []
            if login in members and entry[2].isdigit() and int(entry[2]) != gid:
                extra.append(int(entry[2]))
    return uid, gid, sorted(set(extra))


def resolve_groups(rootfs: Path, groups: list[str]) -> list[int]:
    """The gids of ``--group-add`` entries: a name or gid of the image's
    /etc/group, or a number it need not list (Docker's GetAdditionalGroups)."""
    table = _read_table(rootfs, "etc/group")
    found = []
    for group in groups:
        entry = next((e for e in table if len(e) >= 3 and e[2].isdigit()
                      and group in (e[0], e[2])), None)
        if entry is not None:
            found.append(int(entry[2]))
        elif group.isdigit():
            found.append(_id(group, group))
        else:
            raise NotFound(f"Unable to find group {group}: no matching entries in "
                           f"group file")
    return found


def _lookup_user(passwd: list[list[str]], name: str, user: str) -> tuple[int, int, str | None]:
    for entry in passwd:
        if len(entry) < 4 or not entry[2].isdigit() or not entry[3].isdigit():
            continue
        if entry[0] == name or (name.isdigit() and int(entry[2]) == int(name)):
            return int(entry[2]), int(entry[3]), entry[0]
    if name.isdigit():
        return _id(name, user), 0, None
    raise NotFound(f"user '{user}': no user '{name}' in the image's /etc/passwd")


def _lookup_group(groups: list[list[str]], group: str, user: str) -> int:
    if group.isdigit():
        return _id(group, user)
    for entry in groups:
        if len(entry) >= 3 and entry[0] == group and entry[2].isdigit():
            return int(entry[2])
    raise NotFound(f"user '{user}': no group '{group}' in the image's /etc/group")


def _id(text: str, user: str) -> int:
    value = int(text)
    if value >= 2**32 - 1:
        raise InvalidArgument(f"user '{user}': id {value} is out of range")
    return value


def _read_table(rootfs: Path, path: str) -> list[list[str]]:
    """The lines of an /etc file of the image split on ':'; [] if it has none."""
    try:
        fd = _open_in_root(rootfs, path, os.O_RDONLY | os.O_NOCTTY)
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise InvalidArgument(f"/{path} of the image: {exc.strerror}") from None
    with os.fdopen(fd, "rb") as file:
        data = file.read(_MAX_ID_FILE + 1)
    if len(data) > _MAX_ID_FILE:
        raise InvalidArgument(f"/{path} of the image: larger than {_MAX_ID_FILE} bytes")
    text = data.decode("utf-8", "replace")
    return [line.split(":") for line in text.splitlines()
            if line and not line.startswith("#")]


def _open_in_root(rootfs: Path, path: str, flags: int) -> int:
    root = os.open(rootfs, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        return _syscalls.openat2(root, path, flags | os.O_CLOEXEC,
                                 _syscalls.RESOLVE_IN_ROOT | _syscalls.RESOLVE_NO_MAGICLINKS)
    finally:
        os.close(root)


def make_dirs(rootfs: Path, path: str, *, _links: int = 0) -> None:
    """``mkdir -p`` of ``path`` inside the rootfs, symlinks resolved inside it
    (a dangling link on the way is followed and its target made, as runc
    does for a missing cwd)."""
    parts = [p for p in path.split("/") if p and p != "."]
    done = ""
    for i, part in enumerate(parts):
        if part == "..":
            raise InvalidArgument(f"directory '{path}': must not contain '..'")
        parent = _open_in_root(rootfs, done or ".", os.O_PATH | os.O_DIRECTORY)
        try:
            os.mkdir(part, 0o755, dir_fd=parent)
        except FileExistsError:
            target = _dangling_link(rootfs, parent, f"{done}/{part}", part)
            if target is not None:
                if _links >= 40:
                    raise InvalidArgument(f"directory '{path}': too many symbolic "
                                          f"links") from None
                base = target if target.startswith("/") else f"{done}/{target}"
                rest = "/".join(parts[i + 1:])
                return make_dirs(rootfs, f"{base}/{rest}", _links=_links + 1)
        finally:
            os.close(parent)
        done = f"{done}/{part}" if done else part


def _dangling_link(rootfs: Path, parent: int, path: str, name: str) -> str | None:
    """The target of ``name`` if it is a symlink to nothing inside the rootfs."""
    try:
        os.close(_open_in_root(rootfs, path, os.O_PATH))
        return None
    except FileNotFoundError:
        return os.readlink(name, dir_fd=parent)


# Bundles on snapshots --------------------------------------------------------

def create_bundle(store: Store, image: Image, bundle: Path, key: str,
                  options: RunOptions = RunOptions()) -> dict:
    """Make ``bundle``: a writable snapshot ``key`` of the image mounted at
    ``bundle/rootfs``, and ``bundle/config.json``.

    Refused, with nothing touched, when the snapshot ``key`` exists already
    or ``bundle`` holds a config.json or a non-empty rootfs; on any later
    error, what this call made is undone and nothing else.
    """
    from .mount import mount_all, unmount

    config = store.config(image)
    rootfs = bundle / "rootfs"
    _check_free(store, bundle, key)
    made_dir = not bundle.exists()
    bundle.mkdir(parents=True, exist_ok=True)
    made_rootfs = not rootfs.exists()
    rootfs.mkdir(exist_ok=True)
    prepared = mounted = False
    try:
        mounts = store.snapshots.prepare(key, store.top_snapshot(image))
        prepared = True
        mount_all(mounts, rootfs)
        mounted = True
        spec = runtime_spec(config, rootfs, options)
        spec["root"]["path"] = "rootfs"
        tmp = bundle / "config.json.tmp"
        tmp.write_text(json.dumps(spec, indent=2))
        tmp.rename(bundle / "config.json")
        return spec
    except BaseException:
        if mounted:
            unmount(rootfs)
        if prepared:
            with contextlib.suppress(Error):
                store.snapshots.remove(key)
        with contextlib.suppress(OSError):
            (bundle / "config.json.tmp").unlink(missing_ok=True)
            if made_rootfs:
                rootfs.rmdir()
            if made_dir:
                bundle.rmdir()
        raise


def _check_free(store: Store, bundle: Path, key: str) -> None:
    try:
        store.snapshots.stat(key)
    except NotFound:
        pass
    else:
        raise AlreadyExists(f"bundle '{bundle}': already made (snapshot '{key}'); "
                            f"remove it first")
    if (bundle / "config.json").exists():
        raise AlreadyExists(f"bundle '{bundle}': it has a config.json already")
    rootfs = bundle / "rootfs"
    if rootfs.is_dir() and (is_mount_point(rootfs) or any(rootfs.iterdir())):
        raise AlreadyExists(f"bundle '{bundle}': its rootfs is not empty")


def bundle_exists(store: Store, key: str) -> bool:
    """Whether ``create_bundle`` made a bundle under this snapshot key."""
    try:
        store.snapshots.stat(key)
    except NotFound:
        return False
    return True


def mount_rootfs(store: Store, bundle: Path, key: str) -> None:
    """Mount snapshot ``key`` at ``bundle/rootfs`` again after
    ``unmount_rootfs`` (or a reboot); nothing while it is mounted."""
    from .mount import mount_all

    rootfs = bundle / "rootfs"
    if not is_mount_point(rootfs):
        mount_all(store.snapshots.mounts(key), rootfs)


def unmount_rootfs(bundle: Path) -> None:
    """Unmount ``bundle/rootfs`` and keep the snapshot (its changes stay)."""
    from .mount import unmount

    rootfs = bundle / "rootfs"
    if is_mount_point(rootfs):
        unmount(rootfs)


def remove_bundle(store: Store, bundle: Path, key: str) -> None:
    """Unmount and forget what ``create_bundle`` made (the snapshot too)."""
    from .mount import unmount

    rootfs = bundle / "rootfs"
    if is_mount_point(rootfs):
        unmount(rootfs)
    with contextlib.suppress(NotFound):
        store.snapshots.remove(key)
    (bundle / "config.json").unlink(missing_ok=True)
    with contextlib.suppress(OSError):
        rootfs.rmdir()
