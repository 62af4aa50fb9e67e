"""Test bundles: a busybox rootfs from Debian's busybox-static, and a spec.

The rootfs is built once per session and copied for each bundle that will
change it; bundles that only read it share the one copy through a read-only
root.
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import subprocess
from pathlib import Path

from corral.oci.spec import default_spec

BUSYBOX = "/bin/busybox"


def build_rootfs(path: Path) -> Path:
    """A minimal rootfs: busybox and its applets, /etc/passwd and /etc/group."""
    for directory in ("bin", "etc", "tmp", "proc", "sys", "dev", "root", "home/user"):
        (path / directory).mkdir(parents=True, exist_ok=True)
    os.chmod(path / "tmp", 0o1777)
    shutil.copy2(BUSYBOX, path / "bin" / "busybox")
    applets = subprocess.run([BUSYBOX, "--list"], check=True, capture_output=True,
                             text=True).stdout.split()
    for applet in applets:
        link = path / "bin" / applet
        if applet != "busybox" and not link.exists():
            link.symlink_to("busybox")
    (path / "etc" / "passwd").write_text(
        "root:x:0:0:root:/root:/bin/sh\n"
        "user:x:1000:1000:user:/home/user:/bin/sh\n"
        "nobody:x:65534:65534:nobody:/nonexistent:/bin/false\n"
    )
    (path / "etc" / "group").write_text("root:x:0:\nuser:x:1000:\ntty:x:5:\n")
    os.chown(path / "home" / "user", 1000, 1000)
    return path


class Bundle:
    def __init__(self, path: Path, spec: dict) -> None:
        self.path = path
        self.spec = spec

    @property
    def rootfs(self) -> Path:
        return self.path / self.spec["root"]["path"]

    def write(self) -> Bundle:
        (self.path / "config.json").write_text(json.dumps(self.spec, indent=1))
        return self


def make_spec(args: list[str], *, terminal: bool = False) -> dict:
    spec = copy.deepcopy(default_spec(args, terminal=terminal))
    # Tests check the defaults that callers (containerd, dockerd) send.
    spec["root"]["readonly"] = False
    return spec


def make_bundle(directory: Path, rootfs_template: Path, args: list[str],
                *, terminal: bool = False) -> Bundle:
    """A bundle in DIRECTORY with a private copy of the rootfs."""
    directory.mkdir(parents=True, exist_ok=True)
    rootfs = directory / "rootfs"
    if not rootfs.exists():
        subprocess.run(["cp", "-a", str(rootfs_template), str(rootfs)], check=True)
    return Bundle(directory, make_spec(args, terminal=terminal)).write()
