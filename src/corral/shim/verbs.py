"""corral-runtime's verbs, as the shim calls them (create, start, kill, delete).

Each verb is a short-lived process started with ``os.posix_spawn`` (no
``subprocess`` import in a process that lives as long as its container) and
waited for by its pid, so the main loop's reaping never sees it. The runtime
logs in JSON to the shim's own log; when a verb fails, its message is the
last ``"level":"error"`` line it wrote there, as containerd's runc shim
reads it.

Python ignores SIGPIPE and SIGXFSZ, and ignored signals survive execve: they
are put back to their defaults in the child, or a container's ``yes | head``
would never see its SIGPIPE.
"""

from __future__ import annotations

import _signal
import os

from corral import _json

from .errors import RuntimeFailed

_DEFAULT_SIGNALS = (_signal.SIGPIPE, _signal.SIGXFSZ, _signal.SIGHUP, _signal.SIGCHLD)


class Runtime:
    """One runtime binary with its ``--root``, logging into LOG_PATH."""

    def __init__(self, path: str, root: str, log_path: str) -> None:
        self.path = path
        self.root = root
        self.log_path = log_path
        self.ours = _is_our_runtime(path)

    def run(self, verb: str, *args: str, stdio: tuple[int, int, int] | None = None,
            ) -> None:
        """Run ``runtime VERB ARGS`` to its end, its stdio on STDIO (fds 0, 1, 2).

        Raises:
            RuntimeFailed: it exited non-zero; the message is the runtime's.
        """
        argv = [self.path, "--root", self.root, "--log", self.log_path,
                "--log-format", "json", verb, *args]
        offset = _size(self.log_path)
        pid = fork_ours(argv, stdio) if self.ours else spawn(argv, stdio)
        _, status = os.waitpid(pid, 0)
        if status != 0:
            raise RuntimeFailed(self.last_error(offset) or
                                f"{verb}: corral-runtime exited with status {status >> 8}")

    def last_error(self, offset: int) -> str:
        """The message of the last error line written to the log after OFFSET."""
        try:
            with open(self.log_path, "rb") as log:
                log.seek(offset)
                lines = log.read().splitlines()
        except OSError:
            return ""
        for line in reversed(lines):
            if b'"level":"error"' in line:
                try:
                    return str(_json.loads(line).get("msg", ""))
                except (ValueError, AttributeError):
                    return line.decode(errors="replace")
        return ""


def _size(path: str) -> int:
    try:
        return os.stat(path).st_size
    except OSError:
        return 0


def _is_our_runtime(path: str) -> bool:
    """Whether PATH is the corral-runtime of this very installation."""
    import sys

    ours = os.path.join(os.path.dirname(sys.executable), "corral-runtime")
    try:
        return os.path.samefile(path, ours)
    except OSError:
        return False


def fork_ours(argv: list[str], stdio: tuple[int, int, int] | None = None) -> int:
    """Run our own corral-runtime in a forked child rather than a new
    process: the same code, without a Python start (about 15 ms of every
    container start and stop). The child keeps nothing of the shim but its
    interpreter: stdio on STDIO, every other fd closed, signals back to
    their defaults, and it leaves through os._exit like the runtime's own
    entry point; what it imports never reaches the shim's memory."""
    pid = os.fork()
    if pid:
        return pid
    try:
        null = os.open(os.devnull, os.O_RDWR)
        for target, fd in enumerate(stdio or (null, null, null)):
            os.dup2(fd, target)
        os.closerange(3, 1 << 16)
        _signal.set_wakeup_fd(-1)
        for signum in (*_DEFAULT_SIGNALS, _signal.SIGTERM, _signal.SIGINT):
            _signal.signal(signum, _signal.SIG_DFL)
        import sys

        from corral.runtime import __main__ as runtime_main

        sys.argv = argv
        runtime_main.main()
    finally:
        os._exit(125)


def spawn(argv: list[str], stdio: tuple[int, int, int] | None = None) -> int:
    """Start ARGV with STDIO as fds 0, 1, 2 (/dev/null by default); its pid."""
    null = -1
    if stdio is None:
        null = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)
        stdio = (null, null, null)
    # dup2 onto the same number would keep close-on-exec set: go through a copy.
    actions = []
    copies = []
    for target, fd in enumerate(stdio):
        if fd == target:
            fd = os.dup(fd)
            copies.append(fd)
        actions.append((os.POSIX_SPAWN_DUP2, fd, target))
    try:
        return os.posix_spawn(argv[0], argv, os.environ, file_actions=actions,
                              setsigdef=_DEFAULT_SIGNALS, setsid=False)
    finally:
        for fd in copies:
            os.close(fd)
        if null >= 0:
            os.close(null)
