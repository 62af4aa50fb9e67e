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

from . import hooks, log, namespaces
from .cgroups import Cgroup
from .channel import Channel, ExecConfig, InitConfig, run_child
from .errors import Error, SetupError
from .init import exec_stage1, stage1


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


def spawn_init(config: InitConfig, spec: dict, prepare) -> int:
    """Fork the container's init; return its pid once it waits for start.

    PREPARE writes what create keeps and makes and limits the cgroup; it
    returns the ``Cgroup`` and the cgroup mounts it found, and runs while
    stage 1 makes the namespaces.
    """
    pid, channel = _fork(stage1, config)
    init_pid = 0
    try:
        channel.send({"go": True})
        cgroup, cgroup_mounts = prepare()
        message = _receive(channel, "stage 1")
        if "userns" in message:
            namespaces.write_id_maps(pid, spec.get("linux") or {})
            channel.send({"mapped": True})
            message = _receive(channel, "stage 1")
        init_pid = message["init"]
        _reap(pid)
        channel.send({"setup": True, "pid": init_pid, "cgroup_mounts": cgroup_mounts,
                      "cgroup_paths": cgroup.paths})
        # Init builds its rootfs while we wait here: moving a process into a
        # v1 cgroup waits for an RCU grace period (10-20 ms on our machines).
        cgroup.join(init_pid)
        channel.send({"joined": True})
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
