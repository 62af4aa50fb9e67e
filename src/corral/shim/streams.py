"""The container's output on its way out: the log, the replay buffer, attaches.

Every chunk read from the container's stdout and stderr pipes (or its pty
master, all "stdout") goes to the json-file log, to the replay buffer of the
current run, and to each attached client that asked for that stream: framed
as Docker's multiplexed stream without a tty, raw with one.

Clients are non-blocking sockets: what a client cannot take at once waits in
its own buffer, sent when epoll says it is writable. A client that falls more
than CLIENT_BACKLOG behind is dropped rather than letting one slow reader
hold the container's output in memory (``docker attach`` then just ends).
"""

from __future__ import annotations

import _socket

from .jsonlog import LogWriter
from .wire import frame

REPLAY_MAX = 1 << 20
CLIENT_BACKLOG = 8 << 20


class Client:
    """One attached connection (after its ``{"ok": true}``)."""

    def __init__(self, sock: _socket.socket, *, stdin: bool, stdout: bool,
                 stderr: bool, tty: bool) -> None:
        self.sock = sock
        self.fd = sock.fileno()
        self.stdin = stdin
        self.streams = {1} if stdout else set()
        if stderr:
            self.streams.add(2)
        self.tty = tty
        self.pending = bytearray()
        self.reading = True  # until the client shuts its side down
        self.closing = False  # close once PENDING is sent
        self.dead = False

    def push(self, stream: int, data: bytes) -> None:
        if self.dead or stream not in self.streams or not data:
            return
        self.pending += data if self.tty else frame(stream, data)
        if len(self.pending) > CLIENT_BACKLOG:
            self.dead = True
        else:
            self.send()

    def send(self) -> None:
        """Send what the socket takes now; mark the client dead on an error."""
        while self.pending and not self.dead:
            try:
                sent = self.sock.send(self.pending)
            except BlockingIOError:
                return
            except OSError:
                self.dead = True
                return
            del self.pending[:sent]

    @property
    def done(self) -> bool:
        return self.dead or (self.closing and not self.pending)

    def close(self) -> None:
        self.dead = True
        self.sock.close()


class Output:
    """Fans each chunk of output out to the log, the replay buffer and clients."""

    def __init__(self, log: LogWriter, tty: bool) -> None:
        self.log = log
        self.tty = tty
        self.replay: list[tuple[int, bytes]] = []
        self.replay_size = 0
        self.clients: list[Client] = []

    def new_run(self) -> None:
        """A new run starts: the replay buffer holds only this run's output."""
        self.replay.clear()
        self.replay_size = 0

    def feed(self, stream: int, data: bytes) -> None:
        self.log.write(stream, data)
        self.replay.append((stream, data))
        self.replay_size += len(data)
        while self.replay_size > REPLAY_MAX and len(self.replay) > 1:
            self.replay_size -= len(self.replay.pop(0)[1])
        for client in self.clients:
            client.push(stream, data)

    def add(self, client: Client, replay: bool) -> None:
        if replay:
            for stream, data in self.replay:
                client.push(stream, data)
        self.clients.append(client)

    def end_run(self) -> None:
        """The run's output has all been read: clients close once sent."""
        self.log.flush()
        for client in self.clients:
            client.closing = True

    def collect(self) -> list[Client]:
        """Remove and return the clients that are done (closed by the caller)."""
        done = [client for client in self.clients if client.done]
        self.clients = [client for client in self.clients if not client.done]
        return done
