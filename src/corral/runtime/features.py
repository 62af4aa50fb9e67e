"""The ``features`` document of runtime-spec features.md.

dockerd and containerd read it to learn what the runtime can do, so it must
say only what is true of this runtime.
"""

from __future__ import annotations

from corral.oci.spec import HOOK_KINDS, NAMESPACES, SPEC_VERSION

from . import capabilities, seccomp
from .rootfs import _FLAGS, PROPAGATION


def features() -> dict:
    return {
        "ociVersionMin": "1.0.0",
        "ociVersionMax": SPEC_VERSION,
        "hooks": list(HOOK_KINDS),
        "mountOptions": sorted(set(_FLAGS) | set(PROPAGATION)),
        "linux": {
            "namespaces": list(NAMESPACES),
            "capabilities": list(capabilities.NAMES),
            "cgroup": {
                "v1": True,
                "v2": True,
                "systemd": False,
                "systemdUser": False,
                "rdma": False,
            },
            "seccomp": {
                "enabled": True,
                "actions": list(seccomp.ACTIONS),
                "operators": list(seccomp.OPERATORS),
                "archs": list(seccomp.ARCHES),
                "knownFlags": list(seccomp.FLAGS),
                "supportedFlags": list(seccomp.FLAGS),
            },
            "apparmor": {"enabled": False},
            "selinux": {"enabled": False},
            "intelRdt": {"enabled": False},
            "mountExtensions": {"idmap": {"enabled": False}},
        },
        "annotations": {
            "org.opencontainers.runtime-spec.features": SPEC_VERSION,
        },
    }
