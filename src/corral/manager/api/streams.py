"""Between blocking code in threads and the event loop that serves HTTP.

The engine and the image layer block (sockets, SQLite, unpacking), so the
server never calls them on the event loop. Three shapes of traffic cross:

- a stream of items a thread produces (pull progress, log lines, events,
  stats): ``from_thread`` runs the producer in a thread of its own and
  yields its items as an async iterator, with a bounded queue between so a
  slow client slows the producer instead of filling memory;
- bytes a thread writes to a file object (``docker save``): ``ChannelWriter``
  is that file object, over the same channel;
- bytes a thread reads from the request body (``docker load``):
  ``BodyReader`` reads the body on the event loop on the thread's behalf.

When the client goes away the channel is closed, and the producer's next
``send`` raises ``ClientGone`` in its thread, which ends it. A producer
blocked in the engine (a ``logs --follow`` with no new output) notices only
at its next item.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import AsyncIterator, Callable
from typing import Any

from aiohttp import web

# Items in flight between a producer thread and its reader.
_DEPTH = 64
_DONE = object()


class ClientGone(Exception):
    """Raised in a producer thread when its reader has gone away."""


class Channel:
    """Items from one thread to the event loop, at most ``depth`` in flight."""

    def __init__(self, loop: asyncio.AbstractEventLoop, depth: int = _DEPTH) -> None:
        self._loop = loop
        self._queue: asyncio.Queue = asyncio.Queue()
        self._slots = threading.Semaphore(depth)
        self._closed = threading.Event()

    def send(self, item: Any) -> None:
        """Thread side: pass ``item``; blocks while the reader is behind."""
        while not self._slots.acquire(timeout=0.5):
            if self._closed.is_set():
                raise ClientGone("the client went away")
        if self._closed.is_set():
            raise ClientGone("the client went away")
        self._loop.call_soon_threadsafe(self._queue.put_nowait, item)

    def finish(self, error: BaseException | None = None) -> None:
        """Thread side: no more items (``error``: the producer failed)."""
        self._loop.call_soon_threadsafe(self._queue.put_nowait, (_DONE, error))

    async def receive(self) -> Any:
        """Loop side: the next item, or ``(_DONE, error)`` at the end."""
        item = await self._queue.get()
        if not (isinstance(item, tuple) and len(item) == 2 and item[0] is _DONE):
            self._slots.release()
        return item

    def close(self) -> None:
        """Loop side: the reader is gone; the producer stops at its next send."""
        self._closed.set()
        self._slots.release()


async def from_thread(produce: Callable[[Callable[[Any], None]], object],
                      *, name: str = "stream") -> AsyncIterator[Any]:
    """Run ``produce(send)`` in a new thread and yield what it sends.

    An exception of the producer is raised here after the items it sent
    before it. Leaving the iteration early (the client went away) makes the
    producer's next ``send`` raise ``ClientGone``.
    """
    channel = Channel(asyncio.get_running_loop())

    def run() -> None:
        try:
            produce(channel.send)
        except BaseException as exc:  # handed to the loop, raised there
            channel.finish(exc)
        else:
            channel.finish()

    threading.Thread(target=run, name=name, daemon=True).start()
    try:
        while True:
            item = await channel.receive()
            if isinstance(item, tuple) and len(item) == 2 and item[0] is _DONE:
                if item[1] is not None and not isinstance(item[1], ClientGone):
                    raise item[1]
                return
            yield item
    finally:
        channel.close()


def iterate(make_iterator: Callable[[], Any], *, name: str = "stream"
            ) -> AsyncIterator[Any]:
    """The items of a blocking iterator, made and consumed in a thread."""

    def produce(send: Callable[[Any], None]) -> None:
        iterator = make_iterator()
        try:
            for item in iterator:
                send(item)
        finally:
            close = getattr(iterator, "close", None)
            if close is not None:
                close()

    return from_thread(produce, name=name)


class ChannelWriter:
    """A binary file object for a thread; what it writes goes to ``send``,
    in chunks of at least 64 KiB so the loop is not woken for every header."""

    _CHUNK = 64 << 10

    def __init__(self, send: Callable[[bytes], None]) -> None:
        self._send = send
        self._buffer = bytearray()

    def write(self, data: bytes) -> int:
        self._buffer += data
        if len(self._buffer) >= self._CHUNK:
            self.flush()
        return len(data)

    def flush(self) -> None:
        if self._buffer:
            self._send(bytes(self._buffer))
            self._buffer.clear()

    def writable(self) -> bool:
        return True


class BodyReader:
    """A binary file object for a thread over a request's body: each read
    waits for the event loop to read the body on its behalf."""

    name = "<request body>"

    def __init__(self, request: web.Request, loop: asyncio.AbstractEventLoop) -> None:
        self._content = request.content
        self._loop = loop

    def read(self, size: int = -1) -> bytes:
        if size is None or size < 0:
            coroutine = self._content.read()
        else:
            coroutine = self._content.read(size)
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result()

    def readable(self) -> bool:
        return True


async def json_lines(request: web.Request, items: AsyncIterator[dict],
                     *, status: int = 200) -> web.StreamResponse:
    """Answer with one JSON object per line as ``items`` come.

    The response starts with the first item, so an error raised before it
    still becomes a plain error response with its own status; an error
    after it is sent in the stream as Docker does, ``{"errorDetail": ...,
    "error": ...}``, and the client shows it.
    """
    response = web.StreamResponse(status=status,
                                  headers={"Content-Type": "application/json"})
    started = False
    try:
        async for item in items:
            if not started:
                await response.prepare(request)
                started = True
            await response.write(json.dumps(item).encode() + b"\n")
    except Exception as exc:
        if not started:
            raise
        message = str(exc)
        await response.write(json.dumps({"errorDetail": {"message": message},
                                         "error": message}).encode() + b"\n")
    if not started:
        await response.prepare(request)
    await response.write_eof()
    return response
