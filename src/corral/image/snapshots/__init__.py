"""Snapshotters: where unpacked layers live and how they are mounted
(containerd's snapshot model; see ``base``).

``open_snapshotter(root)`` picks "overlay" when overlayfs works on the
filesystem of ``root`` and "native" (full copies) otherwise. Each kind keeps
its snapshots and metadata under ``root/<kind>``.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import InvalidArgument
from .base import Info, Snapshotter
from .native import NativeSnapshotter
from .overlay import OverlaySnapshotter, probe

__all__ = ["Info", "Snapshotter", "open_snapshotter", "NativeSnapshotter",
           "OverlaySnapshotter"]

_KINDS = {"overlay": OverlaySnapshotter, "native": NativeSnapshotter}
# Where the probe's answer is kept, so that it is made once per root.
_CHOICE = "default-kind"


def open_snapshotter(root: Path, kind: str | None = None) -> Snapshotter:
    """The snapshotter ``kind`` ("overlay" or "native") under ``root``.

    With ``kind`` None, overlay if a real overlay mount works on the
    filesystem of ``root`` (probed once; the answer is kept in ``root``),
    else native.

    Raises:
        InvalidArgument: an unknown kind.
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    if kind is None:
        kind = _default_kind(root)
    cls = _KINDS.get(kind)
    if cls is None:
        raise InvalidArgument(f"snapshotter '{kind}': unknown (overlay or native)")
    return cls(root / kind)


def _default_kind(root: Path) -> str:
    choice = root / _CHOICE
    try:
        kind = choice.read_text().strip()
        if kind in _KINDS:
            return kind
    except FileNotFoundError:
        pass
    kind = "overlay" if probe(root) else "native"
    # Written whole under a temporary name, so a racing reader never sees
    # half an answer; two racing probes agree anyway.
    scratch = root / f".{_CHOICE}.{os.getpid()}"
    scratch.write_text(kind + "\n")
    os.replace(scratch, choice)
    return kind
