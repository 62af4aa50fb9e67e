"""Shims forked by a template (shim/template.py): started in a fork rather
than a Python start, sharing the template's pages; and containers that live
on when the template is gone."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

from corral.manager import shims
from tests.integration.test_engine import engine, run  # noqa: F401 (fixture)


def _parent(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


def _shim_pid(manager, container_id: str) -> int:
    return int((manager.state_dir(container_id) / "shim.pid").read_text())


def _templates(run_dir: Path) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            if b"corral.shim.template" in cmdline and str(run_dir).encode() in cmdline \
                    and _parent(int(entry.name)) != os.getpid():
                found.append(int(entry.name))
    return found


def test_shims_are_forked_by_one_template_and_outlive_it(engine, monkeypatch):  # noqa: F811
    monkeypatch.setenv("CORRAL_SHIM_TEMPLATE", "1")
    first = run(engine, "sleep", "60")
    second = run(engine, "sleep", "60")
    [template] = [pid for pid in _templates(engine.run)
                  if _parent(_shim_pid(engine, first)) == pid]
    assert _parent(_shim_pid(engine, second)) == template
    assert shims.shim_alive(engine.state_dir(first))

    os.kill(template, signal.SIGKILL)
    deadline = time.monotonic() + 5
    while shims.alive(template) and time.monotonic() < deadline:
        time.sleep(0.01)
    # The containers run on, and stop as ever; a new start makes a new template.
    assert engine.inspect(first)["State"]["Running"] is True
    engine.stop(first, timeout=0)
    assert engine.inspect(first)["State"]["ExitCode"] == 137
    third = run(engine, "sleep", "60")
    assert _parent(_shim_pid(engine, third)) in _templates(engine.run)
