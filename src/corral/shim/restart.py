"""Restart policies and Docker's restart back-off (docs/dev/manager.md).

A policy is Docker's ``--restart`` value: ``no``, ``always``,
``unless-stopped`` or ``on-failure[:N]`` (N retries at most; none or 0 means
no limit). A container stopped or killed through the shim's socket is never
restarted, whatever the policy; ``always`` and ``unless-stopped`` differ only
after a reboot, which is the manager's business (``Engine.boot``).

The delay before a restart starts at 100 ms and doubles after every run
shorter than 10 s, up to one minute; a run of 10 s or more resets it, so a
container that crashes once after a long run comes back at once, and one
that crashes in a loop backs off.
"""

from __future__ import annotations

from .errors import InvalidArgument

FIRST_DELAY = 0.1
MAX_DELAY = 60.0
RESET_AFTER = 10.0
POLICIES = ("no", "always", "unless-stopped", "on-failure")


class RestartPolicy:
    """One parsed ``--restart`` value."""

    def __init__(self, name: str = "no", max_retries: int = 0) -> None:
        self.name = name
        self.max_retries = max_retries

    @classmethod
    def parse(cls, text: str) -> RestartPolicy:
        """Parse ``no|always|unless-stopped|on-failure[:N]`` (empty is ``no``).

        Raises:
            InvalidArgument: an unknown policy, or a count where none belongs.
        """
        name, colon, count = (text or "no").partition(":")
        if name not in POLICIES:
            raise InvalidArgument(f"restart policy '{text}': unknown policy")
        if not colon:
            return cls(name)
        if name != "on-failure":
            raise InvalidArgument(
                f"restart policy '{text}': a retry count needs on-failure")
        if not (count.isascii() and count.isdigit()):
            raise InvalidArgument(
                f"restart policy '{text}': the retry count must be a number")
        return cls(name, int(count))

    def should_restart(self, exit_code: int, restart_count: int, stopped: bool) -> bool:
        """Whether a run that ended with EXIT_CODE is followed by another.

        RESTART_COUNT is how many restarts there have been so far; STOPPED says
        a stop or kill was asked for through the socket.
        """
        if stopped or self.name == "no":
            return False
        if self.name == "on-failure":
            if exit_code == 0:
                return False
            return self.max_retries == 0 or restart_count < self.max_retries
        return True

    def __str__(self) -> str:
        if self.name == "on-failure" and self.max_retries:
            return f"on-failure:{self.max_retries}"
        return self.name


class Backoff:
    """The delay before each restart, grown and reset as Docker does."""

    def __init__(self) -> None:
        self.delay = 0.0

    def next_delay(self, run_seconds: float) -> float:
        """The delay before the next start, after a run of RUN_SECONDS."""
        if run_seconds >= RESET_AFTER or self.delay == 0.0:
            self.delay = FIRST_DELAY
        else:
            self.delay = min(self.delay * 2, MAX_DELAY)
        return self.delay
