"""linux.resources.devices on cgroup v2: an eBPF device program.

cgroup v2 has no devices.allow/deny files; the kernel asks a program of type
BPF_PROG_TYPE_CGROUP_DEVICE attached to the cgroup instead. We write that
program here, a few instructions per rule, so that it decides as cgroup v1's
lists do: rules are tried last to first and the first that matches decides;
with no match the answer is "allow", the v1 default (the spec's rules
normally begin with a deny-all). As in runc, a rule matches a request whose
access (read, write, mknod) is a subset of the rule's.

The program sees ``struct bpf_cgroup_dev_ctx`` (linux/bpf.h): ``u32
access_type`` (access << 16 | type), ``u32 major``, ``u32 minor``; it returns
1 to allow and 0 to deny.
"""

from __future__ import annotations

import ctypes
import os
import struct

from .errors import SetupError

_TYPES = {"c": 2, "b": 1}  # BPF_DEVCG_DEV_CHAR, BPF_DEVCG_DEV_BLOCK
_ACCESS = {"m": 1, "r": 2, "w": 4}  # BPF_DEVCG_ACC_MKNOD, _READ, _WRITE

# Opcodes (linux/bpf_common.h, linux/bpf.h).
_LDX_W = 0x61  # r_dst = *(u32 *)(r_src + off)
_AND_K = 0x54  # (u32) r_dst &= imm
_RSH_K = 0x74  # (u32) r_dst >>= imm
_MOV_X = 0xBF  # r_dst = r_src
_MOV_K = 0xB7  # r_dst = imm
_JNE_K = 0x55  # if r_dst != imm: pc += off
_EXIT = 0x95

_BPF_PROG_LOAD = 5
_BPF_PROG_ATTACH = 8
_BPF_PROG_TYPE_CGROUP_DEVICE = 15
_BPF_CGROUP_DEVICE = 6
_BPF_F_ALLOW_MULTI = 2
_SYS_BPF = {"x86_64": 321, "aarch64": 280}


def _insn(code: int, dst: int = 0, src: int = 0, off: int = 0, imm: int = 0) -> bytes:
    return struct.pack("<BBhi", code, (src << 4) | dst, off, imm)


def _rule_block(rule: dict) -> list[tuple]:
    """Instructions for one rule: skip to the next rule unless it matches."""
    kind = rule.get("type") or "a"
    access = rule.get("access") or "rwm"
    mask = sum(bit for letter, bit in _ACCESS.items() if letter in access)
    block: list[tuple] = []
    if mask != 7:
        # r6 = requested access outside the rule's; it must be none.
        block += [(_MOV_X, 6, 3), (_AND_K, 6, 0, 0, ~mask & 0xFFFF), ("skip", 6, 0)]
    if kind in _TYPES:
        block.append(("skip", 2, _TYPES[kind]))
    for key, register in (("major", 4), ("minor", 5)):
        value = rule.get(key)
        if value is not None and value != -1 and kind != "a":
            block.append(("skip", register, value))
    block += [(_MOV_K, 0, 0, 0, 1 if rule.get("allow") else 0), (_EXIT,)]
    return block


def program(rules: list[dict]) -> bytes:
    code = [
        _insn(_LDX_W, 2, 1, 0),  # r2 = access_type
        _insn(_AND_K, 2, 0, 0, 0xFFFF),  # r2 = type
        _insn(_LDX_W, 3, 1, 0),
        _insn(_RSH_K, 3, 0, 0, 16),  # r3 = access
        _insn(_LDX_W, 4, 1, 4),  # r4 = major
        _insn(_LDX_W, 5, 1, 8),  # r5 = minor
    ]
    for rule in reversed(rules):
        block = _rule_block(rule)
        for index, item in enumerate(block):
            if item[0] == "skip":
                _, register, value = item
                code.append(_insn(_JNE_K, register, 0, len(block) - index - 1, value))
            else:
                code.append(_insn(*item))
        if not any(item[0] == "skip" for item in block):
            # A rule that matches everything decides; the verifier refuses
            # instructions after it, as they could never run.
            return b"".join(code)
    code += [_insn(_MOV_K, 0, 0, 0, 1), _insn(_EXIT)]
    return b"".join(code)


class _LoadAttr(ctypes.Structure):
    _fields_ = [
        ("prog_type", ctypes.c_uint32), ("insn_cnt", ctypes.c_uint32),
        ("insns", ctypes.c_uint64), ("license", ctypes.c_uint64),
        ("log_level", ctypes.c_uint32), ("log_size", ctypes.c_uint32),
        ("log_buf", ctypes.c_uint64), ("kern_version", ctypes.c_uint32),
        ("prog_flags", ctypes.c_uint32), ("padding", ctypes.c_uint8 * 64),
    ]  # fmt: skip


class _AttachAttr(ctypes.Structure):
    _fields_ = [
        ("target_fd", ctypes.c_uint32), ("attach_bpf_fd", ctypes.c_uint32),
        ("attach_type", ctypes.c_uint32), ("attach_flags", ctypes.c_uint32),
        ("padding", ctypes.c_uint8 * 32),
    ]  # fmt: skip


def attach(cgroup_dir: str, rules: list[dict]) -> None:
    """Load the program for RULES and attach it to the cgroup at CGROUP_DIR."""
    number = _SYS_BPF.get(os.uname().machine)
    if number is None:
        raise SetupError("linux.resources.devices: bpf(2) is not wired for this machine")
    libc = ctypes.CDLL(None, use_errno=True)
    code = program(rules)
    insns = ctypes.create_string_buffer(code, len(code))
    license_text = ctypes.create_string_buffer(b"Apache")
    attr = _LoadAttr(_BPF_PROG_TYPE_CGROUP_DEVICE, len(code) // 8,
                     ctypes.addressof(insns), ctypes.addressof(license_text))
    prog_fd = libc.syscall(number, _BPF_PROG_LOAD, ctypes.byref(attr), ctypes.sizeof(attr))
    if prog_fd < 0:
        # Load again with the verifier's log, to say why.
        log = ctypes.create_string_buffer(1 << 20)
        attr.log_level, attr.log_size, attr.log_buf = 1, len(log), ctypes.addressof(log)
        libc.syscall(number, _BPF_PROG_LOAD, ctypes.byref(attr), ctypes.sizeof(attr))
        err = ctypes.get_errno()
        detail = log.value.decode(errors="replace").strip().splitlines()[-1:]
        detail = detail[0] if detail else ""
        raise SetupError(f"linux.resources.devices: load the eBPF device program: "
                         f"{os.strerror(err)}{': ' + detail if detail else ''}")
    try:
        cgroup_fd = os.open(cgroup_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            attach_attr = _AttachAttr(cgroup_fd, prog_fd, _BPF_CGROUP_DEVICE,
                                      _BPF_F_ALLOW_MULTI)
            if libc.syscall(number, _BPF_PROG_ATTACH, ctypes.byref(attach_attr),
                            ctypes.sizeof(attach_attr)) < 0:
                err = ctypes.get_errno()
                raise SetupError(f"linux.resources.devices: attach the eBPF device "
                                 f"program to '{cgroup_dir}': {os.strerror(err)}")
        finally:
            os.close(cgroup_fd)
    finally:
        os.close(prog_fd)
