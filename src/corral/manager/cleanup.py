"""``python -m corral.manager.cleanup --root R --run RUN ID``: what a
container's shim runs once the container is gone for good, so that
AutoRemove (``--rm``) holds, and the rootfs is unmounted and the network
released, with no daemon running (podman's conmon runs
``podman container cleanup`` the same way)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def command(root: Path, run: Path, container_id: str,
            network_flags: list[str] | tuple[str, ...] = ()) -> list[str]:
    """The argv a shim is given as its --exit-command (``network_flags``:
    the engine's default network, ``--bridge NAME --bip CIDR``)."""
    return [sys.executable, "-m", "corral.manager.cleanup", "--root", str(root),
            "--run", str(run), *network_flags, container_id]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="corral-cleanup")
    parser.add_argument("--root", type=Path, required=True)
    parser.add_argument("--run", type=Path, required=True)
    parser.add_argument("--bridge")
    parser.add_argument("--bip")
    parser.add_argument("container_id")
    args = parser.parse_args(argv)
    from .engine import Engine
    from .errors import Error

    engine = Engine(root=args.root, run=args.run, default_bridge=args.bridge,
                    default_subnet=args.bip)
    try:
        # No restart follows: the container's network is released too.
        if not engine.remove_if_auto(args.container_id):
            engine.release_if_stopped(args.container_id)
            engine.unmount_if_stopped(args.container_id)
    except Error as exc:
        print(f"corral cleanup: {exc}", file=sys.stderr)
        return 1
    finally:
        engine.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
