"""System endpoints of the Docker Engine API: ``/_ping`` (GET and HEAD),
``/version`` and ``/info`` (the API reference's "System" section).

The docker CLI 28 starts every command with ``HEAD /_ping`` and reads the
``Api-Version`` header to choose its version; docker-py reads ``ApiVersion``
from ``/version``. Both are answered without the engine, so a client can
always talk to the daemon.
"""

from __future__ import annotations

import os
import platform
import socket
import time

from aiohttp import web

import corral

from .app import API_VERSION, MIN_API_VERSION, backend, route, version_text

_STARTED = time.time()


def add_routes(app: web.Application) -> None:
    route(app, "GET", "/_ping", ping)
    route(app, "HEAD", "/_ping", ping)
    route(app, "GET", "/version", version)
    route(app, "GET", "/info", info)


async def ping(request: web.Request) -> web.Response:
    # dockerd's headers: clients must not cache the answer, and it says
    # which builder to use (1: the classic one; we have no BuildKit).
    headers = {"Cache-Control": "no-cache, no-store, must-revalidate",
               "Pragma": "no-cache", "Builder-Version": "1"}
    if request.method == "HEAD":
        return web.Response(headers={**headers, "Content-Type": "text/plain",
                                     "Content-Length": "0"})
    return web.Response(text="OK", headers=headers)


def _architecture() -> str:
    machine = platform.machine()
    return {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm"}.get(machine, machine)


def version_document() -> dict:
    """The ``/version`` body: ours, whatever the engine adds to it."""
    release = platform.release()
    engine = {"Name": "Engine", "Version": corral.__version__,
              "Details": {"ApiVersion": version_text(API_VERSION),
                          "MinAPIVersion": version_text(MIN_API_VERSION),
                          "Os": "linux", "Arch": _architecture(),
                          "KernelVersion": release,
                          "GoVersion": f"python{platform.python_version()}",
                          "Experimental": "false"}}
    return {
        "Platform": {"Name": "Corral"},
        "Components": [engine],
        "Version": corral.__version__,
        "ApiVersion": version_text(API_VERSION),
        "MinAPIVersion": version_text(MIN_API_VERSION),
        "GitCommit": "",
        "GoVersion": f"python{platform.python_version()}",
        "Os": "linux",
        "Arch": _architecture(),
        "KernelVersion": release,
        "BuildTime": "",
    }


async def version(request: web.Request) -> web.Response:
    document = version_document()
    engine = backend(request).engine
    if engine is not None and hasattr(engine, "version"):
        extra = await backend(request).call(engine.version)
        # The engine knows its components (runtime, shim); the API
        # versions are ours, whatever it says.
        document.update({k: v for k, v in (extra or {}).items()
                         if k not in ("ApiVersion", "MinAPIVersion", "Components")})
    return web.json_response(document)


def _images_count(service) -> int:
    return len(service.store().list())


def info_document(images: int) -> dict:
    """The ``/info`` fields that need no engine."""
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return {
        "ID": "", "Containers": 0, "ContainersRunning": 0, "ContainersPaused": 0,
        "ContainersStopped": 0, "Images": images, "Driver": "overlay",
        "DriverStatus": [], "Plugins": {"Volume": [], "Network": [], "Log": ["json-file"]},
        "MemoryLimit": True, "SwapLimit": False, "CpuCfsPeriod": True,
        "CpuCfsQuota": True, "CPUShares": True, "CPUSet": True, "PidsLimit": True,
        "IPv4Forwarding": False, "Debug": False, "NFd": len(os.listdir("/proc/self/fd")),
        "NGoroutines": 0, "SystemTime": time.strftime("%Y-%m-%dT%H:%M:%SZ",
                                                     time.gmtime()),
        "LoggingDriver": "json-file", "CgroupDriver": "cgroupfs",
        "CgroupVersion": "2" if os.path.exists("/sys/fs/cgroup/cgroup.controllers")
        else "1",
        "KernelVersion": platform.release(), "OperatingSystem": _os_name(),
        "OSType": "linux", "Architecture": platform.machine(), "NCPU": os.cpu_count(),
        "MemTotal": memory, "IndexServerAddress": "https://index.docker.io/v1/",
        "RegistryConfig": {"InsecureRegistryCIDRs": ["127.0.0.0/8"],
                           "IndexConfigs": {}, "Mirrors": []},
        "Name": socket.gethostname(), "Labels": [], "ExperimentalBuild": False,
        "ServerVersion": corral.__version__, "Runtimes": {"corral": {"path":
                                                                     "corral-runtime"}},
        "DefaultRuntime": "corral", "LiveRestoreEnabled": True, "Isolation": "",
        "SecurityOptions": ["name=seccomp,profile=builtin"], "Warnings": [],
    }


def _os_name() -> str:
    try:
        with open("/etc/os-release") as file:
            for line in file:
                if line.startswith("PRETTY_NAME="):
                    return line.split("=", 1)[1].strip().strip('"')
    except OSError:
        pass
    return "Linux"


async def info(request: web.Request) -> web.Response:
    service = backend(request)
    images = await service.call(_images_count, service)
    document = info_document(images)
    if service.engine is not None and hasattr(service.engine, "info"):
        document.update(await service.call(service.engine.info) or {})
        document["Images"] = images
    document["DockerRootDir"] = str(service.root)
    return web.json_response(document)
