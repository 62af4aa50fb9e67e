"""The processes that become a container: stage 1 and init.

With a new user (or time) namespace, ``create`` forks twice, as runc does,
because a new pid (or time) namespace applies only to the children of the
process that makes it, and the user namespace must be made first::

    corral-runtime create (parent)        host namespaces; writes state
      └─ stage 1                           unshares/joins the namespaces
           └─ init (pid 1 of the container) builds the rootfs, waits, execs

Stage 1 exits as soon as init exists; init is then reparented (to the caller
if it is a subreaper, as containerd's shim and ``run`` are). Without one,
the parent makes (or joins) the pid namespace itself and forks init
directly (``stage1_and_init``, launch.py), which does stage 1's part first.

The parent makes the cgroup and moves init into it while init builds the
rootfs (the move is slow in the kernel); init waits for that before the
first cgroup mount or hook, and only then makes its cgroup namespace, whose
root is the cgroup it is in.

Parent and
children talk over a pair of pipes, one JSON object per line (channel.py).
A child that fails sends ``{"error": message}`` and exits; the parent raises
it. The pipes are close-on-exec, so when init finally execs the user process
nothing of the runtime is left open in it.

Every child leaves through os._exit: a child must never return into the
parent's Python code.

Only the children run this module's code, but the parent imports it, and
with it what only the children use (``process``, ``rootfs``), before it
forks: see launch.py for why.
"""

from __future__ import annotations

import _signal
import os

from corral import _syscalls as sc

from . import hooks, namespaces, process, rootfs
from .channel import Channel, ExecConfig, InitConfig, describe, run_child
from .errors import SetupError
from .state import FIFO

# -- stage 1: namespaces -------------------------------------------------------


def enter_namespaces(channel: Channel, wanted: dict[str, str | None],
                     time_offsets: dict | None) -> None:
    """Join the namespaces given by path and make the new ones.

    A new user namespace asks the parent to write its id maps, then takes
    uid and gid 0 inside it.
    """
    paths = {kind: path for kind, path in wanted.items() if path}
    fds = namespaces.open_paths(paths)
    try:
        if "user" in paths:
            namespaces.join(fds, paths, ("user",))
        elif "user" in wanted:
            namespaces.unshare(["user"])
            channel.send({"userns": True})
            channel.expect("mapped")
            os.setresgid(0, 0, 0)
            os.setresuid(0, 0, 0)
        namespaces.join(fds, paths, tuple(paths))
    finally:
        for fd in fds.values():
            os.close(fd)
    new = [kind for kind, path in wanted.items()
           if path is None and kind not in ("user", "cgroup")]
    namespaces.unshare(new)
    if "time" in new and time_offsets:
        namespaces.write_time_offsets(time_offsets)


def _enter(channel: Channel, config: InitConfig, wanted: dict[str, str | None]) -> None:
    channel.expect("go")
    sc.prctl(sc.PR_SET_DUMPABLE, 0)
    spec = config.spec
    process.set_oom_score_adj(spec["process"])
    enter_namespaces(channel, wanted, (spec.get("linux") or {}).get("timeOffsets"))


def stage1(channel: Channel, config: InitConfig) -> None:
    _enter(channel, config, namespaces.configured(config.spec))
    pid = os.fork()
    if pid == 0:
        run_child(channel, container_init, config)
    channel.send({"init": pid})


def stage1_and_init(channel: Channel, config: InitConfig) -> None:
    """Stage 1 and init in one process: the parent gave us our pid namespace.

    We are already pid 1 of the new pid namespace (or in the one to join, or
    the host's), so we make or join the other namespaces and go on as init.
    """
    wanted = namespaces.configured(config.spec)
    wanted.pop("pid", None)
    _enter(channel, config, wanted)
    channel.send({"init": 0})  # the parent knows our pid: it forked us
    container_init(channel, config)


# -- init: the rootfs, then wait for start, then exec --------------------------


def container_init(channel: Channel, config: InitConfig) -> None:
    os.setsid()
    sc.prctl(sc.PR_SET_DUMPABLE, 0)
    spec = config.spec
    proc = spec["process"]
    linux = spec.get("linux") or {}
    wanted = namespaces.configured(spec)
    in_userns = "user" in wanted

    # We build the rootfs while the parent makes our cgroup. The parent's
    # "joined" says we are in it, and names it: we wait for it before the
    # first cgroup mount and before any hook, and only then make our cgroup
    # namespace, whose root is the cgroup we are in.
    new_cgroupns = "cgroup" in wanted and wanted["cgroup"] is None
    joined: dict = {}

    def wait_joined() -> tuple[dict[str, str], dict[str, str]]:
        if not joined:
            joined.update(channel.expect("joined"))
            if new_cgroupns:
                namespaces.unshare(["cgroup"])
        return joined["cgroup_mounts"], joined["cgroup_paths"]

    root = rootfs.Rootfs(config.rootfs_path, config.bundle)
    rootfs.prepare(root, linux.get("rootfsPropagation"))
    mounts = spec.get("mounts") or []
    root.mount_all(mounts, new_cgroupns=new_cgroupns, cgroups=wait_joined)
    if not root.has_bind_dev(mounts):
        root.create_devices(linux.get("devices") or [], in_userns)
    cwd = proc.get("cwd") or "/"
    try:
        os.close(root.make_target(cwd, True))
    except OSError as exc:
        raise SetupError(f"process.cwd '{cwd}': {exc.strerror}") from exc

    wait_joined()
    state = hooks.hook_state(config.container_id, "creating", joined["pid"],
                             config.bundle, spec.get("annotations"))
    channel.send({"hooks": "createRuntime"})
    channel.expect("continue")
    hooks.run_all(spec, "createContainer", state)

    # Imports after the pivot would not find the host's Python library.
    if (spec.get("hooks") or {}).get("startContainer"):
        import subprocess  # noqa: F401 - the hooks need it after the pivot
    if proc.get("terminal"):
        from . import console
    seccomp_filter = build_seccomp(spec, proc)

    root.pivot(config.no_pivot)
    if "uts" in wanted:
        if spec.get("hostname"):
            sc.sethostname(spec["hostname"])
        if spec.get("domainname"):
            sc.setdomainname(spec["domainname"])
    if proc.get("terminal"):
        # The pty becomes our stdio now, as with runc: the caller's create
        # must not wait on pipes the container would otherwise hold.
        pty = console.open_pty(proc.get("consoleSize"))
        console.mount_console(pty)
        if config.console_fd >= 0:
            console.send_master(config.console_fd, pty)
        console.become_controlling(pty.slave_path)
    rootfs.finish(spec)
    process.set_rlimits(proc)
    env = process.environment(proc)
    executable = process.find_executable(proc["args"][0], env, cwd)

    channel.send({"ready": True})
    channel.close()
    wait_for_start(config, spec, proc, executable, env, in_userns, state, seccomp_filter)


def wait_for_start(config: InitConfig, spec: dict, proc: dict, executable: str,
                   env: dict[str, str], in_userns: bool, state: dict,
                   seccomp_filter) -> None:
    """Block on the exec fifo until ``start``; then exec the user process.

    Opening the fifo for writing blocks until ``start`` opens it for
    reading. We write one byte, keep the fifo open through the last steps,
    and let execve close it: ``start`` reads to end of file, so anything else
    it reads is our error message.
    """
    # As pid 1 we would ignore every signal without a handler, even from the
    # host: give the usual terminating ones a handler, so that `kill` of a
    # created container ends it. execve resets them to the defaults.
    for signum in (_signal.SIGTERM, _signal.SIGINT, _signal.SIGHUP, _signal.SIGQUIT,
                   _signal.SIGUSR1, _signal.SIGUSR2):
        _signal.signal(signum, _exit_on_signal)
    try:
        fifo = os.open(FIFO, os.O_WRONLY | os.O_CLOEXEC, dir_fd=config.state_dir_fd)
    except OSError as exc:
        # No channel and no fifo: stderr is all that is left to tell.
        os.write(2, f"corral-runtime init: open exec fifo: {exc.strerror}\n".encode())
        os._exit(1)
    os.close(config.state_dir_fd)
    os.write(fifo, b"0")
    try:
        state["status"] = "created"
        hooks.run_all(spec, "startContainer", state)
        finish_process(proc, in_userns, config.preserve_fds, seccomp_filter)
        process.exec_process(proc, executable, env)
    except BaseException as exc:  # noqa: BLE001 - reported to start
        os.write(fifo, describe(exc).encode(errors="replace"))
        os._exit(127)


def _exit_on_signal(signum: int, frame) -> None:
    os._exit(128 + signum)


def finish_process(proc: dict, in_userns: bool, preserve_fds: int,
                   seccomp_filter) -> None:
    """The last steps before execve, shared by init and exec.

    Without no_new_privs, loading a seccomp filter needs CAP_SYS_ADMIN, so
    it is loaded before the user switch drops it (as runc does); with
    no_new_privs it comes last, so that it filters nothing of ours.
    """
    for fd in range(3, 3 + preserve_fds):
        try:
            os.set_inheritable(fd, True)
        except OSError:
            pass
    sc.close_range(3 + preserve_fds, 0xFFFFFFFF, sc.CLOSE_RANGE_CLOEXEC)
    early = seccomp_filter is not None and not proc.get("noNewPrivileges")
    if early:
        seccomp_filter.load()
    process.become_user(proc, in_userns)
    process.check_cwd(proc.get("cwd") or "/")
    process.no_new_privileges(proc)
    if seccomp_filter is not None and not early:
        seccomp_filter.load()


def build_seccomp(spec: dict, proc: dict):
    """The container's seccomp filter, compiled while libseccomp can be loaded."""
    seccomp = (spec.get("linux") or {}).get("seccomp")
    if not seccomp:
        return None
    from . import seccomp as seccomp_module

    return seccomp_module.build(seccomp, bool(proc.get("noNewPrivileges")))


# -- exec: join a running container ---------------------------------------------


def exec_stage1(channel: Channel, config: ExecConfig) -> None:
    channel.expect("go")
    sc.prctl(sc.PR_SET_DUMPABLE, 0)
    seccomp_filter = build_seccomp(config.spec, config.proc)
    if config.proc.get("terminal"):
        from . import console  # noqa: F401 - before the container's mounts hide it
    paths = config.namespace_paths
    fds = namespaces.open_paths(paths)
    try:
        namespaces.join(fds, paths, tuple(paths))
    finally:
        for fd in fds.values():
            os.close(fd)
    pid = os.fork()
    if pid == 0:
        run_child(channel, exec_child, config, seccomp_filter)
    channel.send({"pid": pid})


def exec_child(channel: Channel, config: ExecConfig, seccomp_filter) -> None:
    proc = config.proc
    sc.prctl(sc.PR_SET_DUMPABLE, 0)
    os.chdir("/")
    if proc.get("terminal"):
        from . import console

        os.setsid()
        pty = console.open_pty(proc.get("consoleSize"))
        slave = pty.slave_path
        console.send_master(config.console_fd, pty)
        console.become_controlling(slave)
    process.set_oom_score_adj(proc)
    process.set_rlimits(proc)
    env = process.environment(proc)
    cwd = proc.get("cwd") or "/"
    executable = process.find_executable(proc["args"][0], env, cwd)
    finish_process(proc, config.in_userns, config.preserve_fds, seccomp_filter)
    process.exec_process(proc, executable, env)
