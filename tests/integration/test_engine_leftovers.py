"""Regressions found by fresh users of the engine: each test is the input
that once went wrong."""

from __future__ import annotations

import os
import threading
import time

from tests.integration.test_engine import body, engine  # noqa: F401


def test_oom_kill_is_reported_with_an_event(engine):  # noqa: F811
    # dd's 64 MB buffer in a 16 MB cgroup: the kernel kills it (it said
    # OOMKilled false and sent no oom event).
    container = engine.create(body(
        engine, "dd", "if=/dev/zero", "of=/dev/null", "bs=64M", "count=1",
        HostConfig={"Memory": 16 << 20, "MemorySwap": 16 << 20}))["Id"]
    started = time.time()
    engine.start(container)
    assert engine.wait(container)["StatusCode"] == 137
    assert engine.inspect(container)["State"]["OOMKilled"] is True
    actions = [e["Action"] for e in engine.events(since=started, until=time.time())
               if e["Actor"]["ID"] == container]
    assert actions[-3:-1] == ["oom", "die"] or actions[-2:] == ["oom", "die"]


def test_a_run_without_oom_is_not_oom_killed(engine):  # noqa: F811
    container = engine.create(body(engine, "true",
                                   HostConfig={"Memory": 16 << 20}))["Id"]
    engine.start(container)
    assert engine.wait(container)["StatusCode"] == 0
    assert engine.inspect(container)["State"]["OOMKilled"] is False


def test_events_without_since_start_now(engine):  # noqa: F811
    # `docker events` replayed every past event when given no --since.
    old = engine.create(body(engine, "true"))["Id"]
    seen: list[str] = []
    stream = engine.events()

    def read() -> None:
        for event in stream:
            seen.append(event["Actor"]["ID"])
            return

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    time.sleep(0.3)
    new = engine.create(body(engine, "true"))["Id"]
    reader.join(10)
    assert seen == [new] and old not in seen


def _output(engine, **extra) -> str:  # noqa: F811
    container = engine.create(body(engine, **extra))["Id"]
    engine.start(container)
    assert engine.wait(container)["StatusCode"] == 0
    return b"".join(data for _, data in engine.logs(container)).decode()


def test_a_bind_of_a_host_file_with_binds(engine, tmp_path):  # noqa: F811
    # -v FILE:/path failed: "mkdir FILE: file exists".
    source = tmp_path / "host-file"
    source.write_text("from the host\n")
    text = _output(engine, Cmd=["cat", "/etc/hh"],
                   HostConfig={"Binds": [f"{source}:/etc/hh:ro"]})
    assert text == "from the host\n"


def test_the_host_network_gives_the_hosts_name(engine):  # noqa: F811
    # It gave the short ID, where Docker gives the host's name.
    text = _output(engine, Cmd=["hostname"], HostConfig={"NetworkMode": "host"})
    assert text.strip() == os.uname().nodename


def test_wait_says_when_it_has_begun(engine):  # noqa: F811
    # corrald held the wait's headers for a fixed 50 ms (so as not to miss a
    # quick exit), and the docker CLI starts a container only when it has
    # them: 50 ms on every docker run. The engine now says when it may go.
    for condition in ("not-running", "next-exit", "removed"):
        container = engine.create(body(engine, "sleep", "60"))["Id"]
        if condition != "next-exit":
            engine.start(container)
        begun, result = threading.Event(), {}
        waiter = threading.Thread(target=_wait_into, daemon=True,
                                  args=(engine, container, condition, begun, result))
        waiter.start()
        assert begun.wait(5), condition
        assert waiter.is_alive() and not result
        if condition == "next-exit":
            engine.start(container)
        engine.kill(container)
        if condition == "removed":
            engine.remove(container, force=True)
        waiter.join(10)
        assert result["StatusCode"] == 137, condition
        if condition != "removed":
            engine.remove(container, force=True)


def _wait_into(engine, container: str, condition: str, begun, result: dict) -> None:  # noqa: F811
    result.update(engine.wait(container, condition=condition, begun=begun.set))


def test_an_engine_closed_after_a_failed_run_rm_waits_for_its_attach(engine, caplog):  # noqa: F811
    # corral run --rm of a program that cannot run: the CLI closed its engine
    # while the attach's thread still read the database ("Cannot operate on a
    # closed database"), and now and then died of a segmentation fault.
    from corral.manager import errors
    from corral.manager.engine import Engine

    for _ in range(8):
        other = Engine(engine.root, engine.run, default_bridge=engine.default_bridge,
                       default_subnet=engine.default_subnet)
        container = other.create(body(engine, "/etc/passwd", HostConfig={
            "AutoRemove": True, "NetworkMode": "none"}))["Id"]
        sock = other.attach(container, stdout=True, stderr=True, stream=True)
        try:
            other.start(container)
        except errors.StartFailed:
            pass
        sock.close()
        other.close()
    time.sleep(0.2)
    assert not [r for r in caplog.records if r.name == "corral.manager.attach"]
