"""Pure checks of layer unpacking: entry names, the tar reader's parsing of
ustar, GNU and PAX headers, and how it refuses broken streams."""

from __future__ import annotations

import gzip
import io
import tarfile

import pytest

from corral.image.errors import LayerError
from corral.image.tarstream import TarReader, _Inflate, _number, _parse_pax, clean_name
from tests.layers import Layer, compress


@pytest.mark.parametrize("raw, clean", [
    (b"a/b", b"a/b"), (b"/etc/passwd", b"etc/passwd"), (b"./a//b/./c/", b"a/b/c"),
    (b"./", b""), (b"/", b""), (b"a/..b", b"a/..b"), (b"...", b"..."),
])
def test_clean_name_strips_like_tar(raw, clean):
    assert clean_name(raw) == clean


@pytest.mark.parametrize("raw", [b"../x", b"a/../../x", b"a/..", b"/..", b"a/b/../c"])
def test_clean_name_refuses_dotdot(raw):
    with pytest.raises(ValueError, match=r"'\.\.' component"):
        clean_name(raw)


def _entries(data: bytes) -> list:
    reader = TarReader(io.BytesIO(data), "test")
    out = []
    while (entry := reader.next()) is not None:
        sink = io.BytesIO()
        if entry.kind == b"0":
            import os
            read_fd, write_fd = os.pipe()
            try:
                reader.copy_data(write_fd)
                os.close(write_fd)
                sink.write(os.read(read_fd, 1 << 20))
            finally:
                os.close(read_fd)
        out.append((entry, sink.getvalue()))
    reader.drain()
    assert reader.size == len(data)
    return out


@pytest.mark.parametrize("fmt", [tarfile.USTAR_FORMAT, tarfile.GNU_FORMAT,
                                 tarfile.PAX_FORMAT])
def test_reader_parses_every_format(fmt):
    name = "d/" + "n" * 90 + "/" + "f" * 60 if fmt != tarfile.GNU_FORMAT else \
        "d/" + "x" * 200
    data = (Layer(fmt).dir("d", mode=0o1777, uid=7, gid=8)
            .file(name, b"hello", mode=0o4755, uid=1000, gid=1001, mtime=1234)
            .symlink("d/l", "/abs/target").hardlink("d/h", "d/l")
            .char("d/c", 4, 5).block("d/b", 8, 1).fifo("d/p").tar())
    entries = _entries(data)
    assert [e.kind for e, _ in entries] == [b"5", b"0", b"2", b"1", b"3", b"4", b"6"]
    directory, (file, content) = entries[0][0], entries[1]
    assert (clean_name(directory.name), directory.mode, directory.uid,
            directory.gid) == (b"d", 0o1777, 7, 8)
    assert (file.name, content, file.mode, file.uid, file.gid, file.mtime_ns) == \
        (name.encode(), b"hello", 0o4755, 1000, 1001, 1234 * 10**9)
    assert entries[2][0].linkname == b"/abs/target"
    assert entries[3][0].linkname == b"d/l"
    assert (entries[4][0].devmajor, entries[4][0].devminor) == (4, 5)
    assert (entries[5][0].devmajor, entries[5][0].devminor) == (8, 1)


def test_reader_pax_long_names_xattrs_big_ids_and_fractional_mtime():
    long_name = "dir/" + "é" * 150
    data = (Layer().file(long_name, b"x", uid=3_000_000, mtime=1.5,
                         xattrs={"user.k": b"\xff\x00bin", "security.capability":
                                 b"\x01\x00\x00\x02"})
            .symlink("s", "t" * 300).tar())
    (entry, content), (link, _) = _entries(data)
    assert entry.name == long_name.encode()
    assert entry.uid == 3_000_000
    assert entry.mtime_ns == 1_500_000_000
    assert entry.xattrs == {"user.k": b"\xff\x00bin",
                            "security.capability": b"\x01\x00\x00\x02"}
    assert link.linkname == b"t" * 300


def test_base256_numbers():
    assert _number(b"\x80" + (5_000_000_000).to_bytes(11, "big")) == 5_000_000_000
    assert _number(b"0000755\0") == 0o755
    assert _number(b"   17 \0") == 0o17
    assert _number(b"\xff" * 12) == -1


def test_pax_records():
    assert _parse_pax(b"12 path=abc\n8 uid=7\n") == {b"path": b"abc", b"uid": b"7"}
    assert _parse_pax(b"12 path=abc\n8 path=\n") == {}
    for bad in (b"99 path=abc\n", b"x path=a\n", b"10 pathabc\n", b"11 path=abc"):
        with pytest.raises(ValueError):
            _parse_pax(bad)


def test_truncated_tar_is_refused_at_every_cut():
    data = Layer().dir("d").file("d/f", b"a" * 3000).file("d/g", b"b").tar()
    for cut in (100, 512, 700, 1024 + 512 + 100, 4000):
        with pytest.raises(LayerError, match="truncated tar stream"):
            _entries(data[:cut])


def test_corrupt_header_checksum_is_refused():
    data = bytearray(Layer().file("f", b"x").file("g", b"y").tar())
    data[1024] ^= 0x01  # the name of the second header
    with pytest.raises(LayerError, match="checksum mismatch"):
        _entries(bytes(data))


def test_gzip_stream_members_padding_and_breakage():
    tar = Layer().file("f", b"data" * 10000).tar()
    one = compress(tar, "gzip")
    assert _read_all(_Inflate(io.BytesIO(one))) == tar
    two = gzip.compress(tar[:5000]) + gzip.compress(tar[5000:]) + b"\0" * 100
    assert _read_all(_Inflate(io.BytesIO(two))) == tar
    with pytest.raises(Exception, match="ends inside a member"):
        _read_all(_Inflate(io.BytesIO(one[: len(one) // 2])))
    broken = bytearray(one)
    broken[30:40] = b"\xff" * 10
    with pytest.raises(Exception, match="broken gzip stream"):
        _read_all(_Inflate(io.BytesIO(bytes(broken))))


def _read_all(reader) -> bytes:
    out = []
    while chunk := reader.read(1 << 16):
        out.append(chunk)
    return b"".join(out)
