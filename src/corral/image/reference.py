"""Image references: ``[domain/]path[:tag][@digest]``, normalized as Docker does.

The grammar is the one of the distribution project's ``reference`` package,
which both Docker and containerd follow (the OCI distribution spec only says
what a repository name may contain, in "Pulling manifests"):

- the domain is the first ``/``-separated component when it contains ``.``
  or ``:``, is ``localhost``, or has an uppercase letter; otherwise the
  reference is on Docker Hub, ``docker.io``, and a one-component path there
  lives under ``library/``;
- path components are lowercase letters and digits joined by ``.``, ``_``,
  ``__`` or dashes;
- a tag is ``[\\w][\\w.-]{0,127}``; a digest is ``algorithm:hex``.

``parse("busybox")`` is ``docker.io/library/busybox:latest``;
``Reference.familiar()`` gives back the short form Docker shows.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass

from .digest import Digest
from .errors import InvalidArgument

DOCKER_HUB = "docker.io"
# Names users write for Docker Hub, all meaning docker.io.
_HUB_ALIASES = frozenset({"docker.io", "index.docker.io", "registry-1.docker.io"})
_OFFICIAL = "library/"

_DOMAIN_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_DOMAIN = re.compile(
    rf"(?:{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*|\[[a-fA-F0-9:]+\])(?::[0-9]+)?"
)
_PATH_COMPONENT = re.compile(r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*")
_TAG = re.compile(r"[\w][\w.-]{0,127}", re.ASCII)  # Go's \w is ASCII
_HEX64 = re.compile(r"[a-f0-9]{64}")
# The distribution project's limit on a whole repository name.
_NAME_MAX = 255


@dataclass(frozen=True)
class Reference:
    """A normalized image reference.

    ``domain`` is the registry as written (``docker.io``, ``127.0.0.1:5000``),
    ``path`` the repository inside it (``library/busybox``); at least one of
    ``tag`` and ``digest`` is usually set, but a bare repository (as a push
    target or for ``list_tags``) has neither.
    """

    domain: str
    path: str
    tag: str | None = None
    digest: Digest | None = None

    @property
    def name(self) -> str:
        """The repository's full name: ``docker.io/library/busybox``."""
        return f"{self.domain}/{self.path}"

    def __str__(self) -> str:
        return self.name + self._suffix()

    def familiar(self) -> str:
        """The reference as Docker shows it: ``busybox:latest``, ``user/x:1``,
        ``127.0.0.1:5000/x:1``."""
        name = self.name
        if self.domain == DOCKER_HUB:
            name = self.path.removeprefix(_OFFICIAL)
        return name + self._suffix()

    def with_tag(self, tag: str) -> Reference:
        """The same repository at ``tag``, without a digest."""
        _check_tag(tag, f"{self.name}:{tag}")
        return dataclasses.replace(self, tag=tag, digest=None)

    def with_digest(self, digest: Digest) -> Reference:
        """The same repository and tag, pinned to ``digest``."""
        return dataclasses.replace(self, digest=digest)

    def repository(self) -> Reference:
        """The repository alone, with neither tag nor digest."""
        return Reference(self.domain, self.path)

    def _suffix(self) -> str:
        tag = f":{self.tag}" if self.tag is not None else ""
        digest = f"@{self.digest}" if self.digest is not None else ""
        return tag + digest


def parse(text: str, *, default_tag: str | None = "latest") -> Reference:
    """Parse and normalize an image reference.

    Args:
        text: what the user wrote, e.g. ``busybox``, ``user/x:1``,
            ``127.0.0.1:5000/a/b@sha256:...``.
        default_tag: the tag given to a reference with neither tag nor
            digest; None leaves it bare.

    Raises:
        InvalidArgument: naming the reference and what is wrong with it.
    """
    if not isinstance(text, str) or not text:
        raise InvalidArgument(f"parse reference {text!r}: must be a non-empty string")
    if _HEX64.fullmatch(text):
        raise InvalidArgument(f"parse reference '{text}': a 64-digit hex string is "
                              f"an image ID, not a reference")
    remainder, digest = _split_digest(text)
    remainder, tag = _split_tag(remainder, text)
    domain, path = _split_domain(remainder, text)
    _check_path(path, text)
    if len(domain) + 1 + len(path) > _NAME_MAX:
        raise InvalidArgument(f"parse reference '{text}': repository name is longer "
                              f"than {_NAME_MAX} characters")
    if tag is None and digest is None:
        tag = default_tag
    return Reference(domain, path, tag, digest)


def _split_digest(text: str) -> tuple[str, Digest | None]:
    remainder, sep, digest_text = text.partition("@")
    if not sep:
        return text, None
    try:
        return remainder, Digest.parse(digest_text)
    except InvalidArgument as exc:
        raise InvalidArgument(f"parse reference '{text}': {exc}") from None


def _split_tag(remainder: str, text: str) -> tuple[str, str | None]:
    # A ':' after the last '/' starts the tag; one before it is a port.
    colon = remainder.rfind(":")
    if colon < 0 or "/" in remainder[colon:]:
        return remainder, None
    tag = remainder[colon + 1:]
    _check_tag(tag, text)
    return remainder[:colon], tag


def _split_domain(remainder: str, text: str) -> tuple[str, str]:
    first, sep, rest = remainder.partition("/")
    is_domain = sep and (any(c in first for c in ".:") or first == "localhost"
                         or first.lower() != first)
    if not is_domain:
        domain, path = DOCKER_HUB, remainder
    else:
        if not _DOMAIN.fullmatch(first):
            raise InvalidArgument(f"parse reference '{text}': invalid registry "
                                  f"domain '{first}'")
        domain, path = first, rest
    if domain in _HUB_ALIASES:
        domain = DOCKER_HUB
        if "/" not in path:
            path = _OFFICIAL + path
    return domain, path


def _check_path(path: str, text: str) -> None:
    if not path:
        raise InvalidArgument(f"parse reference '{text}': empty repository name")
    for component in path.split("/"):
        if _PATH_COMPONENT.fullmatch(component):
            continue
        if _PATH_COMPONENT.fullmatch(component.lower()):
            raise InvalidArgument(f"parse reference '{text}': repository name "
                                  f"must be lowercase")
        raise InvalidArgument(f"parse reference '{text}': invalid repository "
                              f"component '{component}'")


def _check_tag(tag: str, text: str) -> None:
    if not _TAG.fullmatch(tag):
        raise InvalidArgument(f"parse reference '{text}': invalid tag '{tag}' "
                              f"(letters, digits, '_', '.', '-'; at most 128, "
                              f"not starting with '.' or '-')")
