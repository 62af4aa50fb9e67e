"""The default linux.seccomp profile: the system calls a container may make.

The image and manager layers put this profile in every config.json they write
unless the user asks for another one; it is meant to have the effect of
Docker's default profile, so that images that run under Docker run here, and
what Docker refuses is refused here too. The names and their grouping are
ours; the choices follow Docker's documented ones.

"Unconfined" (no linux.seccomp at all) leaves the whole kernel interface to
the container, and only capabilities and namespaces stand between it and the
host. This profile is an allow-list instead: any system call not named here
fails with EPERM, which is what shuts out the interfaces that namespaces do
not cover (the kernel keyring, kernel modules, kexec, BPF, perf, userfaultfd,
io_uring, the clock, swap, accounting) and the new namespaces and mounts that
would widen the attack surface even where the kernel would allow them to an
unprivileged user (a user namespace needs no capability at all). Most of what
is left out is refused by the kernel anyway without a capability; the profile
is a second wall, and the narrow entry to the kernel code behind it.

The profile depends on the container's capabilities (its bounding set, as
the OCI names them): a capability that grants an operation also unlocks the
system calls that perform it, as under Docker. A few capabilities unlock
nothing here because the kernel checks them itself inside system calls every
container may make: CAP_SYS_RESOURCE (setrlimit/prlimit above the hard
limit), CAP_MKNOD (mknod of a device), CAP_SETUID/CAP_SETGID, CAP_KILL.

One deliberate difference from Docker: Docker allows ptrace,
process_vm_readv and process_vm_writev to every container on kernels from 4.8
(where ptrace can no longer be used to escape seccomp); we keep them behind
CAP_SYS_PTRACE with kcmp, pidfd_getfd and process_madvise, as Docker did
before 19.03. A debugger in a container needs ``CAP_SYS_PTRACE`` added.

libseccomp resolves each name per architecture and leaves out a name the
architecture lacks, so the 32-bit and legacy names below are harmless on
x86_64 and aarch64 and needed by their compat ABIs (x86, x32, arm). Every
name must be known to the libseccomp of the runtime (2.5.4 on Debian 12):
corral-runtime refuses a profile with a name it cannot resolve.
"""

from __future__ import annotations

import errno
import os

from corral._syscalls import (
    CLONE_NEWCGROUP,
    CLONE_NEWIPC,
    CLONE_NEWNET,
    CLONE_NEWNS,
    CLONE_NEWPID,
    CLONE_NEWUSER,
    CLONE_NEWUTS,
)

# -- the allow-list: what every container may call, grouped by purpose -------

# Files, directories and file descriptors: paths, metadata, reading, writing.
_FILES = (
    "access",
    "cachestat",
    "chdir",
    "chmod",
    "chown",
    "close",
    "close_range",
    "copy_file_range",
    "creat",
    "dup",
    "dup2",
    "dup3",
    "faccessat",
    "faccessat2",
    "fadvise64",
    "fallocate",
    "fchdir",
    "fchmod",
    "fchmodat",
    "fchmodat2",
    "fchown",
    "fchownat",
    "fcntl",
    "fdatasync",
    "flock",
    "fstat",
    "fstatfs",
    "fsync",
    "ftruncate",
    "futimesat",
    "getcwd",
    "getdents",
    "getdents64",
    "ioctl",  # which devices there are is up to linux.devices and the cgroup
    "lchown",
    "link",
    "linkat",
    "lseek",
    "lstat",
    "mkdir",
    "mkdirat",
    "mknod",  # a device node needs CAP_MKNOD and the devices cgroup
    "mknodat",
    "name_to_handle_at",  # only its partner open_by_handle_at opens files
    "newfstatat",
    "open",
    "openat",
    "openat2",
    "pread64",
    "preadv",
    "preadv2",
    "pwrite64",
    "pwritev",
    "pwritev2",
    "read",
    "readahead",
    "readlink",
    "readlinkat",
    "readv",
    "rename",
    "renameat",
    "renameat2",
    "rmdir",
    "sendfile",
    "splice",
    "stat",
    "statfs",
    "statx",
    "symlink",
    "symlinkat",
    "sync",
    "sync_file_range",
    "syncfs",
    "tee",
    "truncate",
    "umask",
    "unlink",
    "unlinkat",
    "utime",
    "utimensat",
    "utimes",
    "vmsplice",
    "write",
    "writev",
)

# Extended attributes, file change notification, asynchronous I/O.
_FILE_EXTRAS = (
    "fanotify_mark",  # useless without fanotify_init, which needs CAP_SYS_ADMIN
    "fgetxattr",
    "flistxattr",
    "fremovexattr",
    "fsetxattr",
    "getxattr",
    "inotify_add_watch",
    "inotify_init",
    "inotify_init1",
    "inotify_rm_watch",
    "io_cancel",
    "io_destroy",
    "io_getevents",
    "io_pgetevents",
    "io_setup",
    "io_submit",
    "lgetxattr",
    "listxattr",
    "llistxattr",
    "lremovexattr",
    "lsetxattr",
    "removexattr",
    "setxattr",
)

# The address space.
_MEMORY = (
    "brk",
    "madvise",
    "map_shadow_stack",
    "membarrier",
    "memfd_create",
    "memfd_secret",
    "mincore",
    "mlock",
    "mlock2",
    "mlockall",
    "mmap",
    "mprotect",
    "mremap",
    "msync",
    "munlock",
    "munlockall",
    "munmap",
    "pkey_alloc",
    "pkey_free",
    "pkey_mprotect",
    "remap_file_pages",
)

# Processes and threads: making, running, waiting for, leaving; their ids.
# clone and clone3 are not here: see _clone_rules.
_PROCESSES = (
    "execve",
    "execveat",
    "exit",
    "exit_group",
    "fork",
    "get_robust_list",
    "getcpu",
    "getpgid",
    "getpgrp",
    "getpid",
    "getppid",
    "getrusage",
    "getsid",
    "gettid",
    "pidfd_open",
    "process_mrelease",
    "restart_syscall",
    "rseq",
    "set_robust_list",
    "set_tid_address",
    "setpgid",
    "setsid",
    "vfork",
    "wait4",
    "waitid",
)

# Users and groups; changing them needs CAP_SETUID or CAP_SETGID.
_CREDENTIALS = (
    "getegid",
    "geteuid",
    "getgid",
    "getgroups",
    "getresgid",
    "getresuid",
    "getuid",
    "setfsgid",
    "setfsuid",
    "setgid",
    "setgroups",
    "setregid",
    "setresgid",
    "setresuid",
    "setreuid",
    "setuid",
)

# Process attributes, what the system is, and the sandboxes a process may
# put on itself.
# prctl's dangerous options check capabilities in the kernel.
_SELF = (
    "capget",
    "capset",
    "getpriority",
    "getrandom",
    "getrlimit",
    "ioprio_get",
    "ioprio_set",
    "landlock_add_rule",
    "landlock_create_ruleset",
    "landlock_restrict_self",
    "prctl",
    "prlimit64",  # raising a hard limit needs CAP_SYS_RESOURCE
    "sched_get_priority_max",
    "sched_get_priority_min",
    "sched_getaffinity",
    "sched_getattr",
    "sched_getparam",
    "sched_getscheduler",
    "sched_rr_get_interval",
    "sched_setaffinity",
    "sched_setattr",  # real-time priorities need CAP_SYS_NICE
    "sched_setparam",
    "sched_setscheduler",
    "sched_yield",
    "seccomp",
    "setpriority",
    "setrlimit",
    "sysinfo",
    "uname",
)

# Signals.
_SIGNALS = (
    "kill",
    "pause",
    "pidfd_send_signal",
    "rt_sigaction",
    "rt_sigpending",
    "rt_sigprocmask",
    "rt_sigqueueinfo",
    "rt_sigreturn",
    "rt_sigsuspend",
    "rt_sigtimedwait",
    "rt_tgsigqueueinfo",
    "sigaltstack",
    "signalfd",
    "signalfd4",
    "tgkill",
    "tkill",
)

# Reading the clocks, sleeping, timers. Setting the clock is not here: see
# CAP_SYS_TIME. adjtimex and clock_adjtime only read unless the caller has
# CAP_SYS_TIME, which the kernel checks.
_TIME = (
    "adjtimex",
    "alarm",
    "clock_adjtime",
    "clock_getres",
    "clock_gettime",
    "clock_nanosleep",
    "getitimer",
    "gettimeofday",
    "nanosleep",
    "setitimer",
    "time",
    "timer_create",
    "timer_delete",
    "timer_getoverrun",
    "timer_gettime",
    "timer_settime",
    "timerfd_create",
    "timerfd_gettime",
    "timerfd_settime",
    "times",
)

# Waiting on file descriptors and on memory.
_WAITING = (
    "epoll_create",
    "epoll_create1",
    "epoll_ctl",
    "epoll_ctl_old",
    "epoll_pwait",
    "epoll_pwait2",
    "epoll_wait",
    "epoll_wait_old",
    "eventfd",
    "eventfd2",
    "futex",
    "futex_requeue",
    "futex_wait",
    "futex_waitv",
    "futex_wake",
    "poll",
    "ppoll",
    "pselect6",
    "select",
)

# Inter-process communication, inside the container's IPC namespace.
_IPC = (
    "mq_getsetattr",
    "mq_notify",
    "mq_open",
    "mq_timedreceive",
    "mq_timedsend",
    "mq_unlink",
    "msgctl",
    "msgget",
    "msgrcv",
    "msgsnd",
    "pipe",
    "pipe2",
    "semctl",
    "semget",
    "semop",
    "semtimedop",
    "shmat",
    "shmctl",
    "shmdt",
    "shmget",
)

# Sockets. socket itself is not here: see _socket_rules.
_NETWORK = (
    "accept",
    "accept4",
    "bind",
    "connect",
    "getpeername",
    "getsockname",
    "getsockopt",
    "listen",
    "recvfrom",
    "recvmmsg",
    "recvmsg",
    "sendmmsg",
    "sendmsg",
    "sendto",
    "setsockopt",
    "shutdown",
    "socketpair",
)

# The same operations under the names of 32-bit ABIs (x86 and arm): 32-bit
# ids, 64-bit offsets and time64 variants, and the multiplexers ipc and
# socketcall (whose arguments are behind a pointer seccomp cannot read).
_COMPAT_32BIT = (
    "_llseek",
    "_newselect",
    "chown32",
    "clock_adjtime64",
    "clock_getres_time64",
    "clock_gettime64",
    "clock_nanosleep_time64",
    "fadvise64_64",
    "fchown32",
    "fcntl64",
    "fstat64",
    "fstatat64",
    "fstatfs64",
    "ftruncate64",
    "futex_time64",
    "get_thread_area",
    "getegid32",
    "geteuid32",
    "getgid32",
    "getgroups32",
    "getresgid32",
    "getresuid32",
    "getuid32",
    "io_pgetevents_time64",
    "ipc",
    "lchown32",
    "lstat64",
    "mmap2",
    "mq_timedreceive_time64",
    "mq_timedsend_time64",
    "ppoll_time64",
    "pselect6_time64",
    "recvmmsg_time64",
    "rt_sigtimedwait_time64",
    "sched_rr_get_interval_time64",
    "semtimedop_time64",
    "sendfile64",
    "set_thread_area",
    "setfsgid32",
    "setfsuid32",
    "setgid32",
    "setgroups32",
    "setregid32",
    "setresgid32",
    "setresuid32",
    "setreuid32",
    "setuid32",
    "sigprocmask",
    "sigreturn",
    "socketcall",
    "stat64",
    "statfs64",
    "timer_gettime64",
    "timer_settime64",
    "timerfd_gettime64",
    "timerfd_settime64",
    "truncate64",
    "ugetrlimit",
    "utimensat_time64",
    "waitpid",
)

GROUPS = {
    "files": _FILES,
    "file extras": _FILE_EXTRAS,
    "memory": _MEMORY,
    "processes": _PROCESSES,
    "credentials": _CREDENTIALS,
    "self": _SELF,
    "signals": _SIGNALS,
    "time": _TIME,
    "waiting": _WAITING,
    "ipc": _IPC,
    "network": _NETWORK,
    "32-bit compat": _COMPAT_32BIT,
}

# Every container may make these system calls, with any arguments.
ALLOWED = tuple(sorted(name for group in GROUPS.values() for name in group))

# -- what capabilities unlock --------------------------------------------------

BY_CAPABILITY = {
    # Opening a file by handle reaches files outside the container's mounts.
    "CAP_DAC_READ_SEARCH": ("open_by_handle_at",),
    # Namespaces, mounts, the new mount API, and the rest of the admin set.
    "CAP_SYS_ADMIN": (
        "bpf",
        "clone",
        "clone3",
        "fanotify_init",
        "fsconfig",
        "fsmount",
        "fsopen",
        "fspick",
        "lookup_dcookie",
        "mount",
        "mount_setattr",
        "move_mount",
        "open_tree",
        "perf_event_open",
        "quotactl",
        "quotactl_fd",
        "setdomainname",
        "sethostname",
        "setns",
        "syslog",
        "umount",
        "umount2",
        "unshare",
    ),
    "CAP_BPF": ("bpf",),
    "CAP_PERFMON": ("perf_event_open",),
    "CAP_SYS_BOOT": ("reboot",),
    "CAP_SYS_CHROOT": ("chroot",),
    "CAP_SYS_MODULE": ("delete_module", "finit_module", "init_module"),
    # NUMA placement of memory: the nodes, and their balance, are the host's.
    "CAP_SYS_NICE": (
        "get_mempolicy",
        "mbind",
        "set_mempolicy",
        "set_mempolicy_home_node",
    ),
    "CAP_SYS_PACCT": ("acct",),
    # Reading and changing other processes: tracing, their memory, their fds.
    "CAP_SYS_PTRACE": (
        "kcmp",
        "pidfd_getfd",
        "process_madvise",
        "process_vm_readv",
        "process_vm_writev",
        "ptrace",
    ),
    # x86 port I/O: the hardware directly.
    "CAP_SYS_RAWIO": ("ioperm", "iopl"),
    # The clocks are not namespaced (the time namespace only offsets
    # monotonic and boottime): setting them sets the host's.
    "CAP_SYS_TIME": ("clock_settime", "clock_settime64", "settimeofday", "stime"),
    "CAP_SYS_TTY_CONFIG": ("vhangup",),
    "CAP_SYSLOG": ("syslog",),
}

# -- per architecture ----------------------------------------------------------

# The seccomp architectures to filter for each machine: the native one and
# the compat ABIs its kernel can run, so that a 32-bit binary is filtered
# with the same list rather than escaping it.
ARCHITECTURES = {
    "x86_64": ("SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"),
    "aarch64": ("SCMP_ARCH_AARCH64", "SCMP_ARCH_ARM"),
}

# System calls that exist only on one architecture family.
ARCH_SPECIFIC = {
    # TLS and segment set-up: glibc's start-up on x86_64 needs arch_prctl.
    "x86_64": ("arch_prctl", "modify_ldt"),
    # 32-bit arm's own calls: cache flushing, TLS, reordered arguments.
    "aarch64": (
        "arm_fadvise64_64",
        "arm_sync_file_range",
        "breakpoint",
        "cacheflush",
        "set_tls",
    ),
}

# The names os.uname() and Go (image platforms) give the same machines.
_MACHINES = {
    "x86_64": "x86_64",
    "amd64": "x86_64",
    "aarch64": "aarch64",
    "arm64": "aarch64",
}

# -- the conditional rules -----------------------------------------------------

# personality(2) values a container may set: plain Linux, the 32-bit
# personality (what `linux32` or `setarch i686` sets), each with UNAME26 (a
# 2.6 kernel version in uname, for old binaries), and 0xffffffff, which only
# queries. Others (READ_IMPLIES_EXEC, ADDR_NO_RANDOMIZE ...) weaken the
# defences of exec and are refused.
PER_LINUX = 0x0
PER_LINUX32 = 0x8
UNAME26 = 0x20000
PERSONALITY_QUERY = 0xFFFFFFFF
PERSONALITIES = (
    PER_LINUX,
    PER_LINUX32,
    UNAME26,
    UNAME26 | PER_LINUX32,
    PERSONALITY_QUERY,
)

# The clone(2) flags that make new namespaces (<linux/sched.h>). CLONE_NEWTIME
# is missing on purpose: its bit is part of the exit signal in clone's flags,
# and only clone3 and unshare take it, both refused without CAP_SYS_ADMIN.
CLONE_NAMESPACE_FLAGS = (
    CLONE_NEWNS
    | CLONE_NEWCGROUP
    | CLONE_NEWUTS
    | CLONE_NEWIPC
    | CLONE_NEWUSER
    | CLONE_NEWPID
    | CLONE_NEWNET
)

AF_VSOCK = 40


def _allow(names, args: list[dict] | None = None) -> dict:
    rule: dict = {"names": sorted(names), "action": "SCMP_ACT_ALLOW"}
    if args:
        rule["args"] = args
    return rule


def _personality_rules() -> list[dict]:
    # One rule per value: the values are alternatives, and the spec does not
    # say how a rule with several comparisons of one argument reads (runc and
    # corral-runtime take them as OR, the plain reading is AND).
    return [
        _allow(["personality"], [{"index": 0, "value": value, "op": "SCMP_CMP_EQ"}])
        for value in PERSONALITIES
    ]


def _clone_rules() -> list[dict]:
    """clone and clone3 for a container without CAP_SYS_ADMIN."""
    # clone's flags are its first argument on x86 and arm (the second on
    # s390, which we do not support): allowed when no namespace flag is set.
    no_new_namespace = {
        "index": 0,
        "value": CLONE_NAMESPACE_FLAGS,
        "valueTwo": 0,
        "op": "SCMP_CMP_MASKED_EQ",
    }
    # clone3 takes its flags in a struct that seccomp cannot read, so it
    # cannot be filtered the same way. ENOSYS, not EPERM: glibc (2.34 on)
    # tries clone3 first and falls back to clone only on ENOSYS.
    no_clone3 = {
        "names": ["clone3"],
        "action": "SCMP_ACT_ERRNO",
        "errnoRet": errno.ENOSYS,
    }
    return [_allow(["clone"], [no_new_namespace]), no_clone3]


def _socket_rules() -> list[dict]:
    # Any address family but vsock, whose sockets reach the hypervisor and
    # are not namespaced.
    return [_allow(["socket"], [{"index": 0, "value": AF_VSOCK, "op": "SCMP_CMP_NE"}])]


def default_profile(capabilities: list[str], arch: str = os.uname().machine) -> dict:
    """The default linux.seccomp for a container with these capabilities.

    Args:
        capabilities: the container's capabilities, as OCI names
            (``"CAP_SYS_ADMIN"``): its bounding set. Unknown names unlock
            nothing.
        arch: the machine the container runs on, as ``os.uname().machine``
            or Go names it (``x86_64``/``amd64``, ``aarch64``/``arm64``).

    Returns:
        A new ``linux.seccomp`` object: EPERM for any system call not allowed
        by one of its rules.

    Raises:
        ValueError: there is no profile for ARCH.
    """
    machine = _MACHINES.get(arch)
    if machine is None:
        raise ValueError(f"default seccomp profile: unsupported architecture {arch!r}")
    granted = set(capabilities)
    rules = [_allow(ALLOWED + ARCH_SPECIFIC[machine])]
    rules += _personality_rules()
    rules += _socket_rules()
    if "CAP_SYS_ADMIN" not in granted:
        rules += _clone_rules()
    # Each name once: a capability may unlock what another already did
    # (syslog by CAP_SYS_ADMIN and CAP_SYSLOG).
    unlocked: set[str] = set()
    for capability, names in BY_CAPABILITY.items():
        fresh = set(names) - unlocked
        if capability in granted and fresh:
            rules.append(_allow(fresh))
            unlocked |= fresh
    return {
        "defaultAction": "SCMP_ACT_ERRNO",
        "defaultErrnoRet": errno.EPERM,
        "architectures": list(ARCHITECTURES[machine]),
        "syscalls": rules,
    }
