"""A client of the OCI distribution spec (v1.0, "API"): manifests, blobs, tags.

``Client`` is what the rest of the image layer uses to pull and push. It is
safe to share between threads (parallel layer downloads): the HTTP pool is
httpx's, and what it learns per registry (scheme, auth scheme, tokens) is
kept under locks in ``_http.Transport`` and ``auth.Authenticator``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import closing, contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from .. import manifest as manifests
from .. import mediatypes
from ..digest import Digest
from ..errors import BadContent, InvalidArgument, NotFound, RegistryError
from ..reference import Reference
from . import blobs
from ._http import Request, Transport, error_detail
from .auth import docker_config_path

log = logging.getLogger(__name__)

# The distribution spec lets registries refuse manifests over 4 MiB; we
# refuse to read more than that, so a hostile registry cannot fill memory.
MANIFEST_MAX = 4 << 20
_DEFAULT_CERTS_DIRS = (Path("/etc/corral/certs.d"), Path("/etc/docker/certs.d"))


@dataclass(frozen=True)
class Manifest:
    """A manifest or index as the registry served it: the exact bytes, which
    its digest is of, and the media type."""

    data: bytes
    media_type: str
    digest: Digest


class Client:
    """A registry client for every registry a process talks to.

    Args:
        insecure: registries (``host[:port]``) that may be spoken to over
            plain HTTP; loopback registries always may, as in Docker.
        docker_config: Docker's config.json (or its directory) for
            credentials; default ``$DOCKER_CONFIG`` or ``~/.docker``.
        certs_dirs: directories of ``<host[:port]>/ca.crt`` (Docker's certs.d).
        retries: further attempts of an idempotent request after a 5xx or a
            dropped connection, and resumes of a dropped blob download.
        backoff: the first wait between attempts, doubled each time.
        timeout: seconds for connecting and for each read.
    """

    def __init__(self, *, insecure: Iterable[str] = (), docker_config: Path | None = None,
                 certs_dirs: Sequence[Path] = _DEFAULT_CERTS_DIRS, retries: int = 4,
                 backoff: float = 0.2, timeout: float = 30.0) -> None:
        self._transport = Transport(insecure=insecure,
                                    config_path=docker_config_path(docker_config),
                                    certs_dirs=certs_dirs, retries=retries,
                                    backoff=backoff, timeout=timeout)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        self._transport.close()

    def base_url(self, domain: str) -> str:
        """The scheme and host the client speaks to for ``domain``."""
        return self._transport.base_url(domain)

    def get_manifest(self, ref: Reference) -> Manifest:
        """Fetch the manifest or index ``ref`` names, by digest if it has one.

        Raises:
            NotFound: no such tag or digest in the repository.
            BadContent: bytes that do not match the digest, or an unknown
                media type.
            NotSupported: a Docker schema 1 manifest.
        """
        what = f"get manifest '{ref.familiar()}'"
        target = str(ref.digest) if ref.digest is not None else ref.tag or "latest"
        response = self._get(ref, f"/v2/{ref.path}/manifests/{target}", what,
                             headers={"Accept": ", ".join(mediatypes.ACCEPT)})
        with closing(response):
            _check_status(response, what)
            data = _read_limited(response, MANIFEST_MAX, what)
            content_type = response.headers.get("content-type", "")
            header_digest = response.headers.get("docker-content-digest")
        media_type = manifests.media_type_of(data, content_type, what)
        return Manifest(data, media_type, _manifest_digest(data, ref, header_digest, what))

    @contextmanager
    def fetch_blob(self, repo: Reference, digest: Digest, *,
                   offset: int = 0) -> Iterator[blobs.BlobStream]:
        """Open blob ``digest`` of repository ``repo`` from byte ``offset``.

        The stream follows redirects (without our credentials on another
        host) and resumes by itself when the connection drops. It does not
        check the digest: the reader does, as it consumes the stream.
        """
        what = f"fetch blob '{digest}' from '{repo.name}'"
        request = Request("GET", repo.domain, f"/v2/{repo.path}/blobs/{digest}", what,
                          _pull(repo), stream=True, follow=True)
        stream = blobs.BlobStream(self._transport, request, what, offset)
        with stream:
            yield stream

    def blob_size(self, repo: Reference, digest: Digest) -> int | None:
        """The size of blob ``digest`` in ``repo``, or None if it is not there."""
        what = f"check blob '{digest}' in '{repo.name}'"
        request = Request("HEAD", repo.domain, f"/v2/{repo.path}/blobs/{digest}", what,
                          _pull(repo), follow=True)
        with closing(self._transport.request(request)) as response:
            if response.status_code == 404:
                return None
            _check_status(response, what)
            length = response.headers.get("content-length", "")
        return int(length) if length.isdigit() else None

    def push_blob(self, repo: Reference, digest: Digest, size: int, path: Path, *,
                  chunk_size: int | None = None,
                  progress: Callable[[int], None] | None = None) -> None:
        """Upload file ``path`` as blob ``digest`` of ``size`` bytes to ``repo``.

        Monolithic by default, chunked (PATCHes of ``chunk_size`` bytes) when
        asked; ``progress`` is called with the count of each piece sent. It
        does not check whether the blob is already there: call ``blob_size``.
        """
        blobs.push(self._transport, repo.domain, repo.path, digest, size, path,
                   chunk_size=chunk_size, progress=progress)

    def mount_blob(self, repo: Reference, digest: Digest, from_repo: str) -> bool:
        """Ask the registry to link blob ``digest`` of repository
        ``from_repo`` (a path, or a name in the same registry) into ``repo``; True if it did, False if
        the caller must upload it (the session the registry opened instead is
        cancelled)."""
        # A full name of the same registry is the same repository.
        from_repo = from_repo.removeprefix(f"{repo.domain}/")
        what = f"mount blob '{digest}' from '{from_repo}' into '{repo.name}'"
        scopes = (f"repository:{repo.path}:pull,push", f"repository:{from_repo}:pull")
        request = Request("POST", repo.domain, f"/v2/{repo.path}/blobs/uploads/", what,
                          scopes, params=[("mount", str(digest)), ("from", from_repo)],
                          headers={"Content-Length": "0"}, idempotent=False)
        with closing(self._transport.request(request)) as response:
            if response.status_code == 201:
                return True
            _check_status(response, what, expected=202)
            location = response.headers.get("location")
        if location:
            self._cancel_upload(repo, str(response.url.join(location)), what, scopes)
        return False

    def put_manifest(self, ref: Reference, data: bytes, media_type: str) -> Digest:
        """Upload manifest ``data`` under ``ref``'s tag (or digest); returns
        its digest."""
        what = f"put manifest '{ref.familiar()}'"
        digest = Digest.of(data)
        if ref.digest is not None:
            ref.digest.verify(data, what=what)
            digest = ref.digest
        target = ref.tag if ref.tag is not None and ref.digest is None else str(digest)
        request = Request("PUT", ref.domain, f"/v2/{ref.path}/manifests/{target}", what,
                          _push(ref), headers={"Content-Type": media_type},
                          body=lambda: data)
        with closing(self._transport.request(request)) as response:
            if response.status_code != 201:
                _check_status(response, what, expected=201)
            header = response.headers.get("docker-content-digest")
        if header and header != str(digest):
            raise BadContent(f"{what}: the registry stored it as {header}, not {digest}")
        return digest

    def list_tags(self, repo: Reference) -> list[str]:
        """Every tag of ``repo``, following the registry's pagination."""
        what = f"list tags of '{repo.name}'"
        url: str | None = f"/v2/{repo.path}/tags/list"
        tags: list[str] = []
        while url is not None:
            with closing(self._get(repo, url, what)) as response:
                _check_status(response, what)
                tags.extend(_tags_page(response.read(), what))
                link = response.links.get("next", {}).get("url")
                url = str(response.url.join(link)) if link else None
        return tags

    def _get(self, ref: Reference, url: str, what: str,
             headers: dict[str, str] | None = None) -> httpx.Response:
        return self._transport.request(Request("GET", ref.domain, url, what, _pull(ref),
                                               headers=headers or {}, stream=True))

    def _cancel_upload(self, repo: Reference, location: str, what: str,
                       scopes: tuple[str, ...]) -> None:
        request = Request("DELETE", repo.domain, location, what, scopes)
        with closing(self._transport.request(request)) as response:
            log.debug("%s: cancelled the upload: %s", what, response.status_code)


def _pull(ref: Reference) -> tuple[str, ...]:
    return (f"repository:{ref.path}:pull",)


def _push(ref: Reference) -> tuple[str, ...]:
    return (f"repository:{ref.path}:pull,push",)


def _check_status(response: httpx.Response, what: str, expected: int = 200) -> None:
    if response.status_code == expected:
        return
    detail = error_detail(response)
    if response.status_code == 404:
        raise NotFound(f"{what}: not found ({detail})")
    raise RegistryError(f"{what}: {detail}")


def _read_limited(response: httpx.Response, limit: int, what: str) -> bytes:
    parts, count = [], 0
    for chunk in response.iter_bytes():
        count += len(chunk)
        if count > limit:
            raise BadContent(f"{what}: larger than {limit} bytes")
        parts.append(chunk)
    return b"".join(parts)


def _manifest_digest(data: bytes, ref: Reference, header: str | None,
                     what: str) -> Digest:
    if ref.digest is not None:
        ref.digest.verify(data, what=what)
        return ref.digest
    if not header:
        return Digest.of(data)
    try:
        digest = Digest.parse(header)
    except InvalidArgument:
        # A registry's own header we cannot read: our own hash will do.
        return Digest.of(data)
    digest.verify(data, what=what)
    return digest


def _tags_page(body: bytes, what: str) -> list[str]:
    try:
        tags = json.loads(body).get("tags") or []
    except (ValueError, AttributeError):
        raise BadContent(f"{what}: the registry answered no tag list") from None
    if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
        raise BadContent(f"{what}: the registry answered no tag list")
    return tags
