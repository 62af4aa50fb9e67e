"""corrald: the Docker Engine API on a unix socket.

    corrald [-H unix:///run/corral/corral.sock] [--root /var/lib/corral]
            [--exec-root /run/corral] [--insecure-registry HOST[:PORT]]...
            [--bridge corral0] [--bip 10.88.0.1/16] [-D]

At start it lets the engine finish or undo what a killed daemon left
(``Engine.reconcile``, which starts the name resolvers found dead, as does a
watch every few seconds), then listens. The socket is root's, mode 0660, as
dockerd's is root:docker: whoever can write to it can run containers as root.

SIGTERM and SIGINT stop the daemon cleanly: it stops listening, ends the
requests in flight (streams are cut after a short grace period), closes the
stores and removes the socket. Containers keep running: each has its shim,
which does not depend on corrald (docs/dev/manager.md), and the next
corrald finds them through the engine's records.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import socket
import sys
from pathlib import Path

log = logging.getLogger("corral.manager.daemon")

DEFAULT_HOST = "unix:///run/corral/corral.sock"
# Seconds that requests in flight (log and event streams) get at a stop.
SHUTDOWN_GRACE = 2.0
# Seconds between checks that every network's name resolver lives.
RESOLVER_WATCH = 5.0


class UsageError(Exception):
    pass


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="corrald", description="Corral's daemon: the Docker Engine API.")
    parser.add_argument("-H", "--host", default=DEFAULT_HOST,
                        help="where to listen: unix:///PATH (default %(default)s)")
    parser.add_argument("--root", type=Path, default=Path("/var/lib/corral"),
                        help="images and containers (default %(default)s)")
    parser.add_argument("--exec-root", "--run", dest="run", type=Path,
                        default=Path("/run/corral"),
                        help="state that must not survive a reboot (default %(default)s)")
    parser.add_argument("--insecure-registry", action="append", default=[],
                        metavar="HOST[:PORT]",
                        help="a registry that may be spoken to over plain HTTP")
    parser.add_argument("--snapshotter", choices=("overlay", "native"),
                        help="how layers are stored when ROOT is new")
    parser.add_argument("--bridge", help="the default network's bridge (default corral0)")
    parser.add_argument("--bip", metavar="CIDR",
                        help="the default network's gateway/prefix or subnet "
                             "(default 10.88.0.1/16)")
    parser.add_argument("-D", "--debug", action="store_true", help="log debug lines")
    return parser


def socket_path(host: str) -> Path:
    """The path of a ``unix://`` host; UsageError for anything else."""
    scheme, sep, rest = host.partition("://")
    if not sep or scheme != "unix" or not rest.startswith("/"):
        raise UsageError(f"listen '{host}': only unix:///absolute/path is supported")
    return Path(rest)


def _check_free(path: Path) -> None:
    """Refuse to take the socket of a daemon that still answers on it."""
    if not path.exists():
        return
    with socket.socket(socket.AF_UNIX) as probe:
        try:
            probe.connect(str(path))
        except OSError:
            return  # stale: asyncio removes it when it binds
    raise UsageError(f"listen '{path}': another daemon is listening on it")


def _open_engine(args: argparse.Namespace):
    try:
        from .engine import Engine
    except ImportError as exc:
        log.warning("no engine (%s): serving the system and image endpoints only", exc)
        return None
    from .networking import subnet_of

    return Engine(root=args.root, run=args.run, default_bridge=args.bridge,
                  default_subnet=subnet_of(args.bip) if args.bip else None)


async def serve(args: argparse.Namespace) -> None:
    """Listen until SIGTERM or SIGINT."""
    from aiohttp import web

    from .api import Backend, create_app

    path = socket_path(args.host)
    _check_free(path)
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o755)
    args.root.mkdir(parents=True, exist_ok=True, mode=0o700)
    engine = _open_engine(args)
    backend = Backend(args.root, args.run, engine=engine,
                      insecure_registries=args.insecure_registry,
                      snapshotter=args.snapshotter)
    if engine is not None and hasattr(engine, "reconcile"):
        await backend.call(engine.reconcile)
        # As dockerd does at its start: what ``always`` and ``unless-stopped``
        # (not stopped by a user) ask for runs again, after a reboot too.
        await backend.call(engine.boot)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    runner = web.AppRunner(create_app(backend), access_log=log if args.debug else None,
                           shutdown_timeout=SHUTDOWN_GRACE)
    await runner.setup()
    watch = asyncio.ensure_future(_watch_resolvers(backend, engine))
    try:
        await _listen(runner, path)
        log.info("listening on %s", path)
        await stop.wait()
        log.info("stopping")
    finally:
        watch.cancel()
        await runner.cleanup()
        backend.close()
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


async def _watch_resolvers(backend, engine) -> None:
    """A resolver killed while corrald runs is back within RESOLVER_WATCH."""
    while engine is not None and hasattr(engine, "revive_resolvers"):
        await asyncio.sleep(RESOLVER_WATCH)
        for name in await backend.call(engine.revive_resolvers):
            log.warning("the resolver of network %s was dead: started again", name)


async def _listen(runner, path: Path) -> None:
    from aiohttp import web

    # Born 0660, so there is no moment when others may connect.
    old = os.umask(0o117)
    try:
        await web.UnixSite(runner, str(path)).start()
    finally:
        os.umask(old)
    os.chown(path, 0, 0)
    os.chmod(path, 0o660)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.debug else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if os.geteuid() != 0:
        print("corrald: must run as root", file=sys.stderr)
        return 1
    try:
        asyncio.run(serve(args))
    except UsageError as exc:
        print(f"corrald: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
