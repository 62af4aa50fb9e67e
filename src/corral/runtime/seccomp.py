"""linux.seccomp compiled with libseccomp, the C library runc and crun use.

We call libseccomp through ctypes: it resolves syscall names per
architecture and turns rules into BPF, which is exactly the part not worth
writing again. The filter is built in init before the rootfs is pivoted (so
a bad name fails ``create``) and loaded last, just before execve.

Rule semantics follow runc: a rule whose action is the default action is
left out (libseccomp refuses it); the comparisons of one rule are ANDed when
they name distinct arguments, and a rule whose comparisons share an argument
index becomes one rule per comparison (ORed), since a syscall argument
cannot equal two values at once.
"""

from __future__ import annotations

import ctypes
import errno as errnos

from .errors import InvalidSpec, NotSupported, SetupError

_ACT_KILL_THREAD = 0x00000000
_ACT_KILL_PROCESS = 0x80000000
_ACT_TRAP = 0x00030000
_ACT_ERRNO = 0x00050000
_ACT_TRACE = 0x7FF00000
_ACT_LOG = 0x7FFC0000
_ACT_ALLOW = 0x7FFF0000

_OPS = {
    "SCMP_CMP_NE": 1,
    "SCMP_CMP_LT": 2,
    "SCMP_CMP_LE": 3,
    "SCMP_CMP_EQ": 4,
    "SCMP_CMP_GE": 5,
    "SCMP_CMP_GT": 6,
    "SCMP_CMP_MASKED_EQ": 7,
}

# libseccomp's filter attributes (enum scmp_filter_attr).
_ATTR_CTL_NNP = 3
_ATTR_CTL_TSYNC = 4
_ATTR_CTL_LOG = 6
_ATTR_CTL_SSB = 7

FLAGS = {
    "SECCOMP_FILTER_FLAG_TSYNC": _ATTR_CTL_TSYNC,
    "SECCOMP_FILTER_FLAG_LOG": _ATTR_CTL_LOG,
    "SECCOMP_FILTER_FLAG_SPEC_ALLOW": _ATTR_CTL_SSB,
}

ACTIONS = ["SCMP_ACT_KILL", "SCMP_ACT_KILL_THREAD", "SCMP_ACT_KILL_PROCESS",
           "SCMP_ACT_TRAP", "SCMP_ACT_ERRNO", "SCMP_ACT_TRACE", "SCMP_ACT_ALLOW",
           "SCMP_ACT_LOG"]  # fmt: skip
OPERATORS = list(_OPS)
ARCHES = ["SCMP_ARCH_X86", "SCMP_ARCH_X86_64", "SCMP_ARCH_X32", "SCMP_ARCH_ARM",
          "SCMP_ARCH_AARCH64", "SCMP_ARCH_MIPS", "SCMP_ARCH_MIPS64", "SCMP_ARCH_MIPS64N32",
          "SCMP_ARCH_MIPSEL", "SCMP_ARCH_MIPSEL64", "SCMP_ARCH_MIPSEL64N32",
          "SCMP_ARCH_PPC", "SCMP_ARCH_PPC64", "SCMP_ARCH_PPC64LE", "SCMP_ARCH_S390",
          "SCMP_ARCH_S390X", "SCMP_ARCH_RISCV64"]  # fmt: skip


class _ArgCmp(ctypes.Structure):
    _fields_ = [
        ("arg", ctypes.c_uint),
        ("op", ctypes.c_int),
        ("datum_a", ctypes.c_uint64),
        ("datum_b", ctypes.c_uint64),
    ]


def _library() -> ctypes.CDLL:
    try:
        lib = ctypes.CDLL("libseccomp.so.2", use_errno=True)
    except OSError as exc:
        raise SetupError(
            f"linux.seccomp: load libseccomp: {exc} (apt-get install libseccomp2)"
        ) from None
    lib.seccomp_init.restype = ctypes.c_void_p
    lib.seccomp_init.argtypes = [ctypes.c_uint32]
    lib.seccomp_release.argtypes = [ctypes.c_void_p]
    lib.seccomp_load.argtypes = [ctypes.c_void_p]
    lib.seccomp_arch_add.argtypes = [ctypes.c_void_p, ctypes.c_uint32]
    lib.seccomp_arch_resolve_name.restype = ctypes.c_uint32
    lib.seccomp_arch_resolve_name.argtypes = [ctypes.c_char_p]
    lib.seccomp_syscall_resolve_name.argtypes = [ctypes.c_char_p]
    lib.seccomp_attr_set.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_uint32]
    lib.seccomp_rule_add_array.argtypes = [
        ctypes.c_void_p, ctypes.c_uint32, ctypes.c_int, ctypes.c_uint, ctypes.POINTER(_ArgCmp)
    ]
    return lib


def _action(name: str, errno_ret: int | None, field: str) -> int:
    if name in ("SCMP_ACT_KILL", "SCMP_ACT_KILL_THREAD"):
        return _ACT_KILL_THREAD
    if name == "SCMP_ACT_KILL_PROCESS":
        return _ACT_KILL_PROCESS
    if name == "SCMP_ACT_TRAP":
        return _ACT_TRAP
    if name == "SCMP_ACT_ERRNO":
        return _ACT_ERRNO | ((errnos.EPERM if errno_ret is None else errno_ret) & 0xFFFF)
    if name == "SCMP_ACT_TRACE":
        return _ACT_TRACE | ((errnos.EPERM if errno_ret is None else errno_ret) & 0xFFFF)
    if name == "SCMP_ACT_ALLOW":
        return _ACT_ALLOW
    if name == "SCMP_ACT_LOG":
        return _ACT_LOG
    if name == "SCMP_ACT_NOTIFY":
        raise NotSupported(field, "SCMP_ACT_NOTIFY (a seccomp agent) is not supported")
    raise InvalidSpec(field, f"unknown seccomp action {name!r}")


def _arch_name(oci_name: str) -> bytes:
    return oci_name.removeprefix("SCMP_ARCH_").lower().encode()


class Filter:
    """A libseccomp context built from linux.seccomp, ready to load."""

    def __init__(self, lib: ctypes.CDLL, context: int) -> None:
        self._lib = lib
        self._context = context

    def load(self) -> None:
        result = self._lib.seccomp_load(self._context)
        if result < 0:
            raise SetupError(f"load seccomp filter: {errnos.errorcode.get(-result, result)}")


def build(seccomp: dict, no_new_privileges: bool) -> Filter:
    """Check linux.seccomp and compile it; errors name the field."""
    if seccomp.get("listenerPath"):
        raise NotSupported("linux.seccomp.listenerPath", "seccomp agents are not supported")
    lib = _library()
    default = _action(seccomp.get("defaultAction") or "", seccomp.get("defaultErrnoRet"),
                      "linux.seccomp.defaultAction")
    context = lib.seccomp_init(default)
    if not context:
        raise SetupError("seccomp_init failed")
    # libseccomp would set no_new_privs on load; the spec leaves that to
    # process.noNewPrivileges.
    lib.seccomp_attr_set(context, _ATTR_CTL_NNP, 0)
    for index, arch in enumerate(seccomp.get("architectures") or []):
        token = lib.seccomp_arch_resolve_name(_arch_name(arch))
        if token == 0:
            raise InvalidSpec(f"linux.seccomp.architectures[{index}]",
                              f"unknown architecture {arch!r}")
        result = lib.seccomp_arch_add(context, token)
        if result < 0 and -result != errnos.EEXIST:
            raise SetupError(f"seccomp: add architecture {arch}: error {-result}")
    for index, flag in enumerate(seccomp.get("flags") or []):
        if flag not in FLAGS:
            raise NotSupported(f"linux.seccomp.flags[{index}]", f"flag {flag!r} is not supported")
        lib.seccomp_attr_set(context, FLAGS[flag], 1)
    for index, rule in enumerate(seccomp.get("syscalls") or []):
        _add_rule(lib, context, rule, default, f"linux.seccomp.syscalls[{index}]")
    return Filter(lib, context)


def _add_rule(lib: ctypes.CDLL, context: int, rule: dict, default: int, field: str) -> None:
    action = _action(rule.get("action") or "", rule.get("errnoRet"), f"{field}.action")
    if action == default:
        return
    args = rule.get("args") or []
    comparisons = []
    for index, arg in enumerate(args):
        op = _OPS.get(arg.get("op"))
        if op is None:
            raise InvalidSpec(f"{field}.args[{index}].op", f"unknown operator {arg.get('op')!r}")
        comparisons.append(_ArgCmp(arg.get("index", 0), op, arg.get("value", 0),
                                   arg.get("valueTwo", 0)))
    indexes = [c.arg for c in comparisons]
    groups = [comparisons] if len(set(indexes)) == len(indexes) else [[c] for c in comparisons]
    for name_index, name in enumerate(rule.get("names") or []):
        number = lib.seccomp_syscall_resolve_name(name.encode())
        if number == -1:  # __NR_SCMP_ERROR
            raise InvalidSpec(f"{field}.names[{name_index}]",
                              f"unknown syscall {name!r} for libseccomp on this architecture")
        for group in groups or [[]]:
            array = (_ArgCmp * len(group))(*group)
            result = lib.seccomp_rule_add_array(context, action, number, len(group), array)
            if result < 0:
                raise SetupError(f"{field}: add rule for {name!r}: "
                                 f"{errnos.errorcode.get(-result, -result)}")
