"""The ``corral`` entry point: global flags, the command table, and how an
error reaches the user (one line, ``corral: <message>``, exit status 1;
2 for a usage error, as argparse does)."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from . import containers, images, network, volume

DEFAULT_ROOT = Path(os.environ.get("CORRAL_ROOT", "/var/lib/corral"))
DEFAULT_RUN = Path(os.environ.get("CORRAL_RUN", "/run/corral"))


class Context:
    """What commands share: the store and a registry client, made on first use."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self._store = None
        self._backend = None

    @property
    def store(self):
        if self._store is None:
            from ..image.store import Store

            self._store = Store(self.args.root, snapshotter=self.args.snapshotter)
        return self._store

    @property
    def backend(self):
        """The engine in this process, or corrald when -H or CORRAL_HOST names one."""
        if self._backend is None:
            host = self.args.host or os.environ.get("CORRAL_HOST")
            if host:
                from .remote import Remote

                self._backend = Remote(host)
            else:
                from ..manager.engine import Engine

                self._backend = Engine(root=self.args.root, run=self.args.run_root)
        return self._backend

    def pull_image(self, name: str, platform: str | None) -> None:
        """Pull for run/create: through corrald with -H, else into our store,
        the progress on stderr as docker run shows it."""
        if self.args.host or os.environ.get("CORRAL_HOST"):
            self.backend.pull(name, platform=platform)
            return
        from ..image import reference
        from ..image.platform import Platform
        from ..image.pull import pull
        from .progress import LayerDisplay

        ref = reference.parse(name)
        pull_args = argparse.Namespace(tls_verify=True, cert_dir=None, authfile=None)
        display = LayerDisplay(stream=sys.stderr)
        with display, self.registry(pull_args, ref.domain) as client:
            display.message(f"{ref.tag or ref.digest}: Pulling from {ref.path}")
            image = pull(self.store, client, ref,
                         platform=Platform.parse(platform) if platform else None,
                         progress=display)
            display.message(f"Digest: {image.index_digest or image.manifest}")
            display.message(f"Status: Downloaded newer image for {ref.familiar()}")

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
        if self._backend is not None and hasattr(self._backend, "close"):
            self._backend.close()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="corral", description="Containers and images, with Docker's verbs.")
    parser.add_argument("--root", type=Path, default=DEFAULT_ROOT,
                        help="where images and containers are kept (default %(default)s)")
    parser.add_argument("--snapshotter", choices=("overlay", "native"),
                        help="how layers are stored when ROOT is new (default: overlay "
                             "if the filesystem supports it)")
    parser.add_argument("--run-root", type=Path, default=DEFAULT_RUN,
                        help="state that ends with a reboot (default %(default)s)")
    parser.add_argument("-H", "--host", metavar="unix://PATH",
                        help="talk to this corrald (default: $CORRAL_HOST, else none: "
                             "work on the store directly)")
    parser.add_argument("--debug", "-D", action="store_true", help="log debug lines to stderr")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.required = True
    images.register(commands)
    containers.register(commands)
    volume.register(commands)
    network.register(commands)
    return parser


def _manager_error() -> type:
    try:
        from ..manager.errors import Error
    except ImportError:
        return Exception
    return Error


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    # Absolute, so mounts and the paths we print do not depend on the cwd.
    args.root = args.root.absolute()
    args.run_root = args.run_root.absolute()
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

        manager_error = _manager_error()
        if not isinstance(exc, Error | OSError | manager_error):
            raise
        print(f"corral: {exc}", file=sys.stderr)
        return 1
    finally:
        context.close()


if __name__ == "__main__":
    sys.exit(main())
