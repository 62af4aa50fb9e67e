"""Blob transfer: streamed, resumable downloads and uploads (OCI
distribution-spec, "Pulling blobs" and "Pushing blobs").

A download is one ``BlobStream`` to its reader even when the connection
drops mid-body: the stream asks again with ``Range: bytes=<where it
stopped>-`` and carries on. An upload is either monolithic (POST to open a
session, PUT the whole blob with its digest) or chunked (POST, PATCHes with
``Content-Range``, and a PUT with the digest to close).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

import httpx

from ..digest import Digest
from ..errors import BadContent, InvalidArgument, NotFound, RegistryError, Unavailable
from ._http import RETRY_ERRORS, Request, Transport, describe, error_detail

log = logging.getLogger(__name__)

CHUNK = 1 << 20
_CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+|\*)")


class BlobStream:
    """The body of one blob, as chunks of about 1 MiB.

    Attributes:
        size: the blob's total size if the registry said, else None.
        offset: where the stream really starts: the ``offset`` asked for, or
            0 if the registry ignored the Range request.
    """

    def __init__(self, transport: Transport, request: Request, what: str,
                 offset: int) -> None:
        self._transport = transport
        self._request = request
        self._what = what
        self._response = self._open(offset)
        self.offset, self.size = self._position(self._response, offset)

    def __enter__(self) -> BlobStream:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        self._response.close()

    def __iter__(self) -> Iterator[bytes]:
        # Bytes count as ours when they arrive, not when a whole chunk is
        # ready, so a resume starts exactly where the connection dropped.
        position, resumes, buffer = self.offset, 0, bytearray()
        while True:
            try:
                for piece in self._response.iter_raw():
                    position += len(piece)
                    buffer += piece
                    if len(buffer) >= CHUNK:
                        yield bytes(buffer)
                        buffer.clear()
                break
            except RETRY_ERRORS as exc:
                resumes += 1
                if resumes > self._transport.retries:
                    raise Unavailable(f"{self._what}: connection dropped at byte "
                                      f"{position}, {resumes - 1} resumes failed: "
                                      f"{describe(exc)}") from exc
                log.debug("%s: dropped at %s (%s); resuming", self._what, position,
                          describe(exc))
                self._resume(position)
        if buffer:
            yield bytes(buffer)

    def _resume(self, position: int) -> None:
        self._response.close()
        self._response = self._open(position)
        start, _ = self._position(self._response, position)
        if start != position:
            # The registry ignored the Range: skip what we already gave.
            self._response = _Skipping(self._response, position - start)

    def _open(self, offset: int) -> httpx.Response:
        headers = dict(self._request.headers)
        if offset:
            headers["Range"] = f"bytes={offset}-"
        response = self._transport.request(replace(self._request, headers=headers))
        if response.status_code in (200, 206):
            return response
        detail = error_detail(response)
        response.close()
        if response.status_code == 404:
            raise NotFound(f"{self._what}: not found ({detail})")
        if response.status_code == 416:
            raise InvalidArgument(f"{self._what}: offset {offset} is past the end")
        raise RegistryError(f"{self._what}: {detail}")

    def _position(self, response: httpx.Response, offset: int) -> tuple[int, int | None]:
        length = response.headers.get("content-length")
        if response.status_code == 200:
            return 0, int(length) if length and length.isdigit() else None
        match = _CONTENT_RANGE.fullmatch(response.headers.get("content-range", ""))
        if match is None:
            raise RegistryError(f"{self._what}: 206 without a usable Content-Range")
        start, total = int(match[1]), match[3]
        if start != offset:
            raise RegistryError(f"{self._what}: asked for byte {offset}, got {start}")
        return start, int(total) if total.isdigit() else None


class _Skipping:
    """A response whose first ``count`` bytes are dropped (a resume that got
    the whole blob again)."""

    def __init__(self, response: httpx.Response, count: int) -> None:
        self._response = response
        self._count = count

    def iter_raw(self) -> Iterator[bytes]:
        for chunk in self._response.iter_raw():
            if self._count >= len(chunk):
                self._count -= len(chunk)
                continue
            yield chunk[self._count:]
            self._count = 0

    def close(self) -> None:
        self._response.close()


def push(transport: Transport, domain: str, path: str, digest: Digest, size: int,
         file: Path, *, chunk_size: int | None,
         progress: Callable[[int], None] | None) -> None:
    """Upload one blob; the whole upload starts again on a transient failure,
    since a new session is always safe."""
    what = f"push blob '{digest}' to '{domain}/{path}'"
    _check_file(file, size, what)
    scopes = (f"repository:{path}:pull,push",)
    for attempt in range(transport.retries + 1):
        try:
            _upload(transport, domain, path, digest, size, file, what, scopes,
                    chunk_size, progress)
            return
        except Unavailable:
            if attempt == transport.retries:
                raise
            log.debug("%s: upload %s failed, starting again", what, attempt + 1)


def _check_file(file: Path, size: int, what: str) -> None:
    try:
        actual = file.stat().st_size
    except OSError as exc:
        raise InvalidArgument(f"{what}: {exc}") from exc
    if actual != size:
        raise InvalidArgument(f"{what}: '{file}' has {actual} bytes, not {size}")


def _upload(transport: Transport, domain: str, path: str, digest: Digest, size: int,
            file: Path, what: str, scopes: tuple[str, ...], chunk_size: int | None,
            progress: Callable[[int], None] | None) -> None:
    location = start_upload(transport, domain, path, what, scopes)
    params = [("digest", str(digest))]
    if chunk_size is None:
        body = _reader(file, 0, size, progress)
        headers = {"Content-Length": str(size), "Content-Type": "application/octet-stream"}
    else:
        location = _patch_chunks(transport, domain, location, file, size, chunk_size,
                                 what, scopes, progress)
        body, headers = (lambda: b""), {"Content-Length": "0"}
    response = transport.request(Request("PUT", domain, location, what, scopes,
                                        headers=headers, params=params, body=body,
                                        idempotent=False))
    _expect(response, 201, what)


def start_upload(transport: Transport, domain: str, path: str, what: str,
                 scopes: tuple[str, ...], params: list[tuple[str, str]] | None = None,
                 ) -> str:
    """POST a new upload session; returns its Location."""
    response = transport.request(Request("POST", domain, f"/v2/{path}/blobs/uploads/",
                                        what, scopes, params=params or [],
                                        headers={"Content-Length": "0"},
                                        idempotent=False))
    _expect(response, 202, what)
    return _location(response, what)


def _patch_chunks(transport: Transport, domain: str, location: str, file: Path,
                  size: int, chunk_size: int, what: str, scopes: tuple[str, ...],
                  progress: Callable[[int], None] | None) -> str:
    if chunk_size <= 0:
        raise InvalidArgument(f"{what}: chunk size must be positive, not {chunk_size}")
    for start in range(0, size, chunk_size):
        length = min(chunk_size, size - start)
        headers = {"Content-Type": "application/octet-stream",
                   "Content-Length": str(length),
                   "Content-Range": f"{start}-{start + length - 1}"}
        response = transport.request(Request(
            "PATCH", domain, location, what, scopes, headers=headers,
            body=_reader(file, start, length, progress), idempotent=False))
        _expect(response, 202, what)
        location = _location(response, what)
    return location


def _reader(file: Path, start: int, length: int,
            progress: Callable[[int], None] | None) -> Callable[[], Iterator[bytes]]:
    def chunks() -> Iterator[bytes]:
        with file.open("rb") as stream:
            stream.seek(start)
            left = length
            while left > 0:
                data = stream.read(min(CHUNK, left))
                if not data:
                    raise InvalidArgument(f"read '{file}': shorter than {length} bytes")
                left -= len(data)
                if progress is not None:
                    progress(len(data))
                yield data

    return chunks


def _expect(response: httpx.Response, status: int, what: str) -> None:
    if response.status_code == status:
        return
    detail = error_detail(response)
    if "DIGEST_INVALID" in detail or "SIZE_INVALID" in detail:
        raise BadContent(f"{what}: the registry refused the content: {detail}")
    if response.status_code == 404:
        raise NotFound(f"{what}: {detail}")
    raise RegistryError(f"{what}: {detail}")


def _location(response: httpx.Response, what: str) -> str:
    location = response.headers.get("location")
    if not location:
        raise RegistryError(f"{what}: {response.status_code} without a Location")
    return str(response.url.join(location))
