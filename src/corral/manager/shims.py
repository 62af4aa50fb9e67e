"""The engine's side of corral-shim (docs/dev/manager.md, "corral-shim"):
spawning one for a container's start, and reading the state it writes.

A shim detaches into its own session and outlives whoever spawned it; it
reports ``{"pid": N}`` or ``{"error": ...}`` on the ready pipe once the
runtime's create and start are done. Its ``state.json`` is the truth about
a started container, read by every engine process on the root.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from .errors import Error, StartFailed

SHIM = Path(sys.executable).parent / "corral-shim"
# Built by scripts/setup from src/corral/shim/subreaper.c: starts the shim
# detached with one Python start instead of two.
SUBREAPER = Path(sys.executable).parent.parent / "libexec" / "corral-subreaper"
RUNTIME = Path(sys.executable).parent / "corral-runtime"
START_TIMEOUT = 60.0


@dataclass(frozen=True)
class ShimOptions:
    """The per-container flags of one shim."""

    tty: bool = False
    stdin: bool = False
    stdin_once: bool = False
    restart: str = "no"
    log_max_size: int = 0
    log_max_file: int = 1
    name: str = ""                       # for the shim's events
    image: str = ""
    exit_command: tuple[str, ...] = ()   # run once the container is gone for good


def spawn(container_id: str, *, bundle: Path, state_dir: Path, runtime_root: Path,
          log_path: Path, events_db: Path, options: ShimOptions) -> int:
    """Start the shim of ``container_id``; the container process's PID.

    Raises:
        StartFailed: the runtime refused (its message), or the shim died.
    """
    read_end, write_end = os.pipe2(os.O_CLOEXEC)
    args = [str(SHIM), "--id", container_id, "--bundle", str(bundle),
            "--state-dir", str(state_dir), "--runtime", str(RUNTIME),
            "--runtime-root", str(runtime_root), "--log-path", str(log_path),
            "--log-max-size", str(options.log_max_size),
            "--log-max-file", str(options.log_max_file),
            "--restart", options.restart, "--events-db", str(events_db),
            "--ready-fd", str(write_end)]
    args += [flag for flag, on in (("--tty", options.tty), ("--stdin", options.stdin),
                                   ("--stdin-once", options.stdin_once)) if on]
    for flag, value in (("--name", options.name), ("--image", options.image)):
        if value:
            args += [flag, value]
    if options.exit_command:
        args += ["--exit-command", json.dumps(list(options.exit_command))]
    try:
        forked = _spawn_by_template(state_dir, args[1:], write_end)
    except BaseException:
        os.close(write_end)
        os.close(read_end)
        raise
    if forked:
        with os.fdopen(read_end, "rb") as ready:
            line = ready.readline()
        return _ready(container_id, line)
    if SUBREAPER.exists():
        from ..shim.main import detached_command

        args = [str(SUBREAPER), "--detach", *detached_command(args[1:])]
    try:
        process = subprocess.Popen(args, stdin=subprocess.DEVNULL,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                   pass_fds=(write_end,), start_new_session=True)
    except OSError as exc:
        os.close(read_end)
        raise Error(f"start container '{container_id}': run '{SHIM}': "
                    f"{exc.strerror}") from exc
    finally:
        os.close(write_end)
    with os.fdopen(read_end, "rb") as ready:
        line = ready.readline()
    # A shim that stays our child (no double fork) is reaped by Popen's own
    # clean-up of dropped objects; one that forked has exited already.
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=0)
    return _ready(container_id, line)


def _spawn_by_template(state_dir: Path, flags: list[str], ready_fd: int) -> bool:
    """Have the template of ``shims_dir`` fork the shim (shim/template.py),
    starting the template first if none answers; False if that cannot be
    done, and the caller starts the shim itself. Closes ``ready_fd`` on
    success (the shim has its own copy)."""

    from ..shim import template

    flags = [f for i, f in enumerate(flags)
             if f != "--ready-fd" and (i == 0 or flags[i - 1] != "--ready-fd")]
    path = state_dir.parent.parent / f"shim-template-{template.code_token()}.sock"
    # On unless CORRAL_SHIM_TEMPLATE=0 (every shim then a Python start of
    # its own, about 3 MB each instead of 1.7).
    if len(str(path)) > 107 or os.environ.get("CORRAL_SHIM_TEMPLATE") == "0":
        return False
    # Before the request: should we die now, recovery knows a shim may be
    # on its way (running_shims).
    marker = state_dir / template.SPAWNING
    state_dir.mkdir(parents=True, exist_ok=True)
    marker.write_text(str(path))
    try:
        sent = _request_shim(path, flags, ready_fd)
    except BaseException:
        marker.unlink(missing_ok=True)
        raise
    if not sent:
        marker.unlink(missing_ok=True)
    return sent


def _request_shim(path: Path, flags: list[str], ready_fd: int) -> bool:
    import socket

    for attempt in range(2):
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
                sock.settimeout(10)
                sock.connect(str(path))
                request = {"argv": flags, "env": dict(os.environ)}
                sock.sendmsg([json.dumps(request).encode()],
                             [(socket.SOL_SOCKET, socket.SCM_RIGHTS,
                               ready_fd.to_bytes(4, sys.byteorder))])
                answer = sock.makefile("rb").readline()
            if b'"pid"' not in answer:
                return False
            os.close(ready_fd)
            return True
        except OSError:
            if attempt or not _start_template(path):
                return False
    return False


def _start_template(path: Path) -> bool:
    """Start a template serving on ``path`` unless another process just
    did; whether one listens within 2 s."""
    import fcntl

    if not SUBREAPER.exists():
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    # One starter at a time: two engines that both found no template would
    # each start one, the second unlinking the first one's socket.
    fd = os.open(f"{path}.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        return _answers(path) or _launch_template(path)
    finally:
        os.close(fd)


def _answers(path: Path) -> bool:
    import socket

    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        try:
            sock.connect(str(path))
        except OSError:
            return False
    return True


def _launch_template(path: Path) -> bool:
    import time

    from ..shim import template

    # A socket nobody answers on is a dead template's.
    path.unlink(missing_ok=True)
    subprocess.run([str(SUBREAPER), "--detach", *template.command(str(path))],
                   stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL, close_fds=True, check=False)
    deadline = time.monotonic() + 2.0
    while time.monotonic() < deadline:
        if path.exists():
            return True
        time.sleep(0.005)
    return False


def _ready(container_id: str, line: bytes) -> int:
    if not line:
        raise StartFailed(f"start container '{container_id}': the shim exited before "
                          f"it was ready")
    try:
        answer = json.loads(line)
    except ValueError:
        raise StartFailed(f"start container '{container_id}': the shim said "
                          f"{line[:200]!r}") from None
    if "error" in answer:
        raise StartFailed.from_runtime(container_id, str(answer["error"]))
    return int(answer.get("pid", 0))


def read_state(state_dir: Path) -> dict | None:
    """The shim's state.json, or None when there is none (never started,
    removed, or rebooted since)."""
    try:
        return json.loads((state_dir / "state.json").read_text())
    except FileNotFoundError:
        return None
    except ValueError:
        # Written by rename, so never partial; an unreadable one is a bug
        # of the shim's, and we had better say so than guess.
        raise Error(f"read '{state_dir / 'state.json'}': not JSON") from None


def alive(pid: int) -> bool:
    """Whether ``pid`` exists (a zombie counts as gone)."""
    if pid <= 0:
        return False
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            fields = stat.read().rsplit(b")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False
    return fields[0] != b"Z"


def runtime(runtime_root: Path, *args: str, check: bool = True,
            timeout: float = 30) -> subprocess.CompletedProcess:
    """Run one corral-runtime verb against the engine's runtime root."""
    completed = subprocess.run([str(RUNTIME), "--root", str(runtime_root), *args],
                               stdin=subprocess.DEVNULL, capture_output=True, text=True,
                               timeout=timeout)
    if check and completed.returncode != 0:
        message = completed.stderr.strip().removeprefix("corral-runtime: ")
        raise Error(f"corral-runtime {args[0]} '{args[-1]}': {message}")
    return completed


def shim_alive(state_dir: Path) -> bool:
    """Whether the shim of ``state_dir`` still runs."""
    try:
        pid = int((state_dir / "shim.pid").read_text().strip())
    except (FileNotFoundError, ValueError):
        return False
    return alive(pid) and _is_shim(pid)


def kill_shim(state_dir: Path, timeout: float = 5.0) -> None:
    """SIGKILL the shim of ``state_dir`` if it still lives, and wait for it
    to be gone, so it writes nothing there after its caller removes it."""
    import time

    try:
        pid = int((state_dir / "shim.pid").read_text().strip())
    except (FileNotFoundError, ValueError):
        return
    if not alive(pid) or not _is_shim(pid):
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, 9)
    deadline = time.monotonic() + timeout
    while alive(pid) and time.monotonic() < deadline:
        time.sleep(0.005)


def _is_shim(pid: int) -> bool:
    with contextlib.suppress(OSError):
        return looks_like_shim(Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0"))
    return False


def looks_like_shim(args: list[bytes]) -> bool:
    """Whether a command line is corral-shim's: its launcher, or the
    ``python -S -c ...corral.shim.main...`` it re-executes itself as."""
    return any(b"corral-shim" in a or b"corral.shim.main" in a
               or b"corral.shim.template" in a for a in args[:4])


def running_shims(state_root: Path) -> set[str]:
    """IDs of the live shims whose state directory is under ``state_root``,
    found from /proc: a shim that has not yet written its pid file counts."""
    ids = set()
    prefix = f"{state_root}/".encode()
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/cmdline", "rb") as file:
                args = file.read().split(b"\0")
        except OSError:
            continue
        if b"--state-dir" not in args or not looks_like_shim(args):
            continue
        index = args.index(b"--state-dir") + 1
        if index < len(args) and args[index].startswith(prefix) and alive(int(entry.name)):
            ids.add(args[index][len(prefix):].decode(errors="replace"))
    # A shim forked by a template has the template's command line until it
    # has rewritten it (shim/template.py, _retitle): until then its pid
    # file says, or, before it has written one, the engine's mark while the
    # template that is forking it lives.
    with contextlib.suppress(FileNotFoundError):
        for directory in os.scandir(state_root):
            if directory.is_dir() and (shim_alive(Path(directory.path))
                                       or spawning(Path(directory.path))):
                ids.add(directory.name)
    return ids


def spawning(state_dir: Path) -> bool:
    """Whether the engine's mark says a template may be forking this
    directory's shim: the template lives, and the mark is recent. A mark
    left by an engine killed before its request went out would otherwise
    pass for a shim on its way for ever; the fork it stands for takes
    milliseconds, and the engine itself gives the template 10 s."""
    import time

    from ..shim import template

    marker = state_dir / template.SPAWNING
    try:
        if time.time() - marker.stat().st_mtime > START_TIMEOUT:
            return False
        socket_path = marker.read_text()
        pid = int(Path(f"{socket_path}.pid").read_text())
    except (OSError, ValueError):
        return False
    return alive(pid) and _is_shim(pid)
