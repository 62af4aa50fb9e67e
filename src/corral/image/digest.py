"""Digests: the ``algorithm:hex`` names of content (OCI image spec,
descriptor.md, "Digests").

A ``Digest`` is always this type, never a bare string, once it has passed
``Digest.parse``: parsing is where hostile input (a manifest's ``digest``
field, a file name in an archive) is checked, so code that holds a Digest may
use ``.hex`` in a path.
"""

from __future__ import annotations

import hashlib
from typing import NamedTuple

from .errors import BadContent, InvalidArgument

# The registered algorithms and the length of their hex encoding. The spec
# allows others, but nothing in the ecosystem writes them.
_HEX_LENGTHS = {"sha256": 64, "sha512": 128}
_HEX_DIGITS = frozenset("0123456789abcdef")


class Digest(NamedTuple):
    algorithm: str
    hex: str

    @classmethod
    def parse(cls, text: object) -> Digest:
        """Check ``text`` as a digest; raise InvalidArgument naming what is wrong."""
        if not isinstance(text, str):
            raise InvalidArgument(f"digest {text!r}: must be a string")
        algorithm, sep, hex_ = text.partition(":")
        if not sep:
            raise InvalidArgument(f"digest '{text}': must be algorithm:hex")
        length = _HEX_LENGTHS.get(algorithm)
        if length is None:
            raise InvalidArgument(f"digest '{text}': unsupported algorithm '{algorithm}' "
                                  f"(sha256 or sha512)")
        if len(hex_) != length or not _HEX_DIGITS.issuperset(hex_):
            raise InvalidArgument(f"digest '{text}': not {length} lowercase hex digits")
        return cls(algorithm, hex_)

    @classmethod
    def of(cls, data: bytes, algorithm: str = "sha256") -> Digest:
        return cls(algorithm, hashlib.new(algorithm, data).hexdigest())

    def hasher(self) -> hashlib._Hash:
        return hashlib.new(self.algorithm)

    def verify(self, data: bytes, *, what: str = "content") -> None:
        """Raise BadContent unless ``data`` has this digest."""
        actual = hashlib.new(self.algorithm, data).hexdigest()
        if actual != self.hex:
            raise BadContent(f"{what}: digest mismatch: expected {self}, "
                             f"got {self.algorithm}:{actual}")

    @property
    def short(self) -> str:
        """The 12 hex digits Docker shows as an image ID."""
        return self.hex[:12]

    def __str__(self) -> str:
        return f"{self.algorithm}:{self.hex}"


class Verifier:
    """Hashes a stream as it passes and checks it at the end against a digest
    and a size, so a blob is never trusted before it has been read whole."""

    def __init__(self, digest: Digest, size: int | None, *, what: str) -> None:
        self.digest = digest
        self.size = size
        self.what = what
        self.count = 0
        self._hash = digest.hasher()

    def update(self, chunk: bytes) -> None:
        self.count += len(chunk)
        if self.size is not None and self.count > self.size:
            raise BadContent(f"{self.what}: more than the {self.size} bytes "
                             f"its descriptor gives")
        self._hash.update(chunk)

    def check(self) -> None:
        if self.size is not None and self.count != self.size:
            raise BadContent(f"{self.what}: size mismatch: expected {self.size} bytes, "
                             f"got {self.count}")
        actual = self._hash.hexdigest()
        if actual != self.digest.hex:
            raise BadContent(f"{self.what}: digest mismatch: expected {self.digest}, "
                             f"got {self.digest.algorithm}:{actual}")
