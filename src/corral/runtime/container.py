"""The lifecycle verbs: create, start, run, kill, delete, exec, pause ...

Each function here is the one entry point of a CLI verb, and follows the
lifecycle of runtime-spec runtime.md: ``create`` builds everything and leaves
init waiting on the exec fifo, without the user process having run;
``start`` releases it; ``delete`` removes what create made. A create that
fails part way removes everything it made before it raises.

Only the verbs that make processes (create, run, exec) import the launcher,
the spec checks and, with them, ctypes (about 8 ms here): engines call
start, state, kill and delete, each a new process, far more often.
"""

from __future__ import annotations

import _signal as signal  # the signal module would import enum: see docs/dev/rules.md
import os
import time

from . import hooks, log
from .cgroups import Cgroup, mounts
from .channel import ExecConfig, InitConfig
from .errors import (
    CorruptState,
    Error,
    FailedPrecondition,
    InvalidSpec,
    NotFound,
    SetupError,
)
from .state import (
    FIFO,
    State,
    check_id,
    container_dir,
    process_start_time,
    remove_dir,
    write_json,
)


class CreateOptions:
    def __init__(self, *, bundle: str, pid_file: str | None = None,
                 console_socket: str | None = None, no_pivot: bool = False,
                 preserve_fds: int = 0) -> None:
        self.bundle = bundle
        self.pid_file = pid_file
        self.console_socket = console_socket
        self.no_pivot = no_pivot
        self.preserve_fds = preserve_fds


def _connect_console(path: str) -> int:
    import _socket

    sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
    try:
        sock.connect(path)
    except OSError as exc:
        sock.close()
        raise SetupError(f"connect to console socket '{path}': {exc.strerror}") from exc
    return sock.detach()


def write_pid_file(path: str, pid: int) -> None:
    """Write PID to PATH the way runc does: a temp file renamed into place."""
    path = os.path.abspath(path)
    tmp = os.path.join(os.path.dirname(path), f".{os.path.basename(path)}")
    with open(tmp, "w") as f:
        f.write(str(pid))
    os.replace(tmp, path)


def create(root: str, container_id: str, options: CreateOptions,
           console_fd: int = -1, spec: dict | None = None) -> State:
    """Build the container and leave its init waiting for ``start``.

    ``run`` passes the SPEC it loaded and the CONSOLE_FD of its own relay.
    """
    from .launch import check_preserved, spawn_init
    from .spec import load_bundle, rootfs_path

    check_id(container_id)
    bundle = os.path.abspath(options.bundle)
    if spec is None:
        spec = load_bundle(bundle)
    if spec.get("process") is None:
        raise InvalidSpec("process", "missing (create needs a process to run)")
    _check_namespaces(spec)
    check_preserved(options.preserve_fds)
    os.makedirs(root, mode=0o700, exist_ok=True)
    directory = container_dir(root, container_id)
    try:
        os.mkdir(directory, 0o711)
    except FileExistsError:
        from .errors import AlreadyExists

        raise AlreadyExists(container_id) from None

    # Only what the child needs at fork time comes before the fork (the state
    # directory, the fifo, a console); the rest is done while it makes the
    # container's namespaces and rootfs (see launch.spawn_init).
    cgroup: Cgroup | None = None
    state_dir_fd = -1
    own_console = -1
    try:
        fifo = os.path.join(directory, FIFO)
        os.mkfifo(fifo, 0o622)
        os.chmod(fifo, 0o622)  # past the umask: init may be root of a user namespace
        state_dir_fd = os.open(directory, os.O_DIRECTORY | os.O_RDONLY | os.O_CLOEXEC)
        linux = spec.get("linux") or {}
        if spec["process"].get("terminal") and console_fd < 0:
            if not options.console_socket:
                raise InvalidSpec(
                    "process.terminal", "a terminal needs --console-socket with create"
                )
            own_console = console_fd = _connect_console(options.console_socket)
        config = InitConfig(
            container_id=container_id, spec=spec, bundle=bundle,
            rootfs_path=rootfs_path(bundle, spec), state_dir_fd=state_dir_fd,
            console_fd=console_fd, no_pivot=options.no_pivot,
            preserve_fds=options.preserve_fds,
        )

        def make_cgroup() -> tuple[Cgroup, dict[str, str]]:
            nonlocal cgroup
            cgroup_mounts = mounts()
            cgroup = Cgroup.plan(linux.get("cgroupsPath"), container_id, cgroup_mounts)
            cgroup.create(cgroup_mounts)
            cgroup.apply(linux.get("resources") or {})
            return cgroup, cgroup_mounts

        def write_spec() -> None:
            write_json(os.path.join(directory, "spec.json"), spec)

        pid = spawn_init(config, spec, make_cgroup, write_spec)
        state = State(root, container_id, {
            "ociVersion": spec["ociVersion"],
            "id": container_id,
            "pid": pid,
            "pid_start": process_start_time(pid),
            "bundle": bundle,
            "rootfs": config.rootfs_path,
            "created": log.timestamp(),
            "owner": "",
            "annotations": spec.get("annotations") or {},
            "cgroups": cgroup.paths,
        }, spec)
        state.save()
        if options.pid_file:
            write_pid_file(options.pid_file, pid)
        log.debug(f"created container {container_id} with init pid {pid}")
        return state
    except BaseException:
        _remove(directory, cgroup)
        raise
    finally:
        for fd in (state_dir_fd, own_console):
            if fd >= 0:
                os.close(fd)


def _check_namespaces(spec: dict) -> None:
    kinds = {ns["type"] for ns in (spec.get("linux") or {}).get("namespaces") or []}
    if "mount" not in kinds:
        raise InvalidSpec(
            "linux.namespaces", "corral-runtime needs a mount namespace for the container"
        )


def _remove(directory: str, cgroup: Cgroup | None) -> None:
    if cgroup is not None and cgroup.claimed:
        cgroup.signal_all(signal.SIGKILL)
        try:
            cgroup.destroy()
        except Error as exc:
            log.warning(str(exc))
    remove_dir(directory)


def start(root: str, container_id: str, state: State | None = None) -> State:
    """Release the init of a created container and return once it has exec'd.

    ``run`` passes the STATE that create returned.
    """
    if state is None:
        state = State.load(root, container_id)
    status = state.status()
    if status != "created":
        if status == "stopped":
            raise FailedPrecondition("cannot start a container that has stopped")
        raise FailedPrecondition(f"cannot start an already {status} container")
    fifo_path = os.path.join(state.dir, FIFO)
    try:
        fifo = os.open(fifo_path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        raise FailedPrecondition("cannot start an already running container") from None
    try:
        message = _read_fifo(fifo, state)
    finally:
        os.close(fifo)
        try:
            os.unlink(fifo_path)
        except FileNotFoundError:
            pass
    if message:
        raise SetupError(message)
    spec = state.spec()
    try:
        hooks.run_all(spec, "poststart", state.oci_state("running"))
    except Error as exc:
        log.warning(f"poststart: {exc}")
    return state


def _read_fifo(fifo: int, state: State) -> str:
    """Read what init writes: '0', then nothing (exec'd) or an error message.

    Init waits in open(2) for us, and a writer waiting there already counts,
    so a blocking read returns its data or, once it has exec'd, end of file.
    End of file before the first byte means init is not there (yet).
    """
    os.set_blocking(fifo, True)
    data = b""
    while True:
        chunk = os.read(fifo, 65536)
        if chunk:
            data += chunk
            continue
        if data:
            return data[1:].decode(errors="replace")
        if not state.init_alive():
            raise SetupError("container init exited before start")
        time.sleep(0.001)


def run(root: str, container_id: str, options: CreateOptions, detach: bool,
        keep: bool) -> int:
    """create + start, then wait for the container and return its exit status."""
    from corral import _syscalls as sc

    from .spec import load_bundle

    relay = None
    console_fd = -1
    check_id(container_id)
    spec = load_bundle(os.path.abspath(options.bundle))
    if not detach:
        # Make init our child once stage 1 exits, so that we can wait for it.
        sc.prctl(sc.PR_SET_CHILD_SUBREAPER, 1)
    if (spec.get("process") or {}).get("terminal") and not options.console_socket:
        if detach:
            raise InvalidSpec("process.terminal",
                              "run --detach with a terminal needs --console-socket")
        from .tty import Relay

        relay = Relay()
        console_fd = relay.child_end
    state = create(root, container_id, options, console_fd=console_fd, spec=spec)
    if relay is not None:
        relay.receive()
    try:
        start(root, container_id, state)
    except BaseException:
        _force_delete(root, container_id)
        raise
    if detach:
        return 0
    status = wait_init(state.pid, relay)
    if not keep:
        delete(root, container_id, force=True, state=state)
    return status


def wait_init(pid: int, relay=None) -> int:
    """Wait for PID (our child, we being a subreaper), forwarding signals."""
    forwarded = [signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT,
                 signal.SIGUSR1, signal.SIGUSR2]

    def forward(signum, frame):
        try:
            os.kill(pid, signum)
        except ProcessLookupError:
            pass

    for signum in forwarded:
        signal.signal(signum, forward)
    if relay is not None:
        relay.run_until_exit(pid)
    while True:
        try:
            waited, status = os.waitpid(-1, 0)
        except ChildProcessError:
            return 255
        if waited == pid:
            return exit_code(status)


def exit_code(status: int) -> int:
    if os.WIFSIGNALED(status):
        return 128 + os.WTERMSIG(status)
    return os.WEXITSTATUS(status)


def _force_delete(root: str, container_id: str) -> None:
    try:
        delete(root, container_id, force=True)
    except Error as exc:
        log.warning(str(exc))


def parse_signal(text: str) -> int:
    import _signal

    if text.isascii() and text.isdigit():
        number = int(text)
        if 0 <= number < 65:
            return number
    else:
        name = text.upper()
        if not name.startswith("SIG"):
            name = "SIG" + name
        number = getattr(_signal, name, None)
        if isinstance(number, int):
            return number
    raise InvalidSpec("signal", f"unknown signal {text!r}")


def kill(root: str, container_id: str, signal_text: str, all_processes: bool) -> None:
    state = State.load(root, container_id)
    signum = parse_signal(signal_text)
    status = state.status()
    if status == "stopped":
        raise FailedPrecondition("container not running")
    if all_processes:
        cgroup = Cgroup(state.record.get("cgroups") or {})
        pids = cgroup.pids() or [state.pid]
        for pid in pids:
            try:
                os.kill(pid, signum)
            except ProcessLookupError:
                pass
        return
    try:
        os.kill(state.pid, signum)
    except ProcessLookupError:
        raise FailedPrecondition("container not running") from None


def delete(root: str, container_id: str, force: bool, state: State | None = None) -> None:
    """Remove a stopped container (any, with force) and run poststop hooks."""
    try:
        state = state or State.load(root, container_id)
    except CorruptState:
        if not force:
            raise
        log.warning(f"removing the unreadable state of {container_id}")
        remove_dir(container_dir(root, container_id))
        return
    except NotFound:
        # As runc: with force, a missing container is not an error, and a
        # directory left by a create that died early is removed.
        if force:
            remove_dir(container_dir(root, container_id))
            return
        raise
    status = state.status()
    if status in ("running", "paused") and not force:
        raise FailedPrecondition(
            f"cannot delete container {container_id} that is not stopped: {status}"
        )
    cgroup = Cgroup(state.record.get("cgroups") or {})
    # Processes left behind in a shared pid namespace die with the container.
    _kill_all(state, cgroup)
    try:
        spec = state.spec()
    except (OSError, ValueError):
        spec = {}
    # A cgroup that cannot be removed keeps the state, so delete can be retried.
    cgroup.destroy()
    remove_dir(state.dir)
    try:
        hooks.run_all(spec, "poststop", state.oci_state("stopped"))
    except Error as exc:
        log.warning(f"poststop: {exc}")


def _kill_all(state: State, cgroup: Cgroup) -> None:
    """SIGKILL init and every process of the cgroup, until none is left.

    Without a pid namespace of its own, a container's processes do not die
    with its init, and one that forks can outrun a kill loop; so the cgroup
    is frozen while we kill (a frozen task dies once thawed), as runc does.
    """
    try:
        os.kill(state.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if not cgroup.pids() and not state.init_alive():
            return
        try:
            cgroup.freeze(True)
        except Error:
            pass
        cgroup.signal_all(signal.SIGKILL)
        try:
            cgroup.freeze(False)
        except Error:
            pass
        try:
            os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            pass
        time.sleep(0.002)


def pause(root: str, container_id: str, frozen: bool) -> None:
    state = State.load(root, container_id)
    status = state.status()
    if frozen and status != "running":
        raise FailedPrecondition(f"cannot pause a container that is {status}")
    if not frozen and status != "paused":
        raise FailedPrecondition(f"cannot resume a container that is {status}, not paused")
    Cgroup(state.record.get("cgroups") or {}).freeze(frozen)


def container_pids(state: State) -> list[int]:
    pids = Cgroup(state.record.get("cgroups") or {}).pids()
    if not pids and state.init_alive():
        pids = [state.pid]
    return pids


class ExecOptions:
    def __init__(self, *, process: dict, detach: bool = False, pid_file: str | None = None,
                 console_socket: str | None = None, preserve_fds: int = 0) -> None:
        self.process = process
        self.detach = detach
        self.pid_file = pid_file
        self.console_socket = console_socket
        self.preserve_fds = preserve_fds


def exec_process(root: str, container_id: str, options: ExecOptions) -> int:
    """Run a new process in a running container; with detach, return at once."""
    from corral import _syscalls as sc

    from .launch import check_preserved, namespace_paths, spawn_exec

    state = State.load(root, container_id)
    status = state.status()
    if status not in ("running", "created"):
        raise FailedPrecondition(f"cannot exec in a {status} container")
    spec = state.spec()
    proc = options.process
    check_preserved(options.preserve_fds)
    relay = None
    console_fd = -1
    if proc.get("terminal"):
        if options.console_socket:
            console_fd = _connect_console(options.console_socket)
        elif options.detach:
            raise InvalidSpec("process.terminal",
                              "exec --detach with a terminal needs --console-socket")
        else:
            from .tty import Relay

            relay = Relay()
            console_fd = relay.child_end
    if not options.detach:
        sc.prctl(sc.PR_SET_CHILD_SUBREAPER, 1)
    paths = namespace_paths(spec, state.pid)
    config = ExecConfig(
        proc=proc, spec=spec, namespace_paths=paths, in_userns="user" in paths,
        console_fd=console_fd, preserve_fds=options.preserve_fds,
    )
    try:
        pid = spawn_exec(config, Cgroup(state.record.get("cgroups") or {}))
    finally:
        if console_fd >= 0 and relay is None:
            os.close(console_fd)
    if relay is not None:
        relay.receive()
    if options.pid_file:
        try:
            write_pid_file(options.pid_file, pid)
        except OSError:
            os.kill(pid, signal.SIGKILL)  # a process nobody could find again
            raise
    if options.detach:
        return 0
    return wait_init(pid, relay)
