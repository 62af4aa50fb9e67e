"""corral-runtime's command line: runc's verbs and flags.

Each ``cmd_*`` function parses its flags and calls one library entry point
(container.py); nothing here builds containers. Errors end as one line on
stderr and, with ``--log``, one error line in the log, where containerd
looks for it; the exit status is 1 (``run`` passes on the container's).
"""

from __future__ import annotations

import os
import sys

from corral import __version__

from . import log
from ._args import Flag, UsageError, parse
from .errors import Error, InvalidSpec, NotSupported

GLOBAL_FLAGS = [
    Flag("root", "str", "/run/corral-runtime"),
    Flag("log,l", "str", ""),
    Flag("log-format", "str", "text"),
    Flag("debug"),
    Flag("systemd-cgroup"),
    Flag("rootless", "str", "auto"),
    Flag("criu", "str", ""),
    Flag("help,h"),
    Flag("version,v"),
]

USAGE = """usage: corral-runtime [global flags] COMMAND [flags] [ARGS]

An OCI runtime with runc's command line.

commands:
  spec        write a default config.json
  create      create a container (its process waits for start)
  start       run the process of a created container
  run         create and start a container, and wait for it
  state       print a container's state as JSON
  list        list containers
  ps          list a container's processes
  exec        run a new process in a running container
  kill        send a signal to a container's init (or to all, --all)
  delete      remove a container
  pause       freeze every process of a container
  resume      thaw a paused container
  update      change the resources of a running container
  events      print a container's statistics and OOM notices as JSON lines
  features    print the features this runtime supports, as JSON

global flags:
  --root DIR            state directory (default /run/corral-runtime)
  --log FILE            write the log to FILE
  --log-format FORMAT   text or json
  --debug               log debug messages
  --systemd-cgroup      use systemd for cgroups (not supported)
  --version, -v         print the version
"""


def version_text() -> str:
    from corral.oci.spec import SPEC_VERSION

    return (
        f"corral-runtime version {__version__}\n"
        f"commit: corral-{__version__}\n"
        f"spec: {SPEC_VERSION}\n"
    )


def main(argv: list[str]) -> int:
    try:
        options, rest = parse(GLOBAL_FLAGS, argv)
    except UsageError as exc:
        sys.stderr.write(f"corral-runtime: {exc}\n")
        return 2
    if options["version"]:
        sys.stdout.write(version_text())
        return 0
    if options["help"] or not rest:
        sys.stdout.write(USAGE)
        return 0 if options["help"] else 2
    if options["log_format"] not in ("text", "json"):
        sys.stderr.write(f"corral-runtime: unknown log format {options['log_format']!r}\n")
        return 2
    if options["log"]:
        try:
            os.close(os.open(options["log"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644))
        except OSError as exc:
            sys.stderr.write(f"corral-runtime: --log '{options['log']}': {exc.strerror}\n")
            return 1
    log.configure(options["log"], options["log_format"], options["debug"])
    command, args = rest[0], rest[1:]
    if command == "help" or "--help" in args[:1] or "-h" in args[:1]:
        sys.stdout.write(USAGE)
        return 0
    handler = COMMANDS.get(command)
    if handler is None:
        return _fail(f"no such command: {command}", usage=True)
    try:
        if options["systemd_cgroup"]:
            raise NotSupported("--systemd-cgroup", "the systemd cgroup driver is not "
                               "supported; run without --systemd-cgroup (cgroupfs)")
        return handler(options["root"], args)
    except UsageError as exc:
        return _fail(f"{command}: {exc}", usage=True)
    except Error as exc:
        return _fail(str(exc))
    except OSError as exc:
        where = f" '{exc.filename}'" if exc.filename else ""
        return _fail(f"{command}: {exc.strerror or exc}{where}")
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # noqa: BLE001 - one line, never a traceback
        return _fail(f"{command}: internal error: {type(exc).__name__}: {exc}")


def _fail(message: str, usage: bool = False) -> int:
    log.error(message)
    sys.stderr.write(f"corral-runtime: {message}\n")
    return 2 if usage else 1


def _one_id(positional: list[str], verb: str) -> str:
    if len(positional) != 1:
        raise UsageError(f"{verb} takes exactly one container id, got {len(positional)}")
    return positional[0]


_CREATE_FLAGS = [
    Flag("bundle,b", "str", "."),
    Flag("pid-file", "str", ""),
    Flag("console-socket", "str", ""),
    Flag("no-pivot"),
    Flag("no-new-keyring"),
    Flag("preserve-fds", "int", 0),
    Flag("pidfd-socket", "str", ""),
]


def _create_options(values: dict):
    from .container import CreateOptions

    if values["pidfd_socket"]:
        raise NotSupported("--pidfd-socket", "not supported by corral-runtime")
    return CreateOptions(
        bundle=values["bundle"], pid_file=values["pid_file"] or None,
        console_socket=values["console_socket"] or None, no_pivot=values["no_pivot"],
        preserve_fds=values["preserve_fds"],
    )


def cmd_create(root: str, args: list[str]) -> int:
    from .container import create

    values, positional = parse(_CREATE_FLAGS, args, interspersed=True)
    create(root, _one_id(positional, "create"), _create_options(values))
    return 0


def cmd_run(root: str, args: list[str]) -> int:
    from .container import run

    flags = _CREATE_FLAGS + [Flag("detach,d"), Flag("keep"), Flag("no-subreaper")]
    values, positional = parse(flags, args, interspersed=True)
    return run(root, _one_id(positional, "run"), _create_options(values),
               detach=values["detach"], keep=values["keep"])


def cmd_start(root: str, args: list[str]) -> int:
    from .container import start

    _, positional = parse([], args)
    start(root, _one_id(positional, "start"))
    return 0


def cmd_state(root: str, args: list[str]) -> int:
    from .state import State

    _, positional = parse([], args)
    state = State.load(root, _one_id(positional, "state"))
    sys.stdout.write(_indented(state.oci_state()) + "\n")
    return 0


def _indented(value: object, depth: int = 0) -> str:
    """What json.dumps(VALUE, indent=2) writes, without the json package.

    Engines poll ``state`` until a container stops, each time a new process,
    so it takes the start path's JSON (docs/dev/rules.md); we indent as runc.
    """
    from corral import _json

    inner = "  " * (depth + 1)
    if isinstance(value, dict) and value:
        items = [f"{inner}{_json.dumps(key)}: {_indented(item, depth + 1)}"
                 for key, item in value.items()]
    elif isinstance(value, list) and value:
        items = [inner + _indented(item, depth + 1) for item in value]
    else:
        return _json.dumps(value)
    opening, closing = "{}" if isinstance(value, dict) else "[]"
    return opening + "\n" + ",\n".join(items) + "\n" + "  " * depth + closing


def cmd_kill(root: str, args: list[str]) -> int:
    from .container import kill

    values, positional = parse([Flag("all,a")], args, interspersed=True)
    if len(positional) not in (1, 2):
        raise UsageError("kill takes a container id and an optional signal")
    kill(root, positional[0], positional[1] if len(positional) == 2 else "SIGTERM",
         values["all"])
    return 0


def cmd_delete(root: str, args: list[str]) -> int:
    from .container import delete

    values, positional = parse([Flag("force,f")], args, interspersed=True)
    delete(root, _one_id(positional, "delete"), values["force"])
    return 0


def cmd_list(root: str, args: list[str]) -> int:
    import json

    from .state import list_states

    values, _ = parse([Flag("format,f", "str", "table"), Flag("quiet,q")], args)
    states = [(state, state.oci_state()) for state in list_states(root)]
    if values["quiet"]:
        sys.stdout.write("".join(f"{state.id}\n" for state, _ in states))
    elif values["format"] == "json":
        sys.stdout.write(json.dumps([oci for _, oci in states]) + "\n")
    elif values["format"] == "table":
        rows = [["ID", "PID", "STATUS", "BUNDLE", "CREATED", "OWNER"]]
        for _, oci in states:
            rows.append([oci["id"], str(oci["pid"]), oci["status"], oci["bundle"],
                         oci["created"], oci["owner"]])
        sys.stdout.write(_table(rows))
    else:
        raise UsageError(f"invalid format {values['format']!r} (table or json)")
    return 0


def _table(rows: list[list[str]]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = []
    for row in rows:
        cells = [cell.ljust(width + 3) for cell, width in zip(row[:-1], widths, strict=False)]
        lines.append("".join(cells) + row[-1])
    return "\n".join(lines) + "\n"


def cmd_ps(root: str, args: list[str]) -> int:
    import json

    from .container import container_pids
    from .state import State

    values, positional = parse([Flag("format,f", "str", "table")], args)
    if not positional:
        raise UsageError("ps takes a container id")
    state = State.load(root, positional[0])
    pids = container_pids(state)
    if values["format"] == "json":
        sys.stdout.write(json.dumps(pids) + "\n")
        return 0
    if values["format"] != "table":
        raise UsageError(f"invalid format {values['format']!r} (table or json)")
    import subprocess

    ps_args = positional[1:] or ["-ef"]
    result = subprocess.run(["ps", *ps_args], capture_output=True,
                            text=True)
    if result.returncode != 0:
        raise UsageError(f"ps {' '.join(ps_args)}: {result.stderr.strip()}")
    output = result.stdout.splitlines() or [""]
    header = output[0].split()
    column = header.index("PID") if "PID" in header else 1
    wanted = {str(pid) for pid in pids}
    lines = [output[0]] + [
        line for line in output[1:]
        if len(line.split()) > column and line.split()[column] in wanted
    ]
    sys.stdout.write("\n".join(lines) + "\n")
    return 0


_EXEC_FLAGS = [
    Flag("console-socket", "str", ""),
    Flag("cwd", "str", ""),
    Flag("env,e", "list"),
    Flag("tty,t"),
    Flag("user,u", "str", ""),
    Flag("additional-gids,g", "list"),
    Flag("process,p", "str", ""),
    Flag("detach,d"),
    Flag("pid-file", "str", ""),
    Flag("process-label", "str", ""),
    Flag("apparmor", "str", ""),
    Flag("no-new-privs"),
    Flag("cap,c", "list"),
    Flag("preserve-fds", "int", 0),
    Flag("cgroup", "list"),
    Flag("ignore-paused"),
    Flag("pidfd-socket", "str", ""),
]


def cmd_exec(root: str, args: list[str]) -> int:
    import json

    from .container import ExecOptions, exec_process
    from .spec import _validate_process
    from .state import State

    values, positional = parse(_EXEC_FLAGS, args)
    for flag in ("apparmor", "process_label", "pidfd_socket", "cgroup"):
        if values[flag]:
            raise NotSupported(f"exec --{flag.replace('_', '-')}",
                               "not supported by corral-runtime")
    if not positional:
        raise UsageError("exec takes a container id and, without --process, a command")
    container_id = positional[0]
    if values["process"]:
        try:
            with open(values["process"]) as f:
                proc = json.load(f)
        except OSError as exc:
            raise InvalidSpec("--process", f"read '{values['process']}': {exc.strerror}") from None
        except ValueError as exc:
            raise InvalidSpec("--process", f"not valid JSON: {exc}") from None
        _validate_process(proc, "process")
    else:
        if len(positional) < 2:
            raise UsageError("exec needs a command to run (or --process FILE)")
        base = State.load(root, container_id).spec().get("process") or {}
        proc = json.loads(json.dumps(base))
        proc["args"] = positional[1:]
        proc["terminal"] = values["tty"]
        proc.pop("consoleSize", None)
    if values["cwd"]:
        proc["cwd"] = values["cwd"]
    if values["env"]:
        proc["env"] = list(proc.get("env") or []) + values["env"]
    if values["user"]:
        user_text, _, group_text = values["user"].partition(":")
        try:
            user = {"uid": int(user_text), "gid": int(group_text) if group_text else 0}
        except ValueError:
            raise UsageError(f"--user {values['user']!r}: want UID[:GID]") from None
        proc["user"] = {**(proc.get("user") or {}), **user}
    if values["additional_gids"]:
        try:
            gids = [int(g) for g in values["additional_gids"]]
        except ValueError:
            raise UsageError("--additional-gids takes numeric gids") from None
        proc.setdefault("user", {})["additionalGids"] = gids
    if values["no_new_privs"]:
        proc["noNewPrivileges"] = True
    if values["cap"]:
        caps = proc.setdefault("capabilities", {})
        for key in ("bounding", "effective", "permitted", "inheritable"):
            caps[key] = sorted(set(caps.get(key) or []) | set(values["cap"]))
    _validate_process(proc, "process")
    from . import capabilities

    capabilities.check(proc.get("capabilities") or {})
    return exec_process(root, container_id, ExecOptions(
        process=proc, detach=values["detach"], pid_file=values["pid_file"] or None,
        console_socket=values["console_socket"] or None,
        preserve_fds=values["preserve_fds"],
    ))


def cmd_spec(root: str, args: list[str]) -> int:
    import json

    from corral.oci.spec import default_spec

    values, _ = parse([Flag("bundle,b", "str", "."), Flag("rootless")], args)
    if values["rootless"]:
        raise NotSupported("spec --rootless", "rootless specs are not supported yet")
    path = os.path.join(values["bundle"], "config.json")
    if os.path.exists(path):
        raise Error(f"file '{path}' exists; remove it first")
    with open(path, "w") as f:
        json.dump(default_spec(), f, indent=2)
        f.write("\n")
    return 0


def cmd_pause(root: str, args: list[str]) -> int:
    from .container import pause

    _, positional = parse([], args)
    pause(root, _one_id(positional, "pause"), True)
    return 0


def cmd_resume(root: str, args: list[str]) -> int:
    from .container import pause

    _, positional = parse([], args)
    pause(root, _one_id(positional, "resume"), False)
    return 0


def cmd_update(root: str, args: list[str]) -> int:
    from .update import update

    flags = [
        Flag("resources,r", "str", ""),
        Flag("memory,m", "str", ""),
        Flag("memory-swap", "str", ""),
        Flag("memory-reservation", "str", ""),
        Flag("kernel-memory", "str", ""),
        Flag("kernel-memory-tcp", "str", ""),
        Flag("cpu-shares", "str", ""),
        Flag("cpu-quota", "str", ""),
        Flag("cpu-period", "str", ""),
        Flag("cpu-rt-period", "str", ""),
        Flag("cpu-rt-runtime", "str", ""),
        Flag("cpuset-cpus", "str", ""),
        Flag("cpuset-mems", "str", ""),
        Flag("pids-limit", "str", ""),
        Flag("blkio-weight", "str", ""),
        Flag("l3-cache-schema", "str", ""),
        Flag("mem-bw-schema", "str", ""),
    ]
    values, positional = parse(flags, args, interspersed=True)
    for flag in ("kernel_memory", "kernel_memory_tcp", "cpu_rt_period", "cpu_rt_runtime",
                 "l3_cache_schema", "mem_bw_schema"):
        if values[flag]:
            raise NotSupported(f"update --{flag.replace('_', '-')}",
                               "not supported by corral-runtime")
    update(root, _one_id(positional, "update"), values)
    return 0


def parse_duration(text: str) -> float:
    """Go's duration spelling, as runc takes it: 5s, 100ms, 1m30s."""
    units = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
    total, number = 0.0, ""
    index = 0
    while index < len(text):
        char = text[index]
        if char.isdigit() or char == ".":
            number += char
            index += 1
            continue
        unit = "ms" if text.startswith("ms", index) else char
        if unit not in units or not number:
            raise UsageError(f"invalid duration {text!r} (for example 5s or 500ms)")
        total += float(number) * units[unit]
        number = ""
        index += len(unit)
    if number:
        raise UsageError(f"invalid duration {text!r}: a unit is missing (5s, 500ms)")
    if total <= 0:
        raise UsageError(f"invalid duration {text!r}: must be positive")
    return total


def cmd_events(root: str, args: list[str]) -> int:
    import json

    from .events import events

    values, positional = parse([Flag("stats"), Flag("interval", "str", "5s")], args,
                               interspersed=True)

    def emit(event: dict) -> None:
        sys.stdout.write(json.dumps(event) + "\n")
        sys.stdout.flush()

    events(root, _one_id(positional, "events"), parse_duration(values["interval"]),
           values["stats"], emit)
    return 0


def cmd_features(root: str, args: list[str]) -> int:
    import json

    from .features import features

    sys.stdout.write(json.dumps(features(), indent=2) + "\n")
    return 0


def cmd_unsupported(root: str, args: list[str]) -> int:
    raise NotSupported("checkpoint/restore", "CRIU is not supported by corral-runtime")


COMMANDS = {
    "spec": cmd_spec,
    "create": cmd_create,
    "start": cmd_start,
    "run": cmd_run,
    "state": cmd_state,
    "kill": cmd_kill,
    "delete": cmd_delete,
    "list": cmd_list,
    "ps": cmd_ps,
    "exec": cmd_exec,
    "pause": cmd_pause,
    "resume": cmd_resume,
    "update": cmd_update,
    "features": cmd_features,
    "events": cmd_events,
    "checkpoint": cmd_unsupported,
    "restore": cmd_unsupported,
}
