#!/usr/bin/env python3
"""Pull and unpack: corral against skopeo + umoci, and containerd's ctr.

One local docker-registry on 127.0.0.1 serves a generated image (about
--size-mb MB of files over --layers layers). Each round, in turn:

- corral:        ``corral --root NEW pull IMAGE`` (a pull ends unpacked)
- skopeo+umoci:  ``skopeo copy docker://IMAGE oci:NEW`` then
                 ``umoci unpack --image NEW BUNDLE``
- ctr:           ``ctr -n NEW images pull --plain-http IMAGE`` against a
                 private containerd (pull and unpack into overlayfs)

Every contestant starts from empty storage. Prints the median seconds,
MB/s (of the image's uncompressed size), the ratio to corral, and the peak
RSS of each process run (for ctr that is the client: containerd unpacks;
every figure includes the few MB of the bench process it was forked from). Then, for streaming, the peak RSS of a corral pull of a --big-mb
image beside the small one's.

Run as root from the project: ``.venv/bin/python bench/image_bench.py``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.integration.peers import Containerd, make_workdir  # noqa: E402
from tests.registry import start_registry  # noqa: E402

CORRAL = str(Path(sys.executable).parent / "corral")


def timed(args: list[str]) -> tuple[float, int]:
    """Run ``args``; (seconds, peak RSS in KiB of that process)."""
    start = time.perf_counter()
    process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(process.pid, 0)
    elapsed = time.perf_counter() - start
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        raise SystemExit(f"{args[0]} failed ({process.returncode}): "
                         f"{process.stderr.read().decode()}")
    return elapsed, usage.ru_maxrss


def build_and_push(path: Path, layers: int, size_mb: float, seed: int, image: str) -> None:
    """Generate the image and push it, in a child process: the tars are made
    in memory, and a bench process that had held them would pass a large
    peak RSS on to every contestant it forks (ru_maxrss counts the forked
    copy of the parent until exec)."""
    code = ("import sys; from pathlib import Path; from tests.images import "
            "layered_layout, push; layout = layered_layout(Path(sys.argv[1]), "
            "int(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4]), compresslevel=1); "
            "push(layout.path, 'latest', sys.argv[5])")
    subprocess.run([sys.executable, "-c", code, str(path), str(layers), str(size_mb),
                    str(seed), image], check=True, cwd=ROOT)
    remove_tree(path)


def remove_tree(path: Path) -> None:
    subprocess.run(["rm", "-rf", "--one-file-system", str(path)], check=False)


class Corral:
    name = "corral"

    def __init__(self, work: Path) -> None:
        self.work = work

    def run(self, image: str, round_: int) -> tuple[float, int]:
        root = self.work / f"corral-{round_}"
        try:
            return timed([CORRAL, "--root", str(root), "pull", "-q", image])
        finally:
            remove_tree(root)


class SkopeoUmoci:
    name = "skopeo+umoci"

    def __init__(self, work: Path) -> None:
        self.work = work

    def run(self, image: str, round_: int) -> tuple[float, int]:
        layout = self.work / f"oci-{round_}"
        bundle = self.work / f"bundle-{round_}"
        try:
            copy, copy_rss = timed(["skopeo", "copy", "--quiet", "--src-tls-verify=false",
                                    f"docker://{image}", f"oci:{layout}:bench"])
            unpack, unpack_rss = timed(["umoci", "unpack", "--image", f"{layout}:bench",
                                        str(bundle)])
            return copy + unpack, max(copy_rss, unpack_rss)
        finally:
            remove_tree(layout)
            remove_tree(bundle)


class Ctr:
    name = "ctr"

    def __init__(self, work: Path) -> None:
        self.daemon = Containerd(make_workdir("bench-ctr")).start()

    def run(self, image: str, round_: int) -> tuple[float, int]:
        namespace = f"bench{round_}"
        args = ["ctr", "--address", str(self.daemon.address), "--namespace", namespace,
                "images", "pull", "--plain-http", image]
        result = timed(args)
        # ctr's own RSS; the unpacking happens in containerd.
        subprocess.run(self.daemon.ctr_cmd()[:3] + ["--namespace", namespace, "images",
                                                    "rm", "--sync", image],
                       capture_output=True, check=False)
        return result

    def stop(self) -> None:
        self.daemon.stop()


def median(values: list[float]) -> float:
    return statistics.median(values)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--size-mb", type=float, default=100)
    parser.add_argument("--layers", type=int, default=5)
    parser.add_argument("--big-mb", type=float, default=1024,
                        help="size of the image for the memory check (0: skip)")
    parser.add_argument("--no-ctr", action="store_true", help="leave containerd out")
    options = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="corral-image-bench-", dir="/var/tmp"))
    registry = start_registry(work / "registry")
    contestants: list = [Corral(work), SkopeoUmoci(work)]
    try:
        if not options.no_ctr:
            contestants.append(Ctr(work))
        image = registry.ref("bench/layered:small")
        build_and_push(work / "layout", options.layers, options.size_mb, 0, image)
        print(f"image: {options.layers} layers, {options.size_mb:.0f} MB of files; "
              f"{options.rounds} rounds, contestants alternating", flush=True)
        results = {c.name: ([], []) for c in contestants}
        for round_ in range(options.rounds):
            for contestant in contestants:
                seconds, rss = contestant.run(image, round_)
                results[contestant.name][0].append(seconds)
                results[contestant.name][1].append(rss)
        report(results, options.size_mb)
        if options.big_mb:
            memory(work, registry, options, results["corral"][1])
    finally:
        for contestant in contestants:
            if hasattr(contestant, "stop"):
                contestant.stop()
        registry.stop()
        remove_tree(work)


def report(results: dict, size_mb: float) -> None:
    base = median(results["corral"][0])
    print(f"{'':14} {'min s':>7} {'median s':>9} {'max s':>7} {'MB/s':>7} "
          f"{'x corral':>9} {'peak RSS MB':>12}")
    for name, (seconds, rss) in results.items():
        mid = median(seconds)
        print(f"{name:14} {min(seconds):7.3f} {mid:9.3f} {max(seconds):7.3f} "
              f"{size_mb / mid:7.1f} {mid / base:9.2f} {max(rss) / 1024:12.1f}")


def memory(work: Path, registry, options, small_rss: list[int]) -> None:
    image = registry.ref("bench/layered:big")
    build_and_push(work / "layout-big", options.layers, options.big_mb, 1, image)
    seconds, rss = Corral(work).run(image, 999)
    print(f"memory: corral peak RSS {max(small_rss) / 1024:.1f} MB for "
          f"{options.size_mb:.0f} MB, {rss / 1024:.1f} MB for {options.big_mb:.0f} MB "
          f"({seconds:.1f} s, {options.big_mb / seconds:.0f} MB/s)")


if __name__ == "__main__":
    main()
