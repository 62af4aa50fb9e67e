"""linux.seccomp, observed from inside the container, under corral and runc."""

from __future__ import annotations

import errno

import pytest


def profile(syscalls, default="SCMP_ACT_ALLOW", **extra):
    return {"defaultAction": default, "architectures": ["SCMP_ARCH_X86_64"],
            "syscalls": syscalls, **extra}


def run(runtime, bundle, container_id):
    bundle.write()
    return runtime.run("run", "-b", str(bundle.path), container_id)


def test_errno_action_returns_that_errno(any_runtime, bundle_factory, container_id):
    bundle = bundle_factory(["sh", "-c", "mkdir /tmp/d; echo rc=$?"])
    bundle.spec["linux"]["seccomp"] = profile([
        {"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO",
         "errnoRet": errno.ENOTSUP}])
    result = run(any_runtime, bundle, container_id)
    assert "rc=1" in result.stdout
    assert "Not supported" in result.stderr or "not supported" in result.stderr.lower()
    assert not (bundle.rootfs / "tmp" / "d").exists()


def test_kill_action_kills(any_runtime, bundle_factory, container_id):
    bundle = bundle_factory(["sh", "-c", "sh -c 'mkdir /tmp/d'; echo rc=$?"])
    bundle.spec["linux"]["seccomp"] = profile([
        {"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_KILL"}])
    result = run(any_runtime, bundle, container_id)
    assert "rc=159" in result.stdout  # 128 + SIGSYS


def test_default_errno_with_allow_list(any_runtime, bundle_factory, container_id):
    allowed = ["execve", "brk", "arch_prctl", "set_tid_address", "exit_group", "write",
               "getuid", "getpid", "rt_sigaction", "rt_sigprocmask", "capget", "capset",
               "prctl", "setresuid", "setresgid", "setgroups", "chdir", "getcwd",
               "close_range", "fcntl", "close", "futex", "newfstatat", "fstat", "exit",
               "mmap", "munmap", "read", "openat", "lseek", "ioctl", "uname", "readlink",
               "getppid", "set_robust_list", "rseq", "prlimit64", "mprotect",
               "getrandom", "rt_sigreturn", "wait4", "clone", "fork", "vfork",
               "umask", "setsid", "getpgrp", "geteuid", "getgid", "getegid", "dup2",
               "dup3", "pipe2", "statx", "sigaltstack", "seccomp", "fstatfs", "statfs",
               "getdents64", "sched_yield", "nanosleep", "epoll_pwait", "epoll_ctl",
               "gettid", "tgkill", "sched_getaffinity", "madvise", "mlock"]
    bundle = bundle_factory(["sh", "-c", "echo before; mkdir /tmp/d 2>&1; echo rc=$?"])
    bundle.spec["process"]["noNewPrivileges"] = True
    bundle.spec["linux"]["seccomp"] = profile(
        [{"names": allowed, "action": "SCMP_ACT_ALLOW"}],
        default="SCMP_ACT_ERRNO", defaultErrnoRet=errno.EACCES)
    result = run(any_runtime, bundle, container_id)
    assert "before" in result.stdout
    assert "Permission denied" in result.stdout
    assert "rc=1" in result.stdout


def test_argument_comparison(any_runtime, bundle_factory, container_id):
    # personality(0xffffffff) queries; anything else is refused.
    bundle = bundle_factory(["sh", "-c", "setarch linux32 true; echo rc=$?; uname -m"])
    bundle.spec["linux"]["seccomp"] = profile([
        {"names": ["personality"], "action": "SCMP_ACT_ERRNO", "errnoRet": errno.EPERM,
         "args": [{"index": 0, "value": 0xFFFFFFFF, "op": "SCMP_CMP_NE"}]}])
    result = run(any_runtime, bundle, container_id)
    assert "rc=1" in result.stdout or "rc=2" in result.stdout
    assert "x86_64" in result.stdout


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda s: s["syscalls"][0].update(names=["no_such_syscall"]),
         "linux.seccomp.syscalls[0].names[0]"),
        (lambda s: s.update(defaultAction="SCMP_ACT_BOGUS"), "linux.seccomp.defaultAction"),
        (lambda s: s["syscalls"][0].update(action="SCMP_ACT_NOTIFY"), "SCMP_ACT_NOTIFY"),
        (lambda s: s.update(architectures=["SCMP_ARCH_BOGUS"]),
         "linux.seccomp.architectures[0]"),
    ],
)
def test_bad_seccomp_is_named(corral, bundle_factory, container_id, change, message):
    bundle = bundle_factory(["true"])
    seccomp = profile([{"names": ["mkdir"], "action": "SCMP_ACT_ERRNO"}])
    change(seccomp)
    bundle.spec["linux"]["seccomp"] = seccomp
    result = run(corral, bundle, container_id)
    assert result.returncode != 0
    assert message in result.stderr
    assert not (corral.root / container_id).exists()
