"""``corral volume create|ls|inspect|rm|prune``: docker volume's verbs,
flags and output, on the engine in process or on corrald (``-H``).

``RemoteVolumes`` is the HTTP side of the engine's ``volume_*`` methods,
mixed into ``cli.remote.Remote``, so a command holds either and does not
know which.
"""

from __future__ import annotations

import argparse
import sys

from . import output

_HEADERS = {"Driver": "DRIVER", "Name": "VOLUME NAME", "Mountpoint": "MOUNTPOINT",
            "Scope": "SCOPE", "Labels": "LABELS", "CreatedAt": "CREATED"}


def register(commands) -> None:
    volume = commands.add_parser("volume", help="manage volumes")
    group = volume.add_subparsers(dest="volume_command", metavar="COMMAND")
    group.required = True
    for name, adder, aliases in (("create", _create, []), ("ls", _ls, ["list"]),
                                 ("inspect", _inspect, []), ("rm", _rm, ["remove"]),
                                 ("prune", _prune, [])):
        parser = group.add_parser(name, aliases=aliases, help=adder.__doc__)
        adder(parser)


def _key_values(items: list[str], flag: str) -> dict[str, str]:
    result = {}
    for item in items:
        key, _, value = item.partition("=")
        if not key:
            raise SystemExit(f"corral: invalid {flag} value: '{item}'")
        result[key] = value
    return result


def _filters(items: list[str]) -> dict[str, list[str]] | None:
    filters: dict[str, list[str]] = {}
    for item in items:
        key, _, value = item.partition("=")
        filters.setdefault(key, []).append(value)
    return filters or None


# docker run's -v, --mount and --volumes-from ------------------------------------------

def add_volume_flags(parser: argparse.ArgumentParser) -> None:
    add = parser.add_argument
    add("-v", "--volume", action="append", default=[], metavar="[SRC:]DST[:MODE]",
        help="a bind (/host:/ctr), a named volume (name:/ctr) or an anonymous one "
             "(/ctr); MODE ro, rw, nocopy, z, Z, a propagation")
    add("--mount", action="append", default=[], metavar="type=bind|volume|tmpfs,...",
        help="source=, target=, readonly, bind-propagation=, volume-nocopy, "
             "volume-label=, tmpfs-size=, tmpfs-mode=")
    add("--volumes-from", action="append", default=[], metavar="CONTAINER[:ro|rw]",
        help="mount the volumes and binds of another container")


def volume_body(args: argparse.Namespace, body: dict) -> None:
    """Put the flags into the create body as the docker CLI does: ``-v
    /ctr`` in Config.Volumes, other -v in Binds, --mount in Mounts."""
    import os

    binds = []
    for text in args.volume:
        parts = text.split(":")
        if len(parts) == 1 and text.startswith("/"):
            body.setdefault("Volumes", {})[text] = {}
            continue
        if parts[0].startswith("."):
            parts[0] = os.path.abspath(parts[0])
        binds.append(":".join(parts))
    host = body["HostConfig"]
    if binds:
        host["Binds"] = binds
    if args.mount:
        host["Mounts"] = [mount_flag(text) for text in args.mount]
    if args.volumes_from:
        host["VolumesFrom"] = list(args.volumes_from)


def _flag_error(message: str) -> Exception:
    from .create_flags import FlagError

    return FlagError(message)


def _true(key: str, value: str | None) -> bool:
    if value is None or value.lower() in ("1", "true"):
        return True
    if value.lower() in ("0", "false"):
        return False
    raise _flag_error(f"invalid value for {key}: {value}")


def mount_flag(text: str) -> dict:
    """One ``--mount`` (comma-separated KEY=VALUE) as a HostConfig.Mounts entry."""
    from .create_flags import size

    mount: dict = {"Type": "volume"}
    bind, volume, tmpfs = {}, {}, {}
    for item in text.split(","):
        key, sep, value = item.partition("=")
        key = key.strip().lower()
        given = value if sep else None
        if key == "type":
            mount["Type"] = value
        elif key in ("source", "src"):
            mount["Source"] = value
        elif key in ("target", "dst", "destination"):
            mount["Target"] = value
        elif key in ("readonly", "ro"):
            mount["ReadOnly"] = _true(key, given)
        elif key == "bind-propagation":
            bind["Propagation"] = value
        elif key == "volume-nocopy":
            volume["NoCopy"] = _true(key, given)
        elif key == "volume-label":
            label, _, label_value = value.partition("=")
            volume.setdefault("Labels", {})[label] = label_value
        elif key == "volume-driver":
            volume.setdefault("DriverConfig", {})["Name"] = value
        elif key == "tmpfs-size":
            tmpfs["SizeBytes"] = size(value, "tmpfs-size")
        elif key == "tmpfs-mode":
            try:
                tmpfs["Mode"] = int(value, 8)
            except ValueError:
                raise _flag_error(f"invalid value for {key}: {value}") from None
        elif key != "consistency":
            raise _flag_error(f"unexpected key '{key}' in '{item}'")
    for field, options in (("BindOptions", bind), ("VolumeOptions", volume),
                           ("TmpfsOptions", tmpfs)):
        if options:
            mount[field] = options
    return mount


# Verbs ------------------------------------------------------------------------------

def _create(parser: argparse.ArgumentParser) -> None:
    """create a volume"""
    parser.add_argument("name", nargs="?", metavar="VOLUME")
    parser.add_argument("-d", "--driver", default="local", help="volume driver name")
    parser.add_argument("--label", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("-o", "--opt", action="append", default=[], metavar="KEY=VALUE",
                        help="driver options")
    parser.set_defaults(func=cmd_create)


def cmd_create(context, args) -> int:
    body = {"Name": args.name or "", "Driver": args.driver,
            "Labels": _key_values(args.label, "--label"),
            "DriverOpts": _key_values(args.opt, "--opt")}
    print(context.backend.volume_create(body)["Name"])
    return 0


def _ls(parser: argparse.ArgumentParser) -> None:
    """list volumes"""
    parser.add_argument("-q", "--quiet", action="store_true", help="only names")
    parser.add_argument("-f", "--filter", action="append", default=[], metavar="KEY=VALUE",
                        help="dangling=, name=, label=, driver=")
    parser.add_argument("--format", help="'json' or a {{.Field}} template")
    parser.set_defaults(func=cmd_ls)


def cmd_ls(context, args) -> int:
    volumes = context.backend.volume_list(_filters(args.filter))["Volumes"] or []
    if args.quiet:
        for volume in volumes:
            print(volume["Name"])
        return 0
    if args.format:
        rows = [{**volume, "Labels": ",".join(f"{k}={v}" for k, v in
                                              (volume.get("Labels") or {}).items())}
                for volume in volumes]
        output.formatted(args.format, rows, _HEADERS)
        return 0
    # Docker's tabwriter: cells padded by 3, and 10 wide at least.
    width = max([10] + [len(v["Driver"]) + 3 for v in volumes])
    for driver, name in [("DRIVER", "VOLUME NAME")] + [(v["Driver"], v["Name"])
                                                        for v in volumes]:
        print(f"{driver:<{width}}{name}")
    return 0


def _inspect(parser: argparse.ArgumentParser) -> None:
    """show volumes in detail"""
    parser.add_argument("names", nargs="+", metavar="VOLUME")
    parser.add_argument("-f", "--format", help="a {{.Field}} template")
    parser.set_defaults(func=cmd_inspect)


def cmd_inspect(context, args) -> int:
    from ..manager.errors import NotFound

    documents, status = [], 0
    for name in args.names:
        try:
            documents.append(context.backend.volume_inspect(name))
        except NotFound:
            print(f"corral: No such volume: {name}", file=sys.stderr)
            status = 1
    if documents or not status:
        output.inspected(documents, args.format)
    return status


def _rm(parser: argparse.ArgumentParser) -> None:
    """remove volumes"""
    parser.add_argument("names", nargs="+", metavar="VOLUME")
    parser.add_argument("-f", "--force", action="store_true",
                        help="no error for a volume that does not exist")
    parser.set_defaults(func=cmd_rm)


def cmd_rm(context, args) -> int:
    from ..manager.errors import Error

    status = 0
    for name in args.names:
        try:
            context.backend.volume_remove(name, force=args.force)
        except Error as exc:
            print(f"corral: {exc}", file=sys.stderr)
            status = 1
            continue
        print(name)
    return status


def _prune(parser: argparse.ArgumentParser) -> None:
    """remove unused anonymous volumes (-a: every unused volume)"""
    parser.add_argument("-a", "--all", action="store_true",
                        help="named volumes too, not only anonymous ones")
    parser.add_argument("-f", "--force", action="store_true", help="do not ask")
    parser.add_argument("--filter", action="append", default=[], metavar="KEY=VALUE",
                        help="label=, label!=")
    parser.set_defaults(func=cmd_prune)


def cmd_prune(context, args) -> int:
    if not args.force:
        what = "all local volumes" if args.all else "anonymous local volumes"
        sys.stdout.write(f"WARNING! This will remove {what} not used by at least one "
                         f"container.\nAre you sure you want to continue? [y/N] ")
        sys.stdout.flush()
        if sys.stdin.readline().strip().lower() not in ("y", "yes"):
            return 0
    filters = _filters(args.filter) or {}
    if args.all:
        filters["all"] = ["true"]
    result = context.backend.volume_prune(filters or None)
    deleted = result.get("VolumesDeleted") or []
    if deleted:
        print("Deleted Volumes:")
        for name in deleted:
            print(name)
        print()
    print(f"Total reclaimed space: {output.human_size(result.get('SpaceReclaimed') or 0)}")
    return 0


# Through corrald ----------------------------------------------------------------------

class RemoteVolumes:
    """The engine's ``volume_*`` methods over HTTP (mixed into Remote)."""

    def volume_create(self, body: dict | None = None) -> dict:
        return self._call("POST", "/volumes/create", body=body or {})

    def volume_list(self, filters: dict | None = None) -> dict:
        import json

        params = {"filters": json.dumps(filters)} if filters else None
        return self._call("GET", "/volumes", params=params)

    def volume_inspect(self, name: str) -> dict:
        return self._call("GET", f"/volumes/{name}")

    def volume_remove(self, name: str, *, force: bool = False) -> None:
        self._call("DELETE", f"/volumes/{name}", params={"force": force},
                   expect_json=False)

    def volume_prune(self, filters: dict | None = None) -> dict:
        import json

        params = {"filters": json.dumps(filters)} if filters else None
        return self._call("POST", "/volumes/prune", params=params)
