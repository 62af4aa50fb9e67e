"""OCI hooks: programs the spec runs at fixed points of the lifecycle.

Where each kind runs (runtime-spec config.md, "POSIX-platform Hooks"):

- prestart, createRuntime: during create, after the environment is built and
  before pivot_root, in the runtime's namespaces (the parent runs them);
- createContainer: the same moment, in the container's namespaces (init runs
  it before pivot_root, so the path resolves in the runtime's filesystem);
- startContainer: during start, in the container, before the user process;
- poststart: after the user process has started, before start returns;
- poststop: after the container is deleted, before delete returns.

Each hook gets the container's state JSON on stdin. A hook that exits
non-zero or outlives its timeout fails; what that means depends on the kind.
"""

from __future__ import annotations

from corral import _json as json

from .errors import HookError


def run_all(spec: dict, kind: str, state: dict) -> None:
    """Run every hook of KIND in order; the first failure raises HookError."""
    hooks = (spec.get("hooks") or {}).get(kind) or []
    if not hooks:
        return
    payload = json.dumps(state).encode()
    for index, hook in enumerate(hooks):
        run_one(hook, f"{kind}[{index}]", payload)


def run_one(hook: dict, name: str, payload: bytes) -> None:
    import subprocess  # only paid for by containers that have hooks

    args = hook.get("args") or [hook["path"]]
    timeout = hook.get("timeout")
    try:
        result = subprocess.run(
            args,
            executable=hook["path"],
            input=payload,
            env=dict(item.split("=", 1) for item in hook.get("env") or []),
            capture_output=True,
            timeout=timeout,
            close_fds=True,
        )
    except subprocess.TimeoutExpired:
        raise HookError(f"hook {name} '{hook['path']}' timed out after {timeout}s") from None
    except OSError as exc:
        raise HookError(f"hook {name} '{hook['path']}': {exc.strerror}") from None
    if result.returncode != 0:
        detail = (result.stderr or result.stdout).decode(errors="replace").strip()
        status = (
            f"killed by signal {-result.returncode}"
            if result.returncode < 0
            else f"exit status {result.returncode}"
        )
        message = f"hook {name} '{hook['path']}' failed: {status}"
        raise HookError(f"{message}: {detail[-500:]}" if detail else message)


def hook_state(container_id: str, status: str, pid: int, bundle: str,
               annotations: dict | None) -> dict:
    return {
        "ociVersion": "1.1.0",
        "id": container_id,
        "status": status,
        "pid": pid,
        "bundle": bundle,
        "annotations": annotations or {},
    }
