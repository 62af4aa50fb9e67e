"""Detach keys: the key sequence (Ctrl-P Ctrl-Q unless ``--detach-keys``
names another) that, typed into an attached terminal, lets go of the
container and leaves it running.

As in the docker CLI, the client watches its own stdin for the sequence,
and only with a tty: without one, stdin is data and passes untouched. A key
is one character, or ``ctrl-`` and one of a-z, @, [, \\, ], ^ and _; the
keys are separated by commas.
"""

from __future__ import annotations

DEFAULT = "ctrl-p,ctrl-q"
_CONTROLS = "@abcdefghijklmnopqrstuvwxyz[\\]^_"


def parse(text: str) -> bytes:
    """The bytes ``text`` (``ctrl-p,ctrl-q``) names.

    Raises:
        ValueError: a key that is neither one character nor ``ctrl-`` and a
            character that has a control code.
    """
    keys = bytearray()
    for key in text.split(","):
        if len(key) == 1:
            keys += key.encode()
        elif key.lower().startswith("ctrl-") and len(key) == 6 \
                and key[5].lower() in _CONTROLS:
            keys.append(_CONTROLS.index(key[5].lower()))
        else:
            raise ValueError(f"invalid detach keys '{text}': unknown key '{key}' "
                             f"(use a character or ctrl-<a-z@[\\]^_>, "
                             f"separated by commas)")
    if not keys:
        raise ValueError(f"invalid detach keys '{text}': no key given")
    return bytes(keys)


class Watcher:
    """Finds the sequence in a stream of input chunks. A prefix of it is held
    back until the next chunk tells whether the sequence goes on: a Ctrl-P
    typed alone still reaches the container, one keystroke later."""

    def __init__(self, keys: bytes) -> None:
        self.keys = keys
        self.held = b""

    def feed(self, data: bytes) -> tuple[bytes, bool]:
        """(the bytes to pass on, whether the sequence was typed)."""
        out = bytearray()
        for byte in data:
            self.held += bytes((byte,))
            if self.keys.startswith(self.held):
                if self.held == self.keys:
                    self.held = b""
                    return bytes(out), True
                continue
            # Not the sequence after all: pass on the first held byte and
            # look again from the next one.
            while self.held and not self.keys.startswith(self.held):
                out.append(self.held[0])
                self.held = self.held[1:]
        return bytes(out), False
