"""The shim's wire format, its events table and its command line."""

from __future__ import annotations

import socket
import threading

import pytest

from corral.shim import events, protocol
from corral.shim.errors import Error, InvalidArgument, ShimUnavailable
from corral.shim.main import parse_args


def test_parse_request():
    assert protocol.parse_request(b'{"op": "state"}') == {"op": "state"}
    for line, message in [(b"nonsense", "not JSON"), (b"[1]", "not a JSON object"),
                          (b'{"op": "x"}', "unknown op 'x'")]:
        with pytest.raises(InvalidArgument, match=message):
            protocol.parse_request(line)


def test_frames_round_trip_through_demux():
    left, right = socket.socketpair()
    left.sendall(protocol.frame(1, b"out") + protocol.frame(2, b"") +
                 protocol.frame(2, b"e" * 70000))
    left.close()
    assert list(protocol.demux(right)) == [(1, b"out"), (2, b""), (2, b"e" * 70000)]


def _serve_once(path, answer: bytes, then: bytes = b""):
    server = socket.socket(socket.AF_UNIX)
    server.bind(path)
    server.listen(1)

    def run():
        connection, _ = server.accept()
        connection.recv(1000)
        connection.sendall(answer + then)
        connection.close()
        server.close()

    thread = threading.Thread(target=run)
    thread.start()
    return thread


def test_request_and_attach_client(tmp_path):
    path = str(tmp_path / "s")
    thread = _serve_once(path, b'{"ok": true, "status": "running", "error": ""}\n')
    assert protocol.request(path, {"op": "state"})["status"] == "running"
    thread.join()
    (tmp_path / "s").unlink()
    thread = _serve_once(path, b'{"ok": true, "tty": false}\n', protocol.frame(1, b"x"))
    sock = protocol.attach(path, replay=True)
    assert list(protocol.demux(sock)) == [(1, b"x")]  # the frame was left for us
    thread.join()


def test_client_errors(tmp_path):
    path = str(tmp_path / "s")
    with pytest.raises(ShimUnavailable, match="connect to shim"):
        protocol.request(path, {"op": "state"})
    thread = _serve_once(path, b'{"error": "kill \'c1\': container not running"}\n')
    with pytest.raises(Error, match="container not running"):
        protocol.request(path, {"op": "kill"})
    thread.join()


def test_events_record_and_read(tmp_path):
    db = str(tmp_path / "containers.db")
    events.record(db, "container", "die", "c1", {"exitCode": "3", "image": "busybox"})
    events.record(db, "container", "restart", "c1", {})
    read = events.read(db)
    assert [(e["Action"], e["Actor"]["ID"]) for e in read] == [("die", "c1"),
                                                                ("restart", "c1")]
    assert read[0]["Actor"]["Attributes"] == {"exitCode": "3", "image": "busybox"}
    assert read[0]["from"] == "busybox" and read[0]["status"] == "die"
    assert read[0]["timeNano"] // 10**9 == read[0]["time"]
    assert [e["Action"] for e in events.read(db, after_id=read[0]["_id"])] == ["restart"]


def test_parse_args():
    options = parse_args(["--id", "c1", "--bundle=/b", "--state-dir", "/s",
                          "--runtime", "/rt", "--runtime-root", "/r", "--log-path",
                          "/l", "--ready-fd", "3", "--tty", "--restart", "on-failure:2",
                          "--log-max-size", "100", "--log-max-file", "2"])
    assert (options.id, options.bundle, options.ready_fd, options.tty) == ("c1", "/b", 3,
                                                                         True)
    assert (str(options.restart), options.log_max_size, options.log_max_file) == (
        "on-failure:2", 100, 2)
    for argv, message in [(["--id"], "needs a value"), (["--what"], "unknown"),
                          (["--id", "c"], "'--bundle': required")]:
        with pytest.raises(InvalidArgument, match=message):
            parse_args(argv)


def test_a_reset_attach_is_shim_unavailable(tmp_path):
    # Regression: a shim that stops listening resets a pending attach; the
    # client got a raw ConnectionResetError instead of ShimUnavailable.
    import time

    path = str(tmp_path / "s.sock")
    server = socket.socket(socket.AF_UNIX)
    server.bind(path)
    server.listen(1)

    def reset() -> None:
        conn, _ = server.accept()
        # Closed with the request unread: the client's next read is reset.
        time.sleep(0.2)
        conn.close()

    thread = threading.Thread(target=reset)
    thread.start()
    try:
        with pytest.raises(ShimUnavailable):
            protocol.attach(path)
    finally:
        thread.join()
        server.close()
