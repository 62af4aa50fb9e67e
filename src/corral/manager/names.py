"""Container names: the rules Docker applies to them, and the random
``adjective_surname`` names it gives a container created without one.

A name given by the user matches ``[a-zA-Z0-9][a-zA-Z0-9_.-]+`` (Docker's
``RestrictedNamePattern``); it may come with the leading ``/`` that Docker
shows. Our word lists are our own: adjectives of mood and surnames of
people who shaped computing, mathematics and the sciences.
"""

from __future__ import annotations

import random
import string
from collections.abc import Callable

from .errors import InvalidArgument

_ADJECTIVES = (
    "agile", "amused", "bold", "brave", "bright", "calm", "careful", "cheerful",
    "clever", "cool", "curious", "daring", "eager", "earnest", "fearless", "fond",
    "gentle", "glad", "graceful", "happy", "hardy", "honest", "humble", "jolly",
    "keen", "kind", "lively", "loyal", "lucid", "merry", "mighty", "modest",
    "nimble", "noble", "patient", "peaceful", "placid", "polite", "proud", "quick",
    "quiet", "radiant", "serene", "sharp", "shy", "silent", "sleepy", "smart",
    "steady", "stoic", "sunny", "swift", "tender", "thoughtful", "tidy", "upbeat",
    "vibrant", "vivid", "warm", "wise", "witty", "zealous",
)

_SURNAMES = (
    "abel", "agnesi", "babbage", "backus", "bernoulli", "boole", "cantor", "cauchy",
    "cerf", "church", "codd", "conway", "curie", "dijkstra", "euclid", "euler",
    "faraday", "fermat", "feynman", "fourier", "galois", "gauss", "germain",
    "goedel", "hamming", "hilbert", "hopper", "huffman", "jacobi", "kahan",
    "kepler", "knuth", "kolmogorov", "lamport", "laplace", "leibniz", "liskov",
    "lovelace", "maxwell", "mccarthy", "meitner", "minsky", "napier", "newton",
    "noether", "pascal", "perlman", "poincare", "ramanujan", "riemann", "ritchie",
    "shannon", "sutherland", "tarjan", "thompson", "turing", "vonneumann", "wiles",
    "wirth", "yonath",
)

_FIRST = frozenset(string.ascii_letters + string.digits)
_REST = _FIRST | frozenset("_.-")


def random_name(rng: random.Random | None = None) -> str:
    """One ``adjective_surname`` name."""
    rng = rng or random.SystemRandom()
    return f"{rng.choice(_ADJECTIVES)}_{rng.choice(_SURNAMES)}"


def unused_name(taken: Callable[[str], bool], rng: random.Random | None = None) -> str:
    """A random name for which ``taken`` is false; after a few collisions a
    digit is appended, as Docker does, so this ends however full the host is."""
    rng = rng or random.SystemRandom()
    for attempt in range(64):
        name = random_name(rng)
        if attempt >= 3:
            name = f"{name}{rng.randrange(10 ** (1 + attempt // 8))}"
        if not taken(name):
            return name
    raise InvalidArgument("generate a container name: every name tried is in use")


def check_name(name: str) -> str:
    """The name without its leading ``/``; InvalidArgument if Docker refuses it."""
    bare = name[1:] if name.startswith("/") else name
    if len(bare) < 2 or bare[0] not in _FIRST or not _REST.issuperset(bare):
        raise InvalidArgument(f"Invalid container name ({name}), only "
                              f"[a-zA-Z0-9][a-zA-Z0-9_.-] are allowed")
    return bare
