"""Run a shell command in a fresh qemu guest with a pure cgroup v2 hierarchy.

The test machines have hybrid cgroups (v1 controllers, plus a cgroup2 at
/sys/fs/cgroup/unified with only hugetlb in it), so the runtime's cgroup v2
code can only be seen working in a guest. The guest is the one described in
shared/PEERS.md ("A guest with a pure cgroup v2 hierarchy"):

- Debian's own kernel, from the package linux-image-amd64 depends on, fetched
  with ``apt-get download`` and unpacked with ``dpkg-deb -x`` (installing it
  would drag in udev and systemd upgrades). Its bzImage is decompressed once
  into an ELF vmlinux, which ``-M microvm`` boots directly (PVH).
- qemu's software emulation (TCG): /dev/kvm here is a nested PVM one that
  hangs stock kernels.
- A busybox initramfs that loads the 9p and overlay modules, mounts the
  host's ``/`` read-only over 9p with a tmpfs overlay on top, and switches
  to it; there the second stage mounts cgroup2 at /sys/fs/cgroup, enables
  every controller for the root's children (as systemd does on a v2 host),
  runs the command, writes its output and status to a second, read-write 9p
  share, and powers off.

So the host's Python, its venv and a project checked out on the host run
unchanged in the guest, and whatever the host prepared (a bundle under /tmp)
is visible there; what the guest writes goes to its tmpfs and disappears.

Code runs 20 to 50 times slower in the guest than on the host (``python3 -c
pass`` takes about a second): run only what needs cgroup v2 there.

The kernel and initramfs are built once into ``CACHE_DIR`` (override with
CORRAL_GUEST_CACHE) and re-used; delete the directory to fetch the current
kernel again. ``run`` raises ``GuestUnavailable`` when the guest cannot be
had on this machine (tests skip with its text as the reason) and
``GuestError`` when a guest was started but did not report.
"""

from __future__ import annotations

import fcntl
import hashlib
import lzma
import os
import shutil
import struct
import subprocess
import tempfile
import time
import zlib
from pathlib import Path

CACHE_DIR = Path(os.environ.get("CORRAL_GUEST_CACHE", "/var/cache/corral-tests/guest"))
QEMU = "qemu-system-x86_64"
QEMU_PACKAGE = "qemu-system-x86"
KERNEL_META_PACKAGE = "linux-image-amd64"
BUSYBOX = "/bin/busybox"  # Debian's busybox-static: it runs without a libc in the initramfs

# The modules the initramfs loads (with what they depend on, found in each
# module's .modinfo): the transport of qemu's microvm devices, 9p over it,
# and overlayfs. Everything else the guest needs is built into Debian's
# kernel: all the cgroup controllers, tmpfs, devtmpfs, the 8250 console.
WANTED_MODULES = ("virtio_mmio", "9pnet_virtio", "9p", "overlay")

# The 9p tags of the two shares.
ROOT_TAG = "hostroot"
OUT_TAG = "guestout"


class GuestUnavailable(Exception):
    """No guest can be had on this machine (no qemu, no kernel, not root)."""


class GuestError(Exception):
    """A guest was started but did not report; the message ends with its console."""


# -- the initramfs -------------------------------------------------------------------

# /init of the initramfs, run by busybox's sh. Any failure powers off at once,
# so a broken guest costs seconds rather than the caller's whole timeout.
INIT = f"""#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin
fail() {{ echo "corral-guest: $*"; poweroff -f; }}
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
for module in $(cat /modules/order); do
  insmod /modules/$module.ko || fail "insmod $module"
done
mount -t 9p -o trans=virtio,version=9p2000.L,ro,cache=loose,msize=512000 \\
  {ROOT_TAG} /lower || fail "mount the host's / over 9p"
mount -t tmpfs -o mode=0755 overlay-rw /rw || fail "mount the overlay's tmpfs"
mkdir /rw/upper /rw/work
mount -t overlay -o lowerdir=/lower,upperdir=/rw/upper,workdir=/rw/work \\
  overlay /newroot || fail "mount the overlay"
mount -t tmpfs -o mode=0755 run /newroot/run || fail "mount /run"
mkdir /newroot/run/guest
mount -t 9p -o trans=virtio,version=9p2000.L,msize=512000 \\
  {OUT_TAG} /newroot/run/guest || fail "mount the output share"
cp /stage2 /newroot/run/stage2
for dir in proc sys dev; do mount --move /$dir /newroot/$dir; done
exec switch_root /newroot {BUSYBOX} sh /run/stage2
fail "switch_root"
"""

# The second stage, pid 1 in the host's tree (on its tmpfs overlay).
STAGE2 = f"""export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export HOME=/root LANG=C.UTF-8 PYTHONDONTWRITEBYTECODE=1
mount -t cgroup2 cgroup2 /sys/fs/cgroup
for controller in $(cat /sys/fs/cgroup/cgroup.controllers); do
  echo "+$controller" > /sys/fs/cgroup/cgroup.subtree_control
done
mkdir -p /dev/pts /dev/shm /dev/mqueue
mount -t devpts -o ptmxmode=0666 devpts /dev/pts
mount -t tmpfs -o mode=1777 shm /dev/shm
mount -t mqueue mqueue /dev/mqueue
hostname corral-guest
cd /
: >/run/guest/started
/bin/sh /run/guest/command </dev/null >/run/guest/output 2>&1
echo $? >/run/guest/status
{BUSYBOX} poweroff -f
"""


def _cpio(entries: list[tuple[str, int, bytes, int]]) -> bytes:
    """A newc cpio archive of (name, mode, data, rdev) entries."""
    out = bytearray()

    def pad() -> None:
        out.extend(b"\0" * (-len(out) % 4))

    for ino, (name, mode, data, rdev) in enumerate([*entries, ("TRAILER!!!", 0, b"", 0)]):
        encoded = name.encode() + b"\0"
        fields = (ino + 1, mode, 0, 0, 1, 0, len(data), 0, 0, rdev >> 8, rdev & 0xFF,
                  len(encoded), 0)
        out.extend(b"070701" + b"".join(b"%08X" % field for field in fields))
        out.extend(encoded)
        pad()
        out.extend(data)
        pad()
    return bytes(out)


def _build_initrd(kernel_dir: Path, path: Path) -> None:
    order = (kernel_dir / "modules" / "order").read_text().split()
    directory, executable, file, char = 0o040755, 0o100755, 0o100644, 0o020600
    entries = [(name, directory, b"", 0)
               for name in ("bin", "dev", "proc", "sys", "lower", "rw", "newroot", "modules")]
    entries += [
        ("dev/console", char, b"", (5 << 8) | 1),
        ("init", executable, INIT.encode(), 0),
        ("stage2", file, STAGE2.encode(), 0),
        ("bin/busybox", executable, Path(BUSYBOX).read_bytes(), 0),
        ("modules/order", file, "\n".join(order).encode() + b"\n", 0),
    ]
    entries += [(f"modules/{name}.ko", file,
                 (kernel_dir / "modules" / f"{name}.ko").read_bytes(), 0) for name in order]
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    tmp.write_bytes(_cpio(entries))
    os.replace(tmp, path)


# -- the kernel ----------------------------------------------------------------------


def _modinfo_depends(module: Path) -> list[str]:
    """The ``depends=`` of a kernel module, read from its .modinfo ELF section."""
    data = module.read_bytes()
    shoff, = struct.unpack_from("<Q", data, 0x28)
    shentsize, shnum, shstrndx = struct.unpack_from("<HHH", data, 0x3A)

    def section(index: int) -> tuple[int, int, int]:
        name, _, _, _, offset, size = struct.unpack_from(
            "<IIQQQQ", data, shoff + index * shentsize)
        return name, offset, size

    _, strtab, _ = section(shstrndx)
    for index in range(shnum):
        name, offset, size = section(index)
        if data[strtab + name:].startswith(b".modinfo\0"):
            for entry in data[offset:offset + size].split(b"\0"):
                if entry.startswith(b"depends="):
                    return [dep for dep in entry[8:].decode().split(",") if dep]
    return []


def _module_order(tree: Path) -> list[tuple[str, Path]]:
    """WANTED_MODULES and their dependencies, each after what it needs."""
    found = {path.name.removesuffix(".ko").replace("-", "_"): path
             for path in tree.rglob("*.ko")}
    order: list[tuple[str, Path]] = []

    def visit(name: str) -> None:
        name = name.replace("-", "_")
        if any(seen == name for seen, _ in order):
            return
        if name not in found:
            builtin = (tree / "modules.builtin").read_text()
            if f"/{name}.ko" in builtin.replace("-", "_"):
                return
            raise GuestUnavailable(f"the guest kernel has no module {name}")
        for dependency in _modinfo_depends(found[name]):
            visit(dependency)
        order.append((name, found[name]))

    for name in WANTED_MODULES:
        visit(name)
    return order


def _decompress_kernel(bzimage: bytes) -> bytes:
    """The ELF vmlinux inside a bzImage (xz or gzip), which microvm boots fastest."""
    for magic in (b"\xfd7zXZ\0", b"\x1f\x8b\x08"):
        offset = bzimage.find(magic)
        while offset != -1:
            try:
                if magic.startswith(b"\xfd"):
                    elf = lzma.LZMADecompressor(lzma.FORMAT_XZ).decompress(bzimage[offset:])
                else:
                    elf = zlib.decompressobj(16 + zlib.MAX_WBITS).decompress(bzimage[offset:])
            except (lzma.LZMAError, zlib.error):
                elf = b""
            if elf.startswith(b"\x7fELF"):
                return elf
            offset = bzimage.find(magic, offset + 1)
    raise GuestUnavailable("the kernel image holds no xz or gzip vmlinux")


def _apt(*args: str, cwd: str | None = None) -> subprocess.CompletedProcess:
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    return subprocess.run(["apt-get", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=600)


def _kernel_package() -> str:
    """The versioned package linux-image-amd64 depends on (linux-image-6.1.0-N-amd64)."""
    for attempt in range(2):
        result = subprocess.run(["apt-cache", "depends", KERNEL_META_PACKAGE],
                                capture_output=True, text=True)
        for line in result.stdout.splitlines():
            name = line.strip().removeprefix("Depends:").strip()
            if line.strip().startswith("Depends:") and name.startswith("linux-image-"):
                return name
        if attempt == 0:
            _apt("update", "-q")
    raise GuestUnavailable(f"apt-cache knows no {KERNEL_META_PACKAGE} (is this Debian amd64?)")


def _fetch_kernel(destination: Path) -> None:
    """vmlinux and the modules the initramfs loads, into DESTINATION."""
    package = _kernel_package()
    with tempfile.TemporaryDirectory(prefix="corral-guest-kernel-") as work:
        # apt's download sandbox user cannot write here; it falls back on root.
        result = _apt("download", package, cwd=work)
        if result.returncode != 0:  # a package list older than the mirror
            _apt("update", "-q")
            result = _apt("download", package, cwd=work)
        debs = list(Path(work).glob("*.deb"))
        if result.returncode != 0 or not debs:
            raise GuestUnavailable(f"apt-get download {package} failed: {result.stderr.strip()}")
        tree = Path(work) / "tree"
        subprocess.run(["dpkg-deb", "-x", str(debs[0]), str(tree)], check=True)
        bzimages = list((tree / "boot").glob("vmlinuz-*"))
        module_trees = list((tree / "lib" / "modules").iterdir())
        if len(bzimages) != 1 or len(module_trees) != 1:
            raise GuestUnavailable(f"{package} holds no single kernel and module tree")
        (destination / "modules").mkdir(parents=True)
        (destination / "vmlinux").write_bytes(_decompress_kernel(bzimages[0].read_bytes()))
        order = _module_order(module_trees[0])
        for name, path in order:
            shutil.copyfile(path, destination / "modules" / f"{name}.ko")
        (destination / "modules" / "order").write_text("".join(f"{n}\n" for n, _ in order))
        (destination / "package").write_text(package + "\n")


def _ensure_qemu() -> str:
    qemu = shutil.which(QEMU)
    if qemu:
        return qemu
    if os.geteuid() != 0:
        raise GuestUnavailable(f"{QEMU} is missing (apt-get install {QEMU_PACKAGE}, as root)")
    result = _apt("install", "-y", "-q", "--no-install-recommends", QEMU_PACKAGE)
    if result.returncode != 0:
        _apt("update", "-q")
        result = _apt("install", "-y", "-q", "--no-install-recommends", QEMU_PACKAGE)
    qemu = shutil.which(QEMU)
    if not qemu:
        raise GuestUnavailable(
            f"apt-get install {QEMU_PACKAGE} failed: {result.stderr.strip()[-500:]}")
    return qemu


class Image:
    """The kernel and initramfs of the guest, in the cache."""

    def __init__(self, qemu: str, kernel: Path, initrd: Path, package: str) -> None:
        self.qemu = qemu
        self.kernel = kernel
        self.initrd = initrd
        self.package = package


def image() -> Image:
    """Build the guest's kernel and initramfs once (under a lock), then re-use them."""
    if not Path(BUSYBOX).exists():
        raise GuestUnavailable(f"{BUSYBOX} is missing (apt-get install busybox-static)")
    qemu = _ensure_qemu()
    try:
        CACHE_DIR.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise GuestUnavailable(
            f"cannot make the guest cache '{CACHE_DIR}': {exc.strerror}") from exc
    with open(CACHE_DIR / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        kernel_dir = CACHE_DIR / "kernel"
        if not (kernel_dir / "package").exists():
            shutil.rmtree(kernel_dir, ignore_errors=True)
            partial = CACHE_DIR / f"kernel.partial-{os.getpid()}"
            shutil.rmtree(partial, ignore_errors=True)
            try:
                _fetch_kernel(partial)
            except BaseException:
                shutil.rmtree(partial, ignore_errors=True)
                raise
            os.rename(partial, kernel_dir)
        # The initramfs is named after what goes into it, so a change to the
        # scripts above (or a new busybox or kernel) builds a new one.
        digest = hashlib.sha256()
        for part in (INIT, STAGE2, (kernel_dir / "package").read_text()):
            digest.update(part.encode())
        busybox = os.stat(BUSYBOX)
        digest.update(f"{busybox.st_size}:{busybox.st_mtime_ns}".encode())
        initrd = CACHE_DIR / f"initrd-{digest.hexdigest()[:16]}.cpio"
        if not initrd.exists():
            for old in CACHE_DIR.glob("initrd-*.cpio"):
                old.unlink()
            _build_initrd(kernel_dir, initrd)
    return Image(qemu, kernel_dir / "vmlinux", initrd,
                 (kernel_dir / "package").read_text().strip())


# -- running a guest -----------------------------------------------------------------


def _tsc_khz() -> str | None:
    """The host's TSC rate, for tsc_early_khz=: without it about a third of the
    boots hang after "Unable to calibrate against PIT"."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("cpu MHz"):
                    return str(int(float(line.split(":")[1]) * 1000))
    except (OSError, ValueError):
        pass
    return None


def _qemu_command(built: Image, share: Path, console: Path, memory_mb: int,
                  cpus: int) -> list[str]:
    append = ["console=ttyS0", "quiet", "panic=-1", "cryptomgr.notests",
              "rdinit=/init", "random.trust_cpu=on"]
    tsc = _tsc_khz()
    if tsc:
        append.append(f"tsc_early_khz={tsc}")
    return [
        built.qemu, "-M", "microvm,x-option-roms=off", "-accel", "tcg", "-cpu", "max",
        "-smp", str(cpus), "-m", str(memory_mb),
        "-nodefaults", "-no-user-config", "-display", "none", "-no-reboot",
        "-serial", f"file:{console}",
        "-kernel", str(built.kernel), "-initrd", str(built.initrd),
        "-append", " ".join(append),
        "-fsdev", f"local,id={ROOT_TAG},path=/,security_model=passthrough,readonly=on,"
                  "multidevs=remap",
        "-device", f"virtio-9p-device,fsdev={ROOT_TAG},mount_tag={ROOT_TAG}",
        "-fsdev", f"local,id={OUT_TAG},path={share},security_model=passthrough",
        "-device", f"virtio-9p-device,fsdev={OUT_TAG},mount_tag={OUT_TAG}",
    ]


def _tail(path: Path, lines: int = 40) -> str:
    try:
        text = path.read_text(errors="replace").strip()
    except OSError:
        text = ""
    return "\n".join(text.splitlines()[-lines:]) or "(nothing)"


class Run:
    """What one guest did: the command's exit status and output, and timings."""

    def __init__(self, status: int, output: str, console: str, seconds: float) -> None:
        self.status = status
        self.output = output
        self.console = console
        self.seconds = seconds

    def __iter__(self):
        return iter((self.status, self.output))


def _boot(built: Image, share: Path, console: Path, memory_mb: int, cpus: int,
          timeout: float, boot_timeout: float) -> bool:
    """Run one guest to its end; False if it never reached the command."""
    started = time.monotonic()
    with open(console.with_suffix(".qemu"), "w") as qemu_log:
        process = subprocess.Popen(_qemu_command(built, share, console, memory_mb, cpus),
                                   stdin=subprocess.DEVNULL, stdout=qemu_log,
                                   stderr=subprocess.STDOUT)
    try:
        while process.poll() is None:
            elapsed = time.monotonic() - started
            if not (share / "started").exists() and elapsed > boot_timeout:
                return False
            if elapsed > timeout:
                raise GuestError(f"the guest did not finish within {timeout:.0f} s; "
                                 f"its console:\n{_tail(console)}")
            time.sleep(0.05)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    return (share / "started").exists()


def run(command: str, *, timeout: float = 300, boot_timeout: float = 60,
        memory_mb: int = 1024, cpus: int = 2) -> Run:
    """Boot a fresh guest, run COMMAND there with /bin/sh, and power it off.

    Returns a ``Run``, which unpacks as ``(status, output)``: the command's
    exit status and its stdout and stderr together. A guest that has not
    reached the command after BOOT_TIMEOUT seconds (a rare hang early in the
    kernel's boot) is killed and booted once more. Raises GuestUnavailable
    if no guest can be built here, GuestError if the guest does not report
    within TIMEOUT seconds (it is killed then).
    """
    built = image()
    with tempfile.TemporaryDirectory(prefix="corral-guest-") as work:
        share = Path(work) / "share"
        share.mkdir()
        (share / "command").write_text(command if command.endswith("\n") else command + "\n")
        console = Path(work) / "console.log"
        began = time.monotonic()
        for attempt in range(2):
            try:
                if _boot(built, share, console, memory_mb, cpus, timeout, boot_timeout):
                    break
            except GuestError:
                # Under emulation a guest starved of host CPU can stall for
                # good (RCU stall warnings on its console); boot it afresh
                # once, with the command's marks cleared.
                if attempt == 1:
                    raise
                for mark in ("started", "status", "output"):
                    (share / mark).unlink(missing_ok=True)
                continue
            if attempt == 1:
                raise GuestError(f"the guest did not reach the command twice "
                                 f"(qemu said: {_tail(console.with_suffix('.qemu'), 5)}); "
                                 f"its console:\n{_tail(console)}")
        seconds = time.monotonic() - began
        try:
            status = int((share / "status").read_text())
        except (OSError, ValueError):
            raise GuestError(f"the guest reported no status (qemu said: "
                             f"{_tail(console.with_suffix('.qemu'), 5)}); "
                             f"its console:\n{_tail(console)}") from None
        output = (share / "output").read_text(errors="replace")
        return Run(status, output, console.read_text(errors="replace"), seconds)


if __name__ == "__main__":
    import sys

    guest = run(" ".join(sys.argv[1:]) or "cat /proc/self/cgroup /sys/fs/cgroup/cgroup.controllers")
    sys.stdout.write(guest.output)
    print(f"[status {guest.status}, {guest.seconds:.1f} s]", file=sys.stderr)
    sys.exit(guest.status)
