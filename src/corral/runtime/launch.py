"""The parent's side of making a container process (see init.py).

``spawn_init`` drives create: it forks stage 1, makes the cgroup while the
child makes the namespaces, writes user-namespace maps when asked, puts init
in the cgroup, runs the runtime-namespace hooks when init reaches them, and
returns init's pid once init reports ready. ``spawn_exec`` does the same for
a process joining a running container. Any failure kills what was started
and raises; the caller removes the rest.

We import the children's modules (init.py and, through it, ctypes, process
and rootfs) here, before the fork, although only the children use them.
Forking first and importing in the child was measured slower on our 2-core
machines: after a fork every page either process writes is copied, and
Python writes to most of the pages it reads (reference counts), so two
processes busy at once pay for the same pages twice.
"""

from __future__ import annotations

import _signal as signal
import os

from corral import _syscalls as sc

from . import hooks, log, namespaces
from .cgroups import Cgroup
from .channel import Channel, ExecConfig, InitConfig, run_child
from .errors import Error, SetupError
from .init import exec_stage1, stage1, stage1_and_init


def _fork(body, config) -> tuple[int, Channel]:
    to_child = os.pipe()
    to_parent = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(to_child[1])
        os.close(to_parent[0])
        run_child(Channel(to_child[0], to_parent[1]), body, config)
    os.close(to_child[0])
    os.close(to_parent[1])
    return pid, Channel(to_parent[0], to_child[1])


def check_preserved(preserve_fds: int) -> None:
    for fd in range(3, 3 + preserve_fds):
        try:
            os.fstat(fd)
        except OSError:
            raise SetupError(f"--preserve-fds {preserve_fds}: fd {fd} is not open") from None


def _kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _reap(pid: int) -> None:
    try:
        os.waitpid(pid, 0)
    except ChildProcessError:
        pass


def _receive(channel: Channel, stage: str) -> dict:
    message = channel.recv()
    if message is None:
        raise SetupError(f"container {stage} exited without a word")
    if "error" in message:
        raise SetupError(message["error"])
    return message


def _fork_init(config: InitConfig,
               wanted: dict[str, str | None]) -> tuple[int, Channel]:
    """Fork init itself, in the pid namespace we make or join for it.

    Stage 1 exists because a pid namespace, made with unshare(2) or joined
    with setns(2), applies to the children of the process that does so; and
    a user namespace must come first, so that it owns the others. Without a
    user (or time) namespace, we do it ourselves and fork init directly: a
    process, a fork and a round trip fewer. Both calls change only our
    pid_for_children, and right after the fork we setns(2) back to our own
    pid namespace (allowed: it is our active one), so the hooks we start
    later start in the host's.
    """
    if "pid" not in wanted:
        return _fork(stage1_and_init, config)
    own = os.open("/proc/self/ns/pid", os.O_RDONLY | os.O_CLOEXEC)
    pid = 0
    try:
        path = wanted["pid"]
        if path:
            fds = namespaces.open_paths({"pid": path})
            namespaces.join(fds, {"pid": path}, ("pid",))
        else:
            namespaces.unshare(["pid"])
        pid, channel = _fork(stage1_and_init, config)
        sc.setns(own, sc.CLONE_NEWPID, "/proc/self/ns/pid")
        return pid, channel
    except BaseException:
        if pid:
            _kill(pid)
            _reap(pid)
            channel.close()
        # Never left with the container's pid namespace for our children.
        sc.setns(own, sc.CLONE_NEWPID, "/proc/self/ns/pid")
        raise
    finally:
        os.close(own)


def spawn_init(config: InitConfig, spec: dict, make_cgroup, write_state) -> int:
    """Fork the container's init; return its pid once it waits for start.

    MAKE_CGROUP makes and limits the cgroup, and returns the ``Cgroup`` and
    the cgroup mounts it found; it runs while the child makes the
    namespaces and the rootfs. WRITE_STATE writes what create keeps, once
    init is in its cgroup (init then mounts cgroups and pivots).
    """
    wanted = namespaces.configured(spec)
    direct = "user" not in wanted and "time" not in wanted
    pid, channel = _fork_init(config, wanted) if direct else _fork(stage1, config)
    init_pid = pid if direct else 0
    try:
        channel.send({"go": True})
        cgroup, cgroup_mounts = make_cgroup()
        message = _receive(channel, "stage 1")
        if "userns" in message:
            namespaces.write_id_maps(pid, spec.get("linux") or {})
            channel.send({"mapped": True})
            message = _receive(channel, "stage 1")
        if not direct:
            init_pid = message["init"]
            _reap(pid)
        # Init builds its rootfs meanwhile: moving a process into a v1
        # cgroup waits for an RCU grace period (see cgroups.warm_up).
        cgroup.join(init_pid)
        channel.send({"joined": True, "pid": init_pid, "cgroup_mounts": cgroup_mounts,
                      "cgroup_paths": cgroup.paths})
        write_state()
        message = _receive(channel, "init")
        state = hooks.hook_state(config.container_id, "creating", init_pid,
                                 config.bundle, spec.get("annotations"))
        hooks.run_all(spec, "prestart", state)
        hooks.run_all(spec, "createRuntime", state)
        channel.send({"continue": True})
        _receive(channel, "init")  # ready
        return init_pid
    except BaseException:
        _kill(pid)
        _reap(pid)
        if init_pid:
            _kill(init_pid)
            _reap(init_pid)
        raise
    finally:
        channel.close()


def spawn_exec(config: ExecConfig, cgroup: Cgroup) -> int:
    """Fork a process into the container; return its pid once it has exec'd."""
    pid, channel = _fork(exec_stage1, config)
    child = 0
    try:
        try:
            cgroup.join(pid)
        except Error as exc:
            # A cgroup removed under us: the process still runs, uncounted.
            log.warning(f"exec: {exc}")
        channel.send({"go": True})
        child = _receive(channel, "exec")["pid"]
        _reap(pid)
        message = channel.recv()  # end of file: the process has exec'd
        if message is not None and "error" in message:
            _reap(child)
            child = 0
            raise SetupError(message["error"])
        return child
    except BaseException:
        _kill(pid)
        _reap(pid)
        if child:
            _kill(child)
            _reap(child)
        raise
    finally:
        channel.close()


def namespace_paths(spec: dict, init_pid: int) -> dict[str, str]:
    """The namespaces of a running container, as paths under /proc."""
    return {
        kind: f"/proc/{init_pid}/ns/{namespaces.PROC_NAMES[kind]}"
        for kind in namespaces.configured(spec)
    }
