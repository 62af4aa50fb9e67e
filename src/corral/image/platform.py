"""Platforms (OCI image index, ``platform``): which manifest of an index
to run here, and how ``--platform os/arch[/variant]`` is spelled."""

from __future__ import annotations

import platform as _host
from dataclasses import dataclass

from .errors import InvalidArgument

# uname's machine -> (GOARCH, variant), as registries name them.
_MACHINES = {
    "x86_64": ("amd64", None),
    "aarch64": ("arm64", "v8"),
    "armv7l": ("arm", "v7"),
    "armv6l": ("arm", "v6"),
    "i686": ("386", None),
    "ppc64le": ("ppc64le", None),
    "s390x": ("s390x", None),
    "riscv64": ("riscv64", None),
}


@dataclass(frozen=True)
class Platform:
    os: str
    architecture: str
    variant: str | None = None

    @classmethod
    def host(cls) -> Platform:
        machine = _host.machine()
        architecture, variant = _MACHINES.get(machine, (machine, None))
        return cls("linux", architecture, variant)

    @classmethod
    def parse(cls, text: str) -> Platform:
        parts = text.lower().split("/")
        if len(parts) not in (2, 3) or not all(parts):
            raise InvalidArgument(f"platform '{text}': must be os/arch or os/arch/variant "
                                  f"(for example linux/amd64 or linux/arm64/v8)")
        return cls(parts[0], parts[1], parts[2] if len(parts) == 3 else None)

    def matches(self, other: dict) -> bool:
        """Whether an index entry's ``platform`` object will run as this one.

        A missing variant on either side matches; arm64's variant defaults
        to v8 (containerd's normalization).
        """
        if other.get("os") != self.os or other.get("architecture") != self.architecture:
            return False
        theirs = other.get("variant") or None
        if self.architecture == "arm64":
            theirs = theirs or "v8"
            return (self.variant or "v8") == theirs
        return self.variant is None or theirs is None or theirs == self.variant

    def __str__(self) -> str:
        return "/".join(p for p in (self.os, self.architecture, self.variant) if p)
