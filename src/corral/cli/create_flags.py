"""The flags of ``docker create`` and ``docker run``, and the body of
``POST /containers/create`` they turn into.

The CLI never builds a container itself: it builds the same JSON body the
docker CLI sends, and hands it to the engine (no daemon) or to corrald
(``-H``). So a flag means the same thing whichever way it goes, and the
engine's checks of the body are the only checks.
"""

from __future__ import annotations

import argparse
import re
import shlex
from pathlib import Path

_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}


class FlagError(ValueError):
    """A flag value that cannot be turned into the body; names the flag."""


def add_create_flags(parser: argparse.ArgumentParser) -> None:
    """Every flag create and run share (run adds -d, --rm is common)."""
    add = parser.add_argument
    add("--name", help="assign a name to the container")
    add("-i", "--interactive", action="store_true", help="keep STDIN open")
    add("-t", "--tty", action="store_true", help="allocate a pseudo-TTY")
    add("--rm", action="store_true", help="remove the container when it exits")
    add("-e", "--env", action="append", default=[], metavar="KEY=VALUE",
        help="set an environment variable (KEY alone: take it from here)")
    add("--env-file", action="append", default=[], type=Path, metavar="FILE",
        help="read environment variables from a file")
    add("--entrypoint", help="override the image's ENTRYPOINT")
    add("-w", "--workdir", help="working directory inside the container")
    add("-u", "--user", help="user name or UID[:GID]")
    add("-h", "--hostname", help="container host name")
    add("-l", "--label", action="append", default=[], metavar="KEY=VALUE")
    add("--read-only", action="store_true", help="mount the root filesystem read-only")
    add("--cap-add", action="append", default=[], metavar="CAP")
    add("--cap-drop", action="append", default=[], metavar="CAP")
    add("--privileged", action="store_true", help="give extended privileges")
    add("--uts", help="UTS namespace to use (host)")
    add("--pid", help="PID namespace to use (host)")
    add("--ipc", help="IPC mode to use (private, shareable, host)")
    add("--group-add", action="append", default=[], metavar="GID",
        help="add a supplementary group")
    add("--security-opt", action="append", default=[], metavar="OPT",
        help="seccomp=unconfined|PROFILE.json, no-new-privileges")
    add("--init", action="store_true", help="run an init as PID 1 that reaps")
    add("--stop-signal", help="signal to stop the container")
    add("--stop-timeout", type=int, help="seconds to wait before killing")
    add("--ulimit", action="append", default=[], metavar="NAME=SOFT[:HARD]")
    add("--tmpfs", action="append", default=[], metavar="PATH[:OPTIONS]")
    from .volume import add_volume_flags

    add_volume_flags(parser)
    add("-m", "--memory", help="memory limit (e.g. 512m)")
    add("--memory-swap", help="memory plus swap limit; -1 for unlimited swap")
    add("--cpus", type=float, help="number of CPUs")
    add("-c", "--cpu-shares", type=int, help="CPU shares (relative weight)")
    add("--pids-limit", type=int, help="process limit (-1 for unlimited)")
    add("--restart", default="no", help="no, always, unless-stopped, on-failure[:N]")
    add("--log-opt", action="append", default=[], metavar="max-size=|max-file=")
    add("--platform", help="os/arch of the image to pull")
    add("--pull", choices=("missing", "always", "never"), default="missing",
        help="pull the image before creating (default: if missing)")
    from .network import add_network_flags

    add_network_flags(parser)
    add("image", metavar="IMAGE")
    add("command", nargs=argparse.REMAINDER, metavar="COMMAND")


def create_body(args: argparse.Namespace, *, attach: bool) -> dict:
    """The create body for these flags; ``attach``: the client will attach
    (run without -d)."""
    config: dict = {
        "Image": args.image,
        "Tty": args.tty,
        "OpenStdin": args.interactive,
        "StdinOnce": args.interactive and attach,
        "AttachStdin": args.interactive and attach,
        "AttachStdout": attach,
        "AttachStderr": attach,
        "Env": environment(args.env, args.env_file),
        "Labels": key_values(args.label, "--label"),
    }
    if args.command:
        config["Cmd"] = list(args.command)
    if args.entrypoint is not None:
        config["Entrypoint"] = shlex.split(args.entrypoint) if args.entrypoint else [""]
    for key, value in (("WorkingDir", args.workdir), ("User", args.user),
                       ("Hostname", args.hostname), ("StopSignal", args.stop_signal),
                       ("StopTimeout", args.stop_timeout)):
        if value is not None:
            config[key] = value
    config["HostConfig"] = host_config(args)
    from .volume import volume_body

    volume_body(args, config)
    from .network import PublishError, network_body

    try:
        network_body(args, config)
    except PublishError as exc:
        raise FlagError(str(exc)) from None
    return config


def host_config(args: argparse.Namespace) -> dict:
    host: dict = {
        "AutoRemove": args.rm,
        "ReadonlyRootfs": args.read_only,
        "Privileged": args.privileged,
        "UTSMode": args.uts, "PidMode": args.pid, "IpcMode": args.ipc,
        "GroupAdd": args.group_add or None,
        "CapAdd": args.cap_add or None,
        "CapDrop": args.cap_drop or None,
        "SecurityOpt": security_options(args.security_opt),
        "Init": args.init or None,
        "RestartPolicy": restart_policy(args.restart),
        "Ulimits": [ulimit(u) for u in args.ulimit] or None,
        "Tmpfs": dict(tmpfs(t) for t in args.tmpfs) or None,
        "LogConfig": {"Type": "json-file", "Config": key_values(args.log_opt, "--log-opt")},
    }
    if args.memory is not None:
        host["Memory"] = size(args.memory, "--memory")
    if args.memory_swap is not None:
        host["MemorySwap"] = -1 if args.memory_swap == "-1" else size(args.memory_swap,
                                                                     "--memory-swap")
    if args.cpus is not None:
        host["NanoCpus"] = int(round(args.cpus * 1e9))
    if args.cpu_shares is not None:
        host["CpuShares"] = args.cpu_shares
    if args.pids_limit is not None:
        host["PidsLimit"] = args.pids_limit
    if args.rm and host["RestartPolicy"]["Name"] not in ("", "no"):
        raise FlagError("conflicting options: cannot specify both --restart and --rm")
    return {key: value for key, value in host.items() if value is not None}


def size(text: str, flag: str) -> int:
    """Docker's RAMInBytes: a number with an optional unit b, k, m, g or t
    (binary), and an optional trailing b ("512m", "1gb", "100")."""
    match = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([kmgt]?)b?", text.strip().lower())
    if match is None:
        raise FlagError(f"invalid size: '{text}' for {flag} (use a number with b, k, m "
                        f"or g, such as 512m)")
    return int(float(match.group(1)) * _UNITS[match.group(2)])


def environment(items: list[str], files: list[Path]) -> list[str]:
    """-e and --env-file as Docker reads them: KEY=VALUE, or KEY alone to
    take the value from this process's environment (dropped if unset)."""
    import os

    lines: list[str] = []
    for path in files:
        try:
            text = path.read_text()
        except OSError as exc:
            raise FlagError(f"--env-file '{path}': {exc.strerror}") from None
        lines.extend(line.strip() for line in text.splitlines()
                     if line.strip() and not line.lstrip().startswith("#"))
    lines.extend(items)
    env = []
    for item in lines:
        key, sep, _ = item.partition("=")
        if not key:
            raise FlagError(f"invalid environment variable: '{item}'")
        if sep:
            env.append(item)
        elif key in os.environ:
            env.append(f"{key}={os.environ[key]}")
    return env


def key_values(items: list[str], flag: str) -> dict[str, str]:
    out = {}
    for item in items:
        key, _, value = item.partition("=")
        if not key:
            raise FlagError(f"invalid {flag} value: '{item}'")
        out[key] = value
    return out


def restart_policy(text: str) -> dict:
    name, _, count = text.partition(":")
    if name not in ("no", "always", "unless-stopped", "on-failure"):
        raise FlagError(f"invalid restart policy '{text}': use no, always, "
                        f"unless-stopped or on-failure[:max-retries]")
    if count and (name != "on-failure" or not count.isdigit()):
        raise FlagError(f"invalid restart policy '{text}': a maximum retry count "
                        f"goes with on-failure only")
    return {"Name": name, "MaximumRetryCount": int(count or 0)}


def ulimit(text: str) -> dict:
    name, _, limits = text.partition("=")
    soft, _, hard = limits.partition(":")
    try:
        values = [int(soft), int(hard or soft)]
    except ValueError:
        raise FlagError(f"invalid ulimit '{text}': use NAME=SOFT[:HARD]") from None
    return {"Name": name, "Soft": values[0], "Hard": values[1]}


def tmpfs(text: str) -> tuple[str, str]:
    path, _, options = text.partition(":")
    if not path.startswith("/"):
        raise FlagError(f"invalid --tmpfs '{text}': the path must be absolute")
    return path, options


def security_options(items: list[str]) -> list[str] | None:
    """seccomp=PATH is sent as the profile's JSON, as the docker CLI does."""
    out = []
    for item in items:
        key, sep, value = item.partition("=")
        if key == "seccomp" and sep and value != "unconfined":
            try:
                value = Path(value).read_text()
            except OSError as exc:
                raise FlagError(f"--security-opt seccomp: '{value}': {exc.strerror}") from None
        out.append(f"{key}={value}" if sep else item)
    return out or None
