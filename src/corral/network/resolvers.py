"""Starting and stopping the name resolver of each user network.

One detached process per network (`resolver.py`), started by the first attach
that needs it and stopped when the network is removed. A resolver found dead
(its pid file names no live resolver of that network) is started again by
the next attach (every container start attaches), by `revive` (corrald's
start, its watch, an exec): the check is a pid file and one /proc read, no
process is started while the resolver lives. It is started through ``setsid --fork`` so that it is
nobody's child: neither corrald nor a short-lived CLI must reap it. It
writes its pid file and then one line on the ready pipe once both its
sockets are bound, so an attach returns with names resolvable.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager
from pathlib import Path

from .errors import NetworkError
from .models import Network

READY_TIMEOUT = 10.0
STOP_TIMEOUT = 2.0


class Resolvers:
    """The resolver processes of one root, by network ID."""

    def __init__(self, directory: Path, db: Path) -> None:
        self.directory = directory
        self.db = db

    def pid_file(self, network: Network) -> Path:
        """Where the network's resolver writes its pid."""
        return self.directory / f"{network.id}.pid"

    def running(self, network: Network) -> int | None:
        """The pid of the network's live resolver, if there is one."""
        try:
            pid = int(self.pid_file(network).read_text())
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except (OSError, ValueError):
            return None
        if b"corral.network.resolver" in cmdline and network.id.encode() in cmdline:
            return pid
        return None

    def ensure(self, network: Network) -> None:
        """Start the network's resolver unless one runs."""
        if self.running(network) is None:
            self._start(network)

    def revive(self, networks: Iterable[Network],
               locked: Callable[[], AbstractContextManager]) -> list[str]:
        """Start the resolver of each network that has none running, under
        ``locked`` (the network lock, so no two processes start one); the
        names of those started. Tries every network, then raises the first
        failure."""
        dead = [n for n in networks if self.running(n) is None]
        started, failures = [], []
        if not dead:
            return started
        with locked():
            for network in dead:
                try:
                    if self.running(network) is None:
                        self._start(network)
                        started.append(network.name)
                except NetworkError as exc:
                    failures.append(exc)
        if failures:
            raise failures[0]
        return started

    def stop(self, network: Network) -> None:
        """Stop the network's resolver (SIGTERM, then SIGKILL); idempotent."""
        pid = self.running(network)
        if pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
            deadline = time.monotonic() + STOP_TIMEOUT
            while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
                time.sleep(0.01)
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        self.pid_file(network).unlink(missing_ok=True)

    def _start(self, network: Network) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        read_end, write_end = os.pipe()
        log = open(self.directory / f"{network.id}.log", "ab")  # noqa: SIM115
        command = ["setsid", "--fork", sys.executable, "-m", "corral.network.resolver",
                   "--db", str(self.db), "--network", network.id,
                   "--listen", network.gateway, "--subnet", network.subnet,
                   "--pid-file", str(self.pid_file(network)),
                   "--ready-fd", str(write_end)]
        try:
            subprocess.run(command, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                           pass_fds=(write_end,), check=True)
        except (OSError, subprocess.CalledProcessError) as exc:
            raise NetworkError(f"start resolver '{network.name}': {exc}") from exc
        finally:
            os.close(write_end)
            log.close()
        try:
            line = _read_line(read_end, READY_TIMEOUT)
        finally:
            os.close(read_end)
        if line != "ready":
            raise NetworkError(f"start resolver '{network.name}': "
                               f"{line or 'exited before it was ready'}")


def _read_line(fd: int, timeout: float) -> str:
    data = b""
    deadline = time.monotonic() + timeout
    while not data.endswith(b"\n"):
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([fd], [], [], left)[0]:
            return "timed out"
        chunk = os.read(fd, 512)
        if not chunk:
            break
        data += chunk
    return data.decode(errors="replace").strip()
