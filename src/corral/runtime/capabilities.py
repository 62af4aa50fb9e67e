"""Process capabilities: names, and the five sets of process.capabilities.

The sets are applied around the user switch in this order, as capabilities(7)
requires: drop from the bounding set while we still hold CAP_SETPCAP; keep
the permitted set across setuid with PR_SET_KEEPCAPS; after the switch set
effective, permitted and inheritable with capset(2); last, raise the ambient
capabilities, which must already be permitted and inheritable.
"""

from __future__ import annotations

from corral import _syscalls as sc

from .errors import InvalidSpec

NAMES = [
    "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_DAC_READ_SEARCH", "CAP_FOWNER",
    "CAP_FSETID", "CAP_KILL", "CAP_SETGID", "CAP_SETUID", "CAP_SETPCAP",
    "CAP_LINUX_IMMUTABLE", "CAP_NET_BIND_SERVICE", "CAP_NET_BROADCAST",
    "CAP_NET_ADMIN", "CAP_NET_RAW", "CAP_IPC_LOCK", "CAP_IPC_OWNER",
    "CAP_SYS_MODULE", "CAP_SYS_RAWIO", "CAP_SYS_CHROOT", "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT", "CAP_SYS_ADMIN", "CAP_SYS_BOOT", "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE", "CAP_SYS_TIME", "CAP_SYS_TTY_CONFIG", "CAP_MKNOD",
    "CAP_LEASE", "CAP_AUDIT_WRITE", "CAP_AUDIT_CONTROL", "CAP_SETFCAP",
    "CAP_MAC_OVERRIDE", "CAP_MAC_ADMIN", "CAP_SYSLOG", "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND", "CAP_AUDIT_READ", "CAP_PERFMON", "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
]  # fmt: skip
NUMBERS = {name: number for number, name in enumerate(NAMES)}

SETS = ("bounding", "effective", "inheritable", "permitted", "ambient")


def last_cap() -> int:
    try:
        with open("/proc/sys/kernel/cap_last_cap") as f:
            return int(f.read())
    except OSError:
        return len(NAMES) - 1


def check(capabilities: dict, field: str = "process.capabilities") -> None:
    for key in SETS:
        for name in capabilities.get(key) or []:
            if name not in NUMBERS:
                raise InvalidSpec(f"{field}.{key}", f"unknown capability {name!r}")


def _mask(names: list[str] | None, top: int) -> int:
    mask = 0
    for name in names or []:
        number = NUMBERS[name]
        if number <= top:  # a capability this kernel lacks is left out, as runc does
            mask |= 1 << number
    return mask


class Plan:
    """The masks to apply, worked out before the user switch."""

    def __init__(self, capabilities: dict) -> None:
        self.top = last_cap()
        self.bounding = _mask(capabilities.get("bounding"), self.top)
        self.effective = _mask(capabilities.get("effective"), self.top)
        self.permitted = _mask(capabilities.get("permitted"), self.top)
        self.inheritable = _mask(capabilities.get("inheritable"), self.top)
        # The kernel refuses an ambient capability that is not both permitted
        # and inheritable; runc leaves such ones out, and so do we.
        self.ambient = (_mask(capabilities.get("ambient"), self.top)
                        & self.permitted & self.inheritable)

    def drop_bounding(self) -> None:
        for number in range(self.top + 1):
            if not self.bounding & (1 << number):
                sc.prctl(sc.PR_CAPBSET_DROP, number)

    def apply(self) -> None:
        sc.capset(self.effective, self.permitted, self.inheritable)
        for number in range(self.top + 1):
            if self.ambient & (1 << number):
                sc.prctl(sc.PR_CAP_AMBIENT, sc.PR_CAP_AMBIENT_RAISE, number)
