"""A template shim: one idle process per run directory that forks the shims.

Most of a shim's memory is the Python interpreter's own (its data, the
heap, the code of the modules it loaded), the same in every shim. Shims
forked from one template share those pages copy-on-write, so each costs
only what it writes, and a fork starts in a millisecond where a Python
start takes twenty. (Android's zygote is the same idea.)

The engine sends the template one JSON line, the shim's flags and its own
environment (``{"argv": [...], "env": {...}}``: a shim has its spawner's
environment, as a plain one would), with the ready fd in SCM_RIGHTS; the
template forks; the child makes itself a shim
exactly as a detached corral-shim would (new session, child subreaper,
every other fd closed) and the template answers ``{"pid": N}``. The
template reaps its children, and exits after IDLE_EXIT seconds without a
request or once its socket is removed; its shims live on without it. If it
cannot be reached, the engine starts shims the plain way.

The socket's name carries a digest of the shim's code, so a template never
forks shims of code older than the engine's.

A forked shim rewrites its command line (the template's, until then) to
``corral-shim --id ID --state-dir DIR``: whoever looks for the shims of a
run directory in /proc (recovery, ``ps``, the tests) must see it exactly
as a shim started the plain way. Without it, a shim forked just before its
engine was killed ran unseen while it started its container, and anyone
checking then found a cgroup for a container with "no shim at work".
"""

from __future__ import annotations

import _socket
import gc
import os
import sys
import time

from corral import _json

IDLE_EXIT = 600.0
# Written by the engine in a shim's state directory before it asks the
# template for the shim (it holds the template's socket path); removed by
# the shim once its shim.pid is written. Until then, recovery counts the
# shim as on its way while the template lives (manager/shims.py).
SPAWNING = "shim.spawning"
# Room kept in the template's command line for the forked shim's own
# (``corral-shim --id <64> --state-dir DIR``, DIR short enough for a
# socket path of 107 bytes under it): /proc shows the original argv area,
# which a process can overwrite but not grow.
TITLE_ROOM = 256


def code_token() -> str:
    """A digest of the shim's modules (names, sizes, mtimes), the package's
    own top-level modules (``_json``, ``_syscalls``: loaded in the template
    too, and used by the runtime its shims fork) and the interpreter."""
    import zlib

    directory = os.path.dirname(os.path.abspath(__file__))
    parts = [sys.executable]
    for folder in (directory, os.path.dirname(directory)):
        for name in sorted(os.listdir(folder)):
            if name.endswith(".py"):
                st = os.stat(os.path.join(folder, name))
                parts.append(f"{name}:{st.st_size}:{st.st_mtime_ns}")
    return f"{zlib.crc32('|'.join(parts).encode()):08x}"


def serve(sock_path: str) -> None:
    """Run the template on SOCK_PATH until it has been idle for IDLE_EXIT."""
    # Loaded here, once, for every shim forked later (shared pages).
    import _ctypes  # noqa: F401  (prctl below, through corral._syscalls)
    import _signal

    from corral import _syscalls

    from . import main, supervisor  # noqa: F401 (main: loaded for the forks)

    # Reap shims as they end (a zombie would pass for a live shim); the
    # forked child puts the default back before anything else.
    _signal.signal(_signal.SIGCHLD, lambda signum, frame: _reap())
    # The pid file before the socket: an engine that finds the socket may
    # send a request and die at once, and recovery then needs the pid to
    # know that a shim is on its way (manager/shims.py, _spawning).
    _write_pid(f"{sock_path}.pid")
    # Bound and listening under another name first, so that the socket the
    # engine waits for is one it can connect to as soon as it appears.
    listener = supervisor._listen(f"{sock_path}.new")
    os.chmod(f"{sock_path}.new", 0o600)
    os.replace(f"{sock_path}.new", sock_path)
    ours = os.stat(sock_path).st_ino
    listener.settimeout(1.0)
    # Whatever is loaded now stays: a full collection in a busy shim would
    # otherwise walk these objects and copy every page they are on. (Idle
    # shims measured the same with and without: 1.61 MB each.)
    gc.freeze()
    last = time.monotonic()
    # Until idle for long, or until our socket is gone or replaced (the run
    # directory wiped, as at a reboot, or a test's removed).
    while time.monotonic() - last < IDLE_EXIT and _inode(sock_path) == ours:
        _reap()
        try:
            fd, _ = listener._accept()
        except TimeoutError:
            continue
        conn = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM, 0, fd)
        last = time.monotonic()
        try:
            _handle(conn, listener, _syscalls)
        except OSError:
            pass
        finally:
            conn.close()
    listener.close()
    # Only what is still ours: a new template may serve on the path now.
    if _inode(sock_path) == ours:
        supervisor._unlink(sock_path)
    try:
        with open(f"{sock_path}.pid") as pid_file:
            mine = pid_file.read() == str(os.getpid())
    except OSError:
        mine = False
    if mine:
        supervisor._unlink(f"{sock_path}.pid")


def _write_pid(path: str) -> None:
    with open(f"{path}.tmp", "w") as pid_file:
        pid_file.write(str(os.getpid()))
    os.replace(f"{path}.tmp", path)


def _inode(path: str) -> int:
    try:
        return os.stat(path).st_ino
    except OSError:
        return -1


def _handle(conn, listener, syscalls) -> None:
    conn.settimeout(10.0)
    data, fds, _, _ = conn.recvmsg(1 << 16, _socket.CMSG_SPACE(4))
    ready_fd = _received_fd(fds)
    if ready_fd < 0:
        conn.sendall(b'{"error": "no ready fd"}\n')
        return
    try:
        try:
            request = _json.loads(data)
            argv, env = request["argv"], request["env"]
        except (ValueError, TypeError, KeyError):
            conn.sendall(b'{"error": "the request is not {argv, env}"}\n')
            return
        pid = os.fork()
        if pid == 0:
            _become_shim(listener, conn, ready_fd, argv, env, syscalls)
        conn.sendall((_json.dumps({"pid": pid}) + "\n").encode())
    finally:
        os.close(ready_fd)


def _become_shim(listener, conn, ready_fd: int, argv: list[str], env: dict,
                 syscalls) -> None:
    """In the forked child: what corral-shim's detach does, then the shim."""
    code = 1
    try:
        import _signal

        _signal.signal(_signal.SIGCHLD, _signal.SIG_DFL)
        listener.close()
        conn.close()
        os.environ.clear()
        os.environ.update(env)
        os.setsid()
        syscalls.prctl(syscalls.PR_SET_CHILD_SUBREAPER, 1)
        from . import main, supervisor

        options = main.parse_args([*argv, "--ready-fd", str(ready_fd)])
        _retitle(["corral-shim", "--id", options.id, "--state-dir", options.state_dir])
        os.makedirs(options.state_dir, mode=0o700, exist_ok=True)
        main._settle(options)
        # shim.pid is written: the engine's "a shim is on its way" mark can go.
        supervisor._unlink(os.path.join(options.state_dir, SPAWNING))
        code = main.run(options)
    except BaseException as exc:  # noqa: BLE001 - the shim's last word
        try:
            from . import main

            main._last_word(options, exc)  # type: ignore[possibly-undefined]
        except BaseException:  # noqa: BLE001
            pass
    finally:
        try:
            from . import supervisor

            supervisor._unlink(os.path.join(options.state_dir, SPAWNING))
        except BaseException:  # noqa: BLE001 - no options: nothing to undo
            pass
        os._exit(code)


def _retitle(args: list[str]) -> None:
    """Show ARGS as this process's command line in /proc/PID/cmdline.

    The kernel reads it from the argv area of our own memory (arg_start to
    arg_end, fields 48 and 49 of /proc/self/stat), so we write the new one
    there through /proc/self/mem, padded with NULs: Python has no
    setproctitle, and prctl's PR_SET_MM_ARG_START needs CAP_SYS_RESOURCE.
    The last byte stays NUL, else the kernel would read on into the
    environment (proc(5), "cmdline"). Left as it was if it does not fit.
    """
    with open("/proc/self/stat", "rb") as stat:
        fields = stat.read().rsplit(b")", 1)[1].split()
    start, end = int(fields[45]), int(fields[46])
    title = b"\0".join(arg.encode() for arg in args) + b"\0"
    if len(title) > end - start:
        return
    fd = os.open("/proc/self/mem", os.O_RDWR | os.O_CLOEXEC)
    try:
        os.pwrite(fd, title.ljust(end - start, b"\0"), start)
    finally:
        os.close(fd)


def _received_fd(ancillary) -> int:
    for level, kind, payload in ancillary:
        if level == _socket.SOL_SOCKET and kind == _socket.SCM_RIGHTS and len(payload) >= 4:
            return int.from_bytes(payload[:4], sys.byteorder)
    return -1


def _reap() -> None:
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def command(sock_path: str) -> list[str]:
    """The command line of a template serving on SOCK_PATH."""
    package_dir = os.path.dirname(os.path.dirname(os.path.dirname(__file__)))
    code = (f"import sys; sys.path.insert(0, {package_dir!r}); "
            "from corral.shim.template import serve; serve(sys.argv[1])")
    return [sys.executable, "-S", "-c", code, sock_path, " " * TITLE_ROOM]
