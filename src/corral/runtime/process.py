"""The container process: from ``process`` in the spec to execve(2).

Shared by a container's init and by ``exec``. The order of the last steps is
fixed by the kernel: the bounding set is dropped while we are still root;
the user switch keeps capabilities only with PR_SET_KEEPCAPS; capset and the
ambient set come after it; no_new_privs and seccomp come last, because after
seccomp the filter applies to us too.
"""

from __future__ import annotations

import _signal
import os
import resource

from corral import _syscalls as sc
from corral.oci.spec import RLIMITS

from . import capabilities
from .errors import SetupError

_DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def environment(process: dict) -> dict[str, str]:
    env: dict[str, str] = {}
    for item in process.get("env") or []:
        key, _, value = item.partition("=")
        env[key] = value
    return env


def find_executable(name: str, env: dict[str, str], cwd: str) -> str:
    """args[0] as execve will find it, with the container's PATH, in its root."""
    if "/" in name:
        path = name if name.startswith("/") else os.path.join(cwd, name)
        if not os.path.exists(path):
            raise SetupError(f'exec: "{name}": no such file or directory in the rootfs')
        if os.path.isdir(path):
            raise SetupError(f'exec: "{name}": is a directory')
        return path
    for directory in env.get("PATH", _DEFAULT_PATH).split(":"):
        candidate = os.path.join(directory or ".", name)
        if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
    raise SetupError(f'exec: "{name}": executable file not found in $PATH')


def home_of(uid: int) -> str:
    """The home directory of UID in the container's /etc/passwd, or /."""
    try:
        with open("/etc/passwd") as f:
            for line in f:
                fields = line.rstrip("\n").split(":")
                if len(fields) >= 6 and fields[2] == str(uid):
                    return fields[5] or "/"
    except OSError:
        pass
    return "/"


def set_rlimits(process: dict) -> None:
    for rlimit in process.get("rlimits") or []:
        # The spec's "unlimited" is 2**64-1; Python's is RLIM_INFINITY.
        soft, hard = (resource.RLIM_INFINITY if value >= 1 << 63 else value
                      for value in (rlimit["soft"], rlimit["hard"]))
        try:
            resource.setrlimit(RLIMITS[rlimit["type"]], (soft, hard))
        except (OSError, ValueError) as exc:
            raise SetupError(
                f"setrlimit {rlimit['type']} soft={rlimit['soft']} hard={rlimit['hard']}: "
                f"{getattr(exc, 'strerror', None) or exc}"
            ) from exc


def set_oom_score_adj(process: dict) -> None:
    value = process.get("oomScoreAdj")
    if value is None:
        return
    try:
        with open("/proc/self/oom_score_adj", "w") as f:
            f.write(str(value))
    except OSError as exc:
        raise SetupError(f"set oomScoreAdj to {value}: {exc.strerror}") from exc


def check_cwd(cwd: str) -> None:
    """chdir into CWD and make sure it is inside the container's root.

    A cwd such as /proc/self/fd/7 could lead to a host directory through an
    fd the runtime still holds (the class of CVE-2024-21626). getcwd(3)
    fails for a directory outside the process's root, so we ask it.
    """
    try:
        os.chdir(cwd)
    except OSError as exc:
        raise SetupError(f"process.cwd '{cwd}': {exc.strerror}") from exc
    try:
        where = os.getcwd()
    except OSError:
        where = ""
    if not where.startswith("/"):
        raise SetupError(f"process.cwd '{cwd}' leads outside the container")


def become_user(process: dict, in_userns: bool) -> None:
    """Switch to process.user, keeping the capabilities the spec asks for."""
    user = process.get("user") or {}
    uid, gid = user.get("uid", 0), user.get("gid", 0)
    # No capabilities object means no capabilities, as with runc.
    plan = capabilities.Plan(process.get("capabilities") or {})
    plan.drop_bounding()
    sc.prctl(sc.PR_SET_KEEPCAPS, 1)
    try:
        groups = list(user.get("additionalGids") or [])
        if not in_userns or _setgroups_allowed():
            os.setgroups(groups)
        os.setresgid(gid, gid, gid)
        os.setresuid(uid, uid, uid)
    except OSError as exc:
        raise SetupError(f"switch to user {uid}:{gid}: {exc.strerror}") from exc
    sc.prctl(sc.PR_SET_KEEPCAPS, 0)
    try:
        plan.apply()
    except OSError as exc:
        raise SetupError(f"set capabilities: {exc.strerror}") from exc
    umask = user.get("umask")
    os.umask(0o022 if umask is None else umask)


def _setgroups_allowed() -> bool:
    try:
        with open("/proc/self/setgroups") as f:
            return f.read().strip() == "allow"
    except OSError:
        return True


def no_new_privileges(process: dict) -> None:
    if process.get("noNewPrivileges"):
        sc.prctl(sc.PR_SET_NO_NEW_PRIVS, 1)


def exec_process(process: dict, executable: str, env: dict[str, str]) -> None:
    if "HOME" not in env:
        env["HOME"] = home_of((process.get("user") or {}).get("uid", 0))
    # Python ignores SIGPIPE and SIGXFSZ, and an ignored signal stays ignored
    # across execve: give the container the defaults.
    for signum in (_signal.SIGPIPE, _signal.SIGXFSZ):
        _signal.signal(signum, _signal.SIG_DFL)
    os.execve(executable, process["args"], env)
