"""Reading archives without a store: the formats docker, skopeo and OCI
tools write, hostile archives, the tar writer, and ``--change`` parsing."""

from __future__ import annotations

import gzip
import io
import json
import os
import tarfile
import tempfile
import tracemalloc
import zlib
from pathlib import Path

import pytest
import zstandard

from corral.image import mediatypes
from corral.image.archive import docker_archive, oci_layout
from corral.image.archive.importer import apply_changes
from corral.image.archive.oci_layout import DirSource, TarSource, TarWriter
from corral.image.digest import Digest
from corral.image.errors import BadContent, InvalidArgument

from .. import archives
from ..archives import Image, Member

BASE = archives.layer_tar({"bin/hello": b"hello\n", "etc/os-release": b"ID=test\n"})
TOP = archives.layer_tar({"app/data": b"x" * 5000})


def _staging(tmp_path) -> Path:
    return Path(tempfile.mkdtemp(dir=tmp_path))


def _source(tmp_path, members: list[Member]) -> TarSource:
    return TarSource(io.BytesIO(archives.tar_bytes(members)), "archive 't.tar'",
                     _staging(tmp_path))


def _docker(tmp_path, members):
    return docker_archive.read_docker_archive(_source(tmp_path, members))


def _fails(tmp_path, members, *fragments: str) -> str:
    with pytest.raises(BadContent) as caught:
        source = _source(tmp_path, members)
        if source.has("manifest.json"):
            docker_archive.read_docker_archive(source)
        else:
            oci_layout.read_layout(source)
    message = str(caught.value)
    for fragment in fragments:
        assert fragment in message
    return message


# The formats others write ----------------------------------------------------


@pytest.mark.parametrize("style", ["legacy", "skopeo", "blobs"])
def test_docker_archive_styles_give_the_same_image(tmp_path, style):
    image = Image([BASE, TOP], tags=["busybox:latest", "example.com/x/y:1"])
    (found,) = _docker(tmp_path, archives.docker_archive([image], style=style))
    assert str(found.manifest.config.digest) == image.id
    assert [str(d) for d in found.config.diff_ids] == image.diff_ids
    assert found.names == ["docker.io/library/busybox:latest", "example.com/x/y:1"]
    assert [layer.media_type for layer in found.manifest.layers] == [mediatypes.OCI_LAYER] * 2
    assert [str(layer.digest) for layer in found.manifest.layers] == image.diff_ids
    # The manifest we make for an archive without one is the same every time.
    (again,) = _docker(tmp_path, archives.docker_archive([image], style="legacy"))
    assert again.manifest_digest == found.manifest_digest


def test_compressed_layers_in_a_docker_archive_are_checked_uncompressed(tmp_path):
    image = Image([BASE], tags=["a:1"], compress=True)
    (found,) = _docker(tmp_path, archives.docker_archive([image]))
    assert found.manifest.layers[0].media_type == mediatypes.OCI_LAYER_GZIP
    assert str(found.manifest.layers[0].digest) == archives.sha256(image.blobs()[0])
    assert str(found.config.diff_ids[0]) == archives.sha256(BASE)


def test_several_images_share_blobs(tmp_path):
    first = Image([BASE], tags=["a:1"])
    second = Image([BASE, TOP], tags=["b:1"])
    members = archives.docker_archive([first, second])
    assert sum(m.data == BASE for m in members) == 1
    found = _docker(tmp_path, members)
    assert [f.names for f in found] == [["docker.io/library/a:1"], ["docker.io/library/b:1"]]
    assert found[0].blobs[1].path == found[1].blobs[1].path


def test_docker_25_archive_keeps_the_manifest_docker_wrote(tmp_path):
    image = Image([BASE], tags=["a:1"])
    layout = archives.oci_layout([image], names=[{"org.opencontainers.image.ref.name": "1"}])
    members = archives.docker_archive([image], style="blobs") + [
        m for m in layout if not m.name.startswith("blobs/") or
        m.data == archives.manifest_json(image, archives.OCI_LAYER)]
    (found,) = _docker(tmp_path, members)
    assert str(found.manifest_digest) == archives.sha256(
        archives.manifest_json(image, archives.OCI_LAYER))
    assert found.names == ["docker.io/library/a:1"]


def test_oci_layout_names_and_nested_index(tmp_path):
    image = Image([BASE], compress=True)
    members = archives.oci_layout([image, Image([TOP])], names=[
        {"io.containerd.image.name": "docker.io/library/a:1",
         "org.opencontainers.image.ref.name": "1"},
        {"org.opencontainers.image.ref.name": "latest"}])
    found = oci_layout.read_layout(_source(tmp_path, members))
    assert found[0].names == ["docker.io/library/a:1"]
    assert found[0].manifest.layers[0].media_type == mediatypes.OCI_LAYER_GZIP
    assert found[1].names == []  # a bare tag names no repository


def test_oci_ref_name_that_is_a_whole_reference_names_the_image(tmp_path):
    members = archives.oci_layout([Image([BASE])], names=[
        {"org.opencontainers.image.ref.name": "corral.test/busybox:1"}])
    (found,) = oci_layout.read_layout(_source(tmp_path, members))
    assert found.names == ["corral.test/busybox:1"]


def test_digest_name_kept_only_when_true(tmp_path):
    image = Image([BASE])
    digest = archives.sha256(archives.manifest_json(image, archives.OCI_LAYER))
    other = "sha256:" + "0" * 64
    for given, kept in ((digest, [f"docker.io/library/a@{digest}"]), (other, [])):
        members = archives.oci_layout([image], names=[
            {"io.containerd.image.name": f"a@{given}"}])
        (found,) = oci_layout.read_layout(_source(tmp_path, members))
        assert found.names == kept


def test_layout_directory_reads_like_the_tar(tmp_path):
    members = archives.oci_layout([Image([BASE], tags=["a:1"])])
    root = archives.extract_layout(members, tmp_path / "layout")
    (found,) = oci_layout.read_layout(DirSource(root, "archive 'layout'", _staging(tmp_path)))
    assert found.names == ["docker.io/library/a:1"]


def test_layout_directory_refuses_symlinks(tmp_path):
    image = Image([BASE], tags=["a:1"])
    root = archives.extract_layout(archives.oci_layout([image]), tmp_path / "layout")
    layer = root / "blobs/sha256" / archives.hex_of(BASE)
    (tmp_path / "elsewhere").write_bytes(BASE)
    layer.unlink()
    layer.symlink_to(tmp_path / "elsewhere")
    with pytest.raises(BadContent, match=f"blobs/sha256/{archives.hex_of(BASE)}"):
        oci_layout.read_layout(DirSource(root, "archive 'layout'", _staging(tmp_path)))


# Hostile archives -------------------------------------------------------------


def _legacy(*images):
    return archives.docker_archive(list(images) or [Image([BASE], tags=["a:1"])])


@pytest.mark.parametrize("name", ["../evil", "a/../../evil", "/etc/evil"])
def test_member_names_outside_the_archive(tmp_path, name):
    _fails(tmp_path, [Member(name, b"x"), *_legacy()], f"member '{name}'")


@pytest.mark.parametrize("kind,target", [("symlink", "../../etc/passwd"),
                                         ("symlink", "/etc/passwd"),
                                         ("hardlink", "../etc/passwd")])
def test_links_outside_the_archive(tmp_path, kind, target):
    members = [Member("evil", kind=kind, target=target), *_legacy()]
    _fails(tmp_path, members, "member 'evil'", target)


def test_link_loop_and_special_files(tmp_path):
    members = _legacy()
    document = archives.manifest_of(members)
    document[0]["Layers"] = ["loop/a"]
    looped = [Member("loop/a", kind="symlink", target="b"),
              Member("loop/b", kind="symlink", target="a"),
              *archives.with_manifest(members, document)]
    _fails(tmp_path, looped, "member 'loop/a'", "too many links")
    _fails(tmp_path, [Member("pipe", kind="fifo"), *members], "member 'pipe'")


def test_manifest_pointing_outside(tmp_path):
    members = _legacy()
    document = archives.manifest_of(members)
    document[0]["Layers"] = ["../../../etc/shadow"]
    _fails(tmp_path, archives.with_manifest(members, document), "../../../etc/shadow")


def test_layer_that_is_not_its_diff_id(tmp_path):
    members = _legacy()
    layer = archives.manifest_of(members)[0]["Layers"][0]
    bad = archives.replace(members, layer, data=TOP)
    _fails(tmp_path, bad, f"member '{layer}'", "rootfs.diff_ids[0]")


def test_blob_that_is_not_its_name(tmp_path):
    members = archives.docker_archive([Image([BASE], tags=["a:1"])], style="blobs")
    name = f"blobs/sha256/{archives.hex_of(BASE)}"
    _fails(tmp_path, archives.replace(members, name, data=TOP), f"member '{name}'",
           "digest mismatch")


def test_missing_blob_and_wrong_size(tmp_path):
    image = Image([BASE])
    members = archives.oci_layout([image])
    layer = f"blobs/sha256/{archives.hex_of(BASE)}"
    _fails(tmp_path, [m for m in members if m.name != layer], "is missing", layer)
    # A manifest whose descriptor gives another size for the layer.
    manifest = archives.manifest_json(image, archives.OCI_LAYER).replace(
        f'"size": {len(BASE)}'.encode(), f'"size": {len(BASE) + 1}'.encode())
    entries = [m for m in members if m.name not in ("index.json",)
               and m.data != archives.manifest_json(image, archives.OCI_LAYER)]
    entries.append(Member(f"blobs/sha256/{archives.hex_of(manifest)}", manifest))
    index = {"schemaVersion": 2, "manifests": [{
        "mediaType": archives.OCI_MANIFEST, "digest": archives.sha256(manifest),
        "size": len(manifest)}]}
    entries.append(Member("index.json", json.dumps(index).encode()))
    _fails(tmp_path, entries, layer, "size mismatch")


def test_truncated_archive(tmp_path):
    data = archives.tar_bytes(_legacy())
    layer_at = data.index(b"bin/hello")  # inside the first layer's content
    with pytest.raises(BadContent, match="not a readable tar archive|truncated"):
        TarSource(io.BytesIO(data[:layer_at + 700]), "archive 't.tar'", _staging(tmp_path))


def test_duplicate_member_and_not_an_archive(tmp_path):
    members = _legacy()
    _fails(tmp_path, [*members, members[0]], f"member '{members[0].name}'", "twice")
    with pytest.raises(BadContent, match="not a readable tar"):
        TarSource(io.BytesIO(b"hello, I am not a tar" * 100), "archive 'x'",
                  _staging(tmp_path))


def test_bad_manifest_json_fields(tmp_path):
    members = _legacy()
    for document in ([{"Config": 3, "Layers": []}],
                     [{"Config": "x.json", "Layers": "nope"}],
                     {"not": "a list"},
                     [{**archives.manifest_of(members)[0],
                       "RepoTags": ["a@sha256:" + "1" * 64]}]):
        _fails(tmp_path, archives.with_manifest(members, document),
               "member 'manifest.json'")


# Reading is a stream -----------------------------------------------------------


def test_memory_does_not_grow_with_layer_size(tmp_path):
    size = 48 << 20
    archive = tmp_path / "big.tar"
    with open(archive, "wb") as out:
        writer = TarWriter(out)
        writer.add_chunks("big/layer.tar", lambda: (b"\0" * (1 << 20) for _ in range(48)))
        writer.close()
    staging = _staging(tmp_path)
    tracemalloc.start()
    try:
        with open(archive, "rb") as stream:
            source = TarSource(stream, "archive 'big.tar'", staging)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert source.blob("big/layer.tar").size == size
    assert peak < 8 << 20, f"peak {peak} bytes while reading a {size}-byte member"


# Writing ------------------------------------------------------------------------


class _Pipe(io.RawIOBase):
    """A write-only stream that cannot seek, as a pipe or a socket."""

    def __init__(self) -> None:
        self.data = bytearray()

    def writable(self) -> bool:
        return True

    def write(self, chunk) -> int:
        self.data += chunk
        return len(chunk)


@pytest.mark.parametrize("seekable", [True, False])
def test_tar_writer_sizes_members_it_streams(seekable):
    stream = io.BytesIO() if seekable else _Pipe()
    writer = TarWriter(stream)
    writer.directory("blobs/")
    writer.add("small", b"abc")
    size = writer.add_chunks("big", lambda: (bytes([i]) * 1000 for i in range(7)))
    writer.close()
    data = stream.getvalue() if seekable else bytes(stream.data)
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        assert tar.getnames() == ["blobs", "small", "big"]
        assert tar.extractfile("big").read() == b"".join(bytes([i]) * 1000 for i in range(7))
        assert tar.getmember("big").size == size == 7000


def test_decompressed_handles_concatenated_and_broken_streams():
    data = os.urandom(3000)
    joined = gzip.compress(data[:1000]) + gzip.compress(data[1000:])
    assert b"".join(oci_layout.decompressed(io.BytesIO(joined), "gzip")) == data
    frames = (zstandard.ZstdCompressor().compress(data[:10])
              + zstandard.ZstdCompressor().compress(data[10:]))
    assert b"".join(oci_layout.decompressed(io.BytesIO(frames), "zstd")) == data
    with pytest.raises(zlib.error):
        b"".join(oci_layout.decompressed(io.BytesIO(gzip.compress(data)[:-20]), "gzip"))


def test_digest_of_blob_names():
    assert oci_layout.digest_of_name("blobs/sha256/" + "a" * 64) == Digest("sha256", "a" * 64)
    assert oci_layout.digest_of_name("blobs/sha256/xyz") is None
    assert oci_layout.digest_of_name("manifest.json") is None


# --change -----------------------------------------------------------------------


def test_changes_in_json_and_shell_form():
    config = apply_changes({}, [
        'CMD ["/bin/echo", "hi"]', "ENTRYPOINT /bin/sh -x", "ENV A=1 B=\"two words\"",
        "ENV LEGACY value with spaces", "ENV A=3", "WORKDIR /srv", "WORKDIR app",
        "USER 1000:1000", 'LABEL org.x="y z" k=v', "EXPOSE 80 53/udp 8000-8002",
        'VOLUME ["/data"]', "VOLUME /a /b", "STOPSIGNAL SIGINT", "cmd [not json",
    ])
    assert config["Entrypoint"] == ["/bin/sh", "-c", "/bin/sh -x"]
    assert config["Cmd"] == ["/bin/sh", "-c", "[not json"]
    assert config["Env"] == ["B=two words", "LEGACY=value with spaces", "A=3"]
    assert config["WorkingDir"] == "/srv/app"
    assert config["User"] == "1000:1000"
    assert config["Labels"] == {"org.x": "y z", "k": "v"}
    assert sorted(config["ExposedPorts"]) == ["53/udp", "80/tcp", "8000/tcp", "8001/tcp",
                                              "8002/tcp"]
    assert sorted(config["Volumes"]) == ["/a", "/b", "/data"]
    assert config["StopSignal"] == "SIGINT"
    assert apply_changes({}, ['CMD ["/bin/true"]'])["Cmd"] == ["/bin/true"]


@pytest.mark.parametrize("change,fragment", [
    ("RUN rm -rf /", "unknown instruction 'RUN'"),
    ("CMD", "needs an argument"),
    ("EXPOSE 70000", "'70000'"),
    ("EXPOSE 80/icmp", "'80/icmp'"),
    ("STOPSIGNAL SIGNOPE", "unknown signal"),
    ("ENV A=\"unbalanced", "change 'ENV A=\"unbalanced'"),
    ("LABEL =v", "'=v'"),
    ("USER a b", "one user"),
    ("   ", "empty instruction"),
])
def test_bad_changes(change, fragment):
    with pytest.raises(InvalidArgument) as caught:
        apply_changes({}, [change])
    assert fragment in str(caught.value)


def test_index_entries_name_tags_and_true_digests():
    manifest = Digest("sha256", "a" * 64)
    saved = oci_layout.SavedImage(
        oci_layout.manifests.Descriptor(mediatypes.OCI_MANIFEST, manifest, 10),
        {"os": "linux", "architecture": "amd64"},
        ["docker.io/library/a:1", f"docker.io/library/a@{manifest}",
         f"docker.io/library/a@sha256:{'b' * 64}"])
    entries = oci_layout.index_entries(saved)
    assert [e["annotations"] for e in entries] == [
        {oci_layout.IMAGE_NAME: "docker.io/library/a:1", oci_layout.REF_NAME: "1"},
        {oci_layout.IMAGE_NAME: f"docker.io/library/a@{manifest}"}]
    assert all(e["platform"]["os"] == "linux" for e in entries)
    saved.names = []
    assert "annotations" not in oci_layout.index_entries(saved)[0]


def test_layout_tarred_by_gnu_tar_with_dot_names(tmp_path):
    """``tar -C layout -cf x.tar .`` names members ``./...`` after a ``.``."""
    import subprocess

    members = archives.oci_layout([Image([BASE], tags=["a:1"])])
    root = archives.extract_layout(members, tmp_path / "layout")
    subprocess.run(["tar", "-C", str(root), "-czf", str(tmp_path / "x.tgz"), "."],
                   check=True)
    with open(tmp_path / "x.tgz", "rb") as stream:
        source = TarSource(stream, "archive 'x.tgz'", _staging(tmp_path))
    (found,) = oci_layout.read_layout(source)
    assert found.names == ["docker.io/library/a:1"]
