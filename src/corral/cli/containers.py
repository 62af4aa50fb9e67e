"""The container commands, with Docker's names, flags and output.

Each command calls the engine's API through ``context.backend``: the engine
itself when no daemon is named, or a ``Remote`` to corrald with ``-H`` or
``CORRAL_HOST``. Both take and return Docker's JSON bodies.
"""

from __future__ import annotations

import argparse
import contextlib
import signal
import sys
import time

from . import escape, output
from .create_flags import FlagError, add_create_flags, create_body
from .streams import relay, terminal_size

# docker run's own failures (not the container's): 125; a command that
# cannot be run: 126; one that is not found: 127.
EXIT_DAEMON, EXIT_CANNOT_RUN, EXIT_NOT_FOUND = 125, 126, 127


def register(commands) -> None:
    for name, adder in _COMMANDS:
        parser = commands.add_parser(name, help=adder.__doc__, add_help=False)
        parser.add_argument("--help", action="help", help="show this help and exit")
        adder(parser)
    container = commands.add_parser("container", help="manage containers")
    group = container.add_subparsers(dest="container_command", metavar="COMMAND")
    group.required = True
    for name, adder in _COMMANDS + [("ls", _ps), ("prune", _prune)]:
        if name in ("ps",):
            continue
        parser = group.add_parser(name, help=adder.__doc__, add_help=False)
        parser.add_argument("--help", action="help", help="show this help and exit")
        adder(parser)
    system = commands.add_parser("system", help="host-wide operations")
    system_group = system.add_subparsers(dest="system_command", metavar="COMMAND")
    system_group.required = True
    boot = system_group.add_parser("boot", help="start what restart policies ask for "
                                                "after a reboot (no daemon needed)")
    boot.set_defaults(func=cmd_boot)


def _error_status(exc: BaseException) -> int:
    """The exit status docker run gives for an error of the engine: a failed
    start's own (126, 127; corrald sends it too), else 125."""
    from ..manager.errors import StartFailed

    if isinstance(exc, StartFailed) and exc.exit_status in (EXIT_CANNOT_RUN,
                                                            EXIT_NOT_FOUND):
        return exc.exit_status
    return EXIT_DAEMON


# run, create ----------------------------------------------------------------

def _run(parser: argparse.ArgumentParser) -> None:
    """create and start a container from an image, and attach to it"""
    parser.add_argument("-d", "--detach", action="store_true",
                        help="run in the background and print the ID")
    _detach_keys(parser)
    add_create_flags(parser)
    parser.set_defaults(func=cmd_run)


def _detach_keys(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--detach-keys", default=escape.DEFAULT,
                        help="the keys that detach from a tty (ctrl-p,ctrl-q)")


def _check_detach_keys(args) -> None:
    try:
        escape.parse(args.detach_keys)
    except ValueError as exc:
        from ..manager.errors import InvalidArgument

        raise InvalidArgument(str(exc)) from None


def _create(parser: argparse.ArgumentParser) -> None:
    """create a container without starting it"""
    add_create_flags(parser)
    parser.set_defaults(func=cmd_create, detach=True)


def _create_container(context, args, *, attach: bool) -> str:
    from ..image.errors import NotFound as ImageNotFound
    from ..manager.errors import NotFound

    try:
        body = create_body(args, attach=attach)
    except FlagError as exc:
        # Reported by _report as docker run's own failure: status 125.
        from ..manager.errors import InvalidArgument

        raise InvalidArgument(str(exc)) from None
    backend = context.backend
    if args.pull == "always":
        context.pull_image(args.image, args.platform)
    try:
        created = backend.create(body, name=args.name, platform=args.platform)
    except (NotFound, ImageNotFound) as exc:
        if args.pull == "never" or "no such image" not in str(exc).lower():
            raise
        print(f"Unable to find image '{args.image}' locally", file=sys.stderr)
        context.pull_image(args.image, args.platform)
        created = backend.create(body, name=args.name, platform=args.platform)
    for warning in created.get("Warnings") or []:
        print(f"WARNING: {warning}", file=sys.stderr)
    return created["Id"]


def cmd_create(context, args) -> int:
    try:
        print(_create_container(context, args, attach=False))
    except Exception as exc:
        return _report(exc)
    return 0


def cmd_run(context, args) -> int:
    try:
        _check_detach_keys(args)
        container_id = _create_container(context, args, attach=not args.detach)
    except Exception as exc:
        return _report(exc)
    backend = context.backend
    if args.detach:
        try:
            backend.start(container_id)
        except Exception as exc:
            return _report(exc)
        print(container_id)
        return 0
    return _run_attached(backend, container_id, args)


def _run_attached(backend, container_id: str, args) -> int:
    sock = backend.attach(container_id, stdin=args.interactive, stdout=True, stderr=True,
                          stream=True)
    try:
        try:
            backend.start(container_id)
        except Exception as exc:
            sock.close()
            if args.rm:
                # --rm takes the anonymous volumes too, as docker's.
                _quietly(backend.remove, container_id, force=True, volumes=True)
            return _report(exc)
        with _forwarding_signals(backend, container_id, enabled=not args.tty):
            if relay(sock, tty=args.tty, stdin=args.interactive,
                     resize=lambda h, w: backend.resize(container_id, height=h, width=w),
                     detach_keys=args.detach_keys):
                return 0  # detached: the container runs on, as docker's
    finally:
        sock.close()
    status = backend.wait(container_id)["StatusCode"]
    if args.rm:
        _quietly(backend.remove, container_id, force=True, volumes=True)
    return status


@contextlib.contextmanager
def _forwarding_signals(backend, container_id: str, *, enabled: bool):
    """docker run's --sig-proxy: SIGINT and SIGTERM sent to this process go
    to the container (with a tty, the terminal sends its own)."""
    if not enabled:
        yield
        return

    def forward(signum, frame) -> None:
        with contextlib.suppress(Exception):
            backend.kill(container_id, signal.Signals(signum).name.removeprefix("SIG"))

    previous = {signum: signal.signal(signum, forward)
                for signum in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _quietly(call, *args, **kwargs) -> None:
    from ..manager.errors import Error

    try:
        call(*args, **kwargs)
    except Error:
        pass


def _report(exc: BaseException) -> int:
    from ..image.errors import Error as ImageError
    from ..manager.errors import Error

    if not isinstance(exc, Error | ImageError | OSError):
        raise exc
    print(f"corral: {exc}", file=sys.stderr)
    return _error_status(exc)


# start, stop, kill, restart, rm, pause, unpause, wait, rename -----------------

def _refs(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("containers", nargs="+", metavar="CONTAINER")


def _start(parser: argparse.ArgumentParser) -> None:
    """start stopped containers"""
    parser.add_argument("-a", "--attach", action="store_true", help="attach stdout/stderr")
    parser.add_argument("-i", "--interactive", action="store_true", help="attach stdin")
    _detach_keys(parser)
    _refs(parser)
    parser.set_defaults(func=cmd_start)


def cmd_start(context, args) -> int:
    backend = context.backend
    if args.attach or args.interactive:
        _check_detach_keys(args)
        ref = args.containers[0]
        document = backend.inspect(ref)
        tty = document["Config"].get("Tty", False)
        sock = backend.attach(ref, stdin=args.interactive, stdout=True, stderr=True)
        backend.start(ref)
        try:
            if relay(sock, tty=tty, stdin=args.interactive,
                     resize=lambda h, w: backend.resize(ref, height=h, width=w),
                     detach_keys=args.detach_keys):
                return 0
        finally:
            sock.close()
        return backend.wait(ref)["StatusCode"]
    return _each(args.containers, backend.start)


def _each(refs: list[str], call, **kwargs) -> int:
    """Docker's way with several containers: one line per success (the name
    given), one error line per failure, status 1 if any failed."""
    from ..manager.errors import Error, NotModified

    status = 0
    for ref in refs:
        try:
            call(ref, **kwargs)
        except NotModified:
            pass  # already stopped (or started): done, as docker says
        except Error as exc:
            print(f"corral: {exc}", file=sys.stderr)
            status = 1
            continue
        print(ref)
    return status


def _stop(parser: argparse.ArgumentParser) -> None:
    """stop running containers (StopSignal, then SIGKILL after the timeout)"""
    parser.add_argument("-t", "--time", "--timeout", dest="timeout", type=int,
                        help="seconds to wait before killing")
    parser.add_argument("-s", "--signal", help="signal to send instead of StopSignal")
    _refs(parser)
    parser.set_defaults(func=lambda c, a: _each(a.containers, c.backend.stop,
                                                 timeout=a.timeout, signal=a.signal))


def _restart(parser: argparse.ArgumentParser) -> None:
    """restart containers"""
    parser.add_argument("-t", "--time", "--timeout", dest="timeout", type=int)
    _refs(parser)
    parser.set_defaults(func=lambda c, a: _each(a.containers, c.backend.restart,
                                                 timeout=a.timeout))


def _kill(parser: argparse.ArgumentParser) -> None:
    """send a signal to containers (KILL by default)"""
    parser.add_argument("-s", "--signal", default="KILL")
    _refs(parser)
    parser.set_defaults(func=lambda c, a: _each(a.containers, c.backend.kill,
                                                 signal=a.signal))


def _rm(parser: argparse.ArgumentParser) -> None:
    """remove containers"""
    parser.add_argument("-f", "--force", action="store_true", help="kill a running one first")
    parser.add_argument("-v", "--volumes", action="store_true",
                        help="remove its anonymous volumes too")
    _refs(parser)
    parser.set_defaults(func=lambda c, a: _each(a.containers, c.backend.remove,
                                                 force=a.force, volumes=a.volumes))


def _pause(parser: argparse.ArgumentParser) -> None:
    """freeze every process of containers"""
    _refs(parser)
    parser.set_defaults(func=lambda c, a: _each(a.containers, c.backend.pause))


def _unpause(parser: argparse.ArgumentParser) -> None:
    """thaw paused containers"""
    _refs(parser)
    parser.set_defaults(func=lambda c, a: _each(a.containers, c.backend.unpause))


def _wait(parser: argparse.ArgumentParser) -> None:
    """wait for containers to stop; print their exit codes"""
    _refs(parser)
    parser.set_defaults(func=cmd_wait)


def cmd_wait(context, args) -> int:
    from ..manager.errors import Error

    status = 0
    for ref in args.containers:
        try:
            print(context.backend.wait(ref)["StatusCode"])
        except Error as exc:
            print(f"corral: {exc}", file=sys.stderr)
            status = 1
    return status


def _rename(parser: argparse.ArgumentParser) -> None:
    """rename a container"""
    parser.add_argument("container", metavar="CONTAINER")
    parser.add_argument("name", metavar="NEW_NAME")
    parser.set_defaults(func=lambda c, a: c.backend.rename(a.container, a.name))


# ps, logs, inspect, top, stats ---------------------------------------------------

def _ps(parser: argparse.ArgumentParser) -> None:
    """list containers"""
    parser.add_argument("-a", "--all", action="store_true", help="stopped ones too")
    parser.add_argument("-q", "--quiet", action="store_true", help="only IDs")
    parser.add_argument("-n", "--last", type=int, default=-1, help="the n latest")
    parser.add_argument("-l", "--latest", action="store_true", help="the latest one")
    parser.add_argument("-s", "--size", action="store_true", help="show sizes")
    parser.add_argument("-f", "--filter", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--no-trunc", action="store_true")
    parser.add_argument("--format", help="'json' or a {{.Field}} template")
    parser.set_defaults(func=cmd_ps)


def cmd_ps(context, args) -> int:
    filters: dict[str, list[str]] = {}
    for item in args.filter:
        key, _, value = item.partition("=")
        filters.setdefault(key, []).append(value)
    limit = 1 if args.latest else args.last
    containers = context.backend.list(all=args.all or limit > 0, filters=filters or None,
                                      size=args.size, limit=limit)
    if args.quiet:
        for container in containers:
            print(container["Id"] if args.no_trunc else container["Id"][:12])
        return 0
    if args.format:
        output.formatted(args.format, [_ps_fields(c, args.no_trunc) for c in containers],
                         {"ID": "CONTAINER ID", "RunningFor": "CREATED",
                          "CreatedAt": "CREATED AT"})
        return 0
    rows = [_ps_row(c, args.no_trunc) for c in containers]
    output.table(["CONTAINER ID", "IMAGE", "COMMAND", "CREATED", "STATUS", "PORTS",
                  "NAMES"], rows)
    return 0


def _ps_row(container: dict, no_trunc: bool) -> list[str]:
    command = container.get("Command", "")
    if not no_trunc and len(command) > 20:
        command = command[:19] + "…"
    names = ",".join(n.lstrip("/") for n in container.get("Names") or [])
    return [container["Id"] if no_trunc else container["Id"][:12], container.get("Image", ""),
            f'"{command}"', output.ago(container.get("Created")),
            container.get("Status", ""), _ports(container.get("Ports") or []), names]


def _ps_fields(container: dict, no_trunc: bool) -> dict:
    """The fields ``docker ps --format`` templates see (not the raw JSON:
    a short ID, names without the slash, a quoted command)."""
    container_id, image, command, created, status, ports, names = _ps_row(container,
                                                                          no_trunc)
    labels = ",".join(f"{k}={v}" for k, v in (container.get("Labels") or {}).items())
    return {"ID": container_id, "Image": image, "Command": command,
            "CreatedAt": output.event_time(int((container.get("Created") or 0) * 1e9)),
            "RunningFor": created, "Ports": ports, "State": container.get("State", ""),
            "Status": status, "Names": names, "Labels": labels,
            "Size": str(container.get("SizeRw", ""))}


def _ports(ports: list[dict]) -> str:
    shown = []
    for port in ports:
        inside = f"{port.get('PrivatePort')}/{port.get('Type', 'tcp')}"
        if port.get("PublicPort"):
            shown.append(f"{port.get('IP', '0.0.0.0')}:{port['PublicPort']}->{inside}")
        else:
            shown.append(inside)
    return ", ".join(shown)


def _logs(parser: argparse.ArgumentParser) -> None:
    """show a container's output"""
    parser.add_argument("-f", "--follow", action="store_true")
    parser.add_argument("--since", help="RFC 3339 time, UNIX time or a duration (10m)")
    parser.add_argument("--until")
    parser.add_argument("-n", "--tail", default="all", help="lines from the end")
    parser.add_argument("-t", "--timestamps", action="store_true")
    parser.add_argument("container", metavar="CONTAINER")
    parser.set_defaults(func=cmd_logs)


def cmd_logs(context, args) -> int:
    outputs = {1: sys.stdout.buffer, 2: sys.stderr.buffer}
    context.backend.inspect(args.container)  # as docker logs: no such container first
    for stream, data in context.backend.logs(
            args.container, stdout=True, stderr=True, follow=args.follow,
            since=output.since_time(args.since, "since"),
            until=output.since_time(args.until, "until"),
            tail=_tail(args.tail), timestamps=args.timestamps):
        out = outputs.get(stream, sys.stdout.buffer)
        out.write(data)
        out.flush()
    return 0


def _tail(text: str) -> int | None:
    if text == "all":
        return None
    try:
        return int(text)
    except ValueError:
        raise SystemExit(f"corral: --tail '{text}': a number of lines or 'all'") from None


def _container_inspect(parser: argparse.ArgumentParser) -> None:
    """show containers' (or images') details as JSON"""
    parser.add_argument("-f", "--format", help="'json' (the default) or a template")
    parser.add_argument("-s", "--size", action="store_true")
    parser.add_argument("--type", choices=("container", "image"))
    parser.add_argument("targets", nargs="+", metavar="NAME|ID")
    parser.set_defaults(func=cmd_inspect)


def cmd_inspect(context, args) -> int:
    from ..image.errors import Error as ImageError
    from ..manager.errors import Error, NotFound

    documents, status = [], 0
    for target in args.targets:
        try:
            if args.type == "image":
                raise NotFound(target)
            documents.append(context.backend.inspect(target, size=args.size))
            continue
        except NotFound:
            pass
        except Error as exc:
            print(f"corral: {exc}", file=sys.stderr)
            status = 1
            continue
        if args.type == "container":
            print(f"corral: No such container: {target}", file=sys.stderr)
            status = 1
            continue
        try:
            from ..image.describe import inspect

            documents.append(inspect(context.store, context.store.resolve(target)))
        except ImageError:
            print(f"corral: No such object: {target}", file=sys.stderr)
            status = 1
    output.inspected(documents, args.format)
    return status


def _top(parser: argparse.ArgumentParser) -> None:
    """show the processes of a container"""
    parser.add_argument("container", metavar="CONTAINER")
    # REMAINDER: ps's own options (-o pid,comm) are not top's.
    parser.add_argument("ps_args", nargs=argparse.REMAINDER, metavar="PS_OPTIONS")
    parser.set_defaults(func=cmd_top)


def cmd_top(context, args) -> int:
    result = context.backend.top(args.container, " ".join(args.ps_args) or "-ef")
    output.table(result["Titles"], [list(map(str, p)) for p in result["Processes"]],
                 min_width=20)  # docker top's tabwriter: cells of 20 at least
    return 0


def _stats(parser: argparse.ArgumentParser) -> None:
    """show containers' resource use"""
    parser.add_argument("--no-stream", action="store_true", help="one sample, then exit")
    parser.add_argument("-a", "--all", action="store_true")
    parser.add_argument("--format", help="'json' for one JSON object per container")
    parser.add_argument("containers", nargs="*", metavar="CONTAINER")
    parser.set_defaults(func=cmd_stats)


def cmd_stats(context, args) -> int:
    from .stats_view import stats

    return stats(context.backend, args)


# exec, attach -------------------------------------------------------------------

def _exec(parser: argparse.ArgumentParser) -> None:
    """run a command in a running container"""
    parser.add_argument("-d", "--detach", action="store_true")
    parser.add_argument("-i", "--interactive", action="store_true")
    parser.add_argument("-t", "--tty", action="store_true")
    parser.add_argument("-e", "--env", action="append", default=[])
    parser.add_argument("-u", "--user")
    parser.add_argument("-w", "--workdir")
    parser.add_argument("--privileged", action="store_true")
    _detach_keys(parser)
    parser.add_argument("container", metavar="CONTAINER")
    parser.add_argument("command", nargs=argparse.REMAINDER, metavar="COMMAND")
    parser.set_defaults(func=cmd_exec)


def cmd_exec(context, args) -> int:
    if not args.command:
        raise SystemExit("corral: exec needs a command to run")
    backend = context.backend
    body = {"AttachStdin": args.interactive and not args.detach,
            "AttachStdout": not args.detach, "AttachStderr": not args.detach,
            "Tty": args.tty, "Cmd": args.command, "Env": args.env,
            "Privileged": args.privileged}
    if args.user:
        body["User"] = args.user
    if args.workdir:
        body["WorkingDir"] = args.workdir
    try:
        _check_detach_keys(args)
        exec_id = backend.exec_create(args.container, body)["Id"]
        sock = backend.exec_start(exec_id, detach=args.detach, tty=args.tty)
    except Exception as exc:
        return _report(exc)
    if sock is None:
        return 0
    try:
        if relay(sock, tty=args.tty, stdin=args.interactive,
                 resize=lambda h, w: backend.exec_resize(exec_id, height=h, width=w),
                 detach_keys=args.detach_keys):
            return 0
    finally:
        sock.close()
    for _ in range(100):
        document = backend.exec_inspect(exec_id)
        if not document.get("Running"):
            return document.get("ExitCode") or 0
        time.sleep(0.02)
    return document.get("ExitCode") or 0


def _attach(parser: argparse.ArgumentParser) -> None:
    """attach this terminal to a running container"""
    parser.add_argument("--no-stdin", action="store_true")
    _detach_keys(parser)
    parser.add_argument("container", metavar="CONTAINER")
    parser.set_defaults(func=cmd_attach)


def cmd_attach(context, args) -> int:
    _check_detach_keys(args)
    backend = context.backend
    document = backend.inspect(args.container)
    tty = document["Config"].get("Tty", False)
    stdin = not args.no_stdin and document["Config"].get("OpenStdin", False)
    sock = backend.attach(args.container, stdin=stdin, stdout=True, stderr=True)
    size = terminal_size()
    if tty and size:
        backend.resize(args.container, height=size[0], width=size[1])
    try:
        if relay(sock, tty=tty, stdin=stdin,
                 resize=lambda h, w: backend.resize(args.container, height=h, width=w),
                 detach_keys=args.detach_keys):
            return 0
    finally:
        sock.close()
    return backend.wait(args.container)["StatusCode"]


# events, prune, version, info, boot ---------------------------------------------------

def _events(parser: argparse.ArgumentParser) -> None:
    """stream what happens to containers and images"""
    parser.add_argument("--since")
    parser.add_argument("--until")
    parser.add_argument("-f", "--filter", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--format", help="'json' for one JSON object per event")
    parser.set_defaults(func=cmd_events)


def cmd_events(context, args) -> int:
    filters: dict[str, list[str]] = {}
    for item in args.filter:
        key, _, value = item.partition("=")
        filters.setdefault(key, []).append(value)
    for event in context.backend.events(since=output.since_time(args.since),
                                        until=output.since_time(args.until),
                                        filters=filters or None):
        if args.format == "json":
            print(output.json_line(event), flush=True)
            continue
        actor = event.get("Actor") or {}
        attributes = ", ".join(f"{k}={v}" for k, v in sorted(
            (actor.get("Attributes") or {}).items()))
        when = output.event_time(event.get("timeNano") or int(event.get("time", 0) * 1e9))
        print(f"{when} {event.get('Type')} {event.get('Action')} {actor.get('ID', '')}"
              f"{f' ({attributes})' if attributes else ''}", flush=True)
    return 0


def _prune(parser: argparse.ArgumentParser) -> None:
    """remove every stopped container"""
    parser.add_argument("-f", "--force", action="store_true", help="do not ask")
    parser.set_defaults(func=cmd_prune)


def cmd_prune(context, args) -> int:
    if not args.force:
        sys.stdout.write("WARNING! This will remove all stopped containers.\n"
                         "Are you sure you want to continue? [y/N] ")
        sys.stdout.flush()
        if sys.stdin.readline().strip().lower() not in ("y", "yes"):
            return 0
    result = context.backend.prune()
    deleted = result.get("ContainersDeleted") or []
    if deleted:
        print("Deleted Containers:")
        for container_id in deleted:
            print(container_id)
        print()
    print(f"Total reclaimed space: {output.human_size(result.get('SpaceReclaimed') or 0)}")
    return 0


def _version(parser: argparse.ArgumentParser) -> None:
    """show the version of corral (and of corrald with -H)"""
    parser.add_argument("--format", help="'json'")
    parser.set_defaults(func=cmd_version)


def cmd_version(context, args) -> int:
    from .. import __version__

    server = context.backend.version()
    if args.format == "json":
        output.print_json({"Client": {"Version": __version__}, "Server": server})
        return 0
    from .remote import API_VERSION as REMOTE_API_VERSION
    from .remote import Remote

    # The API this client speaks: the engine's own in process.
    client_api = (REMOTE_API_VERSION if isinstance(context.backend, Remote)
                  else server.get("ApiVersion", ""))
    print(output.version_text(__version__, client_api, server), end="")
    return 0


def _info(parser: argparse.ArgumentParser) -> None:
    """show host-wide information"""
    parser.add_argument("--format", help="'json'")
    parser.set_defaults(func=cmd_info)


def cmd_info(context, args) -> int:
    info = context.backend.info()
    if args.format == "json":
        output.print_json(info)
        return 0
    for key in ("Containers", "ContainersRunning", "ContainersPaused", "ContainersStopped",
                "Images", "Driver", "CgroupVersion", "KernelVersion", "OperatingSystem",
                "NCPU", "MemTotal", "DockerRootDir", "ServerVersion"):
        if key in info:
            print(f" {key}: {info[key]}")
    return 0


def cmd_boot(context, args) -> int:
    started = context.backend.boot()
    for name in started or []:
        print(name)
    return 0


_COMMANDS = [
    ("run", _run), ("create", _create), ("start", _start), ("stop", _stop),
    ("kill", _kill), ("restart", _restart), ("rm", _rm), ("ps", _ps), ("logs", _logs),
    ("exec", _exec), ("attach", _attach), ("top", _top), ("stats", _stats),
    ("wait", _wait), ("pause", _pause), ("unpause", _unpause), ("rename", _rename),
    ("events", _events), ("version", _version), ("info", _info),
    ("inspect", _container_inspect),
]
