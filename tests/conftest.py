"""Shared fixtures: runtimes to drive, and busybox bundles to run.

Integration tests run real containers and need root; without it they skip,
and say so.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

import pytest

from .bundles import Bundle, build_rootfs, make_bundle

ROOT = Path(__file__).resolve().parent.parent
CORRAL_RUNTIME = str(Path(sys.executable).parent / "corral-runtime")


def pytest_collection_modifyitems(config, items):
    if os.geteuid() == 0:
        return
    skip = pytest.mark.skip(reason="integration tests run containers and need root")
    for item in items:
        if "integration" in item.nodeid:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def rootfs_template(tmp_path_factory) -> Path:
    return build_rootfs(tmp_path_factory.mktemp("rootfs") / "rootfs")


class Runtime:
    """One OCI runtime binary with a private state root."""

    def __init__(self, name: str, binary: list[str], root: Path) -> None:
        self.name = name
        self.binary = binary
        self.root = root

    def cmd(self, *args: str) -> list[str]:
        return [*self.binary, "--root", str(self.root), *args]

    def run(self, *args: str, check: bool = False, timeout: float = 30,
            input: str | None = None, cwd: str | None = None,
            **kwargs) -> subprocess.CompletedProcess:
        # Files, not pipes: a created container's init keeps the runtime's
        # stdio open, so reading a pipe to its end would wait for the container.
        with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
            completed = subprocess.run(self.cmd(*args), stdout=out, stderr=err,
                                       text=True, timeout=timeout, input=input, cwd=cwd,
                                       **kwargs)
            out.seek(0)
            err.seek(0)
            result = subprocess.CompletedProcess(completed.args, completed.returncode,
                                                 out.read(), err.read())
        if check and result.returncode != 0:
            raise AssertionError(
                f"{self.name} {' '.join(args)} exited {result.returncode}: {result.stderr}"
            )
        return result

    def state(self, container_id: str) -> dict:
        return json.loads(self.run("state", container_id, check=True).stdout)

    def ids(self) -> list[str]:
        result = self.run("list", "--format", "json", check=True)
        return [entry["id"] for entry in json.loads(result.stdout or "[]") or []]

    def cleanup(self) -> None:
        for container_id in self.ids():
            self.run("delete", "--force", container_id)


def _runtime(name: str, tmp_path: Path) -> Runtime:
    root = tmp_path / f"state-{name}"
    if name == "corral":
        return Runtime(name, [CORRAL_RUNTIME], root)
    if shutil.which(name) is None:
        pytest.skip(f"{name} is not installed (apt-get install {name})")
    return Runtime(name, [name], root)


@pytest.fixture
def corral(tmp_path):
    runtime = _runtime("corral", tmp_path)
    yield runtime
    runtime.cleanup()


@pytest.fixture(params=["corral", "runc"])
def any_runtime(request, tmp_path):
    """The same test under corral-runtime and under runc."""
    runtime = _runtime(request.param, tmp_path)
    yield runtime
    runtime.cleanup()


@pytest.fixture
def bundle_factory(tmp_path, rootfs_template):
    def factory(args: list[str], *, terminal: bool = False, name: str | None = None) -> Bundle:
        return make_bundle(tmp_path / (name or f"bundle-{uuid.uuid4().hex[:8]}"),
                           rootfs_template, args, terminal=terminal)

    return factory


@pytest.fixture
def container_id() -> str:
    return f"t-{uuid.uuid4().hex[:12]}"


# Fixtures of the image layer's tests: a real registry, test images.
from .image_fixtures import *  # noqa: E402,F401,F403
