"""The default seccomp profile: its shape, its names, what capabilities change."""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import json

import pytest

from corral.oci import seccomp_profile
from corral.oci.seccomp_profile import ALLOWED, BY_CAPABILITY, default_profile
from corral.oci.spec import DEFAULT_CAPABILITIES

MACHINES = ("x86_64", "aarch64")
EVERY_CAPABILITY = sorted(BY_CAPABILITY)

# Never allowed, whatever the capabilities: no namespace covers them.
NEVER = ("add_key", "keyctl", "request_key", "kexec_load", "kexec_file_load",
         "userfaultfd", "io_uring_setup", "io_uring_enter", "io_uring_register",
         "swapon", "swapoff", "uselib", "ustat", "sysfs", "_sysctl", "nfsservctl",
         "vm86", "vm86old", "create_module", "get_kernel_syms", "query_module",
         "move_pages", "pivot_root")  # fmt: skip


def names_of(profile: dict, action: str = "SCMP_ACT_ALLOW") -> list[str]:
    return [name for rule in profile["syscalls"] if rule["action"] == action
            for name in rule["names"]]  # fmt: skip


def unconditional(profile: dict) -> set[str]:
    return {name for rule in profile["syscalls"]
            if rule["action"] == "SCMP_ACT_ALLOW" and not rule.get("args")
            for name in rule["names"]}  # fmt: skip


def rules_for(profile: dict, name: str) -> list[dict]:
    return [rule for rule in profile["syscalls"] if name in rule["names"]]


@pytest.fixture(scope="module")
def libseccomp():
    path = ctypes.util.find_library("seccomp")
    if path is None:
        pytest.skip("libseccomp is not installed (apt-get install libseccomp2)")
    lib = ctypes.CDLL(path)
    lib.seccomp_syscall_resolve_name.argtypes = [ctypes.c_char_p]
    lib.seccomp_syscall_resolve_name_arch.argtypes = [ctypes.c_uint32, ctypes.c_char_p]
    lib.seccomp_arch_resolve_name.restype = ctypes.c_uint32
    lib.seccomp_arch_resolve_name.argtypes = [ctypes.c_char_p]
    return lib


def arch_tokens(lib, profile: dict) -> list[int]:
    tokens = [lib.seccomp_arch_resolve_name(arch.removeprefix("SCMP_ARCH_").lower().encode())
              for arch in profile["architectures"]]  # fmt: skip
    assert 0 not in tokens, profile["architectures"]
    return tokens


# -- shape ----------------------------------------------------------------------


@pytest.mark.parametrize("machine", MACHINES)
def test_shape(machine):
    profile = default_profile(DEFAULT_CAPABILITIES, machine)
    assert profile["defaultAction"] == "SCMP_ACT_ERRNO"
    assert profile["defaultErrnoRet"] == errno.EPERM == 1
    assert set(profile) == {"defaultAction", "defaultErrnoRet", "architectures", "syscalls"}
    for rule in profile["syscalls"]:
        assert rule["names"] == sorted(set(rule["names"])), rule
        assert rule["action"] in ("SCMP_ACT_ALLOW", "SCMP_ACT_ERRNO")
        assert set(rule) <= {"names", "action", "args", "errnoRet"}
    json.dumps(profile)  # it goes into config.json as it is


def test_architectures():
    assert default_profile([], "x86_64")["architectures"] == [
        "SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"]
    assert default_profile([], "aarch64")["architectures"] == [
        "SCMP_ARCH_AARCH64", "SCMP_ARCH_ARM"]


@pytest.mark.parametrize(("alias", "machine"), [("amd64", "x86_64"), ("arm64", "aarch64")])
def test_go_names_of_machines(alias, machine):
    assert default_profile([], alias) == default_profile([], machine)


def test_unsupported_architecture_is_refused():
    with pytest.raises(ValueError, match="'ppc64le'"):
        default_profile([], "ppc64le")


def test_the_first_rule_is_the_whole_allow_list():
    first = default_profile([], "x86_64")["syscalls"][0]
    assert first == {"names": sorted(ALLOWED + ("arch_prctl", "modify_ldt")),
                     "action": "SCMP_ACT_ALLOW"}


def test_allow_list_is_sorted_grouped_and_unique():
    assert list(ALLOWED) == sorted(ALLOWED)
    assert len(set(ALLOWED)) == len(ALLOWED)
    for group, names in seccomp_profile.GROUPS.items():
        assert list(names) == sorted(names), f"group {group!r} is not sorted"
    for capability, names in BY_CAPABILITY.items():
        assert list(names) == sorted(names), capability
        assert not set(names) & set(ALLOWED), capability


def test_profiles_are_independent():
    profile = default_profile([], "x86_64")
    profile["syscalls"][0]["names"].append("kexec_load")
    assert "kexec_load" not in names_of(default_profile([], "x86_64"))


@pytest.mark.parametrize("machine", MACHINES)
def test_each_name_is_allowed_once(machine):
    names = names_of(default_profile(EVERY_CAPABILITY, machine))
    assert "syslog" in names  # by CAP_SYS_ADMIN and CAP_SYSLOG both
    # personality has one rule per value it may take.
    repeated = {name for name in names if names.count(name) > 1}
    assert repeated == {"personality"}


# -- names libseccomp knows --------------------------------------------------


@pytest.mark.parametrize("machine", MACHINES)
def test_every_name_is_known_to_libseccomp(libseccomp, machine):
    profile = default_profile(EVERY_CAPABILITY, machine)
    unknown = [name for rule in profile["syscalls"] for name in rule["names"]
               if libseccomp.seccomp_syscall_resolve_name(name.encode()) == -1]  # fmt: skip
    assert unknown == []


def test_every_name_exists_on_a_supported_architecture(libseccomp):
    # A name libseccomp knows but no architecture of ours has is a typo for
    # another architecture's call.
    profiles = [default_profile(EVERY_CAPABILITY, machine) for machine in MACHINES]
    tokens = [token for profile in profiles for token in arch_tokens(libseccomp, profile)]
    names = {name for profile in profiles for rule in profile["syscalls"]
             for name in rule["names"]}  # fmt: skip
    missing = [name for name in sorted(names)
               if all(libseccomp.seccomp_syscall_resolve_name_arch(token, name.encode()) < 0
                      for token in tokens)]  # fmt: skip
    assert missing == []


@pytest.mark.parametrize("machine", MACHINES)
def test_arch_specific_names_exist_on_that_architecture(libseccomp, machine):
    tokens = arch_tokens(libseccomp, default_profile([], machine))
    for name in seccomp_profile.ARCH_SPECIFIC[machine]:
        assert any(libseccomp.seccomp_syscall_resolve_name_arch(token, name.encode()) >= 0
                   for token in tokens), name  # fmt: skip


@pytest.mark.parametrize("machine", MACHINES)
@pytest.mark.parametrize("capabilities", [[], DEFAULT_CAPABILITIES, EVERY_CAPABILITY],
                         ids=["none", "default", "every"])
def test_runtime_compiles_it(libseccomp, machine, capabilities):
    from corral.runtime import seccomp

    seccomp.build(default_profile(capabilities, machine), no_new_privileges=True)


# -- what is allowed, and on what condition ------------------------------------


@pytest.mark.parametrize("name", ["read", "write", "openat", "execve", "mmap", "futex",
                                  "rt_sigreturn", "exit_group", "wait4", "getrandom",
                                  "ioctl", "epoll_wait", "socketpair", "connect", "fork",
                                  "prctl", "seccomp", "capset", "setuid", "chown"])
def test_everyday_calls_are_allowed(name):
    assert name in unconditional(default_profile([], "x86_64"))


@pytest.mark.parametrize("machine", MACHINES)
def test_never_allowed(machine):
    assert not set(NEVER) & set(names_of(default_profile(EVERY_CAPABILITY, machine)))


def test_x86_only_on_x86():
    assert {"arch_prctl", "modify_ldt"} <= unconditional(default_profile([], "x86_64"))
    aarch64 = unconditional(default_profile([], "aarch64"))
    assert not {"arch_prctl", "modify_ldt"} & aarch64
    assert {"cacheflush", "set_tls", "arm_fadvise64_64"} <= aarch64


def test_personality_only_safe_values():
    rules = rules_for(default_profile(EVERY_CAPABILITY, "x86_64"), "personality")
    assert all(rule["action"] == "SCMP_ACT_ALLOW" and rule["names"] == ["personality"]
               for rule in rules)  # fmt: skip
    conditions = [rule["args"] for rule in rules]
    assert conditions == [[{"index": 0, "value": value, "op": "SCMP_CMP_EQ"}]
                          for value in (0x0, 0x8, 0x20000, 0x20008, 0xFFFFFFFF)]  # fmt: skip


def test_socket_refuses_vsock():
    rules = rules_for(default_profile([], "x86_64"), "socket")
    assert rules == [{"names": ["socket"], "action": "SCMP_ACT_ALLOW",
                      "args": [{"index": 0, "value": 40, "op": "SCMP_CMP_NE"}]}]


def test_clone_without_sys_admin_makes_no_namespaces():
    profile = default_profile(DEFAULT_CAPABILITIES, "x86_64")
    assert rules_for(profile, "clone") == [{
        "names": ["clone"],
        "action": "SCMP_ACT_ALLOW",
        "args": [{"index": 0, "value": 0x7E020000, "valueTwo": 0,
                  "op": "SCMP_CMP_MASKED_EQ"}],
    }]  # fmt: skip
    assert rules_for(profile, "clone3") == [
        {"names": ["clone3"], "action": "SCMP_ACT_ERRNO", "errnoRet": errno.ENOSYS}]


def test_namespace_flags():
    flags = {"NEWNS": 0x00020000, "NEWCGROUP": 0x02000000, "NEWUTS": 0x04000000,
             "NEWIPC": 0x08000000, "NEWUSER": 0x10000000, "NEWPID": 0x20000000,
             "NEWNET": 0x40000000}  # fmt: skip
    mask = seccomp_profile.CLONE_NAMESPACE_FLAGS
    assert all(mask & flag for flag in flags.values())
    assert mask == sum(flags.values())


def test_sys_admin_allows_clone_and_mounts():
    profile = default_profile([*DEFAULT_CAPABILITIES, "CAP_SYS_ADMIN"], "x86_64")
    allowed = unconditional(profile)
    assert {"clone", "clone3", "mount", "umount2", "unshare", "setns", "fsopen",
            "move_mount", "open_tree", "sethostname"} <= allowed  # fmt: skip
    assert all("args" not in rule for rule in rules_for(profile, "clone"))
    assert names_of(profile, "SCMP_ACT_ERRNO") == []


def test_default_capabilities():
    profile = default_profile(DEFAULT_CAPABILITIES, "x86_64")
    allowed = unconditional(profile)
    assert "chroot" in allowed  # CAP_SYS_CHROOT is in Docker's default set
    locked = set(BY_CAPABILITY["CAP_SYS_ADMIN"]) | set(BY_CAPABILITY["CAP_SYS_PTRACE"])
    assert not locked & allowed


@pytest.mark.parametrize("capability", EVERY_CAPABILITY)
def test_each_capability_unlocks_its_calls_alone(capability):
    without = set(names_of(default_profile([], "x86_64")))
    with_it = unconditional(default_profile([capability], "x86_64"))
    assert set(BY_CAPABILITY[capability]) <= with_it
    others = {name for other, names in BY_CAPABILITY.items() if other != capability
              for name in names} - set(BY_CAPABILITY[capability])  # fmt: skip
    assert not others & with_it
    # clone alone is allowed without CAP_SYS_ADMIN too, on a condition.
    assert set(BY_CAPABILITY[capability]) & without <= {"clone"}


def test_unknown_capability_unlocks_nothing():
    assert default_profile(["CAP_BOGUS", "SYS_ADMIN"], "x86_64") == default_profile(
        [], "x86_64")


@pytest.mark.parametrize(
    ("capability", "names"),
    [
        ("CAP_SYS_PTRACE", {"ptrace", "process_vm_readv", "process_vm_writev", "kcmp"}),
        ("CAP_SYS_MODULE", {"init_module", "finit_module", "delete_module"}),
        ("CAP_SYS_TIME", {"settimeofday", "clock_settime"}),
        ("CAP_SYS_BOOT", {"reboot"}),
        ("CAP_SYS_RAWIO", {"iopl", "ioperm"}),
        ("CAP_SYS_NICE", {"mbind", "set_mempolicy"}),
        ("CAP_SYS_PACCT", {"acct"}),
        ("CAP_SYSLOG", {"syslog"}),
        ("CAP_SYS_TTY_CONFIG", {"vhangup"}),
        ("CAP_DAC_READ_SEARCH", {"open_by_handle_at"}),
    ],
)
def test_capability_gates(capability, names):
    assert not names & set(names_of(default_profile(DEFAULT_CAPABILITIES, "x86_64")))
    assert names <= unconditional(default_profile([capability], "x86_64"))
