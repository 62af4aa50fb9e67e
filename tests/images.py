"""Test images as OCI image layouts (OCI image spec, image-layout.md), built
in Python, and pushed to a test registry with skopeo.

A layout is a directory with ``oci-layout``, ``index.json`` and
``blobs/sha256/``; ``build_layout`` writes one from layers (gzip tars made
with tarfile, deterministic: fixed mtimes and owners) and an image config.
``busybox_layout`` is a small runnable image from Debian's busybox-static;
``layered_layout`` a larger one of generated files for pull benchmarks;
``umoci_layout`` one made by umoci, to show we read what other tools write.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import random
import shutil
import subprocess
import tarfile
from dataclasses import dataclass, field
from pathlib import Path

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
BUSYBOX = Path("/bin/busybox")
_MTIME = 1_700_000_000  # fixed, so that a layer's bytes depend on its files only


@dataclass
class Blob:
    digest: str  # "sha256:..."
    size: int
    media_type: str


@dataclass
class Layout:
    """An OCI layout on disk and what is in it.

    ``layers`` are the compressed blobs, in order; ``diff_ids`` the digests
    of the uncompressed tars; ``manifest`` is the manifest blob, whose
    digest is what a registry will serve for ``tag``.
    """

    path: Path
    tag: str
    manifest: Blob
    config: Blob
    layers: list[Blob]
    diff_ids: list[str]
    config_data: dict = field(repr=False, default_factory=dict)

    def blob_path(self, digest: str) -> Path:
        return self.path / "blobs" / "sha256" / digest.removeprefix("sha256:")

    def blob(self, digest: str) -> bytes:
        return self.blob_path(digest).read_bytes()


# --- tar layers ------------------------------------------------------------

class LayerBuilder:
    """Builds one layer tar in memory: add files, directories and symlinks."""

    def __init__(self) -> None:
        self._buffer = io.BytesIO()
        self._tar = tarfile.open(fileobj=self._buffer, mode="w", format=tarfile.PAX_FORMAT)
        self._dirs: set[str] = set()

    def directory(self, name: str, mode: int = 0o755, uid: int = 0, gid: int = 0) -> None:
        name = name.strip("/")
        if name in self._dirs:
            return
        self._parents(name)
        self._dirs.add(name)
        self._tar.addfile(self._info(name, tarfile.DIRTYPE, mode, uid, gid))

    def file(self, name: str, data: bytes, mode: int = 0o644, uid: int = 0,
             gid: int = 0) -> None:
        name = name.strip("/")
        self._parents(name)
        info = self._info(name, tarfile.REGTYPE, mode, uid, gid)
        info.size = len(data)
        self._tar.addfile(info, io.BytesIO(data))

    def symlink(self, name: str, target: str) -> None:
        name = name.strip("/")
        self._parents(name)
        info = self._info(name, tarfile.SYMTYPE, 0o777, 0, 0)
        info.linkname = target
        self._tar.addfile(info)

    def tar(self) -> bytes:
        self._tar.close()
        return self._buffer.getvalue()

    def _parents(self, name: str) -> None:
        parent = name.rpartition("/")[0]
        if parent and parent not in self._dirs:
            self.directory(parent)

    @staticmethod
    def _info(name: str, kind: bytes, mode: int, uid: int, gid: int) -> tarfile.TarInfo:
        info = tarfile.TarInfo(name)
        info.type, info.mode, info.uid, info.gid, info.mtime = kind, mode, uid, gid, _MTIME
        return info


# --- layouts ---------------------------------------------------------------

def image_config(diff_ids: list[str], *, entrypoint: list[str] | None = None,
                 cmd: list[str] | None = None, env: list[str] | None = None,
                 working_dir: str | None = None, user: str | None = None,
                 labels: dict[str, str] | None = None,
                 exposed_ports: list[str] | None = None,
                 volumes: list[str] | None = None) -> dict:
    """An OCI image config (config.md) for amd64 Linux with these settings."""
    config: dict = {"Env": env or ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:"
                                   "/usr/bin:/sbin:/bin"]}
    for key, value in (("Entrypoint", entrypoint), ("Cmd", cmd), ("WorkingDir", working_dir),
                       ("User", user), ("Labels", labels)):
        if value is not None:
            config[key] = value
    if exposed_ports:
        config["ExposedPorts"] = {port: {} for port in exposed_ports}
    if volumes:
        config["Volumes"] = {volume: {} for volume in volumes}
    return {"created": "2024-01-01T00:00:00Z", "architecture": "amd64", "os": "linux",
            "config": config, "rootfs": {"type": "layers", "diff_ids": diff_ids},
            "history": [{"created": "2024-01-01T00:00:00Z", "created_by": "corral tests"}
                        for _ in diff_ids]}


def build_layout(path: Path, tars: list[bytes], *, tag: str = "latest",
                 compresslevel: int = 6, **config_options) -> Layout:
    """Write an OCI layout of one image: ``tars`` are the uncompressed
    layers, bottom first; ``config_options`` go to ``image_config``."""
    (path / "blobs" / "sha256").mkdir(parents=True, exist_ok=True)
    layers, diff_ids = [], []
    for tar in tars:
        diff_ids.append("sha256:" + hashlib.sha256(tar).hexdigest())
        compressed = gzip.compress(tar, compresslevel=compresslevel, mtime=0)
        layers.append(_write_blob(path, compressed, OCI_LAYER_GZIP))
    config_data = image_config(diff_ids, **config_options)
    config = _write_blob(path, json.dumps(config_data).encode(), OCI_CONFIG)
    manifest_data = {"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                     "config": _descriptor(config),
                     "layers": [_descriptor(layer) for layer in layers]}
    manifest = _write_blob(path, json.dumps(manifest_data).encode(), OCI_MANIFEST)
    index = {"schemaVersion": 2, "manifests": [
        {**_descriptor(manifest), "annotations": {"org.opencontainers.image.ref.name": tag}}]}
    (path / "index.json").write_text(json.dumps(index))
    (path / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')
    return Layout(path, tag, manifest, config, layers, diff_ids, config_data)


def _write_blob(path: Path, data: bytes, media_type: str) -> Blob:
    digest = hashlib.sha256(data).hexdigest()
    (path / "blobs" / "sha256" / digest).write_bytes(data)
    return Blob(f"sha256:{digest}", len(data), media_type)


def _descriptor(blob: Blob) -> dict:
    return {"mediaType": blob.media_type, "digest": blob.digest, "size": blob.size}


def busybox_tar() -> bytes:
    """A root filesystem: Debian's static busybox with every applet linked,
    root and a user ``app`` (uid and gid 1000)."""
    layer = LayerBuilder()
    for name in ("bin", "sbin", "usr/bin", "usr/sbin", "etc", "proc", "sys", "dev", "root"):
        layer.directory(name)
    layer.directory("tmp", mode=0o1777)
    layer.directory("home/app", uid=1000, gid=1000)
    layer.file("bin/busybox", BUSYBOX.read_bytes(), mode=0o755)
    applets = subprocess.run([str(BUSYBOX), "--list-full"], check=True, capture_output=True,
                             text=True).stdout.split()
    for applet in applets:
        if applet != "bin/busybox":
            layer.symlink(applet, "/bin/busybox")
    layer.file("etc/passwd", b"root:x:0:0:root:/root:/bin/sh\n"
                             b"app:x:1000:1000:app:/home/app:/bin/sh\n")
    layer.file("etc/group", b"root:x:0:\napp:x:1000:\n")
    return layer.tar()


def busybox_layout(path: Path, *, tag: str = "1.35", **config_options) -> Layout:
    """A one-layer busybox image; Cmd ["sh"] unless ``config_options`` say."""
    config_options.setdefault("cmd", ["sh"])
    return build_layout(path, [busybox_tar()], tag=tag, **config_options)


def layered_layout(path: Path, layers: int = 5, total_mb: float = 100, seed: int = 0, *,
                   tag: str = "latest", compresslevel: int = 6) -> Layout:
    """An image of ``layers`` layers of generated files, about ``total_mb``
    MB uncompressed in all; sizes from 1 KiB to a few MiB, half of the bytes
    compressible text and half random, the same for the same ``seed``."""
    rng = random.Random(seed)
    budget = int(total_mb * 1024 * 1024)
    shares = [rng.uniform(0.5, 1.5) for _ in range(layers)]
    tars = []
    for index, share in enumerate(shares):
        layer = LayerBuilder()
        left, count = int(budget * share / sum(shares)), 0
        while left > 0:
            size = min(left, int(rng.choice((1, 16, 256, 1024, 4096)) * 1024
                                 * rng.uniform(0.5, 1.5)) or 1)
            layer.file(f"data/layer{index}/d{count % 16}/f{count}", _content(rng, size))
            left, count = left - size, count + 1
        tars.append(layer.tar())
    return build_layout(path, tars, tag=tag, compresslevel=compresslevel,
                        cmd=["sh"], labels={"corral.test": "layered"})


def _content(rng: random.Random, size: int) -> bytes:
    if rng.random() < 0.5:
        return rng.randbytes(size)
    words = b" ".join(rng.choice((b"alpha", b"beta", b"gamma", b"delta", b"corral",
                                  b"container", b"layer\n")) for _ in range(64))
    return (words * (size // len(words) + 1))[:size]


def umoci_layout(path: Path, workdir: Path, *, tag: str = "umoci") -> Path:
    """A layout made by umoci (init, new, unpack, repack, config) holding
    busybox and a Cmd; returns the layout path."""
    bundle = workdir / "umoci-bundle"
    image = f"{path}:{tag}"
    _run("umoci", "init", "--layout", str(path))
    _run("umoci", "new", "--image", image)
    _run("umoci", "unpack", "--image", image, str(bundle))
    (bundle / "rootfs" / "bin").mkdir(parents=True, exist_ok=True)
    shutil.copy2(BUSYBOX, bundle / "rootfs" / "bin" / "busybox")
    (bundle / "rootfs" / "bin" / "sh").symlink_to("busybox")
    _run("umoci", "repack", "--image", image, str(bundle))
    _run("umoci", "config", "--image", image, "--config.cmd", "sh")
    return path


def push(layout_path: Path, tag: str, destination: str, *, creds: str | None = None,
         cert_dir: Path | None = None) -> None:
    """``skopeo copy`` the layout's ``tag`` to ``docker://destination``
    (``HOST/NAME:TAG``)."""
    args = ["skopeo", "copy", "--quiet", "--dest-tls-verify=false"]
    if creds:
        args += ["--dest-creds", creds]
    if cert_dir:
        args += ["--dest-cert-dir", str(cert_dir)]
    _run(*args, f"oci:{layout_path}:{tag}", f"docker://{destination}")


def inspect(reference: str, *, creds: str | None = None, raw: bool = False) -> dict:
    """``skopeo inspect`` of ``docker://reference`` (the manifest with --raw)."""
    args = ["skopeo", "inspect", "--tls-verify=false"]
    if creds:
        args += ["--creds", creds]
    if raw:
        args.append("--raw")
    return json.loads(_run(*args, f"docker://{reference}"))


def _run(*args: str) -> str:
    result = subprocess.run(args, capture_output=True, text=True, timeout=120)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} exited {result.returncode}: {result.stderr}")
    return result.stdout
