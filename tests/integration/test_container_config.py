"""config.json fields, observed from inside the container, under corral and runc."""

from __future__ import annotations

import json
import os
import subprocess

import pytest


def run_output(runtime, bundle, container_id) -> str:
    bundle.write()
    result = runtime.run("run", "-b", str(bundle.path), container_id)
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_user_groups_and_umask(any_runtime, bundle_factory, container_id):
    bundle = bundle_factory(["sh", "-c", "id -u; id -g; id -G; umask; echo $HOME"])
    bundle.spec["process"]["user"] = {"uid": 1000, "gid": 1000,
                                      "additionalGids": [5, 1000], "umask": 0o077}
    lines = run_output(any_runtime, bundle, container_id).split("\n")
    assert lines[0] == "1000"
    assert lines[1] == "1000"
    assert sorted(lines[2].split()) == ["1000", "5"]
    assert lines[3] == "0077"
    assert lines[4] == "/home/user"


def test_env_and_cwd(any_runtime, bundle_factory, container_id):
    bundle = bundle_factory(["sh", "-c", "pwd; echo $FOO"])
    bundle.spec["process"]["env"] += ["FOO=bar baz"]
    bundle.spec["process"]["cwd"] = "/tmp/new/dir"
    assert run_output(any_runtime, bundle, container_id).split("\n")[:2] == [
        "/tmp/new/dir", "bar baz"]


def test_rlimits(any_runtime, bundle_factory, container_id):
    bundle = bundle_factory(["sh", "-c", "ulimit -n; ulimit -Hn; ulimit -c"])
    bundle.spec["process"]["rlimits"] = [
        {"type": "RLIMIT_NOFILE", "soft": 512, "hard": 777},
        {"type": "RLIMIT_CORE", "soft": 0, "hard": 0},
    ]
    assert run_output(any_runtime, bundle, container_id).split() == ["512", "777", "0"]


def test_capabilities_in_proc_status(any_runtime, bundle_factory, container_id):
    bundle = bundle_factory(["grep", "^Cap", "/proc/self/status"])
    caps = ["CAP_CHOWN", "CAP_KILL", "CAP_NET_BIND_SERVICE"]
    bundle.spec["process"]["capabilities"] = {
        "bounding": caps + ["CAP_SETUID"], "effective": caps, "permitted": caps,
        "inheritable": caps, "ambient": ["CAP_KILL"],
    }
    status = dict(line.split(":\t") for line in
                  run_output(any_runtime, bundle, container_id).splitlines())
    assert int(status["CapBnd"], 16) == (1 << 0) | (1 << 5) | (1 << 10) | (1 << 7)
    assert int(status["CapEff"], 16) == (1 << 0) | (1 << 5) | (1 << 10)
    assert int(status["CapPrm"], 16) == (1 << 0) | (1 << 5) | (1 << 10)
    assert int(status["CapInh"], 16) == (1 << 0) | (1 << 5) | (1 << 10)
    assert int(status["CapAmb"], 16) == 1 << 5


def test_non_root_user_keeps_ambient_capabilities(any_runtime, bundle_factory,
                                                  container_id):
    bundle = bundle_factory(["grep", "^CapEff", "/proc/self/status"])
    caps = ["CAP_NET_BIND_SERVICE"]
    bundle.spec["process"]["user"] = {"uid": 1000, "gid": 1000}
    bundle.spec["process"]["capabilities"] = {
        "bounding": caps, "effective": caps, "permitted": caps, "inheritable": caps,
        "ambient": caps,
    }
    line = run_output(any_runtime, bundle, container_id).strip()
    assert int(line.split("\t")[1], 16) == 1 << 10


def test_no_new_privileges(any_runtime, bundle_factory, container_id):
    bundle = bundle_factory(["grep", "NoNewPrivs", "/proc/self/status"])
    bundle.spec["process"]["noNewPrivileges"] = True
    assert run_output(any_runtime, bundle, container_id).split() == ["NoNewPrivs:", "1"]


def test_mounts_with_options(any_runtime, bundle_factory, container_id, tmp_path):
    shared = tmp_path / "shared"
    shared.mkdir()
    (shared / "file").write_text("from the host\n")
    bundle = bundle_factory(["sh", "-c",
                             "cat /data/file; touch /data/new 2>/dev/null && echo writable;"
                             " grep ' /scratch ' /proc/self/mounts; echo x > /rw/out"])
    bundle.spec["mounts"] += [
        {"destination": "/data", "type": "bind", "source": str(shared),
         "options": ["rbind", "ro", "nosuid"]},
        {"destination": "/scratch", "type": "tmpfs", "source": "tmpfs",
         "options": ["noexec", "size=1m", "mode=700"]},
        {"destination": "/rw", "type": "bind", "source": str(shared), "options": ["bind"]},
    ]
    out = run_output(any_runtime, bundle, container_id)
    assert "from the host" in out
    assert "writable" not in out
    assert "noexec" in out and "size=1024k" in out
    assert (shared / "out").read_text() == "x\n"


def test_readonly_root(any_runtime, bundle_factory, container_id):
    bundle = bundle_factory(["sh", "-c", "touch /x 2>&1; echo rc=$?; touch /tmp/y 2>&1; echo rc=$?"])
    bundle.spec["root"]["readonly"] = True
    out = run_output(any_runtime, bundle, container_id)
    assert out.count("rc=1") == 2 and "Read-only file system" in out


def test_masked_and_readonly_paths(any_runtime, bundle_factory, container_id):
    bundle = bundle_factory(["sh", "-c",
                             "cat /proc/kcore | wc -c; ls /sys/firmware | wc -l;"
                             " cat /proc/keys | wc -c;"
                             " echo 1 > /proc/sysrq-trigger 2>/dev/null || echo denied;"
                             " echo 1 > /proc/sys/kernel/ns_last_pid 2>/dev/null || echo denied"])
    out = run_output(any_runtime, bundle, container_id).split()
    assert out == ["0", "0", "0", "denied", "denied"]


def test_default_devices_and_symlinks(any_runtime, bundle_factory, container_id):
    bundle = bundle_factory(["sh", "-c",
                             "ls /dev; readlink /dev/fd; readlink /dev/stdin; readlink /dev/ptmx;"
                             " echo hi > /dev/null && head -c 4 /dev/zero | wc -c"])
    bundle.spec["linux"]["devices"] = [
        {"path": "/dev/fuse", "type": "c", "major": 10, "minor": 229, "fileMode": 0o600}]
    bundle.spec["linux"]["resources"]["devices"].append(
        {"allow": True, "type": "c", "major": 10, "minor": 229, "access": "rwm"})
    out = run_output(any_runtime, bundle, container_id)
    for name in ("null", "zero", "full", "random", "urandom", "tty", "fuse", "pts", "shm"):
        assert name in out.split()
    assert "/proc/self/fd" in out and "/proc/self/fd/0" in out and "pts/ptmx" in out
    assert out.strip().endswith("4")


def test_sysctl_and_domainname(corral, bundle_factory, container_id):
    # runc 1.1 does not set domainname; this one is corral's alone.
    any_runtime = corral
    bundle = bundle_factory(["sh", "-c",
                             "cat /proc/sys/net/ipv4/ip_forward; cat /proc/sys/kernel/domainname"])
    bundle.spec["linux"]["sysctl"] = {"net.ipv4.ip_forward": "1"}
    bundle.spec["domainname"] = "example.org"
    assert run_output(any_runtime, bundle, container_id).split() == ["1", "example.org"]


def test_joins_a_network_namespace_by_path(any_runtime, bundle_factory, container_id):
    name = f"corral-test-{container_id}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        subprocess.run(["ip", "netns", "exec", name, "ip", "link", "add", "dummy7",
                        "type", "veth", "peer", "name", "dummy8"], check=True)
        bundle = bundle_factory(["cat", "/proc/net/dev"])
        for ns in bundle.spec["linux"]["namespaces"]:
            if ns["type"] == "network":
                ns["path"] = f"/run/netns/{name}"
        assert "dummy7" in run_output(any_runtime, bundle, container_id)
    finally:
        subprocess.run(["ip", "netns", "delete", name], check=True)


def test_no_pivot(any_runtime, bundle_factory, container_id):
    bundle = bundle_factory(["sh", "-c", "ls /"])
    bundle.write()
    result = any_runtime.run("run", "--no-pivot", "-b", str(bundle.path), container_id)
    assert result.returncode == 0, result.stderr
    assert "bin" in result.stdout.split()


def test_hooks_run_in_order_with_state(any_runtime, bundle_factory, container_id,
                                       tmp_path):
    log = tmp_path / "hooks.log"
    bundle = bundle_factory(["sh", "-c", "echo process >> /hooks.log"])
    script = ("read -r state; echo \"$0 $state\" >> " + str(log))
    hooks = {}
    for kind in ("prestart", "createRuntime", "createContainer", "startContainer",
                 "poststart", "poststop"):
        hooks[kind] = [{"path": "/bin/sh", "args": ["sh", "-c", script, kind]}]
    # startContainer runs in the container: its /bin/sh and log are the rootfs's.
    hooks["startContainer"] = [{"path": "/bin/sh", "args": [
        "sh", "-c", "read -r state; echo \"startContainer $state\" >> /hooks.log"]}]
    bundle.spec["hooks"] = hooks
    run_output(any_runtime, bundle, container_id)
    host = [line.split(" ", 1) for line in log.read_text().splitlines()]
    kinds = [kind for kind, _ in host]
    assert kinds == ["prestart", "createRuntime", "createContainer", "poststart",
                     "poststop"]
    states = {kind: json.loads(state) for kind, state in host}
    assert all(s["id"] == container_id for s in states.values())
    assert states["poststop"]["status"] == "stopped"
    assert states["createRuntime"]["pid"] > 0
    inside = (bundle.rootfs / "hooks.log").read_text().splitlines()
    assert inside[0].startswith("startContainer ")
    assert inside[1] == "process"


def create_with_console_socket(runtime, bundle, container_id, tmp_path, stdout):
    """Start `create --console-socket`; return the process and the accepted connection."""
    import socket

    path = str(tmp_path / "console.sock")
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(path)
    server.listen(1)
    creator = subprocess.Popen(runtime.cmd("create", "-b", str(bundle.path),
                                           "--console-socket", path, container_id),
                               stdout=stdout, stderr=subprocess.PIPE)
    connection, _ = server.accept()
    server.close()
    return creator, connection


def test_terminal_over_console_socket(any_runtime, bundle_factory, container_id,
                                      tmp_path):
    """The pty master arrives over the console socket, as containerd receives it."""
    import array
    import socket

    bundle = bundle_factory(["sh", "-c", "tty; stty size"], terminal=True)
    bundle.spec["process"]["consoleSize"] = {"height": 33, "width": 101}
    bundle.write()
    creator, connection = create_with_console_socket(any_runtime, bundle, container_id,
                                                     tmp_path, subprocess.DEVNULL)
    fds = array.array("i")
    _, ancillary, _, _ = connection.recvmsg(1024, socket.CMSG_SPACE(fds.itemsize))
    fds.frombytes(ancillary[0][2])
    master = fds[0]
    assert creator.wait(timeout=20) == 0, creator.stderr.read()
    any_runtime.run("start", container_id, check=True)
    output = b""
    while True:
        try:
            chunk = os.read(master, 1024)
        except OSError:
            break
        if not chunk:
            break
        output += chunk
    os.close(master)
    lines = output.decode().split()
    assert lines[0].startswith("/dev/pts/") or lines[0] == "/dev/console"
    assert lines[1:3] == ["33", "101"]


@pytest.mark.parametrize("preserve", [1, 2])
def test_preserve_fds(any_runtime, bundle_factory, container_id, preserve):
    bundle = bundle_factory(["sh", "-c", "ls /proc/self/fd | sort -n | tr '\\n' ' '"])
    bundle.write()
    read_end, write_end = os.pipe()
    extra = os.open("/dev/null", os.O_RDONLY)
    keep = [read_end, write_end, extra][:preserve]
    try:
        # Put the preserved fds at 3.. in the runtime's process, as callers do.
        result = any_runtime.run("run", "--preserve-fds", str(preserve), "-b",
                                 str(bundle.path), container_id,
                                 pass_fds=[*keep, *range(3, 3 + preserve)],
                                 preexec_fn=lambda: _move_fds(keep))
    finally:
        for fd in (read_end, write_end, extra):
            os.close(fd)
    assert result.returncode == 0, result.stderr
    fds = [int(fd) for fd in result.stdout.split()]
    assert fds[: 3 + preserve] == list(range(3 + preserve))
    assert all(fd <= 3 + preserve for fd in fds)  # the extra one is ls's own


def _move_fds(fds):
    for target, fd in enumerate(fds, start=3):
        os.dup2(fd, target + 100)
    for target in range(3, 3 + len(fds)):
        os.dup2(target + 100, target)
        os.close(target + 100)


def test_cgroup_namespace_and_placement(any_runtime, bundle_factory, container_id):
    bundle = bundle_factory(["sh", "-c", "cat /proc/self/cgroup; sleep 30"])
    bundle.spec["linux"]["cgroupsPath"] = f"/corral-test/{container_id}"
    bundle.write()
    any_runtime.run("create", "-b", str(bundle.path), container_id, check=True)
    pid = any_runtime.state(container_id)["pid"]
    with open(f"/proc/{pid}/cgroup") as f:
        host_view = f.read()
    assert f"memory:/corral-test/{container_id}" in host_view
    assert f"pids:/corral-test/{container_id}" in host_view
    any_runtime.run("delete", "--force", container_id, check=True)
    assert not os.path.exists(f"/sys/fs/cgroup/memory/corral-test/{container_id}")


def test_cgroup_namespace_root_is_the_container(any_runtime, bundle_factory,
                                                container_id):
    bundle = bundle_factory(["cat", "/proc/self/cgroup"])
    for line in run_output(any_runtime, bundle, container_id).splitlines():
        if ":memory:" in line or ":pids:" in line:
            assert line.endswith(":/"), line


def test_readonly_cgroup_mount_without_cgroup_namespace(any_runtime, bundle_factory,
                                                        container_id):
    """What dockerd asks for on a v1 host (a regression test: it failed with EINVAL)."""
    bundle = bundle_factory(["sh", "-c", "ls /sys/fs/cgroup; touch /sys/fs/cgroup/pids/x"])
    bundle.spec["linux"]["namespaces"] = [
        ns for ns in bundle.spec["linux"]["namespaces"] if ns["type"] != "cgroup"]
    bundle.write()
    result = any_runtime.run("run", "-b", str(bundle.path), container_id)
    assert "pids" in result.stdout.split()
    assert "Read-only file system" in result.stderr


def test_create_with_a_terminal_lets_go_of_the_callers_stdio(any_runtime, bundle_factory,
                                                             container_id, tmp_path):
    """containerd's shim reads create's output to its end (a regression test)."""
    bundle = bundle_factory(["sh", "-c", "sleep 30"], terminal=True)
    creator, connection = create_with_console_socket(any_runtime, bundle, container_id,
                                                     tmp_path, subprocess.PIPE)
    out, err = creator.communicate(timeout=10)
    assert creator.returncode == 0, err
    connection.close()


def test_run_relays_a_terminal_without_console_socket(any_runtime, bundle_factory,
                                                      container_id):
    """run with process.terminal and no --console-socket relays the pty itself."""
    import fcntl
    import pty
    import select
    import struct
    import termios
    import time

    bundle = bundle_factory(["sh", "-c", "tty; stty size; echo typed:; read x; echo got=$x"],
                            terminal=True)
    pid, fd = pty.fork()
    if pid == 0:
        os.execvp(any_runtime.binary[0], [*any_runtime.cmd("run", "-b", str(bundle.path),
                                                          container_id)])
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", 30, 90, 0, 0))
    output, sent = b"", False
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if select.select([fd], [], [], 0.2)[0]:
            try:
                data = os.read(fd, 1024)
            except OSError:
                break
            if not data:
                break
            output += data
            if b"typed:" in output and not sent:
                os.write(fd, b"hello\r")
                sent = True
    _, status = os.waitpid(pid, 0)
    text = output.decode(errors="replace")
    assert os.WEXITSTATUS(status) == 0, text
    assert "/dev/pts/" in text
    assert "got=hello" in text
    if any_runtime.name == "corral":
        # runc 1.1's relay sometimes sizes the pty after stty ran (flaky there).
        assert "30 90" in text
