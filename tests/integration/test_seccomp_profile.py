"""The default seccomp profile in real containers, under corral-runtime and runc.

Busybox shows that a shell and its tools work as usual. For the refusals we
need each system call and its errno exactly, which busybox cannot give, so a
probe runs in the container: the host's Python, bind-mounted read-only, makes
one call per child process and prints the errno names. Where the kernel would
refuse a call by itself (mount without CAP_SYS_ADMIN) EPERM proves little, so
the calls that prove the profile at work are those the kernel allows any
process on itself (ptrace, process_vm_readv, add_key, personality ...); the
same probe in a container without the profile shows they are allowed there.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import json
import os
from pathlib import Path

import pytest

from corral.oci.seccomp_profile import default_profile

HOST_PYTHON = "/usr/bin/python3"

# The probe's calls, by name: the system call and its arguments. A str
# argument is a path or name, "BUF" a pointer to 64 writable bytes, "IOV" a
# one-element iovec over such a buffer, "SELF" the child's pid.
CALLS = {
    "unshare(NEWUSER)": ("unshare", 0x10000000),
    "unshare(NEWNS)": ("unshare", 0x00020000),
    "clone(NEWUSER)": ("clone", 0x10000000 | 17),  # | SIGCHLD
    "clone(plain)": ("clone", 17),
    "clone3(NULL)": ("clone3", 0, 0),
    "setns": ("setns", -1, 0),
    "mount(tmpfs)": ("mount", "none", "/tmp", "tmpfs", 0, 0),
    "personality(query)": ("personality", 0xFFFFFFFF),
    "personality(LINUX32)": ("personality", 0x0008),
    "personality(READ_IMPLIES_EXEC)": ("personality", 0x0400000),
    "personality(ADDR_NO_RANDOMIZE)": ("personality", 0x0040000),
    "ptrace(PEEKDATA self)": ("ptrace", 2, "SELF", 0, 0),
    "process_vm_readv(self)": ("process_vm_readv", "SELF", "IOV", 1, "IOV", 1, 0),
    "kcmp(self)": ("kcmp", "SELF", "SELF", 0, 0, 0),  # KCMP_FILE, fd 0 with itself
    "keyctl(session id)": ("keyctl", 0, -3, 0),  # GET_KEYRING_ID of the session
    "add_key": ("add_key", "user", "corral-probe", "BUF", 1, -2),
    "request_key": ("request_key", "user", "corral-probe", 0, 0),
    "bpf": ("bpf", 0, 0, 0),
    "io_uring_setup": ("io_uring_setup", 1, 0),
    "clock_settime(NULL)": ("clock_settime", 0, 0),
    "socket(AF_VSOCK)": ("socket", 40, 1, 0),
    "socket(AF_UNIX)": ("socket", 1, 1, 0),
    "chroot(/)": ("chroot", "/"),
}

PROBE = r"""
import ctypes, errno, json, os, sys

libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
calls, numbers = json.loads(sys.argv[1]), json.loads(sys.argv[2])
buffer = ctypes.create_string_buffer(64)

class Iovec(ctypes.Structure):
    _fields_ = [("base", ctypes.c_void_p), ("length", ctypes.c_size_t)]

def argument(value):
    if value == "SELF":
        return ctypes.c_long(os.getpid())
    if value == "BUF":
        return buffer
    if value == "IOV":
        return ctypes.byref(Iovec(ctypes.addressof(buffer), 8))
    if isinstance(value, str):
        return ctypes.c_char_p(value.encode())
    return ctypes.c_long(value)

def call(name, *args):
    result = libc.syscall(ctypes.c_long(numbers[name]), *map(argument, args))
    if result == 0 and name == "clone":
        os._exit(0)  # the clone's child
    if result == -1:
        return errno.errorcode[ctypes.get_errno()]
    if name == "clone":
        os.waitpid(result, 0)
    return "ok"

# Each call in a child of its own: unshare and chroot change the caller.
answers = {}
for label, (name, *args) in calls.items():
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.write(write_end, call(name, *args).encode())
        os._exit(0)
    os.close(write_end)
    answers[label] = os.read(read_end, 64).decode() or "no answer"
    os.close(read_end)
    os.waitpid(pid, 0)
print(json.dumps(answers))
"""


def syscall_numbers(names) -> dict[str, int]:
    path = ctypes.util.find_library("seccomp")
    if path is None:
        pytest.skip("libseccomp is not installed (apt-get install libseccomp2)")
    lib = ctypes.CDLL(path)
    lib.seccomp_syscall_resolve_name.argtypes = [ctypes.c_char_p]
    numbers = {name: lib.seccomp_syscall_resolve_name(name.encode()) for name in names}
    assert all(number >= 0 for number in numbers.values()), numbers
    return numbers


def capabilities(bundle, extra: tuple[str, ...]) -> list[str]:
    sets = bundle.spec["process"]["capabilities"]
    for kind in ("bounding", "effective", "permitted"):
        sets[kind] = [*sets[kind], *extra]
    return sets["bounding"]


def run(runtime, bundle, container_id, *, extra_caps=(), confined=True):
    caps = capabilities(bundle, tuple(extra_caps))
    if confined:
        bundle.spec["linux"]["seccomp"] = default_profile(caps)
    bundle.write()
    return runtime.run("run", "-b", str(bundle.path), container_id)


def probe(runtime, bundle_factory, container_id, labels, *, extra_caps=(),
          confined=True) -> dict[str, str]:
    merged_usr = os.path.islink("/lib") and os.readlink("/lib") == "usr/lib"
    if not Path(HOST_PYTHON).exists() or not merged_usr:
        pytest.skip(f"the probe needs {HOST_PYTHON} and a merged /usr (Debian 12)")
    calls = {label: CALLS[label] for label in labels}
    numbers = syscall_numbers({name for name, *_ in calls.values()})
    bundle = bundle_factory([f"/host{HOST_PYTHON}", "-I", "-S", "/probe.py",
                             json.dumps(calls), json.dumps(numbers)])  # fmt: skip
    (bundle.rootfs / "probe.py").write_text(PROBE)
    for link in ("lib", "lib64"):
        (bundle.rootfs / link).symlink_to(f"host/usr/{link}")
    bundle.spec["mounts"].append({"destination": "/host/usr", "type": "bind",
                                  "source": "/usr", "options": ["rbind", "ro"]})
    result = run(runtime, bundle, container_id, extra_caps=extra_caps, confined=confined)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


# -- an ordinary shell ------------------------------------------------------------


def test_busybox_shell_works(any_runtime, bundle_factory, container_id):
    script = """
        set -e
        grep '^Seccomp:' /proc/self/status
        ls /
        ps -o pid,comm
        cat /etc/passwd
        sleep 0.1 & wait
        echo a piped line | cat | wc -w
        mkdir -p /tmp/d && echo text > /tmp/d/f && ln -s f /tmp/d/l && cat /tmp/d/l
        chmod 600 /tmp/d/f && chown 1000:1000 /tmp/d/f && stat -c '%a %u' /tmp/d/f
        rm -r /tmp/d
        sh -c 'exit 3' || echo status=$?
        echo "arch=$(uname -m) linux32=$(linux32 uname -m)"
        chroot / true && echo chroot=ok
        id -u
        date +%Y >/dev/null && echo done
    """
    result = run(any_runtime, bundle_factory(["sh", "-c", script]), container_id)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["Seccomp:", "2"]  # a filter is on
    assert {"bin", "etc", "proc", "tmp"} <= set(lines)
    assert any(line.split() == ["1", "sh"] for line in lines)
    assert any(line.split()[-1:] == ["ps"] for line in lines)
    assert "root:x:0:0:root:/root:/bin/sh" in lines
    assert "3" in lines and "text" in lines and "600 1000" in lines
    assert "status=3" in lines
    arch_line = next(line for line in lines if line.startswith("arch="))
    native, compat = (part.split("=")[1] for part in arch_line.split())
    assert native != compat  # personality(PER_LINUX32) is allowed
    assert "chroot=ok" in lines  # CAP_SYS_CHROOT is a default capability
    assert lines[-2:] == ["0", "done"]


# -- refused without the capability ---------------------------------------------


def test_namespaces_and_mounts_refused_without_sys_admin(any_runtime, bundle_factory,
                                                         container_id):
    script = """
        unshare -U true; echo "user=$?"
        unshare -m true; echo "mount-ns=$?"
        mount -t tmpfs tmpfs /tmp; echo "mount=$?"
    """
    result = run(any_runtime, bundle_factory(["sh", "-c", script]), container_id)
    assert result.stdout.split() == ["user=1", "mount-ns=1", "mount=1"]
    # busybox mount words EPERM its own way.
    assert result.stderr.count("Operation not permitted") == 2, result.stderr
    assert "mount: permission denied" in result.stderr


def test_user_namespace_is_the_profiles_refusal(any_runtime, bundle_factory, container_id):
    """Without the profile, busybox unshare -U works: no capability is needed."""
    bundle = bundle_factory(["sh", "-c", "unshare -U true; echo user=$?"])
    result = run(any_runtime, bundle, container_id, confined=False)
    assert result.stdout.split() == ["user=0"], result.stderr


NAMESPACE_CALLS = ["unshare(NEWUSER)", "unshare(NEWNS)", "clone(NEWUSER)", "clone(plain)",
                   "clone3(NULL)", "setns", "mount(tmpfs)"]  # fmt: skip


def test_namespace_calls_refused(any_runtime, bundle_factory, container_id):
    answers = probe(any_runtime, bundle_factory, container_id, NAMESPACE_CALLS)
    assert answers == {
        "unshare(NEWUSER)": "EPERM",
        "unshare(NEWNS)": "EPERM",
        "clone(NEWUSER)": "EPERM",
        "clone(plain)": "ok",  # fork by clone, without namespace flags
        "clone3(NULL)": "ENOSYS",  # so that glibc falls back to clone
        "setns": "EPERM",
        "mount(tmpfs)": "EPERM",
    }


REFUSED = ["personality(READ_IMPLIES_EXEC)", "personality(ADDR_NO_RANDOMIZE)",
           "ptrace(PEEKDATA self)", "process_vm_readv(self)", "kcmp(self)",
           "keyctl(session id)", "add_key", "request_key", "clock_settime(NULL)",
           "bpf", "io_uring_setup", "socket(AF_VSOCK)"]  # fmt: skip
ALLOWED = ["personality(query)", "personality(LINUX32)", "socket(AF_UNIX)", "chroot(/)"]


def test_refused_by_the_profile(any_runtime, bundle_factory, container_id):
    answers = probe(any_runtime, bundle_factory, container_id, REFUSED + ALLOWED)
    assert answers == {**dict.fromkeys(REFUSED, "EPERM"), **dict.fromkeys(ALLOWED, "ok")}


# The calls of REFUSED that the kernel itself allows a process without extra
# capabilities (on itself, or failing later on a bad argument).
KERNEL_ALLOWS = {
    "clone(NEWUSER)": "ok",
    "clone3(NULL)": "EINVAL",
    "personality(READ_IMPLIES_EXEC)": "ok",
    "ptrace(PEEKDATA self)": "ESRCH",
    "process_vm_readv(self)": "ok",
    "kcmp(self)": "ok",
    "keyctl(session id)": "ok",
    "add_key": "ok",
    "clock_settime(NULL)": "EFAULT",
}


def test_without_the_profile_these_are_allowed(any_runtime, bundle_factory, container_id):
    answers = probe(any_runtime, bundle_factory, container_id, KERNEL_ALLOWS,
                    confined=False)
    assert answers == KERNEL_ALLOWS


# -- unlocked by the capability -------------------------------------------------


def test_sys_admin_mounts_a_tmpfs(any_runtime, bundle_factory, container_id):
    script = """
        set -e
        mkdir /mnt
        mount -t tmpfs -o size=1m tmpfs /mnt
        echo inside > /mnt/f && cat /mnt/f
        grep -c ' /mnt tmpfs ' /proc/mounts
        umount /mnt
        unshare -m true && echo unshared
    """
    result = run(any_runtime, bundle_factory(["sh", "-c", script]), container_id,
                 extra_caps=["CAP_SYS_ADMIN"])
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["inside", "1", "unshared"]


@pytest.mark.parametrize(
    ("capability", "answers"),
    [
        ("CAP_SYS_ADMIN", {"unshare(NEWNS)": "ok", "clone(NEWUSER)": "ok",
                           "clone3(NULL)": "EINVAL", "mount(tmpfs)": "ok"}),
        ("CAP_SYS_PTRACE", {"ptrace(PEEKDATA self)": "ESRCH",
                            "process_vm_readv(self)": "ok", "kcmp(self)": "ok"}),
        ("CAP_SYS_TIME", {"clock_settime(NULL)": "EFAULT"}),
    ],
)  # fmt: skip
def test_capability_unlocks(any_runtime, bundle_factory, container_id, capability,
                            answers):
    result = probe(any_runtime, bundle_factory, container_id, answers,
                   extra_caps=[capability])
    assert result == answers
