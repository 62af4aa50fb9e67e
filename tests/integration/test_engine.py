"""The manager's engine against real containers: busybox from the test
registry pulled into a store of the test's own, corral-shim and
corral-runtime underneath (docs/dev/manager.md)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from corral.manager import errors
from corral.manager.engine import Engine

SRC = Path(__file__).resolve().parents[2] / "src"


@pytest.fixture
def engine(tmp_path, busybox_image, make_client):
    from corral.image import reference
    from corral.image.pull import pull
    from corral.image.store import Store

    root, run = tmp_path / "root", tmp_path / "run"
    with Store(root) as store:
        pull(store, make_client(), reference.parse(busybox_image))
    engine = Engine(root, run)
    engine.image = busybox_image
    yield engine
    for container in engine.records.all():
        try:
            engine.remove(container.id, force=True)
        except errors.Error:
            engine._destroy(container.id)
    engine.close()
    _assert_clean(root, run)


def _assert_clean(root: Path, run: Path) -> None:
    assert not list((root / "containers").iterdir())
    assert not list((run / "shims").iterdir())
    assert not [p for p in (run / "runtime").iterdir()]
    assert not [line for line in Path("/proc/self/mountinfo").read_text().splitlines()
                if str(root / "containers") in line]


def body(engine, *cmd, **extra) -> dict:
    document = {"Image": engine.image, "Cmd": list(cmd) or None}
    document.update(extra)
    return document


# Create, inspect, list, rename, remove ----------------------------------------------

def test_create_inspect_list_rename_remove(engine):
    created = engine.create(body(engine, "sh", "-c", "echo hi", Labels={"a": "b"}),
                            name="first")
    container_id = created["Id"]
    assert len(container_id) == 64 and created["Warnings"] == []
    document = engine.inspect("first")
    assert document["Id"] == container_id
    assert document["Name"] == "/first"
    assert document["Path"] == "sh" and document["Args"] == ["-c", "echo hi"]
    assert document["State"]["Status"] == "created"
    assert document["State"]["Running"] is False
    assert document["Config"]["Labels"] == {"a": "b"}
    assert document["Config"]["Hostname"] == container_id[:12]
    assert any(e.startswith("PATH=") for e in document["Config"]["Env"])
    assert document["HostConfig"]["NetworkMode"] == "default"
    assert document["Image"].startswith("sha256:")
    assert engine.inspect(container_id[:8])["Id"] == container_id

    assert engine.list() == []
    rows = engine.list(all=True)
    assert [r["Names"] for r in rows] == [["/first"]]
    assert rows[0]["State"] == "created" and rows[0]["Status"] == "Created"
    assert rows[0]["Command"] == "sh -c echo hi"

    engine.rename("first", "second")
    assert engine.inspect(container_id)["Name"] == "/second"
    with pytest.raises(errors.NotFound, match="No such container: first"):
        engine.inspect("first")
    engine.remove("second")
    with pytest.raises(errors.NotFound):
        engine.inspect(container_id)
    actions = [e["Action"] for e in engine.events(since=0, until=time.time())]
    assert actions == ["create", "rename", "destroy"]


def test_names_are_unique(engine):
    first = engine.create(body(engine, "true"), name="taken")["Id"]
    with pytest.raises(errors.Conflict) as caught:
        engine.create(body(engine, "true"), name="taken")
    assert str(caught.value) == (
        f'Conflict. The container name "/taken" is already in use by container '
        f'"{first}". You have to remove (or rename) that container to be able to '
        f'reuse that name.')
    other = engine.create(body(engine, "true"))["Id"]
    with pytest.raises(errors.Conflict):
        engine.rename(other, "taken")
    assert len(engine.list(all=True)) == 2
    assert len(list((engine.root / "containers").iterdir())) == 2


@pytest.mark.parametrize("bad, message", [
    ({"HostConfig": {"Memroy": 1}}, "HostConfig.Memroy: unknown option"),
    ({"HostConfig": {"Memory": "1g"}}, "cannot unmarshal string into Go struct field "
                                       "HostConfig.Memory of type int64"),
    ({"Tty": "yes"}, "Config.Tty of type bool"),
    ({"Image": "nosuch:1"}, "No such image: nosuch:1"),
    ({"User": "nobody-here"}, "no user 'nobody-here'"),
    ({"HostConfig": {"Devices": [{"PathOnHost": "/dev/kvm"}]}}, "not supported"),
])
def test_bad_create_leaves_nothing(engine, bad, message):
    with pytest.raises(errors.Error, match=message):
        engine.create(body(engine, "true", **bad), name="bad")
    assert engine.records.all() == []
    assert not list((engine.root / "containers").iterdir())
    assert not [s for s in engine.store.snapshots.walk() if s.kind == "active"]
