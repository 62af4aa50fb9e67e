"""The container's root filesystem: mounts, devices, pivot_root, masks.

Runs in the container's init process, in its new mount namespace, before the
user process exists. The rootfs may come from a hostile image, so no path
inside it is ever resolved by the host's rules: every mount destination is
opened with openat2(2) and RESOLVE_IN_ROOT against a pinned fd of the rootfs,
so a symlink (``/mnt -> /etc``) resolves inside the rootfs, never on the
host; and the mount is then made onto ``/proc/self/fd/N`` of that fd, so the
path cannot be swapped between the check and the mount (the class of
CVE-2021-30465).

After pivot_root the process's root is the container's, so plain paths
cannot leave it; the masked and read-only paths and sysctls are applied then.
"""

from __future__ import annotations

import errno
import os
import stat

from corral import _syscalls as sc

from .errors import InvalidSpec, NotSupported, SetupError

_FLAGS = {
    # option: (clear, flag)
    "ro": (False, sc.MS_RDONLY),
    "rw": (True, sc.MS_RDONLY),
    "suid": (True, sc.MS_NOSUID),
    "nosuid": (False, sc.MS_NOSUID),
    "dev": (True, sc.MS_NODEV),
    "nodev": (False, sc.MS_NODEV),
    "exec": (True, sc.MS_NOEXEC),
    "noexec": (False, sc.MS_NOEXEC),
    "sync": (False, sc.MS_SYNCHRONOUS),
    "async": (True, sc.MS_SYNCHRONOUS),
    "dirsync": (False, sc.MS_DIRSYNC),
    "remount": (False, sc.MS_REMOUNT),
    "mand": (False, sc.MS_MANDLOCK),
    "nomand": (True, sc.MS_MANDLOCK),
    "atime": (True, sc.MS_NOATIME),
    "noatime": (False, sc.MS_NOATIME),
    "diratime": (True, sc.MS_NODIRATIME),
    "nodiratime": (False, sc.MS_NODIRATIME),
    "bind": (False, sc.MS_BIND),
    "rbind": (False, sc.MS_BIND | sc.MS_REC),
    "relatime": (False, sc.MS_RELATIME),
    "norelatime": (True, sc.MS_RELATIME),
    "strictatime": (False, sc.MS_STRICTATIME),
    "nostrictatime": (True, sc.MS_STRICTATIME),
    "nosymfollow": (False, sc.MS_NOSYMFOLLOW),
    "lazytime": (False, sc.MS_LAZYTIME),
    "nolazytime": (True, sc.MS_LAZYTIME),
}

PROPAGATION = {
    "private": sc.MS_PRIVATE,
    "rprivate": sc.MS_PRIVATE | sc.MS_REC,
    "shared": sc.MS_SHARED,
    "rshared": sc.MS_SHARED | sc.MS_REC,
    "slave": sc.MS_SLAVE,
    "rslave": sc.MS_SLAVE | sc.MS_REC,
    "unbindable": sc.MS_UNBINDABLE,
    "runbindable": sc.MS_UNBINDABLE | sc.MS_REC,
}

# Options runc knows that change how it mounts rather than the mount itself.
_IGNORED = {"tmpcopyup", "acl", "noacl"}

# Mount types that would put a kernel interface at a symlinked destination;
# their destination must be a real directory (the class of CVE-2019-19921).
_NO_SYMLINK_TYPES = {"proc", "sysfs"}

DEFAULT_DEVICES = [
    # path, type, major, minor, mode
    ("/dev/null", "c", 1, 3, 0o666),
    ("/dev/zero", "c", 1, 5, 0o666),
    ("/dev/full", "c", 1, 7, 0o666),
    ("/dev/random", "c", 1, 8, 0o666),
    ("/dev/urandom", "c", 1, 9, 0o666),
    ("/dev/tty", "c", 5, 0, 0o666),
]

_DEV_SYMLINKS = [
    ("/proc/self/fd", "/dev/fd"),
    ("/proc/self/fd/0", "/dev/stdin"),
    ("/proc/self/fd/1", "/dev/stdout"),
    ("/proc/self/fd/2", "/dev/stderr"),
]


class MountOptions:
    """A mount's option list split into flags, propagation and fs data."""

    def __init__(self, options: list[str], field: str) -> None:
        self.flags = 0
        self.clear = 0
        self.propagation: list[int] = []
        data = []
        for option in options:
            if option in _FLAGS:
                clear, flag = _FLAGS[option]
                if clear:
                    self.flags &= ~flag
                    self.clear |= flag
                else:
                    self.flags |= flag
            elif option in PROPAGATION:
                self.propagation.append(PROPAGATION[option])
            elif option in ("idmap", "ridmap"):
                raise NotSupported(f"{field}.options", f"{option!r} mounts are not supported")
            elif option not in _IGNORED:
                data.append(option)
        self.data = ",".join(data) or None

    @property
    def is_bind(self) -> bool:
        return bool(self.flags & sc.MS_BIND)


def _fd_path(fd: int) -> str:
    return f"/proc/self/fd/{fd}"


class Rootfs:
    """The rootfs of one container being set up, pinned by an fd."""

    def __init__(self, path: str, bundle: str) -> None:
        self.path = path
        self.bundle = bundle
        self.fd = -1

    def open(self) -> None:
        self.fd = os.open(self.path, sc.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    # -- resolving paths inside the rootfs ---------------------------------

    def resolve(self, path: str, flags: int = 0, follow: bool = True) -> int:
        """An O_PATH fd of PATH resolved with the rootfs as its root."""
        resolve = sc.RESOLVE_IN_ROOT | sc.RESOLVE_NO_MAGICLINKS
        if not follow:
            resolve |= sc.RESOLVE_NO_SYMLINKS
        relative = os.path.normpath("/" + path).lstrip("/") or "."
        return sc.openat2(self.fd, relative, sc.O_PATH | flags, resolve)

    def make_target(self, path: str, is_dir: bool, follow: bool = True) -> int:
        """Create PATH inside the rootfs if missing (parents too); return its fd."""
        parts = [p for p in os.path.normpath("/" + path).split("/") if p]
        parent = os.dup(self.fd)
        try:
            for index, name in enumerate(parts):
                last = index == len(parts) - 1
                prefix = "/".join(parts[: index + 1])
                try:
                    fd = self.resolve(prefix, follow=follow)
                except FileNotFoundError:
                    if not last or is_dir:
                        try:
                            os.mkdir(name, 0o755, dir_fd=parent)
                        except FileExistsError:
                            pass  # a dangling symlink: resolving it again fails below
                    else:
                        try:
                            os.close(
                                os.open(name, os.O_CREAT | os.O_WRONLY | os.O_CLOEXEC,
                                        0o644, dir_fd=parent)
                            )
                        except OSError:
                            pass
                    fd = self.resolve(prefix, follow=follow)
                os.close(parent)
                parent = fd
            fd, parent = parent, -1
        finally:
            if parent >= 0:
                os.close(parent)
        mode = os.fstat(fd).st_mode
        if is_dir and not stat.S_ISDIR(mode):
            os.close(fd)
            raise SetupError(f"mount destination '{path}' is not a directory in the rootfs")
        return fd

    # -- mounts -------------------------------------------------------------

    def mount_all(self, mounts: list[dict], new_cgroupns: bool, cgroups) -> None:
        """Mount every entry in order.

        CGROUPS is called before each cgroup mount (and may wait until the
        container is in its cgroup); it returns the cgroup mounts of the host
        and the container's cgroup paths.
        """
        for index, mount in enumerate(mounts):
            field = f"mounts[{index}]"
            cgroup_mounts, cgroup_paths = ({}, {})
            if mount.get("type") == "cgroup":
                cgroup_mounts, cgroup_paths = cgroups()
            try:
                self.mount_one(mount, field, cgroup_mounts, cgroup_paths, new_cgroupns)
            except OSError as exc:
                raise SetupError(
                    f"{field}: mount {mount.get('type') or 'bind'} on "
                    f"'{mount['destination']}': {exc.strerror}"
                ) from exc

    def mount_one(self, mount: dict, field: str, cgroup_mounts: dict[str, str],
                  cgroup_paths: dict[str, str], new_cgroupns: bool) -> None:
        options = MountOptions(mount.get("options") or [], field)
        kind = mount.get("type") or ""
        dest = mount["destination"]
        if kind == "cgroup":
            self._mount_cgroup(dest, options, cgroup_mounts, cgroup_paths, new_cgroupns)
            return
        if options.is_bind or kind == "bind":
            options.flags |= sc.MS_BIND
            source = mount.get("source") or ""
            if not source:
                raise InvalidSpec(f"{field}.source", "a bind mount needs a source")
            if not source.startswith("/"):
                source = os.path.join(self.bundle, source)
            try:
                is_dir = stat.S_ISDIR(os.stat(source).st_mode)
            except FileNotFoundError:
                raise InvalidSpec(f"{field}.source", f"'{source}' does not exist") from None
            target = self.make_target(dest, is_dir)
            try:
                sc.mount(source, _fd_path(target), None,
                         sc.MS_BIND | (options.flags & sc.MS_REC))
            finally:
                os.close(target)
            if options.flags & ~(sc.MS_BIND | sc.MS_REC | sc.MS_REMOUNT) or options.clear:
                self._remount(dest, options.flags)
        else:
            if not kind:
                raise InvalidSpec(f"{field}.type", "missing (and the mount is not a bind)")
            target = self.make_target(dest, True, follow=kind not in _NO_SYMLINK_TYPES)
            try:
                sc.mount(mount.get("source") or kind, _fd_path(target), kind,
                         options.flags, options.data)
            except OSError as exc:
                if exc.errno == errno.ENODEV:
                    raise InvalidSpec(
                        f"{field}.type", f"unknown filesystem type {kind!r}"
                    ) from None
                if exc.errno == errno.EINVAL and options.data:
                    raise InvalidSpec(
                        f"{field}.options", f"{kind} refused the options {options.data!r}"
                    ) from None
                raise
            finally:
                os.close(target)
        self._propagate(dest, options.propagation)

    def _remount(self, dest: str, flags: int) -> None:
        fd = self.resolve(dest)
        try:
            path = _fd_path(fd)
            # Flags the kernel locked on the source (nosuid, nodev, noexec, as
            # in a user namespace) must be repeated or the remount is refused.
            locked = _statvfs_flags(path)
            sc.mount(None, path, None,
                     sc.MS_BIND | sc.MS_REMOUNT | (flags & ~sc.MS_REC) | locked)
        finally:
            os.close(fd)

    def _propagate(self, dest: str, propagation: list[int]) -> None:
        if not propagation:
            return
        fd = self.resolve(dest)
        try:
            for flag in propagation:
                sc.mount(None, _fd_path(fd), None, flag)
        finally:
            os.close(fd)

    def _mount_cgroup(self, dest: str, options: MountOptions, cgroup_mounts: dict[str, str],
                      cgroup_paths: dict[str, str], new_cgroupns: bool) -> None:
        """The cgroup filesystem as the container should see it.

        On a cgroup v2 host this is one cgroup2 mount (it shows the
        container's own cgroup when it has a cgroup namespace). On v1, a tmpfs
        at DEST with one directory per hierarchy: a fresh cgroup mount when
        the container has its own cgroup namespace, else a bind of its own
        cgroup directory from the host, as runc does.
        """
        ro = options.flags & sc.MS_RDONLY
        base = (options.flags & (sc.MS_NOSUID | sc.MS_NODEV | sc.MS_NOEXEC)) | sc.MS_RELATIME
        if "" in cgroup_mounts and len(cgroup_mounts) == 1:
            target = self.make_target(dest, True, follow=False)
            try:
                sc.mount("cgroup2", _fd_path(target), "cgroup2", base | ro)
            finally:
                os.close(target)
            return
        target = self.make_target(dest, True, follow=False)
        try:
            sc.mount("tmpfs", _fd_path(target), "tmpfs", base, "mode=755")
        finally:
            os.close(target)
        for controller, mountpoint in sorted(cgroup_mounts.items()):
            name = controller.replace("name=", "") if controller else "unified"
            sub = self.make_target(f"{dest}/{name}", True, follow=False)
            try:
                if new_cgroupns and controller:
                    sc.mount("cgroup", _fd_path(sub), "cgroup", base | ro, controller)
                elif new_cgroupns:
                    sc.mount("cgroup2", _fd_path(sub), "cgroup2", base | ro)
                else:
                    source = cgroup_paths.get(controller, mountpoint)
                    sc.mount(source, _fd_path(sub), None, sc.MS_BIND)
                    if ro:
                        # The fd is of the directory under the new mount:
                        # remount through a fresh one.
                        self._remount(f"{dest}/{name}", base | ro)
            finally:
                os.close(sub)
        if ro:
            self._remount(dest, base | ro)

    # -- /dev -----------------------------------------------------------------

    def create_devices(self, devices: list[dict], in_userns: bool) -> None:
        """The default devices, linux.devices, and the /dev symlinks."""
        wanted = {d["path"]: d for d in devices}
        for path, kind, major, minor, mode in DEFAULT_DEVICES:
            if path not in wanted:
                self._device({"path": path, "type": kind, "major": major,
                              "minor": minor, "fileMode": mode}, in_userns)
        for device in devices:
            self._device(device, in_userns)
        dev = self.resolve("/dev", os.O_DIRECTORY, follow=False)
        try:
            for target, link in _DEV_SYMLINKS:
                try:
                    os.symlink(target, os.path.basename(link), dir_fd=dev)
                except FileExistsError:
                    pass
            try:
                os.unlink("ptmx", dir_fd=dev)
            except FileNotFoundError:
                pass
            os.symlink("pts/ptmx", "ptmx", dir_fd=dev)
            if os.path.exists("/proc/kcore"):
                try:
                    os.symlink("/proc/kcore", "core", dir_fd=dev)
                except FileExistsError:
                    pass
        finally:
            os.close(dev)

    def _device(self, device: dict, in_userns: bool) -> None:
        path = device["path"]
        kind = device["type"]
        parent_path, name = os.path.split(path)
        parent = self.make_target(parent_path, True, follow=False)
        try:
            try:
                os.unlink(name, dir_fd=parent)
            except FileNotFoundError:
                pass
            mode = device.get("fileMode", 0o666) & 0o7777
            if kind == "p":
                node = stat.S_IFIFO
            elif kind == "b":
                node = stat.S_IFBLK
            else:
                node = stat.S_IFCHR
            rdev = os.makedev(device.get("major", 0), device.get("minor", 0))
            try:
                os.mknod(name, node | mode, rdev, dir_fd=parent)
            except PermissionError:
                if not in_userns:
                    raise
                # No mknod in a user namespace: bind the host's node instead.
                os.close(os.open(name, os.O_CREAT | os.O_WRONLY | os.O_CLOEXEC, 0o644,
                                 dir_fd=parent))
                fd = sc.openat2(parent, name, sc.O_PATH, sc.RESOLVE_NO_SYMLINKS)
                try:
                    sc.mount(path, _fd_path(fd), None, sc.MS_BIND)
                finally:
                    os.close(fd)
                return
            os.chmod(name, mode, dir_fd=parent)
            uid, gid = device.get("uid"), device.get("gid")
            if uid is not None or gid is not None:
                os.chown(name, uid if uid is not None else -1, gid if gid is not None else -1,
                         dir_fd=parent, follow_symlinks=False)
        except OSError as exc:
            raise SetupError(f"create device '{path}': {exc.strerror}") from exc
        finally:
            os.close(parent)

    def has_bind_dev(self, mounts: list[dict]) -> bool:
        for mount in mounts:
            if os.path.normpath(mount["destination"]) == "/dev":
                options = mount.get("options") or []
                return mount.get("type") == "bind" or "bind" in options or "rbind" in options
        return False

    # -- pivot ------------------------------------------------------------------

    def pivot(self, no_pivot: bool) -> None:
        """Make the rootfs the process's root and drop the host's view."""
        self.close()
        if no_pivot:
            os.chdir(self.path)
            sc.mount(self.path, "/", None, sc.MS_MOVE)
            os.chroot(".")
            os.chdir("/")
            return
        # pivot_root(".", ".") stacks the old root on top of the new one;
        # unmounting "." then removes the old root without a put_old dir.
        old_root = os.open("/", os.O_DIRECTORY | os.O_RDONLY | os.O_CLOEXEC)
        new_root = os.open(self.path, os.O_DIRECTORY | os.O_RDONLY | os.O_CLOEXEC)
        try:
            os.fchdir(new_root)
            sc.pivot_root(".", ".")
            os.fchdir(old_root)
            # Keep the unmount from reaching the host's mounts.
            sc.mount(None, ".", None, sc.MS_SLAVE | sc.MS_REC)
            sc.umount2(".", sc.MNT_DETACH)
        finally:
            os.close(old_root)
            os.close(new_root)
        os.chdir("/")


def prepare(rootfs: Rootfs, propagation: str | None) -> None:
    """Make the mount tree private enough to pivot, and bind the rootfs."""
    flag = PROPAGATION.get(propagation or "", sc.MS_SLAVE | sc.MS_REC)
    if flag in (sc.MS_SHARED, sc.MS_SHARED | sc.MS_REC):
        flag = sc.MS_SLAVE | sc.MS_REC  # made shared after the pivot
    sc.mount(None, "/", None, flag | sc.MS_REC)
    sc.mount(rootfs.path, rootfs.path, None, sc.MS_BIND | sc.MS_REC)
    # pivot_root refuses a new root whose parent mount is shared.
    sc.mount(None, rootfs.path, None, sc.MS_PRIVATE)
    rootfs.open()


def finish(spec: dict) -> None:
    """After the pivot: sysctls, masked and read-only paths, read-only root."""
    linux = spec.get("linux") or {}
    for key, value in (linux.get("sysctl") or {}).items():
        path = "/proc/sys/" + key.replace(".", "/")
        try:
            with open(path, "w") as f:
                f.write(value)
        except OSError as exc:
            raise SetupError(f"sysctl {key}={value!r}: write '{path}': {exc.strerror}") from exc
    for path in linux.get("maskedPaths") or []:
        _mask(path)
    for path in linux.get("readonlyPaths") or []:
        _readonly(path)
    propagation = linux.get("rootfsPropagation")
    if propagation in ("shared", "rshared"):
        sc.mount(None, "/", None, PROPAGATION[propagation])
    if spec["root"].get("readonly"):
        sc.mount(None, "/", None,
                 sc.MS_BIND | sc.MS_REMOUNT | sc.MS_RDONLY | _statvfs_flags("/"))


def _mask(path: str) -> None:
    try:
        is_dir = stat.S_ISDIR(os.stat(path).st_mode)
    except (FileNotFoundError, NotADirectoryError):
        return
    try:
        if is_dir:
            sc.mount("tmpfs", path, "tmpfs", sc.MS_RDONLY, None)
        else:
            sc.mount("/dev/null", path, None, sc.MS_BIND)
    except OSError as exc:
        raise SetupError(f"mask '{path}': {exc.strerror}") from exc


def _readonly(path: str) -> None:
    try:
        sc.mount(path, path, None, sc.MS_BIND | sc.MS_REC)
    except FileNotFoundError:
        return
    except OSError as exc:
        raise SetupError(f"make '{path}' read-only: {exc.strerror}") from exc
    sc.mount(None, path, None,
             sc.MS_BIND | sc.MS_REMOUNT | sc.MS_RDONLY | _statvfs_flags(path))


_ST_FLAGS = (
    (os.ST_NOSUID, sc.MS_NOSUID),
    (os.ST_NODEV, sc.MS_NODEV),
    (os.ST_NOEXEC, sc.MS_NOEXEC),
    (os.ST_NOATIME, sc.MS_NOATIME),
    (os.ST_NODIRATIME, sc.MS_NODIRATIME),
    (os.ST_RELATIME, sc.MS_RELATIME),
)


def _statvfs_flags(path: str) -> int:
    flags = os.statvfs(path).f_flag
    return sum(ms for st, ms in _ST_FLAGS if flags & st)
