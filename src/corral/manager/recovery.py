"""Finishing or undoing what a killed process left (``Engine.reconcile``),
starting what a reboot stopped (``Engine.boot``), and ``prune``.

Every change to a container is made under its flock (``<run>/locks/<id>``),
and the kernel drops a flock when its holder dies. So reconcile takes each
container's lock in turn: a live process still working on it finishes
first, and what is then still marked ``creating`` or ``removing`` was left
by a dead one, and is undone or finished. After that, anything on disk that
no record owns is an orphan of a create killed before its record was
written, or after it was deleted: runtime state, a shim, a bundle, a
mount, an active snapshot, a cgroup. Each is removed.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
from pathlib import Path

from ..image import errors as image_errors
from ..image.bundle import mount_rootfs, remove_bundle, unmount_rootfs
from . import shims
from .errors import Conflict, Error, NotFound
from .filters import ContainerFilter

log = logging.getLogger(__name__)

_HEX = frozenset("0123456789abcdef")
CGROUP_ROOT = Path("/sys/fs/cgroup")


def _is_id(name: str) -> bool:
    return len(name) == 64 and _HEX.issuperset(name)


class Recovery:
    """Mixin of Engine: reconcile, boot and prune; the rootfs mount of a run."""

    # As Docker, a container's rootfs is mounted while it runs: from its
    # start until an exit no restart follows (the stop, the shim's exit
    # command, or reconcile for a run nobody watched end).
    def mount_rootfs(self, container_id: str) -> None:
        """Under the lock, before the shim: the rootfs of a start."""
        try:
            mount_rootfs(self.store, self.directory(container_id), container_id)
        except (image_errors.Error, OSError) as exc:
            raise Error(f"start container '{container_id}': mount rootfs: {exc}") from exc

    def unmount_rootfs(self, container_id: str) -> None:
        """Under the lock, for a container not running: its rootfs unmounted."""
        try:
            unmount_rootfs(self.directory(container_id))
        except (image_errors.Error, OSError) as exc:
            log.warning("unmount the rootfs of container %s: %s", container_id, exc)

    # A container keeps the run directory it was started under: an engine
    # on another one (corral --run-root OTHER on the same root) finds its
    # shim there, shows its state, and refuses to act on it while it runs
    # (a removal would take the rootfs from under it).
    def foreign_shim_state(self, container) -> dict | None:
        """The state.json of a run under another run directory, if any."""
        run_dir = container.document.get("run_dir")
        if not run_dir or run_dir == str(self.run):
            return None
        return shims.read_state(Path(run_dir) / "shims" / container.id)

    def refuse_foreign(self, container, state) -> None:
        """Conflict for a container running under another run directory."""
        run_dir = container.document.get("run_dir")
        if state.running and run_dir and run_dir != str(self.run):
            raise Conflict(f"container '{container.id}': running under run directory "
                           f"'{run_dir}', not '{self.run}' (use --run-root {run_dir})")

    def unmount_if_stopped(self, container_id: str) -> None:
        """The rootfs of a container that has exited for good, unmounted."""
        with self._locked(container_id):
            try:
                container = self.records.get(container_id)
            except NotFound:
                return
            if container.mark == "created" and not self.state(container).running:
                self.unmount_rootfs(container_id)

    def reconcile(self) -> dict:
        """Undo half-made creates, finish removals, remove orphans; what was done."""
        done = {"undone": [], "removed": [], "orphans": []}
        # A start in a killed process goes on in its shim: leave those be.
        live = shims.running_shims(self.run / "shims")
        for container in self.records.all():
            with self._locked(container.id):
                try:
                    current = self.records.get(container.id)
                except NotFound:
                    continue
                if current.mark == "creating":
                    self._clear_run(current.id)
                    self._undo_create(current.id)
                    done["undone"].append(current.id)
                elif current.mark == "removing":
                    self._destroy(current.id)
                    done["removed"].append(current.id)
                elif current.id not in live and not self.state(current).running:
                    self._drop_dead_run(current.id)
        known = {c.id for c in self.records.all()}
        self.volumes.forget_users(known)  # uses of containers gone in a crash
        done["orphans"] = self._remove_orphans(known, live)
        self.revive_resolvers()  # of the attachments left: live containers
        return done

    def _drop_dead_run(self, container_id: str) -> None:
        """Runtime state left by a run whose shim is gone."""
        if (self.runtime_root / container_id).exists():
            shims.runtime(self.runtime_root, "delete", "--force", container_id,
                          check=False)
        self.release_network(container_id)
        self.unmount_rootfs(container_id)

    def _remove_orphans(self, known: set[str], live: set[str]) -> list[str]:
        found = set()
        for parent in (self.runtime_root, self.run / "shims", self.containers_dir):
            found |= {p.name for p in parent.iterdir() if _is_id(p.name)}
        with contextlib.suppress(image_errors.Error):
            found |= {s.name for s in self.store.snapshots.walk()
                      if s.kind == "active" and _is_id(s.name)}
        found |= self.network_leftovers()
        orphans = sorted(found - known - live)
        for container_id in orphans:
            log.warning("removing orphan of container %s", container_id)
            self._clear_run(container_id)
            self.release_network(container_id)
            directory = self.directory(container_id)
            with contextlib.suppress(image_errors.Error, OSError):
                remove_bundle(self.store, directory, container_id)
            shutil.rmtree(directory, ignore_errors=True)
        # Only the cgroups of our own orphans: /sys/fs/cgroup/*/corral is
        # shared by every root on the host, so an ID we never knew may well
        # be another engine's live container.
        for container_id in _cgroups() & set(orphans):
            _remove_cgroup(container_id)
        for lock in (self.run / "locks").iterdir():
            if lock.name not in known:
                lock.unlink(missing_ok=True)
        return orphans

    def boot(self) -> list[str]:
        """After a reboot: start the containers whose restart policy is
        ``always``, or ``unless-stopped`` and not stopped by a user."""
        started = []
        for container in self.records.all():
            policy = container.host_config["RestartPolicy"]["Name"]
            wanted = policy == "always" or (policy == "unless-stopped"
                                            and not container.document.get("stopped"))
            if container.mark != "created" or not wanted or not container.started:
                continue
            if self.state(container).running:
                continue
            try:
                self.start(container.id)
                started.append(container.id)
            except Error as exc:
                log.error("boot: start container %s: %s", container.id, exc)
        return started

    def prune(self, filters: dict | None = None) -> dict:
        """``POST /containers/prune``: remove every stopped container."""
        selector = ContainerFilter({k: v for k, v in (filters or {}).items()
                                    if k in ("label", "until")}, self.records.resolve)
        deleted, reclaimed = [], 0
        for container in self.records.all():
            state = self.state(container)
            if container.mark != "created" or state.running:
                continue
            if not selector.accept(container, state):
                continue
            reclaimed += self._size(container)[0]
            with contextlib.suppress(NotFound):
                self.remove(container.id)
                deleted.append(container.id)
        return {"ContainersDeleted": deleted or None, "SpaceReclaimed": reclaimed}


def _cgroup_dirs() -> list[Path]:
    if (CGROUP_ROOT / "cgroup.controllers").exists():
        return [CGROUP_ROOT / "corral"]
    return [d / "corral" for d in CGROUP_ROOT.iterdir()
            if d.is_dir() and (d / "corral").is_dir()]


def _cgroups() -> set[str]:
    found = set()
    for directory in _cgroup_dirs():
        with contextlib.suppress(OSError):
            found |= {p.name for p in directory.iterdir() if _is_id(p.name)}
    return found


def _remove_cgroup(container_id: str) -> None:
    """rmdir the container's cgroups; a populated one (something escaped)
    is killed through cgroup.procs first."""
    import os
    import signal

    for directory in _cgroup_dirs():
        path = directory / container_id
        if not path.is_dir():
            continue
        with contextlib.suppress(OSError, ValueError):
            for pid in (path / "cgroup.procs").read_text().split():
                os.kill(int(pid), signal.SIGKILL)
        with contextlib.suppress(OSError):
            path.rmdir()


__all__ = ["Recovery"]
