"""Small pure pieces: ids, signals, sizes, capabilities, features, the log."""

import json

import pytest

from corral.runtime import capabilities, log
from corral.runtime.container import parse_signal
from corral.runtime.errors import InvalidSpec
from corral.runtime.features import features
from corral.runtime.state import check_id
from corral.runtime.update import parse_size


@pytest.mark.parametrize("good", ["a", "abc-123_x.y+z", "x" * 255])
def test_good_ids(good):
    assert check_id(good) == good


@pytest.mark.parametrize("bad", ["", ".", "..", "a/b", "a\0b", "x" * 256, "a b", "a\nb",
                                 "\u00e9t\u00e9"])
def test_bad_ids(bad):
    with pytest.raises(InvalidSpec):
        check_id(bad)


@pytest.mark.parametrize(("text", "number"), [
    ("9", 9), ("KILL", 9), ("SIGKILL", 9), ("sigterm", 15), ("TERM", 15), ("HUP", 1),
])
def test_signals(text, number):
    assert parse_signal(text) == number


@pytest.mark.parametrize("bad", ["-1", "999", "SIGFOO", "", "9x", "\u0663"])
def test_bad_signals(bad):
    with pytest.raises(InvalidSpec, match="unknown signal"):
        parse_signal(bad)


@pytest.mark.parametrize(("text", "value"), [
    ("1024", 1024), ("64m", 64 << 20), ("1G", 1 << 30), ("10kb", 10 << 10), ("-1", -1),
])
def test_sizes(text, value):
    assert parse_size(text, "memory") == value


def test_capability_table_matches_the_kernel_numbers():
    assert capabilities.NUMBERS["CAP_CHOWN"] == 0
    assert capabilities.NUMBERS["CAP_SYS_ADMIN"] == 21
    assert capabilities.NUMBERS["CAP_CHECKPOINT_RESTORE"] == 40
    with pytest.raises(InvalidSpec, match="CAP_NOPE"):
        capabilities.check({"bounding": ["CAP_NOPE"]})


def test_features_document():
    document = features()
    json.dumps(document)
    assert document["ociVersionMin"] == "1.0.0"
    assert "mount" in document["linux"]["namespaces"]
    assert "CAP_SYS_ADMIN" in document["linux"]["capabilities"]
    assert document["linux"]["seccomp"]["enabled"] is True
    assert "rbind" in document["mountOptions"]


def test_json_log_lines(tmp_path):
    path = tmp_path / "log.json"
    log.configure(str(path), "json", debug=True)
    try:
        log.debug('a "quoted"\nline')
        log.error("boom")
    finally:
        log.configure(None, "text", debug=False)
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert [line["level"] for line in lines] == ["debug", "error"]
    assert lines[0]["msg"] == 'a "quoted"\nline'
    assert lines[1]["time"].endswith("Z")


@pytest.mark.parametrize(("text", "seconds"), [
    ("5s", 5), ("500ms", 0.5), ("1m30s", 90), ("1h", 3600), ("0.25s", 0.25),
])
def test_durations(text, seconds):
    from corral.runtime.cli import parse_duration

    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("bad", ["5", "s", "-1s", "0s", "5x", ""])
def test_bad_durations(bad):
    from corral.runtime._args import UsageError
    from corral.runtime.cli import parse_duration

    with pytest.raises(UsageError):
        parse_duration(bad)


@pytest.mark.parametrize("value", [
    {"ociVersion": "1.1.0", "id": "c1", "pid": 0, "status": "stopped",
     "annotations": {"k": "v\u00e9"}},
    {"annotations": {}, "list": [1, 2.5, None, True, {"nested": []}]},
    {}, [], "text",
])
def test_state_is_indented_as_json_would(value):
    from corral.runtime.cli import _indented

    assert _indented(value) == json.dumps(value, indent=2)
