"""The real peers, started privately, with corral-runtime plugged in.

containerd and dockerd run here as the Debian packages install them, but on a
socket, root and state directory of their own under one work directory, so a
test neither sees nor touches a daemon of the host. Both run in a network
namespace of their own (dockerd changes the network of the namespace it runs
in; see /work/shared/PEERS.md). Each is stopped by the PID we started, and
whatever it leaves behind (shims, container processes, cgroups, mounts) is
removed and reported.

Images come from Debian's busybox-static only: `write_image_archive` writes
the tarball `docker save` would, which `ctr image import` and `docker load`
both read. Nothing is ever pulled.
"""

from __future__ import annotations

import fcntl
import hashlib
import http.client
import io
import json
import os
import platform
import pty
import select
import signal
import socket
import struct
import subprocess
import sys
import tarfile
import termios
import time
import uuid
from pathlib import Path

CORRAL_RUNTIME = str(Path(sys.executable).parent / "corral-runtime")
IMAGE = "corral.test/busybox:latest"
NAMESPACE = "moby"  # dockerd's containerd namespace

# Directories the peers make on the host whatever their private roots are:
# containerd 1.6's shims put their sockets under /run/containerd/s, and dockerd
# makes /run/docker/plugins. We remove them, if empty, when we made them.
_HOST_DIRS = (Path("/run/containerd/s"), Path("/run/containerd/fifo"),
              Path("/run/containerd"), Path("/run/docker/plugins"), Path("/run/docker"))


def make_workdir(prefix: str) -> Path:
    """A new private directory /tmp/corral-PREFIX-XXXXXXXX.

    Short, as containerd's socket lives under it and a unix socket path has at
    most 107 bytes; its name also names a containerd namespace and a cgroup,
    so letters, digits and dashes only.
    """
    for _ in range(100):
        path = Path("/tmp") / f"corral-{prefix}-{uuid.uuid4().hex[:8]}"
        try:
            path.mkdir(mode=0o700)
        except FileExistsError:
            continue
        return path
    raise FileExistsError(f"no free work directory name for {prefix}")


# -- images -------------------------------------------------------------------


def _architecture() -> str:
    machine = platform.machine()
    return {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm"}.get(machine, machine)


def _layer_tar(rootfs: Path) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for directory, dirnames, filenames in os.walk(rootfs):
            dirnames.sort()
            for name in [*dirnames, *sorted(filenames)]:
                path = Path(directory) / name
                info = tar.gettarinfo(str(path), arcname=str(path.relative_to(rootfs)))
                info.mtime = 0
                info.uname = info.gname = ""
                if info.isfile():
                    with path.open("rb") as file:
                        tar.addfile(info, file)
                else:
                    tar.addfile(info)
    return buffer.getvalue()


def write_image_archive(rootfs: Path, archive: Path, reference: str = IMAGE) -> Path:
    """Write ROOTFS as a one-layer image in `docker save` format to ARCHIVE."""
    layer = _layer_tar(rootfs)
    layer_digest = hashlib.sha256(layer).hexdigest()
    config = json.dumps({
        "architecture": _architecture(),
        "os": "linux",
        "created": "1970-01-01T00:00:00Z",
        "config": {
            "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
            "Cmd": ["/bin/sh"],
            "WorkingDir": "/",
        },
        "rootfs": {"type": "layers", "diff_ids": [f"sha256:{layer_digest}"]},
        "history": [{"created": "1970-01-01T00:00:00Z",
                     "created_by": "corral tests: Debian's busybox-static"}],
    }).encode()
    config_digest = hashlib.sha256(config).hexdigest()
    manifest = json.dumps([{
        "Config": f"{config_digest}.json",
        "RepoTags": [reference],
        "Layers": [f"{layer_digest}/layer.tar"],
    }]).encode()
    with tarfile.open(archive, mode="w") as tar:
        for name, data in ((f"{layer_digest}/layer.tar", layer),
                           (f"{config_digest}.json", config),
                           ("manifest.json", manifest)):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return archive


# -- cleaning up after a daemon ---------------------------------------------


def processes_mentioning(marker: str) -> list[int]:
    """PIDs whose command line names MARKER (our private work directory)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if marker.encode() in cmdline:
            found.append(int(entry.name))
    return found


def _cmdline(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")
    except OSError:
        return [""]


def _kill_and_reap(pids: list[int]) -> None:
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + 5
    while pids and time.monotonic() < deadline:
        pids = [pid for pid in pids if Path(f"/proc/{pid}").exists()
                and _state(pid) != "Z"]
        time.sleep(0.05)


def _shim_socket(cmdline: list[str]) -> str | None:
    """The socket of a containerd 1.6 shim, from its command line."""
    try:
        flags = dict(zip(cmdline[1::2], cmdline[2::2], strict=False))
        key = f"{flags['-address']}/{flags['-namespace']}/{flags['-id']}"
    except (KeyError, ValueError):
        return None
    return f"/run/containerd/s/{hashlib.sha256(key.encode()).hexdigest()}"


def kill_processes(pids: list[int]) -> list[str]:
    """SIGKILL PIDS; remove the sockets of any shims among them, and name them."""
    sockets = [_shim_socket(_cmdline(pid)) for pid in pids
               if "containerd-shim" in _cmdline(pid)[0]]
    _kill_and_reap(pids)
    left = []
    for path in sockets:
        if path and os.path.exists(path):
            os.unlink(path)
            left.append(f"shim socket {path}")
    return left


def _state(pid: int) -> str:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return "gone"
    return stat.rsplit(")", 1)[1].split()[0]


def _cgroup_dirs(name: str) -> list[Path]:
    """Every cgroup directory called NAME directly under a hierarchy's root."""
    roots = [Path("/sys/fs/cgroup")]
    roots += [path for path in Path("/sys/fs/cgroup").iterdir() if path.is_dir()]
    return [root / name for root in roots
            if (root / name).is_dir() and (root / name / "cgroup.procs").exists()]


def remove_cgroups(name: str) -> list[str]:
    """Kill what is left in the cgroups called NAME and remove them."""
    left = []
    for top in _cgroup_dirs(name):
        subtree = sorted((path for path, _, _ in os.walk(top)),
                         key=lambda path: path.count("/"), reverse=True)
        for directory in subtree:
            try:
                pids = [int(pid) for pid in
                        Path(directory, "cgroup.procs").read_text().split()]
            except OSError:
                pids = []
            if pids:
                left.append(f"processes {pids} in cgroup {directory}")
                _kill_and_reap(pids)
            if directory != str(top):
                left.append(f"cgroup {directory}")
            try:
                os.rmdir(directory)
            except OSError as exc:
                left.append(f"cgroup {directory} not removed: {exc.strerror}")
    return left


def _mount_points_under(path: Path) -> list[str]:
    points = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        point = line.split()[4]
        for escape in ("\\040", "\\011", "\\012", "\\134"):
            point = point.replace(escape, chr(int(escape[1:], 8)))
        if point == str(path) or point.startswith(f"{path}/"):
            points.append(point)
    return points


def unmount_under(path: Path) -> list[str]:
    """Detach every mount at or under PATH, deepest first."""
    left = []
    for _ in range(10):
        points = _mount_points_under(path)
        if not points:
            break
        for point in sorted(points, key=len, reverse=True):
            left.append(f"mount {point}")
            subprocess.run(["umount", "-l", point], capture_output=True)
    return left


def remove_tree(path: Path) -> None:
    subprocess.run(["rm", "-rf", "--one-file-system", str(path)], check=False)


class Daemon:
    """A daemon we start and stop by its PID, with its private work directory."""

    name = "daemon"
    # The cgroup (a name under each hierarchy's root) its containers go in.
    cgroup: str | None = None

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.log_path = workdir / f"{self.name}.log"
        self.process: subprocess.Popen | None = None
        self._made_host_dirs = [path for path in _HOST_DIRS if not path.exists()]

    def _spawn(self, argv: list[str], ready, timeout: float = 30) -> None:
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log,
                                            stderr=subprocess.STDOUT,
                                            start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited {self.process.returncode} at "
                                   f"start:\n{self.log_tail()}")
            if ready():
                return
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"{self.name} not ready after {timeout}s:\n{self.log_tail()}")

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self, timeout: float = 30) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def cleanup(self) -> list[str]:
        """Stop the daemon, remove all it left behind and say what that was."""
        self.stop()
        left = self.remove_leftovers()
        remove_tree(self.workdir)
        self.remove_host_dirs()
        return left

    def remove_leftovers(self) -> list[str]:
        """What outlived the daemon: processes naming our work directory
        (shims), processes and cgroups under our cgroup, and mounts."""
        left = []
        strays = processes_mentioning(str(self.workdir))
        if strays:
            left.append(f"processes {strays} naming {self.workdir}")
            left += kill_processes(strays)
        if self.cgroup is not None:
            left += remove_cgroups(self.cgroup)
        return left + unmount_under(self.workdir)

    def remove_host_dirs(self) -> None:
        for path in self._made_host_dirs:
            try:
                path.rmdir()
            except OSError:
                pass


# -- containerd ---------------------------------------------------------------


class Containerd(Daemon):
    """containerd on a private socket, root and state, in its own network ns.

    ``ctr`` sends the runc shim its runtime options (BinaryName, Root) with
    each container, as dockerd does: containerd 1.6 reads a runtime's options
    from config.toml only for CRI (``plugins."io.containerd.grpc.v1.cri"``),
    which these tests do not use; `runtime_flags` gives them.
    """

    name = "containerd"

    def __init__(self, workdir: Path, runtime_binary: str = CORRAL_RUNTIME,
                 namespace: str | None = None) -> None:
        super().__init__(workdir)
        self.runtime_binary = runtime_binary
        self.address = workdir / "containerd.sock"
        self.runtime_root = workdir / "runtime-root"
        self.fifo_dir = workdir / "fifo"
        # The namespace names the container cgroups (/NAMESPACE/ID), so it
        # is unique to this daemon: cleanup finds them by it.
        self.namespace = namespace or workdir.name

    def config_toml(self) -> str:
        workdir = self.workdir
        return "\n".join([
            "version = 2",
            f'root = "{workdir}/root"',
            f'state = "{workdir}/state"',
            # CRI would want the host's CNI and a sandbox image; not used here.
            'disabled_plugins = ["io.containerd.grpc.v1.cri"]',
            "[grpc]",
            f'  address = "{self.address}"',
            "[ttrpc]",
            '  address = ""',
            "[debug]",
            '  address = ""',
            "[metrics]",
            '  address = ""',
            "[plugins]",
            '  [plugins."io.containerd.internal.v1.opt"]',
            f'    path = "{workdir}/opt"',
            "",
        ])

    def start(self) -> Containerd:
        for directory in ("root", "state", "runtime-root", "fifo"):
            (self.workdir / directory).mkdir(parents=True, exist_ok=True)
        config = self.workdir / "config.toml"
        config.write_text(self.config_toml())
        self._spawn(["unshare", "--net", "sh", "-c",
                     'ip link set lo up && exec containerd --config "$0"', str(config)],
                    ready=self._ready)
        return self

    def _ready(self) -> bool:
        return self.address.exists() and self.ctr("version", timeout=5).returncode == 0

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def ctr_cmd(self, *args: str) -> list[str]:
        return ["ctr", "--address", str(self.address), "--namespace", self.namespace,
                *args]

    def ctr(self, *args: str, timeout: float = 30, input: str | None = None,
            **kwargs) -> subprocess.CompletedProcess:
        return subprocess.run(self.ctr_cmd(*args), capture_output=True, text=True,
                              timeout=timeout, input=input, **kwargs)

    def runtime_flags(self) -> list[str]:
        """The `ctr run` flags that make the shim call our runtime binary."""
        return ["--runc-binary", self.runtime_binary, "--runc-root", str(self.runtime_root),
                "--fifo-dir", str(self.fifo_dir)]

    def bundle(self, container_id: str, namespace: str | None = None) -> Path:
        """The bundle the shim made for CONTAINER_ID (config.json, options.json)."""
        return (self.workdir / "state" / "io.containerd.runtime.v2.task"
                / (namespace or self.namespace) / container_id)

    def kill_shim(self, container_id: str, namespace: str | None = None) -> list[str]:
        """Kill a shim of CONTAINER_ID that outlived its container (by its PID)."""
        flags = ["-namespace", namespace or self.namespace, "-id", container_id]
        return kill_processes([pid for pid in processes_mentioning(str(self.address))
                               if _cmdline(pid)[1:5] == flags])

    def import_image(self, archive: Path) -> None:
        result = self.ctr("image", "import", str(archive), timeout=60)
        if result.returncode != 0:
            raise RuntimeError(f"ctr image import: {result.stderr}")

    @property
    def cgroup(self) -> str:
        return self.namespace



# -- dockerd ------------------------------------------------------------------


class Dockerd(Daemon):
    """dockerd on a private socket and roots, over a private containerd.

    It shares the network namespace of its containerd (so a container with
    the host network stays in our namespace) and never touches the host's
    network: no bridge, no iptables, no IP forwarding.
    """

    name = "dockerd"

    def __init__(self, workdir: Path, runtimes: dict[str, str]) -> None:
        super().__init__(workdir)
        self.runtimes = runtimes
        self.socket = workdir / "docker.sock"
        self.data_root = workdir / "data"
        self.exec_root = workdir / "exec"
        self.client_config = workdir / "client"
        self.cgroup_parent = workdir.name
        self.containerd = Containerd(workdir / "ctd")

    def start(self) -> Dockerd:
        for directory in (self.data_root, self.exec_root, self.client_config,
                          self.containerd.workdir):
            directory.mkdir(parents=True, exist_ok=True)
        self.containerd.start()
        config_file = self.workdir / "daemon.json"
        # Else dockerd writes its identity to /etc/docker/key.json.
        config_file.write_text(json.dumps(
            {"deprecated-key-path": str(self.workdir / "key.json")}))
        argv = ["nsenter", f"--net=/proc/{self.containerd.pid}/ns/net", "dockerd",
                "--config-file", str(config_file),
                "--host", f"unix://{self.socket}",
                "--containerd", str(self.containerd.address),
                "--data-root", str(self.data_root),
                "--exec-root", str(self.exec_root),
                "--pidfile", str(self.workdir / "docker.pid"),
                "--cgroup-parent", f"/{self.cgroup_parent}",
                "--bridge", "none", "--iptables=false", "--ip6tables=false",
                "--ip-forward=false", "--ip-masq=false", "--userland-proxy=false",
                "--storage-driver", "overlay2"]
        for name, path in self.runtimes.items():
            argv += ["--add-runtime", f"{name}={path}"]
        self._spawn(argv, ready=self._ready)
        return self

    def _ready(self) -> bool:
        if not self.socket.exists():
            return False
        try:
            with socket.socket(socket.AF_UNIX) as conn:
                conn.settimeout(2)
                conn.connect(str(self.socket))
                conn.sendall(b"GET /_ping HTTP/1.0\r\n\r\n")
                return conn.recv(64).startswith(b"HTTP/1.0 200")
        except OSError:
            return False

    def env(self) -> dict[str, str]:
        return {**os.environ, "DOCKER_HOST": f"unix://{self.socket}",
                "DOCKER_CONFIG": str(self.client_config)}

    def docker_cmd(self, *args: str) -> list[str]:
        return ["docker", "--host", f"unix://{self.socket}", *args]

    def docker(self, *args: str, timeout: float = 60, input: str | None = None,
               **kwargs) -> subprocess.CompletedProcess:
        return subprocess.run(self.docker_cmd(*args), capture_output=True, text=True,
                              timeout=timeout, input=input, env=self.env(), **kwargs)

    def shim_options(self, container_id: str) -> dict:
        """The runtime options dockerd gave the shim of CONTAINER_ID, as the shim
        recorded them: ``binary_name`` and ``root``."""
        path = self.containerd.bundle(container_id, NAMESPACE) / "options.json"
        return json.loads(path.read_text())

    def runtime_root(self) -> Path:
        """Where dockerd has every runtime keep its state (the shims' Root).

        dockerd 20.10 gives all runtimes the Root of its default one,
        EXEC_ROOT/runtime-runc; the shim adds the containerd namespace.
        """
        return self.exec_root / "runtime-runc" / NAMESPACE

    def load_image(self, archive: Path) -> None:
        result = self.docker("load", "--input", str(archive))
        if result.returncode != 0:
            raise RuntimeError(f"docker load: {result.stderr}")

    def stop(self, timeout: float = 30) -> None:
        super().stop(timeout)
        self.containerd.stop()

    @property
    def cgroup(self) -> str:
        return self.cgroup_parent

    def remove_leftovers(self) -> list[str]:
        return super().remove_leftovers() + self.containerd.remove_leftovers()

    def remove_host_dirs(self) -> None:
        super().remove_host_dirs()
        self.containerd.remove_host_dirs()


# -- a terminal for the clients -------------------------------------------------


def run_in_pty(argv: list[str], *, env: dict[str, str] | None = None,
               timeout: float = 30, rows: int = 24,
               columns: int = 80) -> tuple[int, str]:
    """Run ARGV with a new pty as its stdio; its exit status and output.

    docker and ctr look at their stdio to decide on a terminal, so `-t` needs
    a real one. The pty has ROWS x COLUMNS, which the client passes on.
    """
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, columns, 0, 0))
    try:
        process = subprocess.Popen(argv, stdin=slave, stdout=slave, stderr=slave,
                                   env=env, start_new_session=True)
    finally:
        os.close(slave)
    output = bytearray()
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.1)
            if ready:
                try:
                    chunk = os.read(master, 4096)
                except OSError:  # EIO: every copy of the slave is closed
                    break
                if not chunk:
                    break
                output += chunk
            elif process.poll() is not None:
                break
        else:
            process.kill()
            raise AssertionError(f"{argv} still running after {timeout}s: {output!r}")
        return process.wait(timeout), output.decode(errors="replace")
    finally:
        os.close(master)


# -- corrald ------------------------------------------------------------------


class UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float = 30) -> None:
        super().__init__("localhost", timeout=timeout)
        self.path = path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.settimeout(self.timeout)
        self.sock.connect(self.path)


class Corrald:
    """corrald on a socket and root of its own, stopped by its PID."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.socket = workdir / "corral.sock"
        self.root = workdir / "root"
        # Short: the engine's shim sockets are <run>/shims/<64-hex id>/shim.sock
        # and a unix socket path has at most 107 bytes.
        self.run_dir = Path(f"/tmp/cr-{workdir.name[-8:]}")
        self.client_config = workdir / "client"
        self.client_config.mkdir(exist_ok=True)
        self.log_path = workdir / "corrald.log"
        self.process: subprocess.Popen | None = None

    def start(self) -> Corrald:
        from tests.integration.engines import set_default_bridge

        self.bridge = set_default_bridge(self.root, self.run_dir)
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "corral.manager.daemon", "-H", f"unix://{self.socket}",
                 "--root", str(self.root), "--exec-root", str(self.run_dir)],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            assert self.process.poll() is None, self.log_tail()
            if self.socket.exists() and self.request("GET", "/_ping")[0] == 200:
                return self
            time.sleep(0.05)
        raise AssertionError(f"corrald not ready:\n{self.log_tail()}")

    def log_tail(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]

    def request(self, method: str, path: str, body: bytes | None = None,
                headers: dict | None = None) -> tuple[int, bytes, dict]:
        connection = UnixHTTPConnection(str(self.socket))
        try:
            connection.request(method, path, body=body, headers=headers or {})
            response = connection.getresponse()
            return response.status, response.read(), dict(response.getheaders())
        except OSError:
            return 0, b"", {}
        finally:
            connection.close()

    def env(self) -> dict[str, str]:
        return {**os.environ, "DOCKER_HOST": f"unix://{self.socket}",
                "DOCKER_CONFIG": str(self.client_config)}

    def docker(self, *args: str, timeout: float = 120, input: bytes | None = None,
               ) -> subprocess.CompletedProcess:
        result = subprocess.run(["docker", *args], capture_output=True, env=self.env(),
                                timeout=timeout, input=input)
        result.stdout = result.stdout.decode(errors="replace")
        result.stderr = result.stderr.decode(errors="replace")
        return result

    def ok(self, *args: str, **kwargs) -> str:
        result = self.docker(*args, **kwargs)
        assert result.returncode == 0, (f"docker {' '.join(args)} exited "
                                        f"{result.returncode}: {result.stderr}")
        return result.stdout

    def stop(self) -> int | None:
        if self.process is None or self.process.poll() is not None:
            return self.process.returncode if self.process else None
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            raise AssertionError(f"corrald ignored SIGTERM:\n{self.log_tail()}") from None

    def cleanup(self) -> None:
        from tests.integration.engines import drop_networks

        self.stop()
        kill_processes(processes_mentioning(str(self.run_dir)))
        drop_networks(self.root, self.run_dir)
        for directory in (self.workdir, self.run_dir):
            kill_processes(processes_mentioning(str(directory)))
            unmount_under(directory)
            remove_tree(directory)
