"""The Go-style flag parser: the spellings containerd, dockerd and podman send."""

import pytest

from corral.runtime._args import Flag, UsageError, parse

FLAGS = [Flag("bundle,b", "str", "."), Flag("detach,d"), Flag("preserve-fds", "int", 0),
         Flag("env,e", "list")]


@pytest.mark.parametrize("argv", [
    ["--bundle", "/b", "id"], ["--bundle=/b", "id"], ["-bundle", "/b", "id"],
    ["-bundle=/b", "id"], ["-b", "/b", "id"],
])
def test_value_spellings(argv):
    values, positional = parse(FLAGS, argv)
    assert values["bundle"] == "/b"
    assert positional == ["id"]


@pytest.mark.parametrize(("argv", "want"), [
    (["-d"], True), (["--detach"], True), (["--detach=false"], False),
    (["-detach=true"], True), ([], False),
])
def test_booleans(argv, want):
    assert parse(FLAGS, [*argv, "id"])[0]["detach"] is want


def test_lists_and_ints():
    values, _ = parse(FLAGS, ["-e", "A=1", "--env=B=2", "--preserve-fds", "3", "id"])
    assert values["env"] == ["A=1", "B=2"]
    assert values["preserve_fds"] == 3


def test_flags_end_at_the_first_positional():
    values, positional = parse(FLAGS, ["id", "sh", "-c", "echo -d"])
    assert positional == ["id", "sh", "-c", "echo -d"]
    assert values["detach"] is False


def test_interspersed_and_double_dash():
    values, positional = parse(FLAGS, ["id", "-d"], interspersed=True)
    assert values["detach"] is True and positional == ["id"]
    assert parse(FLAGS, ["--", "-d"])[1] == ["-d"]


@pytest.mark.parametrize(("argv", "message"), [
    (["--nope"], "flag provided but not defined: -nope"),
    (["--bundle"], "flag needs an argument: -bundle"),
    (["--preserve-fds", "x"], "not a number"),
    (["--detach=maybe"], "invalid boolean"),
    (["--bund", "x"], "not defined"),  # no guessing of abbreviations
])
def test_usage_errors(argv, message):
    with pytest.raises(UsageError, match=message):
        parse(FLAGS, argv)
