"""``docker stats``: the table, computed from the stats documents as the
docker CLI computes it (CPU % from the delta of container and system CPU
time between two samples; memory without the page cache)."""

from __future__ import annotations

import sys

from . import output


def cpu_percent(stats: dict) -> float:
    cpu, pre = stats.get("cpu_stats") or {}, stats.get("precpu_stats") or {}
    container = (cpu.get("cpu_usage") or {}).get("total_usage", 0) - \
        (pre.get("cpu_usage") or {}).get("total_usage", 0)
    system = cpu.get("system_cpu_usage", 0) - pre.get("system_cpu_usage", 0)
    cpus = cpu.get("online_cpus") or len((cpu.get("cpu_usage") or {}).get("percpu_usage")
                                         or []) or 1
    if container > 0 and system > 0:
        return container / system * cpus * 100.0
    return 0.0


def memory(stats: dict) -> tuple[int, int]:
    """(usage without cache, limit), as the CLI shows them."""
    memory_stats = stats.get("memory_stats") or {}
    usage = memory_stats.get("usage", 0)
    detail = memory_stats.get("stats") or {}
    cache = detail.get("inactive_file", detail.get("total_inactive_file", 0))
    return max(0, usage - cache), memory_stats.get("limit", 0)


def block_io(stats: dict) -> tuple[int, int]:
    read = write = 0
    for entry in (stats.get("blkio_stats") or {}).get("io_service_bytes_recursive") or []:
        op = str(entry.get("op", "")).lower()
        if op == "read":
            read += entry.get("value", 0)
        elif op == "write":
            write += entry.get("value", 0)
    return read, write


def network_io(stats: dict) -> tuple[int, int]:
    received = sent = 0
    for interface in (stats.get("networks") or {}).values():
        received += interface.get("rx_bytes", 0)
        sent += interface.get("tx_bytes", 0)
    return received, sent


def _binary(size: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{size:.4g}{unit}"
        size /= 1024
    raise AssertionError("unreachable")


def row(container_id: str, stats: dict) -> list[str]:
    used, limit = memory(stats)
    read, write = block_io(stats)
    received, sent = network_io(stats)
    percent = used / limit * 100 if limit else 0.0
    return [container_id[:12], (stats.get("name") or "").lstrip("/"),
            f"{cpu_percent(stats):.2f}%", f"{_binary(used)} / {_binary(limit)}",
            f"{percent:.2f}%", f"{output.human_size(received)} / {output.human_size(sent)}",
            f"{output.human_size(read)} / {output.human_size(write)}",
            str((stats.get("pids_stats") or {}).get("current", 0))]


HEADERS = ["CONTAINER ID", "NAME", "CPU %", "MEM USAGE / LIMIT", "MEM %", "NET I/O",
           "BLOCK I/O", "PIDS"]


def stats(backend, args) -> int:
    refs = args.containers or [c["Id"] for c in backend.list(all=args.all)]
    if args.no_stream:
        rows = []
        for ref in refs:
            sample = next(iter(backend.stats(ref, stream=False)))
            if args.format == "json":
                print(output.json_line(sample))
            rows.append(row(sample.get("id") or ref, sample))
        if args.format != "json":
            output.table(HEADERS, rows)
        return 0
    streams = {ref: iter(backend.stats(ref, stream=True)) for ref in refs}
    try:
        while streams:
            rows = []
            for ref, stream in list(streams.items()):
                sample = next(stream, None)
                if sample is None:
                    del streams[ref]
                    continue
                rows.append(row(sample.get("id") or ref, sample))
            sys.stdout.write("\x1b[2J\x1b[H")
            output.table(HEADERS, rows)
            sys.stdout.flush()
    except KeyboardInterrupt:
        pass
    return 0
