"""Docker's way of printing sizes, ages and templates."""

from __future__ import annotations

import pytest

from corral.cli import output
from corral.image.describe import familiar, repository_and_tag


@pytest.mark.parametrize("size, text", [
    (0, "0B"), (999, "999B"), (1000, "1kB"), (4_261_000, "4.26MB"), (1.5e9, "1.5GB"),
])
def test_human_size(size, text):
    assert output.human_size(size) == text


@pytest.mark.parametrize("seconds, text", [
    (0.5, "Less than a second ago"), (30, "30 seconds ago"), (90, "About a minute ago"),
    (600, "10 minutes ago"), (3700, "About an hour ago"), (7200 * 3, "6 hours ago"),
    (86400 * 3, "3 days ago"), (86400 * 21, "3 weeks ago"), (86400 * 90, "3 months ago"),
])
def test_ago(seconds, text):
    assert output.ago(1000.0, now=1000.0 + seconds) == text


def test_parse_time_with_nanoseconds():
    assert output.parse_time("2024-01-02T03:04:05.123456789Z") == pytest.approx(
        1704164645.123456)
    assert output.parse_time("not a time") is None


def test_template():
    document = {"Id": "sha256:abc", "Config": {"Cmd": ["sh", "-c"]}}
    assert output.render_template("{{.Id}} {{.Config.Cmd}}", document) == "sha256:abc [sh -c]"
    # Go's encoding: no spaces.
    assert output.render_template("{{json .Config}}", document) == '{"Cmd":["sh","-c"]}'
    assert output.render_template("{{.Nope}}", document) == "<no value>"
    # Regressions (a fresh user's report): index, range, and a malformed action.
    tags = {"RepoTags": ["two:1", "x:2"], "Flag": True, "Null": None}
    assert output.render_template("{{index .RepoTags 0}}", tags) == "two:1"
    assert output.render_template("{{range .RepoTags}}{{.}},{{end}}", tags) == "two:1,x:2,"
    assert output.render_template("{{if .Flag}}y{{else}}n{{end}} {{.Null}}", tags) == "y <nil>"
    assert output.render_template("{{join .RepoTags \" \"}}", tags) == "two:1 x:2"
    with pytest.raises(SystemExit, match="unclosed action"):
        output.render_template("{{.Id", document)
    with pytest.raises(SystemExit, match="unexpected EOF"):
        output.render_template("{{range .RepoTags}}", tags)


def test_formatted_json_lines_and_tables(capsys):
    rows = [{"ID": "abc", "Size": "1MB"}, {"ID": "defgh", "Size": "22MB"}]
    output.formatted("json", rows, {})
    assert capsys.readouterr().out == '{"ID":"abc","Size":"1MB"}\n{"ID":"defgh","Size":"22MB"}\n'
    output.formatted("table {{.ID}}\\t{{.Size}}", rows, {"ID": "IMAGE ID"})
    assert capsys.readouterr().out.splitlines() == [
        "IMAGE ID   SIZE", "abc        1MB", "defgh      22MB"]


@pytest.mark.parametrize("name, repository, tag", [
    ("docker.io/library/busybox:1.35", "busybox", "1.35"),
    ("docker.io/me/app:v1", "me/app", "v1"),
    ("127.0.0.1:5000/test/busybox:1", "127.0.0.1:5000/test/busybox", "1"),
    ("localhost:5000/x@sha256:" + "a" * 64, "localhost:5000/x", "<none>"),
])
def test_repository_and_tag(name, repository, tag):
    assert repository_and_tag(name) == (repository, tag)
    assert familiar(name).startswith(repository)


def test_table_pads_like_tabwriter(capsys):
    output.table(["A", "BB"], [["xyz", "1"]])
    assert capsys.readouterr().out == "A     BB\nxyz   1\n"


def test_frames_split_across_chunks():
    import struct

    from corral.cli.streams import frames

    data = b"".join(struct.pack(">BxxxL", s, len(p)) + p
                    for s, p in [(1, b"out"), (2, b"err"), (1, b"")])
    assert list(frames([data[:5], data[5:13], data[13:]])) == [
        (1, b"out"), (2, b"err"), (1, b"")]
