"""The engine of the container manager: Docker's container operations on
one root, shared by corrald and the daemonless ``corral`` (docs/dev/manager.md,
"The engine's API").

Every method takes and returns the Docker Engine API's JSON bodies. What the
engine knows lives on disk, never only in this object: records in
containers.db (records.py), a started container's state in its shim's
state.json, the bundle under ``<root>/containers/<id>``. So two Engine
objects in two processes on one root see the same containers, and a process
killed at any point leaves what ``reconcile`` can finish or undo.

Operations on one container are serialized across processes by a flock on
``<run>/locks/<id>``; creates race only on the name, which SQLite decides.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import secrets
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from ..image import errors as image_errors
from ..image.bundle import RunOptions, create_bundle, remove_bundle
from ..image.store import Store
from ..shim import events as shim_events
from ..shim import protocol
from ..shim.errors import Error as ShimError
from . import cleanup, docker_model, names, shims
from . import spec as specs
from .attach import Attaching
from .docker_model import State
from .errors import (
    Conflict,
    Error,
    InvalidArgument,
    NotFound,
    NotModified,
    StartFailed,
    no_such_container,
)
from .execs import Execs
from .networking import Networking
from .observe import Observing
from .records import Container, Records
from .recovery import Recovery
from .volumes import VolumeOps

DEFAULT_ROOT = Path("/var/lib/corral")
DEFAULT_RUN = Path("/run/corral")
DEFAULT_STOP_TIMEOUT = 10
_POLL = 0.02


class Engine(Observing, Recovery, Attaching, Execs, Networking, VolumeOps):
    """The containers of one root (``/var/lib/corral``) and run directory;
    ``default_bridge`` and ``default_subnet`` make its default network."""

    def __init__(self, root: Path = DEFAULT_ROOT, run: Path = DEFAULT_RUN, *,
                 default_bridge: str | None = None,
                 default_subnet: str | None = None) -> None:
        self.root = Path(root)
        self.run = Path(run)
        self.default_bridge = default_bridge or self.default_bridge
        self.default_subnet = default_subnet or self.default_subnet
        self.store = Store(self.root)
        self.containers_dir = self.root / "containers"
        self.runtime_root = self.run / "runtime"
        for directory in (self.containers_dir, self.runtime_root, self.run / "shims",
                          self.run / "locks"):
            directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.events_db = self.root / "containers.db"
        self.records = Records(self.events_db)
        shim_events.connect(str(self.events_db)).close()
        # Attaches of this process waiting for a run: container ID to the
        # StartedAt each waits past (remove lets them read a missed run first).
        self._attaches: dict[str, list[str]] = {}
        self._attach_cond = threading.Condition()
        # Notified at each start (or failed start) of this process: attaches
        # waiting for a run wake then, not at their next poll.
        self._started = threading.Condition()
        # The pty masters of the execs this process runs (for exec_resize).
        self._exec_ptys: dict[str, int] = {}
        self._exec_lock = threading.Lock()

    def close(self) -> None:
        self.end_attaches()
        self.records.close()
        self.store.close()
        self.close_networks()
        self.close_volumes()

    # Paths and locks ---------------------------------------------------------

    def directory(self, container_id: str) -> Path:
        return self.containers_dir / container_id

    def state_dir(self, container_id: str) -> Path:
        return self.run / "shims" / container_id

    def _socket(self, container_id: str) -> str:
        return str(self.state_dir(container_id) / "shim.sock")

    @contextlib.contextmanager
    def _locked(self, container_id: str) -> Iterator[None]:
        path = self.run / "locks" / container_id
        while True:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            fcntl.flock(fd, fcntl.LOCK_EX)
            # The holder before us may have unlinked the file (its container
            # gone): lock the path's file, not a lost one.
            with contextlib.suppress(FileNotFoundError):
                if os.stat(path).st_ino == os.fstat(fd).st_ino:
                    break
            os.close(fd)
        try:
            yield
        finally:
            try:
                self.records.get(container_id)
            except NotFound:
                # No lock file outlives its container (a refused create, a
                # clean-up after the removal).
                path.unlink(missing_ok=True)
            finally:
                os.close(fd)

    def _event(self, container: Container, action: str, **extra: str) -> None:
        attributes = {"image": container.image_ref, "name": container.name,
                      **(container.config.get("Labels") or {}), **extra}
        shim_events.record(str(self.events_db), "container", action, container.id,
                           attributes)

    # Create ------------------------------------------------------------------

    def create(self, body: dict, *, name: str | None = None,
               platform: str | None = None) -> dict:
        """``POST /containers/create``: ``{"Id", "Warnings"}``.

        Raises:
            InvalidArgument: a bad body or name; NotFound: no such image;
            Conflict: the name is taken.
        """
        request = docker_model.check_create(body)
        image_ref = request.config["Image"]
        if not image_ref:
            raise InvalidArgument("config.Image: no image given")
        image = self._image(image_ref)
        warnings = self.check_networking(request)
        if name:
            name = names.check_name(name)
        else:
            name = names.unused_name(self.records.name_taken)
        container_id = secrets.token_hex(32)
        record = Container(container_id, name, "creating", time.time(), str(image.id),
                           image_ref, {"request": "pending"})
        with self._locked(container_id):
            self.records.insert(record)
            try:
                document = self._make(container_id, request, image, image_ref)
                self.records.update(container_id, document=document, mark="created")
            except BaseException:
                self._undo_create(container_id)
                raise
        self._event(self.records.get(container_id), "create")
        return {"Id": container_id, "Warnings": warnings}

    def _image(self, image_ref: str):
        try:
            return self.store.resolve(image_ref)
        except image_errors.NotFound:
            raise NotFound(f"No such image: {image_ref}") from None
        except image_errors.Error as exc:
            raise InvalidArgument(str(exc)) from exc

    def _make(self, container_id: str, request, image, image_ref: str) -> dict:
        directory = self.directory(container_id)
        directory.mkdir(mode=0o710)
        config = request.config
        hostname = config["Hostname"] or _default_hostname(request.host_config,
                                                           container_id)
        options = RunOptions(
            command=tuple(config["Cmd"]) if config["Cmd"] else None,
            entrypoint=(tuple(config["Entrypoint"]) if config["Entrypoint"] is not None
                        else None),
            env=tuple(config["Env"] or ()), user=config["User"] or None,
            workdir=config["WorkingDir"] or None, terminal=bool(config["Tty"]))
        try:
            spec = create_bundle(self.store, image, directory, container_id, options)
            specs.build(spec, request, container_id=container_id, hostname=hostname,
                        directory=directory)
            self.network_namespace(spec, request, container_id)
        except image_errors.NotFound as exc:
            # Not a 404: clients take a 404 from create for a missing image
            # and pull (a user missing from the image's passwd lands here).
            raise InvalidArgument(f"create container '{container_id}': {exc}") from exc
        except image_errors.Error as exc:
            raise InvalidArgument(f"create container '{container_id}': {exc}") from exc
        image_config = self.store.config(image).config
        mounts = self._container_mounts(container_id, request.host_config,
                                        config["Volumes"], image_config.get("Volumes"),
                                        directory, spec)
        self._write_files(directory, hostname, config, request.host_config)
        _write_json(directory / "config.json", spec)
        stop_signal = config["StopSignal"] or image_config.get("StopSignal") or ""
        specs.parse_signal(stop_signal)
        args = spec["process"]["args"]
        if request.host_config["Init"]:
            args = args[2:]
        merged = docker_model.merged_config(request, image_config, hostname=hostname,
                                            env=spec["process"]["env"],
                                            image_ref=image_ref)
        return {"config": merged, "host_config": request.host_config,
                "networking_config": request.networking_config,
                "path": args[0], "args": args[1:], "stop_signal": stop_signal,
                "stopped": False, "mounts": mounts}

    def _write_files(self, directory: Path, hostname: str, config: dict,
                     host: dict) -> None:
        # The files of a container on no network yet; a start on one
        # writes them again with its addresses (network_files.py).
        from .network_files import hosts_file, resolv_conf

        domain = config["Domainname"]
        (directory / "hostname").write_text(f"{hostname}\n")
        full = f"{hostname}.{domain} {hostname}" if domain else hostname
        extra = [tuple(line.split(":", 1)) for line in host["ExtraHosts"] or []]
        (directory / "hosts").write_text(hosts_file(extra, f"127.0.1.1\t{full}\n"))
        (directory / "resolv.conf").write_text(resolv_conf(host, None))

    def _undo_create(self, container_id: str) -> None:
        """Remove whatever a create of ``container_id`` made, then its record."""
        directory = self.directory(container_id)
        with contextlib.suppress(image_errors.Error, OSError):
            remove_bundle(self.store, directory, container_id)
        shutil.rmtree(directory, ignore_errors=True)
        (self.run / "locks" / container_id).unlink(missing_ok=True)
        self._release_mounts(container_id, undo=True)
        self.records.delete(container_id)

    # State -------------------------------------------------------------------

    def resolve(self, ref: str) -> Container:
        """The record ``ref`` (ID, name or unique ID prefix) names."""
        container = self.records.resolve(ref)
        if container.mark == "creating":
            raise no_such_container(ref)
        return container

    def state(self, container: Container) -> State:
        """The container's dynamic state, from its shim's state.json."""
        if container.mark == "removing":
            # The last state, kept by remove(): a wait ending now has its exit code.
            return State(**dict(container.last_state or {}, status="removing"))
        shim = shims.read_state(self.state_dir(container.id))
        if shim is None:
            shim = self.foreign_shim_state(container)
        if shim is None:
            last = container.last_state or {}
            state = State(**last) if last else State()
            if state.running:
                # The run directory is gone (a reboot): nothing runs.
                state.status = "exited"
            return state
        state = State(status=shim.get("status", "exited"), pid=shim.get("pid", 0),
                      exit_code=shim.get("exit_code", 0), error=shim.get("error", ""),
                      started_at=shim.get("started_at") or State.started_at,
                      finished_at=shim.get("finished_at") or State.finished_at,
                      oom_killed=bool(shim.get("oom_killed")),
                      restart_count=shim.get("restart_count", 0))
        if state.running and not shims.alive(shim.get("shim_pid", 0)):
            state.status, state.error = "exited", "the shim died"
            state.exit_code = state.exit_code or 137
        if state.status == "running" and container.paused:
            state.status = "paused"
        return state

    def _running(self, ref: str) -> tuple[Container, State]:
        container = self.resolve(ref)
        state = self.state(container)
        if not state.running:
            raise Conflict(f"Container {container.id} is not running")
        self.refuse_foreign(container, state)
        return container, state

    # Start, stop, kill -------------------------------------------------------

    def start(self, ref: str) -> None:
        """``POST /containers/{id}/start``.

        Raises:
            NotModified: already running. StartFailed: the runtime refused
            (``exit_status`` 127 for a program not found).
        """
        container = self.resolve(ref)
        with self._locked(container.id):
            container = self.records.get(container.id)
            state = self.state(container)
            if state.status == "paused":
                raise Conflict("cannot start a paused container, try unpause instead")
            if state.running:
                raise NotModified(f"container '{container.id}': already started")
            self._clear_run(container.id)
            self.release_network(container.id)  # of a run that ended by itself
            self.mount_rootfs(container.id)
            try:
                self.network_up(container)
                self._spawn(container)
            except BaseException:
                self.release_network(container.id)
                self.unmount_rootfs(container.id)
                raise
            finally:
                self.run_started(container.id)
        self._event(container, "start")

    def _spawn(self, container: Container) -> None:
        host = container.host_config
        policy = host["RestartPolicy"]
        restart = policy["Name"]
        if restart == "on-failure" and policy["MaximumRetryCount"]:
            restart = f"on-failure:{policy['MaximumRetryCount']}"
        log = host["LogConfig"]["Config"]
        options = shims.ShimOptions(
            tty=bool(container.config["Tty"]), stdin=bool(container.config["OpenStdin"]),
            stdin_once=bool(container.config["StdinOnce"]), restart=restart,
            log_max_size=docker_model.parse_size(log.get("max-size", "0")),
            log_max_file=int(log.get("max-file", "1")),
            name=container.name.lstrip("/"), image=container.config.get("Image", ""),
            # --rm holds with no daemon: the shim runs the clean-up itself
            # (which unmounts the rootfs, releases the network).
            exit_command=tuple(cleanup.command(self.root, self.run, container.id,
                                               self.network_flags())))
        directory = self.directory(container.id)
        try:
            shims.spawn(container.id, bundle=directory,
                        state_dir=self.state_dir(container.id),
                        runtime_root=self.runtime_root,
                        log_path=directory / f"{container.id}-json.log",
                        events_db=self.events_db, options=options)
        except StartFailed as exc:
            self._clear_run(container.id)
            failed = State(status="created", exit_code=exc.exit_status, error=str(exc))
            self.records.update(container.id, last_state=failed.__dict__)
            if host.get("AutoRemove"):
                # As dockerd: --rm removes a container whose start failed
                # (docker run --rm waits for that removal), and its
                # anonymous volumes.
                self._destroy(container.id, volumes=True)
            raise
        except BaseException:
            self._clear_run(container.id)
            raise
        # Where its shim is: an engine on another run directory must know.
        document = dict(container.document, stopped=False, run_dir=str(self.run))
        self.records.update(container.id, started=True, paused=False, document=document)

    def _clear_run(self, container_id: str) -> None:
        """Forget a previous run: the shim's directory and any runtime state."""
        state_dir = self.state_dir(container_id)
        runtime_state = self.runtime_root / container_id
        # A shim tells its waiters of the exit before it deletes the
        # runtime's container: give that delete a moment to end before the
        # shim is killed, so it is not cut off half-way.
        deadline = time.monotonic() + 1.0
        while runtime_state.exists() and shims.shim_alive(state_dir) and \
                time.monotonic() < deadline:
            time.sleep(0.005)
        # A template may still be forking the shim an engine killed mid-start
        # asked for: wait for it to show, so that it is killed here and not
        # left to run the container beside the shim this start makes.
        deadline = time.monotonic() + 5.0
        while shims.spawning(state_dir) and not shims.shim_alive(state_dir) and \
                time.monotonic() < deadline:
            time.sleep(0.01)
        shims.kill_shim(state_dir)
        # Only when the runtime still has the container: a runtime call costs
        # a Python start, on every container start.
        if runtime_state.exists():
            shims.runtime(self.runtime_root, "delete", "--force", container_id,
                          check=False)
        shutil.rmtree(state_dir, ignore_errors=True)

    def stop(self, ref: str, *, timeout: int | None = None,
             signal: str | None = None) -> None:
        """``POST /containers/{id}/stop``: the stop signal, then SIGKILL after
        ``timeout`` seconds (the container's StopTimeout, else 10).

        Raises:
            NotModified: the container is not running.
        """
        container = self.resolve(ref)
        state = self.state(container)
        if not state.running:
            raise NotModified(f"container '{container.id}': already stopped")
        self.refuse_foreign(container, state)
        number = specs.parse_signal(signal or container.document["stop_signal"])
        if timeout is None:
            timeout = container.config.get("StopTimeout", DEFAULT_STOP_TIMEOUT)
        self._mark_stopped(container)
        if state.status == "paused":
            self.unpause(container.id)
        self._event(container, "kill", signal=str(number))
        self._shim(container, {"op": "stop", "signal": number,
                               "timeout": -1 if timeout < 0 else timeout}, None)
        self.release_if_stopped(container.id)
        self.unmount_if_stopped(container.id)
        self._event(container, "stop")

    def _mark_stopped(self, container: Container) -> None:
        self.records.update(container.id, document=dict(container.document, stopped=True))

    def kill(self, ref: str, signal: str | int = "KILL") -> None:
        """``POST /containers/{id}/kill``; Conflict when it is not running."""
        number = specs.parse_signal(signal, default=9)
        container, _ = self._running(ref)
        self._mark_stopped(container)
        self._shim(container, {"op": "kill", "signal": number, "stop": True})
        self._event(container, "kill", signal=str(number))

    def restart(self, ref: str, *, timeout: int | None = None) -> None:
        container = self.resolve(ref)
        with contextlib.suppress(NotModified):
            self.stop(container.id, timeout=timeout)
        self.start(container.id)
        self._event(container, "restart")

    def _shim(self, container: Container, message: dict,
              timeout: float | None = 10.0) -> dict:
        try:
            return protocol.request(self._socket(container.id), message, timeout)
        except ShimError as exc:
            if not self.state(container).running:
                return {"ok": True}
            raise Error(f"{message['op']} container '{container.id}': {exc}") from exc

    def pause(self, ref: str) -> None:
        container, state = self._running(ref)
        if state.status == "paused":
            raise Conflict(f"Container {container.id} is already paused")
        self._runtime_verb("pause", container)
        self.records.update(container.id, paused=True)
        self._event(container, "pause")

    def unpause(self, ref: str) -> None:
        container, state = self._running(ref)
        if state.status != "paused":
            raise Conflict(f"Container {container.id} is not paused")
        self._runtime_verb("resume", container)
        self.records.update(container.id, paused=False)
        self._event(container, "unpause")

    def _runtime_verb(self, verb: str, container: Container) -> None:
        try:
            shims.runtime(self.runtime_root, verb, container.id)
        except Error as exc:
            raise Error(f"{verb} container '{container.id}': {exc}") from exc

    def wait(self, ref: str, *, condition: str = "not-running",
             begun: Callable[[], None] | None = None) -> dict:
        """``POST /containers/{id}/wait``: ``{"StatusCode", "Error"}``.

        ``begun`` is called once the state the wait starts from is read: an
        exit from then on is not missed (corrald sends the response's
        headers then, and the docker CLI starts the container on them).
        """
        if condition not in ("not-running", "next-exit", "removed"):
            raise InvalidArgument(f"invalid condition: '{condition}'")
        container = self.resolve(ref)
        if condition == "removed":
            return self._wait_removed(container, begun)
        state = self.state(container)
        if begun is not None:
            begun()
        if condition == "next-exit" or state.status == "created":
            state = self._wait_running(container, state)
        while state.running:
            with contextlib.suppress(ShimError):
                protocol.request(self._socket(container.id), {"op": "wait"}, None)
            state = self.state(self.records.get(container.id))
            if state.status == "restarting" or (state.running and not container.paused):
                time.sleep(_POLL)
                state = self.state(self.records.get(container.id))
        if state.status != "removing":
            self.records.update(container.id, last_state=state.__dict__)
        return {"StatusCode": state.exit_code, "Error": None}

    def _wait_running(self, container: Container, state: State) -> State:
        """Wait until a run of the container has started, or has come and gone
        (a short one may be over between two looks)."""
        if state.running:
            return state
        before = state.started_at
        while True:
            try:
                current = self.records.get(container.id)
            except NotFound:
                raise no_such_container(container.id) from None
            state = self.state(current)
            if state.started_at != before:  # running, or exited (or removing) since
                return state
            time.sleep(_POLL)

    def _wait_removed(self, container: Container,
                      begun: Callable[[], None] | None = None) -> dict:
        """The exit code of the (next) run, once the container is removed:
        ``docker run --rm`` exits with it."""
        code = self.state(container).exit_code
        try:
            code = self.wait(container.id, begun=begun)["StatusCode"]
        except NotFound:
            if begun is not None:
                begun()
        # Short polls: docker run --rm waits here for the daemon's removal.
        while True:
            try:
                self.records.get(container.id)
            except NotFound:
                return {"StatusCode": code, "Error": None}
            time.sleep(_POLL / 4)

    # Remove and rename ---------------------------------------------------------

    def remove(self, ref: str, *, force: bool = False, volumes: bool = False) -> None:
        """``DELETE /containers/{id}``; a running one only with ``force``."""
        container = self.resolve(ref)
        self._settle_attaches(container.id, self.state(container))
        with self._locked(container.id):
            container = self.records.get(container.id)
            state = self.state(container)
            if state.running and not force:
                raise Conflict(f"You cannot remove a {state.status} container "
                               f"{container.id}. Stop the container before attempting "
                               f"removal or force remove")
            self.refuse_foreign(container, state)
            self.records.update(container.id, mark="removing", last_state=state.__dict__)
            if state.running:
                self._kill_for_removal(container)
            self._destroy(container.id, volumes=volumes)
        self._event(container, "destroy")

    def _kill_for_removal(self, container: Container) -> None:
        if container.paused:
            shims.runtime(self.runtime_root, "resume", container.id, check=False)
        with contextlib.suppress(ShimError):
            protocol.request(self._socket(container.id),
                             {"op": "stop", "signal": 9, "timeout": 0}, 30)

    def _destroy(self, container_id: str, *, volumes: bool = False) -> None:
        """Everything of a container but its events, gone; the record last,
        then its network, in the background (networking.py says why)."""
        try:
            self._clear_run(container_id)
            directory = self.directory(container_id)
            try:
                remove_bundle(self.store, directory, container_id)
            except (image_errors.Error, OSError) as exc:
                raise Error(f"remove container '{container_id}': {exc}") from exc
        except BaseException:
            self.release_network(container_id)
            raise
        shutil.rmtree(directory, ignore_errors=True)
        (self.run / "locks" / container_id).unlink(missing_ok=True)
        self._release_mounts(container_id, anonymous=volumes)
        self.records.delete(container_id)
        self.release_later(container_id)

    def remove_if_auto(self, ref: str) -> bool:
        """Remove the container if it asked for AutoRemove and has exited."""
        try:
            container = self.resolve(ref)
        except NotFound:
            return False
        if not container.host_config["AutoRemove"] or self.state(container).running:
            return False
        with contextlib.suppress(NotFound):
            self.remove(container.id, volumes=True)  # --rm takes anonymous volumes
        return True

    def rename(self, ref: str, name: str) -> None:
        container = self.resolve(ref)
        new = names.check_name(name)
        if new == container.name:
            raise InvalidArgument("Renaming a container with the same name as its "
                                  "current name")
        self.records.update(container.id, name=new)
        self.rename_on_networks(container.id, new)
        self._event(container, "rename", oldName=f"/{container.name}",
                    name=new)

    # Documents -----------------------------------------------------------------

    def inspect(self, ref: str, *, size: bool = False) -> dict:
        """``GET /containers/{id}/json``."""
        container = self.resolve(ref)
        state = self.state(container)
        document = docker_model.inspect_document(
            container, state, directory=str(self.directory(container.id)),
            exec_ids=self.records.exec_ids(container.id),
            driver=self.store.snapshots.name,
            size=self._size(container) if size else None)
        document["NetworkSettings"] = self.network_settings(container, state)
        return document

    def _size(self, container: Container) -> tuple[int, int]:
        with contextlib.suppress(image_errors.Error, OSError):
            rw = self.store.snapshots.usage(container.id)
            image = self.store.get_by_id(_digest(container.image_id))
            return rw, rw + image.size
        return 0, 0

    def list(self, *, all: bool = False, filters: dict | None = None,
             size: bool = False, limit: int = -1) -> list[dict]:
        """``GET /containers/json``: newest first."""
        from .filters import ContainerFilter

        selector = ContainerFilter(filters or {}, self.records.resolve)
        rows = []
        for container in self.records.all():
            if container.mark == "creating":
                continue
            state = self.state(container)
            if not all and not state.running and not selector.wants_stopped():
                continue
            if not selector.accept(container, state):
                continue
            row = docker_model.list_row(
                container, state, size=self._size(container) if size else None)
            row["Ports"] = self.port_rows(container, state)
            row["NetworkSettings"] = self.network_settings(container, state, short=True)
            rows.append(row)
            if 0 < limit <= len(rows):
                break
        return rows

    def image_in_use(self, image_id: str) -> bool:
        """Whether a container was made from the image (rmi refuses it)."""
        return self.records.uses_image(str(image_id))


def _default_hostname(host: dict, container_id: str) -> str:
    """The host's name on the host's network or UTS namespace, as Docker;
    else the short ID."""
    if host["NetworkMode"] == "host" or host.get("UTSMode") == "host":
        return os.uname().nodename
    return container_id[:12]


def _digest(text: str):
    from ..image.digest import Digest

    return Digest.parse(text)


def _write_json(path: Path, value: dict) -> None:
    import json

    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(value, indent=1))
    tmp.rename(path)
