"""Image references: Docker's normalization, the grammar, and the errors."""

from __future__ import annotations

import pytest

from corral.image.digest import Digest
from corral.image.errors import InvalidArgument
from corral.image.reference import Reference, parse

HEX = "a" * 64
DIGEST = Digest("sha256", HEX)


@pytest.mark.parametrize(("text", "domain", "path", "tag", "digest"), [
    ("busybox", "docker.io", "library/busybox", "latest", None),
    ("busybox:1.35", "docker.io", "library/busybox", "1.35", None),
    ("user/x", "docker.io", "user/x", "latest", None),
    ("docker.io/busybox", "docker.io", "library/busybox", "latest", None),
    ("index.docker.io/user/x:2", "docker.io", "user/x", "2", None),
    ("localhost/x", "localhost", "x", "latest", None),
    ("localhost:5000/x", "localhost:5000", "x", "latest", None),
    ("127.0.0.1:5000/a/b:tag", "127.0.0.1:5000", "a/b", "tag", None),
    ("quay.io/org/deep/path/name:v1.2-rc_3", "quay.io", "org/deep/path/name",
     "v1.2-rc_3", None),
    ("[::1]:5000/x", "[::1]:5000", "x", "latest", None),
    ("Registry/x", "Registry", "x", "latest", None),
    (f"x@sha256:{HEX}", "docker.io", "library/x", None, DIGEST),
    (f"x:tag@sha256:{HEX}", "docker.io", "library/x", "tag", DIGEST),
    (f"127.0.0.1:5000/x@sha256:{HEX}", "127.0.0.1:5000", "x", None, DIGEST),
    ("ab-c__d/e--f.g", "docker.io", "ab-c__d/e--f.g", "latest", None),
])
def test_normalization(text, domain, path, tag, digest):
    assert parse(text) == Reference(domain, path, tag, digest)


def test_default_tag_only_without_tag_or_digest():
    assert parse("busybox", default_tag=None).tag is None
    assert parse("busybox", default_tag="stable").tag == "stable"
    assert parse(f"busybox@sha256:{HEX}", default_tag="stable").tag is None


@pytest.mark.parametrize(("text", "full", "familiar"), [
    ("busybox", "docker.io/library/busybox:latest", "busybox:latest"),
    ("user/x:1", "docker.io/user/x:1", "user/x:1"),
    ("127.0.0.1:5000/x:1", "127.0.0.1:5000/x:1", "127.0.0.1:5000/x:1"),
    (f"x:t@sha256:{HEX}", f"docker.io/library/x:t@sha256:{HEX}", f"x:t@sha256:{HEX}"),
])
def test_str_and_familiar(text, full, familiar):
    ref = parse(text)
    assert str(ref) == full
    assert ref.familiar() == familiar
    assert parse(str(ref)) == ref


def test_name_and_derived_references():
    ref = parse("127.0.0.1:5000/a/b:1")
    assert ref.name == "127.0.0.1:5000/a/b"
    assert str(ref.with_tag("2")) == "127.0.0.1:5000/a/b:2"
    pinned = ref.with_digest(DIGEST)
    assert str(pinned) == f"127.0.0.1:5000/a/b:1@sha256:{HEX}"
    assert pinned.with_tag("3").digest is None
    assert str(ref.repository()) == "127.0.0.1:5000/a/b"


@pytest.mark.parametrize(("text", "message"), [
    ("", "must be a non-empty string"),
    ("Busybox", "must be lowercase"),
    ("user/MyImage:1", "must be lowercase"),
    ("x:-bad", "invalid tag '-bad'"),
    ("x:" + "t" * 129, "invalid tag"),
    ("x:tág", "invalid tag"),
    ("x@sha256:1234", "not 64 lowercase hex digits"),
    ("x@md5:" + "a" * 32, "unsupported algorithm"),
    ("a//b", "invalid repository component ''"),
    ("x_/y", "invalid repository component 'x_'"),
    ("-bad.io/x", "invalid registry domain '-bad.io'"),
    ("localhost:5000/", "empty repository name"),
    (HEX, "is an image ID"),
    ("reg.io/" + "a" * 250, "longer than 255"),
])
def test_invalid(text, message):
    with pytest.raises(InvalidArgument) as caught:
        parse(text)
    assert message in str(caught.value)
    assert str(caught.value).startswith("parse reference")


def test_error_names_the_reference():
    with pytest.raises(InvalidArgument, match=r"parse reference 'Busybox:1'"):
        parse("Busybox:1")


def test_with_tag_checks_the_tag():
    with pytest.raises(InvalidArgument, match="invalid tag"):
        parse("x").with_tag("no spaces")


def test_non_string():
    with pytest.raises(InvalidArgument):
        parse(None)  # type: ignore[arg-type]
