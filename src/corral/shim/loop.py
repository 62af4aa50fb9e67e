"""The shim's one event loop: epoll over fds, timers, and SIGCHLD.

Everything the shim waits for goes through one ``epoll_wait``: the
container's pipes or pty master, the listening socket and its connections,
and a self-pipe that the C-level signal handler writes to on SIGCHLD
(``signal.set_wakeup_fd``), so reaping needs no polling. The timeout of each
wait is the nearest timer (a restart's back-off, a stop's SIGKILL), or none:
an idle shim sleeps in the kernel until something happens.

We use ``_signal`` and ``select`` directly: the ``signal`` and ``selectors``
modules would bring ``enum`` and ``collections`` into every shim.
"""

from __future__ import annotations

import _signal
import os
import select
import time
from _collections_abc import Callable

IN = select.EPOLLIN
OUT = select.EPOLLOUT
ERR = select.EPOLLERR | select.EPOLLHUP


def _ignore(signum, frame) -> None:
    """A Python handler must exist for the C handler to write the wakeup fd."""


class Timer:
    def __init__(self, deadline: float, callback: Callable[[], None]) -> None:
        self.deadline = deadline
        self.callback = callback
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class Loop:
    """Callbacks on fd readiness, timers, and a callback on SIGCHLD."""

    def __init__(self, on_child: Callable[[], None]) -> None:
        self._epoll = select.epoll()
        self._callbacks: dict[int, Callable[[int], None]] = {}
        self._timers: list[Timer] = []
        self._wake_read, wake_write = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._wake_write = wake_write
        _signal.set_wakeup_fd(wake_write, warn_on_full_buffer=False)
        _signal.signal(_signal.SIGCHLD, _ignore)
        self._on_child = on_child
        self.register(self._wake_read, IN, self._wakeup)
        self.stopped = False

    def register(self, fd: int, mask: int, callback: Callable[[int], None]) -> None:
        self._callbacks[fd] = callback
        self._epoll.register(fd, mask)

    def modify(self, fd: int, mask: int) -> None:
        if fd in self._callbacks:
            self._epoll.modify(fd, mask)

    def unregister(self, fd: int) -> None:
        if self._callbacks.pop(fd, None) is not None:
            try:
                self._epoll.unregister(fd)
            except (OSError, ValueError):
                pass  # already closed: epoll dropped it itself

    def call_later(self, delay: float, callback: Callable[[], None]) -> Timer:
        timer = Timer(time.monotonic() + delay, callback)
        self._timers.append(timer)
        return timer

    def _wakeup(self, events: int) -> None:
        try:
            while os.read(self._wake_read, 512):
                pass
        except BlockingIOError:
            pass
        self._on_child()

    def _timeout(self) -> float:
        self._timers = [timer for timer in self._timers if not timer.cancelled]
        if not self._timers:
            return -1
        return max(0.0, min(timer.deadline for timer in self._timers) - time.monotonic())

    def _fire_timers(self) -> None:
        now = time.monotonic()
        for timer in [timer for timer in self._timers if timer.deadline <= now]:
            if not timer.cancelled:
                timer.cancelled = True
                timer.callback()

    def run(self) -> None:
        """Dispatch until ``stopped`` is set."""
        while not self.stopped:
            for fd, events in self._epoll.poll(self._timeout()):
                callback = self._callbacks.get(fd)
                if callback is not None:
                    callback(events)
                if self.stopped:
                    return
            self._fire_timers()

    def close(self) -> None:
        _signal.set_wakeup_fd(-1)
        self._epoll.close()
        os.close(self._wake_read)
        os.close(self._wake_write)
