"""The overlay snapshotter: each snapshot is one overlayfs layer
(kernel Documentation/filesystems/overlayfs.rst; containerd's
snapshots/overlay).

``<root>/snapshots/<id>/fs`` is the snapshot's own layer (the upper dir while
it is active, a lower dir once committed) and ``work`` is overlayfs' work
dir. Ids are short numbers because every lower dir of the chain goes into
one mount option string, which the kernel limits to a page.
"""

from __future__ import annotations

from pathlib import Path

from ..mount import Mount
from .base import BaseSnapshotter, Record

# index=off: with the inodes index on, an upper dir remembers the lower
# dirs it was first mounted with and refuses others; our uppers become
# lowers of later mounts in other chains, so they must stay portable (as in
# containerd). Hard links across layers still work: a link copies up first.
_OVERLAY_OPTIONS = ("index=off",)


class OverlaySnapshotter(BaseSnapshotter):
    """Snapshots as overlayfs layers, stacked by their parent chain."""

    name = "overlay"

    def _mounts(self, record: Record, parents: list[Record]) -> list[Mount]:
        own = self.fs_path(record)
        if not parents:
            mode = "ro" if record.kind == "view" else "rw"
            return [Mount("bind", str(own), ("rbind", mode))]
        lowers = ":".join(str(self.fs_path(parent)) for parent in parents)
        if record.kind == "view":
            if len(parents) == 1:
                return [Mount("bind", lowers, ("rbind", "ro"))]
            # An overlay with only lower dirs is read-only by itself.
            return [Mount("overlay", "overlay", (*_OVERLAY_OPTIONS,
                                                 f"lowerdir={lowers}"))]
        work = own.parent / "work"
        return [Mount("overlay", "overlay", (
            *_OVERLAY_OPTIONS, f"workdir={work}", f"upperdir={own}",
            f"lowerdir={lowers}"))]


def probe(root: Path) -> bool:
    """Whether overlayfs mounts, with an upper dir, on ``root``'s filesystem."""
    import tempfile

    from .. import mount as mounting
    from ..errors import Error

    with tempfile.TemporaryDirectory(prefix="probe-", dir=root) as scratch:
        base = Path(scratch)
        for name in ("lower", "upper", "work", "merged"):
            (base / name).mkdir()
        (base / "lower" / "file").write_bytes(b"lower")
        spec = Mount("overlay", "overlay", (
            *_OVERLAY_OPTIONS, f"lowerdir={base / 'lower'}",
            f"upperdir={base / 'upper'}", f"workdir={base / 'work'}"))
        try:
            mounting.mount_all([spec], base / "merged")
        except Error:
            return False
        try:
            (base / "merged" / "file").write_bytes(b"upper")
            return (base / "upper" / "file").read_bytes() == b"upper"
        except OSError:
            return False
        finally:
            mounting.unmount(base / "merged")
