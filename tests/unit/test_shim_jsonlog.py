"""The json-file writer and reader (corral.shim.jsonlog), on plain files."""

from __future__ import annotations

import json
import os
import threading
import time

from corral.shim import jsonlog
from corral.shim.jsonlog import LogWriter, parse_time_ns, read_logs, timestamp_ns


def test_lines_are_docker_json_file_records(tmp_path):
    path = tmp_path / "c-json.log"
    writer = LogWriter(str(path))
    writer.write(1, b"one\ntw")
    writer.write(2, b"err \xff\n")
    writer.write(1, b"o\nrest")
    writer.close()
    records = [json.loads(line) for line in path.read_text().splitlines()]
    assert [(r["log"], r["stream"]) for r in records] == [
        ("one\n", "stdout"), ("err \ufffd\n", "stderr"), ("two\n", "stdout"),
        ("rest", "stdout")]
    assert all(r["time"].endswith("Z") and len(r["time"]) == 30 for r in records)


def test_a_long_line_is_cut_at_16_kib(tmp_path):
    path = tmp_path / "log"
    writer = LogWriter(str(path))
    writer.write(1, b"x" * 40000 + b"\n")
    writer.close()
    sizes = [len(json.loads(line)["log"]) for line in path.read_text().splitlines()]
    assert sizes == [16384, 16384, 40000 - 32768 + 1]


def test_rotation_keeps_max_file_files(tmp_path):
    path = str(tmp_path / "log")
    writer = LogWriter(path, max_size=1000, max_file=3)
    for index in range(200):
        writer.write(1 + index % 2, f"line {index}\n".encode())
    writer.close()
    assert sorted(os.listdir(tmp_path)) == ["log", "log.1", "log.2"]
    assert all(1000 <= os.path.getsize(f"{path}.{n}") < 1100 for n in (1, 2))
    lines = [data for _, data in read_logs(path)]
    first = int(lines[0].split()[1])
    assert lines == [f"line {i}\n".encode() for i in range(first, 200)]
    odd = [line for line in lines if int(line.split()[1]) % 2]
    assert [d for _, d in read_logs(path, stdout=False)] == odd


def test_max_file_1_truncates_in_place(tmp_path):
    path = str(tmp_path / "log")
    writer = LogWriter(path, max_size=500, max_file=1)
    for index in range(100):
        writer.write(1, f"line {index}\n".encode())
    writer.close()
    assert os.listdir(tmp_path) == ["log"]
    assert os.path.getsize(path) < 500


def _write_at(path, stamps):
    with open(path, "w") as f:
        for index, ns in enumerate(stamps):
            f.write(json.dumps({"log": f"{index}\n", "stream": "stdout",
                                "time": timestamp_ns(ns)}) + "\n")


def test_since_until_tail_and_timestamps(tmp_path):
    path = str(tmp_path / "log")
    base = 1_700_000_000 * 10**9
    _write_at(path, [base + i * 10**9 for i in range(10)])
    texts = lambda **kw: [d for _, d in read_logs(path, **kw)]  # noqa: E731
    assert texts(since=1_700_000_003, until=1_700_000_005) == [b"3\n", b"4\n", b"5\n"]
    assert texts(since="1700000008.5") == [b"9\n"]
    assert texts(tail=2) == [b"8\n", b"9\n"]
    assert texts(tail=0) == []
    assert texts(tail=3, until=1_700_000_004) == [b"2\n", b"3\n", b"4\n"]
    assert texts(tail=1, timestamps=True) == [
        b"2023-11-14T22:13:29.000000000Z 9\n"]


def test_a_torn_last_line_is_not_read(tmp_path):
    path = tmp_path / "log"
    _write_at(path, [0, 1])
    with open(path, "a") as f:
        f.write('{"log":"half')
    assert [d for _, d in read_logs(str(path))] == [b"0\n", b"1\n"]
    assert [d for _, d in read_logs(str(path), tail=5)] == [b"0\n", b"1\n"]


def test_follow_sees_new_lines_across_a_rotation(tmp_path):
    path = str(tmp_path / "log")
    writer = LogWriter(path, max_size=1000, max_file=2)
    writer.write(1, b"before\n")
    running = threading.Event()
    running.set()

    def produce():
        for index in range(20):
            writer.write(1, f"after {index}\n".encode())
            time.sleep(0.02)
        running.clear()

    thread = threading.Thread(target=produce)
    thread.start()
    seen = [d for _, d in read_logs(path, follow=True, is_running=running.is_set)]
    thread.join()
    writer.close()
    assert seen == [b"before\n"] + [f"after {i}\n".encode() for i in range(20)]


def test_follow_of_a_stopped_container_ends_at_once(tmp_path):
    path = tmp_path / "log"
    _write_at(path, [0])
    started = time.monotonic()
    assert len(list(read_logs(str(path), follow=True, is_running=lambda: False))) == 1
    assert time.monotonic() - started < jsonlog.FOLLOW_POLL * 2
    assert list(read_logs(str(tmp_path / "missing"))) == []


def test_time_parsing():
    assert parse_time_ns("1970-01-01T00:00:01.5Z") == 1_500_000_000
    assert parse_time_ns("2023-11-14T22:13:20Z") == 1_700_000_000 * 10**9
    assert parse_time_ns("2023-11-14T23:13:20+01:00") == 1_700_000_000 * 10**9
    assert parse_time_ns(timestamp_ns(1_234_567_890_123_456_789)) == 1_234_567_890_123_456_789
