"""Hijacked connections: the raw byte stream both ways that ``attach`` and
``exec start`` turn an HTTP request into (the API reference, "Hijacking").

The client asks with ``Connection: Upgrade`` and ``Upgrade: tcp``; we answer
``101 UPGRADED`` and from then on the connection carries the container's
output (raw with a TTY, else 8-byte-header frames, which the shim already
writes) one way and its stdin the other.

aiohttp knows the ``tcp`` upgrade (it reads a request body before the
upgrade takes effect), but its protocol closes the connection when the
client half-closes, and the docker CLI half-closes at the end of stdin
(``echo hi | docker run -i ...``) while it still reads the output. So after
the 101 we take the transport over with a protocol of our own that keeps
the write side open after the client's EOF. aiohttp's ``set_parser`` first
hands us any bytes that came right behind the request.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket

from aiohttp import web

RAW_STREAM = "application/vnd.docker.raw-stream"
MULTIPLEXED_STREAM = "application/vnd.docker.multiplexed-stream"
_CHUNK = 64 << 10


class RawConnection(asyncio.Protocol):
    """The client's side of a hijacked connection."""

    def __init__(self, transport: asyncio.Transport) -> None:
        self.transport = transport
        self._incoming: asyncio.Queue[bytes | None] = asyncio.Queue()
        self._writable = asyncio.Event()
        self._writable.set()
        self.lost = False
        self.gone = asyncio.Event()  # set when the connection is lost

    # aiohttp's payload-parser interface, used once for the bytes it holds.
    def feed_data(self, data: bytes) -> tuple[bool, bytes]:
        self._incoming.put_nowait(bytes(data))
        return False, b""

    def feed_eof(self) -> None:
        self._incoming.put_nowait(None)

    # asyncio.Protocol
    def data_received(self, data: bytes) -> None:
        self._incoming.put_nowait(data)

    def eof_received(self) -> bool:
        self._incoming.put_nowait(None)
        return True  # keep our side open: output still goes to the client

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        self.gone.set()
        self._incoming.put_nowait(None)
        self._writable.set()

    def pause_writing(self) -> None:
        self._writable.clear()

    def resume_writing(self) -> None:
        self._writable.set()

    async def read(self) -> bytes | None:
        """The client's next bytes; None once it has closed its side."""
        return await self._incoming.get()

    async def write(self, data: bytes) -> None:
        if self.lost:
            raise ConnectionResetError("the client closed the connection")
        self.transport.write(data)
        await self._writable.wait()

    def close(self) -> None:
        if not self.transport.is_closing():
            self.transport.close()


async def upgrade(request: web.Request, *, tty: bool) -> tuple[web.StreamResponse,
                                                               RawConnection]:
    """Answer 101 and take the connection over."""
    response = web.StreamResponse(status=101, reason="UPGRADED", headers={
        "Content-Type": RAW_STREAM if tty else MULTIPLEXED_STREAM,
        "Connection": "Upgrade", "Upgrade": "tcp"})
    response.force_close()
    await response.prepare(request)
    transport = request.transport
    raw = RawConnection(transport)
    request.protocol.set_parser(raw)
    transport.set_protocol(raw)
    if not transport.is_reading():
        transport.resume_reading()
    return response, raw


async def relay(raw: RawConnection, peer: socket.socket) -> None:
    """Copy between the client and ``peer`` (the shim's attach socket) until
    the peer's output ends or the client goes; then close both.

    The client's EOF becomes ``shutdown(SHUT_WR)`` on the peer, which closes
    the container's stdin with ``StdinOnce``.
    """
    reader, writer = await asyncio.open_connection(sock=peer)
    tasks = [asyncio.create_task(_peer_to_client(reader, raw)),
             asyncio.create_task(_client_to_peer(raw, writer)),
             asyncio.create_task(raw.gone.wait())]
    try:
        # Output ending, or the client gone, ends the relay; the client's
        # EOF alone does not (its output is still to come).
        await asyncio.wait([tasks[0], tasks[2]], return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, ConnectionError):
                await task
        writer.close()
        raw.close()


async def _peer_to_client(reader: asyncio.StreamReader, raw: RawConnection) -> None:
    while data := await reader.read(_CHUNK):
        await raw.write(data)


async def _client_to_peer(raw: RawConnection, writer: asyncio.StreamWriter) -> None:
    while (data := await raw.read()) is not None:
        writer.write(data)
        await writer.drain()
    if not raw.lost and writer.can_write_eof():
        writer.write_eof()
