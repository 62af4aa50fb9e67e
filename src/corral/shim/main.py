"""corral-shim's entry point: the command line, detaching, the ready fd.

The command line is fixed by docs/dev/manager.md ("corral-shim"). The shim
forks once: the first process exits at once (its spawner reaps it, and no
zombie is left with it), the second starts a new session, puts its stdio on
/dev/null and becomes a child subreaper (prctl PR_SET_CHILD_SUBREAPER), so
the container's init is reparented to it when the runtime's ``create`` exits.
Then it runs the container and writes one JSON line on the ready fd:
``{"pid": N}``, or ``{"error": "<runtime's message>"}`` after which it
leaves nothing behind (no runtime state, no socket, no process).

Arguments are parsed by hand: ``argparse`` would load ``re`` and ``gettext``
into every one of hundreds of long-lived shims.
"""

from __future__ import annotations

import os
import sys

from corral import _json

from .errors import Error, InvalidArgument
from .restart import RestartPolicy
from .supervisor import Options, Shim, failure_code

USAGE = """usage: corral-shim --id ID --bundle DIR --state-dir DIR --runtime PATH
                   --runtime-root DIR --log-path FILE [--log-max-size BYTES]
                   [--log-max-file N] [--tty] [--stdin] [--stdin-once]
                   [--restart no|always|unless-stopped|on-failure[:N]]
                   [--events-db FILE] [--name NAME] [--image IMAGE]
                   [--exit-command JSON-ARGV] --ready-fd FD
"""

_VALUES = {"id", "bundle", "state-dir", "runtime", "runtime-root", "log-path",
           "log-max-size", "log-max-file", "restart", "events-db", "ready-fd",
           "name", "image", "exit-command"}
_SWITCHES = {"tty", "stdin", "stdin-once"}
_REQUIRED = ("id", "bundle", "state-dir", "runtime", "runtime-root", "log-path",
             "ready-fd")


def parse_args(argv: list[str]) -> Options:
    """The shim's options from ARGV (``--flag value`` or ``--flag=value``).

    Raises:
        InvalidArgument: an unknown flag, a missing value or a bad number.
    """
    values: dict[str, str] = {}
    switches: set[str] = set()
    index = 0
    while index < len(argv):
        name, equals, value = argv[index].removeprefix("--").partition("=")
        if not argv[index].startswith("--"):
            raise InvalidArgument(f"argument '{argv[index]}': not a flag")
        if name in _SWITCHES and not equals:
            switches.add(name)
        elif name in _VALUES:
            if not equals:
                index += 1
                if index == len(argv):
                    raise InvalidArgument(f"flag '--{name}': needs a value")
                value = argv[index]
            values[name] = value
        else:
            raise InvalidArgument(f"flag '--{name}': unknown")
        index += 1
    for name in _REQUIRED:
        if not values.get(name):
            raise InvalidArgument(f"flag '--{name}': required")
    return _options(values, switches)


def _options(values: dict[str, str], switches: set[str]) -> Options:
    options = Options()
    options.id = values["id"]
    options.bundle = os.path.abspath(values["bundle"])
    options.state_dir = os.path.abspath(values["state-dir"])
    options.runtime = values["runtime"]
    options.runtime_root = os.path.abspath(values["runtime-root"])
    options.log_path = os.path.abspath(values["log-path"])
    options.log_max_size = _number(values, "log-max-size", 0)
    options.log_max_file = _number(values, "log-max-file", 1)
    options.tty = "tty" in switches
    options.stdin = "stdin" in switches
    options.stdin_once = "stdin-once" in switches
    options.restart = RestartPolicy.parse(values.get("restart", "no"))
    options.events_db = values.get("events-db", "")
    options.ready_fd = _number(values, "ready-fd", -1)
    options.name = values.get("name", "")
    options.image = values.get("image", "")
    options.exit_command = _argv(values.get("exit-command"))
    if options.log_max_file < 1:
        raise InvalidArgument("flag '--log-max-file': must be at least 1")
    return options


def _argv(text: str | None) -> list[str]:
    """--exit-command: a JSON list of strings, the command to run once the
    container is gone for good (AutoRemove asks for one)."""
    if not text:
        return []
    from corral import _json

    try:
        argv = _json.loads(text)
    except ValueError:
        argv = None
    if not isinstance(argv, list) or not argv or not all(isinstance(a, str) for a in argv):
        raise InvalidArgument("flag '--exit-command': must be a JSON list of strings")
    return argv


def _number(values: dict[str, str], name: str, default: int) -> int:
    text = values.get(name)
    if text is None:
        return default
    if not (text.isascii() and text.isdigit()):
        raise InvalidArgument(f"flag '--{name}': '{text}' is not a number")
    return int(text)


def detach(argv: list[str], options: Options) -> None:
    """Fork into the background and exec the shim afresh there; never returns.

    The first process exits at once. The second starts a new session, puts
    its stdio on /dev/null, becomes a child subreaper, and execs this module
    again with ``--detached``: the subreaper flag survives execve, while
    ctypes, loaded for that one prctl, does not (about 0.4 MB less in each of
    hundreds of shims).
    """
    if os.fork() != 0:
        os._exit(0)
    os.setsid()
    null = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(null, fd)
    if null > 2:
        os.close(null)
    os.chdir("/")
    from corral import _syscalls

    _syscalls.prctl(_syscalls.PR_SET_CHILD_SUBREAPER, 1)
    os.set_inheritable(options.ready_fd, True)
    command = detached_command(argv)
    os.execv(command[0], command)


def detached_command(argv: list[str]) -> list[str]:
    """The command line of the detached shim, for these shim flags: this
    module run afresh with ``--detached`` (bin/corral-subreaper starts it
    directly, with no first Python process)."""
    package_dir = os.path.dirname(os.path.dirname(os.path.dirname(__file__)))
    code = (f"import sys; sys.path.insert(0, {package_dir!r}); "
            "from corral.shim.main import main; main()")
    return [sys.executable, "-S", "-c", code, "--detached", *argv]


def _settle(options: Options) -> None:
    """In the detached process: only the ready fd kept; shim.pid written."""
    os.set_inheritable(options.ready_fd, False)
    os.closerange(3, options.ready_fd)
    os.closerange(options.ready_fd + 1, 1 << 16)
    tmp = os.path.join(options.state_dir, "shim.pid.tmp")
    with open(tmp, "w") as f:
        f.write(str(os.getpid()))
    os.replace(tmp, os.path.join(options.state_dir, "shim.pid"))


def report_ready(fd: int, message: dict) -> None:
    """Write MESSAGE as the one line of the ready fd, and close it."""
    try:
        os.write(fd, (_json.dumps(message) + "\n").encode())
    except OSError:
        pass  # the spawner is gone: the container runs on regardless
    finally:
        os.close(fd)


def run(options: Options) -> int:
    """Run the container under OPTIONS until it is gone for good (after detach)."""
    shim = Shim(options)
    try:
        shim.listen()
        shim.start_run()
    except Error as exc:
        shim.log("error", f"start '{options.id}': {exc}")
        shim.write_state(status="exited", error=str(exc), exit_code=failure_code(exc),
                         finished_at=shim.state["started_at"])
        shim.close()
        _unlink(os.path.join(options.state_dir, "shim.pid"))
        report_ready(options.ready_fd, {"error": str(exc)})  # once all is undone
        return 1
    report_ready(options.ready_fd, {"pid": shim.state["pid"]})
    try:
        shim.serve()
    finally:
        _unlink(os.path.join(options.state_dir, "shim.pid"))
    return 0


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def main(argv: list[str] | None = None) -> None:
    """Console entry point of corral-shim."""
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] in (["-h"], ["--help"]):
        sys.stdout.write(USAGE)
        sys.exit(0)
    detached = argv[:1] == ["--detached"]
    if detached:
        argv = argv[1:]
    try:
        options = parse_args(argv)
        os.makedirs(options.state_dir, mode=0o700, exist_ok=True)
        os.fstat(options.ready_fd)
    except (Error, OSError) as exc:
        sys.stderr.write(f"corral-shim: {exc}\n{USAGE}")
        sys.exit(2)
    if not detached:
        detach(argv, options)
    try:
        _settle(options)
        code = run(options)
    except BaseException as exc:  # noqa: BLE001 - the shim's last word, in its log
        _last_word(options, exc)
        code = 1
    os._exit(code)


def _last_word(options: Options, exc: BaseException) -> None:
    import traceback

    text = "".join(traceback.format_exception(exc))
    with open(os.path.join(options.state_dir, "shim.log"), "a") as log:
        log.write(_json.dumps({"level": "error", "msg": f"shim crashed: {text}"}) + "\n")
