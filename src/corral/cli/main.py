"""The ``corral`` entry point: global flags, the command table, and how an
error reaches the user (one line, ``corral: <message>``, exit status 1;
2 for a usage error, as argparse does)."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from . import images

DEFAULT_ROOT = Path(os.environ.get("CORRAL_ROOT", "/var/lib/corral"))


class Context:
    """What commands share: the store and a registry client, made on first use."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self._store = None

    @property
    def store(self):
        if self._store is None:
            from ..image.store import Store

            self._store = Store(self.args.root, snapshotter=self.args.snapshotter)
        return self._store

    def registry(self, args: argparse.Namespace, domain: str):
        """A registry client as a command's --tls-verify, --cert-dir and
        --authfile ask; CORRAL_INSECURE_REGISTRIES lists more plain-HTTP ones."""
        from ..image.registry import Client

        insecure = [r for r in os.environ.get("CORRAL_INSECURE_REGISTRIES", "").split(",") if r]
        if not args.tls_verify:
            insecure.append(domain)
        certs_dirs = [Path("/etc/corral/certs.d"), Path("/etc/docker/certs.d")]
        if args.cert_dir:
            certs_dirs.insert(0, args.cert_dir)
        return Client(insecure=insecure, certs_dirs=certs_dirs, docker_config=args.authfile)

    def close(self) -> None:
        if self._store is not None:
            self._store.close()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="corral", description="Containers and images, with Docker's verbs.")
    parser.add_argument("--root", type=Path, default=DEFAULT_ROOT,
                        help="where images and containers are kept (default %(default)s)")
    parser.add_argument("--snapshotter", choices=("overlay", "native"),
                        help="how layers are stored when ROOT is new (default: overlay "
                             "if the filesystem supports it)")
    parser.add_argument("--debug", "-D", action="store_true", help="log debug lines to stderr")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.required = True
    images.register(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.debug else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    context = Context(args)
    try:
        return args.func(context, args) or 0
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0
    except Exception as exc:
        from ..image.errors import Error

        if not isinstance(exc, Error | OSError):
            raise
        print(f"corral: {exc}", file=sys.stderr)
        return 1
    finally:
        context.close()


if __name__ == "__main__":
    sys.exit(main())
