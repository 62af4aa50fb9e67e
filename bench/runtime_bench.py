#!/usr/bin/env python3
"""Time corral-runtime against runc and crun on the same busybox bundle.

Two operations are timed for every runtime, the runtimes taking turns within
each iteration (their order rotates from one iteration to the next):

- run:   ``RUNTIME --root R run ID`` of /bin/true, until it exits;
- cycle: ``create --bundle B ID``, ``start ID``, ``state ID`` polled until it
  says stopped, then ``delete ID``.

Usage (as root, after scripts/setup)::

    .venv/bin/python bench/runtime_bench.py [--iterations 30] [--warmup 3]
        [--runtimes corral-runtime,runc,crun] [--scenario default,hardened | --all]

A scenario is a config.json: the one ``corral-runtime spec`` writes, with
``terminal`` false and /bin/true as the process, changed by the scenario's
function. Every runtime gets the same bundle for a scenario.

How the timing is done: each runtime is driven by a worker, this script
re-executed with ``--worker``, which reads one JSON request a line on stdin,
runs and times the runtime's commands, and answers with the milliseconds.
The worker for crun runs in a mount namespace of its own: crun 1.8 refuses
hybrid cgroups ("cgroups in hybrid mode not supported"), so the worker is
started as ``unshare --mount sh -c 'umount /sys/fs/cgroup/unified; exec ...'``
and crun there sees cgroup v1 only. The namespace is set up once, when the
worker starts, so its cost is in no timed interval. Workers run in their own
session: Ctrl-C reaches only this script, which then closes the workers'
stdin; each worker finishes its step, deletes every container left in its
state directory and exits, and the temp dir is removed.
"""

import argparse
import contextlib
import itertools
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

REPO = Path(__file__).resolve().parent.parent
CORRAL = REPO / ".venv" / "bin" / "corral-runtime"
BUSYBOX = "/bin/busybox"  # from Debian's busybox-static

# crun's worker starts here: drop the cgroup2 mount crun refuses (only in
# this private mount namespace), then become the worker.
CRUN_NAMESPACE = (
    "if mountpoint -q /sys/fs/cgroup/unified; then"
    ' umount /sys/fs/cgroup/unified || exit; fi; exec "$@"'
)

# The capabilities Docker gives a container by default.
DEFAULT_CAPS = (
    "CAP_CHOWN CAP_DAC_OVERRIDE CAP_FSETID CAP_FOWNER CAP_MKNOD CAP_NET_RAW"
    " CAP_SETGID CAP_SETUID CAP_SETFCAP CAP_SETPCAP CAP_NET_BIND_SERVICE"
    " CAP_SYS_CHROOT CAP_KILL CAP_AUDIT_WRITE"
).split()


class StepError(Exception):
    """A runtime command failed, or a worker went away."""


# -- scenarios: which config.json ---------------------------------------------


def harden(spec: dict) -> None:
    """What a container engine adds by default: capabilities, limits, seccomp."""
    # Here, not at the top: the default scenario runs without corral importable.
    from corral.oci.seccomp_profile import default_profile

    spec["process"]["capabilities"] = {
        kind: list(DEFAULT_CAPS) for kind in ("bounding", "effective", "permitted")
    }
    resources = spec["linux"].setdefault("resources", {})
    resources["memory"] = {"limit": 256 * 1024 * 1024}
    resources["cpu"] = {"quota": 50000, "period": 100000}
    resources["pids"] = {"limit": 512}
    spec["linux"]["seccomp"] = default_profile(DEFAULT_CAPS)


class Scenario(NamedTuple):
    tweak: Callable[[dict], None]
    by_default: bool  # run without --scenario or --all
    about: str


SCENARIOS = {
    "default": Scenario(lambda spec: None, True, "config.json of corral-runtime spec"),
    "hardened": Scenario(
        harden, False, "+ capabilities, memory/cpu/pids limits, seccomp"
    ),
}


# -- the worker: runs one runtime's commands and times them ------------------


class Runtime:
    """One runtime binary with its state directory, as a worker calls it."""

    def __init__(self, path: str, root: str):
        self.argv = [path, "--root", root]
        self.stderr = tempfile.TemporaryFile()

    def __call__(self, *args: str, cwd: str | None = None, capture=False) -> str:
        # stderr goes to a file, not a pipe: after create, the container's
        # init holds the stdio it inherited until it exits.
        self.stderr.seek(0)
        self.stderr.truncate()
        done = subprocess.run(
            [*self.argv, *args],
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE if capture else subprocess.DEVNULL,
            stderr=self.stderr,
        )
        if done.returncode != 0:
            self.stderr.seek(0)
            message = self.stderr.read().decode(errors="replace").strip()
            raise StepError(
                f"{' '.join(args)}: exit status {done.returncode}: {message}"
            )
        return done.stdout.decode() if capture else ""

    def delete_all(self) -> None:
        for container_id in self("list", "--quiet", capture=True).split():
            with contextlib.suppress(StepError):
                self("delete", "--force", container_id)


def run_true(runtime: Runtime, bundle: str, container_id: str) -> None:
    runtime("run", container_id, cwd=bundle)


def full_cycle(runtime: Runtime, bundle: str, container_id: str) -> None:
    runtime("create", "--bundle", bundle, container_id)
    runtime("start", container_id)
    # Poll without sleeping: each `state` is a process start already.
    deadline = time.monotonic() + 10
    while (
        json.loads(runtime("state", container_id, capture=True))["status"] != "stopped"
    ):
        if time.monotonic() > deadline:
            raise StepError(f"container {container_id} still running after 10 s")
    runtime("delete", container_id)


OPERATIONS = {
    "run": (run_true, "run of /bin/true to exit"),
    "cycle": (full_cycle, "create, start, poll state until stopped, delete"),
}


def time_step(runtime: Runtime, operation: str, bundle: str, container_id: str) -> dict:
    step = OPERATIONS[operation][0]
    started = time.perf_counter()
    try:
        step(runtime, bundle, container_id)
    except StepError as exc:
        with contextlib.suppress(StepError):
            runtime("delete", "--force", container_id)
        return {"error": str(exc)}
    return {"ms": (time.perf_counter() - started) * 1000}


def serve(path: str, root: str) -> None:
    """The worker: answer timing requests, a JSON line each, until stdin closes."""
    runtime = Runtime(path, root)
    try:
        for line in sys.stdin:
            reply = time_step(runtime, **json.loads(line))
            print(json.dumps(reply), flush=True)
    finally:
        with contextlib.suppress(StepError):
            runtime.delete_all()


# -- the driver ---------------------------------------------------------------


class Worker:
    """The driver's end of one runtime's worker process."""

    def __init__(self, name: str, path: str, root: Path):
        self.name = name
        argv = [
            sys.executable,
            str(Path(__file__).resolve()),
            "--worker",
            path,
            str(root),
        ]
        if name == "crun":
            argv = [
                "unshare",
                "--mount",
                "--propagation",
                "private",
                "sh",
                "-c",
                CRUN_NAMESPACE,
                "sh",
                *argv,
            ]
        self.process = subprocess.Popen(
            argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )

    def time(self, operation: str, bundle: Path, container_id: str) -> float:
        request = {
            "operation": operation,
            "bundle": str(bundle),
            "container_id": container_id,
        }
        try:
            self.process.stdin.write(json.dumps(request) + "\n")
            self.process.stdin.flush()
            line = self.process.stdout.readline()
        except OSError as exc:
            raise StepError(f"the {self.name} worker went away: {exc}") from exc
        if not line:
            raise StepError(f"the {self.name} worker exited")
        reply = json.loads(line)
        if "error" in reply:
            raise StepError(reply["error"])
        return reply["ms"]

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.process.stdin.close()
        try:
            self.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            print(
                f"warning: {self.name} worker killed; containers may be left",
                file=sys.stderr,
            )


def runtime_path(name: str) -> str | None:
    if name == "corral-runtime":
        return str(CORRAL) if CORRAL.exists() else None
    return shutil.which(name)


def make_bundle(bundle: Path, tweak: Callable[[dict], None]) -> Path:
    """A busybox rootfs and config.json, running /bin/true."""
    bin_dir = bundle / "rootfs" / "bin"
    bin_dir.mkdir(parents=True)
    shutil.copy2(BUSYBOX, bin_dir / "busybox")
    applets = subprocess.run(
        [BUSYBOX, "--list"], capture_output=True, text=True, check=True
    ).stdout.split()
    for applet in applets:
        if applet != "busybox":
            (bin_dir / applet).symlink_to("busybox")
    subprocess.run([CORRAL, "spec"], cwd=bundle, check=True)
    config = bundle / "config.json"
    spec = json.loads(config.read_text())
    spec["process"]["terminal"] = False
    spec["process"]["args"] = ["/bin/true"]
    tweak(spec)
    config.write_text(json.dumps(spec, indent=2))
    return bundle


def start_workers(names: list[str], tmp: Path, stack: contextlib.ExitStack) -> dict:
    workers = {}
    for name in names:
        path = runtime_path(name)
        if path is None:
            print(f"skipping {name}: not installed")
            continue
        root = tmp / "state" / name
        root.mkdir(parents=True)
        workers[name] = Worker(name, path, root)
        stack.callback(workers[name].close)
    return workers


def rotated(names: list[str], i: int) -> list[str]:
    i %= len(names)
    return names[i:] + names[:i]


def measure(workers: dict, bundles: dict, args: argparse.Namespace) -> dict:
    """Samples in ms by (scenario, operation, runtime); warm-up not kept."""
    samples = {}
    skipped = set()
    ids = (f"bench-{os.getpid()}-{n}" for n in itertools.count())
    total = args.warmup + args.iterations
    for i in range(total):
        if sys.stderr.isatty():
            print(f"\riteration {i + 1}/{total}", end="", file=sys.stderr, flush=True)
        order = rotated(list(workers), i)
        for scenario, operation, name in itertools.product(bundles, OPERATIONS, order):
            key = (scenario, operation, name)
            if key in skipped:
                continue
            try:
                ms = workers[name].time(operation, bundles[scenario], next(ids))
            except StepError as exc:
                print(f"\nskipping {name} for {scenario}/{operation}: {exc}")
                skipped.add(key)
                samples.pop(key, None)
                continue
            if i >= args.warmup:
                samples.setdefault(key, []).append(ms)
    if sys.stderr.isatty():
        print(file=sys.stderr)
    return samples


def report(samples: dict, scenarios: list[str], names: list[str], iterations: int):
    for scenario, operation in itertools.product(scenarios, OPERATIONS):
        print(
            f"\n{scenario} ({SCENARIOS[scenario].about}), "
            f"{operation}: {OPERATIONS[operation][1]}; ms, {iterations} iterations"
        )
        print(f"  {'runtime':<16}{'min':>8}{'median':>8}{'max':>8}")
        medians = {}
        for name in names:
            times = samples.get((scenario, operation, name))
            if not times:
                continue
            medians[name] = statistics.median(times)
            print(f"  {name:<16}{min(times):8.1f}{medians[name]:8.1f}{max(times):8.1f}")
        corral = medians.pop("corral-runtime", None)
        if corral is not None and medians:
            print(
                "  corral-runtime median / "
                + ", ".join(
                    f"{name}: {corral / median:.2f}x"
                    for name, median in medians.items()
                )
            )


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=3, help="iterations not counted")
    parser.add_argument(
        "--runtimes",
        default="corral-runtime,runc,crun",
        help="comma-separated (default: %(default)s)",
    )
    parser.add_argument(
        "--scenario", help=f"comma-separated, of: {', '.join(SCENARIOS)}"
    )
    parser.add_argument("--all", action="store_true", help="every scenario")
    args = parser.parse_args()
    if args.all:
        args.scenarios = list(SCENARIOS)
    elif args.scenario:
        args.scenarios = args.scenario.split(",")
    else:
        args.scenarios = [name for name, s in SCENARIOS.items() if s.by_default]
    unknown = [name for name in args.scenarios if name not in SCENARIOS]
    if unknown:
        parser.error(f"unknown scenario: {', '.join(unknown)}")
    args.runtimes = args.runtimes.split(",")
    return args


def main() -> int:
    args = parse_args()
    if os.geteuid() != 0:
        sys.exit("runtime_bench: needs root")
    # PYTHONDONTWRITEBYTECODE is set here: without this, corral-runtime would
    # compile its sources on every start and look slower than it is.
    subprocess.run(
        [REPO / ".venv" / "bin" / "python", "-m", "compileall", "-q", "src"],
        cwd=REPO,
        check=True,
        stdout=subprocess.DEVNULL,
    )
    with contextlib.ExitStack() as stack:
        tmp = Path(
            stack.enter_context(tempfile.TemporaryDirectory(prefix="corral-bench-"))
        )
        bundles = {
            name: make_bundle(tmp / name, SCENARIOS[name].tweak)
            for name in args.scenarios
        }
        workers = start_workers(args.runtimes, tmp, stack)
        if not workers:
            sys.exit("runtime_bench: no runtime to time")
        samples = measure(workers, bundles, args)
    report(samples, args.scenarios, args.runtimes, args.iterations)
    return 0


if __name__ == "__main__":
    if sys.argv[1:2] == ["--worker"]:
        serve(*sys.argv[2:4])
        sys.exit(0)
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("\ninterrupted; containers deleted, temp dir removed", file=sys.stderr)
        sys.exit(130)
