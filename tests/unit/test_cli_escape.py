"""Detach keys: parsing docker's key names and finding the sequence in
chunks of terminal input."""

import pytest

from corral.cli import escape


def test_default_keys_are_ctrl_p_ctrl_q():
    assert escape.parse(escape.DEFAULT) == b"\x10\x11"


@pytest.mark.parametrize("text, keys", [
    ("ctrl-a,x", b"\x01x"), ("ctrl-@", b"\x00"), ("ctrl-[,ctrl-_", b"\x1b\x1f"),
    ("CTRL-Z", b"\x1a"), ("q", b"q")])
def test_keys_by_name(text, keys):
    assert escape.parse(text) == keys


@pytest.mark.parametrize("text", ["", "ctrl-", "ctrl-1", "alt-x", "ab", "ctrl-p,"])
def test_bad_keys_are_refused_with_the_text(text):
    with pytest.raises(ValueError, match="invalid detach keys"):
        escape.parse(text)


def test_the_sequence_split_across_chunks_detaches():
    watcher = escape.Watcher(b"\x10\x11")
    assert watcher.feed(b"ls\x10") == (b"ls", False)
    assert watcher.feed(b"\x11rest") == (b"", True)


def test_a_broken_sequence_passes_every_byte_on():
    watcher = escape.Watcher(b"\x10\x11")
    assert watcher.feed(b"\x10") == (b"", False)
    assert watcher.feed(b"x") == (b"\x10x", False)
    assert watcher.feed(b"\x10\x10\x11") == (b"\x10", True)


def test_a_longer_sequence_with_a_repeated_start():
    watcher = escape.Watcher(b"aab")
    assert watcher.feed(b"aaab") == (b"a", True)
