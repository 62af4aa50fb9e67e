"""The shim's socket protocol (docs/dev/manager.md, "Socket protocol").

``shim.sock`` is a unix stream socket. A client sends one JSON line and the
shim answers one JSON line, ``{"ok": true, ...}`` or ``{"error": "..."}``.
After a successful ``attach`` the connection turns raw: from the shim, the
container's output as a hijacked Docker attach carries it (raw bytes with a
tty; otherwise frames of an 8-byte header, stream 1 or 2, three zero bytes
and a big-endian 32-bit length, then the payload); from the client, the
container's stdin.

The wire format (line framing, frames) is in wire.py, which the shim
imports; this module adds the client's side (``request``, ``attach``,
``demux``) for the engine and tests, which the shim never loads.
"""

from __future__ import annotations

from _collections_abc import Iterator

from corral import _json

from .errors import Error, ShimUnavailable
from .wire import _HEADER, MAX_REQUEST, OPS, encode, frame, parse_request

__all__ = ["MAX_REQUEST", "OPS", "attach", "demux", "encode", "frame", "parse_request",
           "request"]

def _connect(sock_path: str, timeout: float | None):
    import socket

    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    sock.settimeout(timeout)
    try:
        sock.connect(sock_path)
    except OSError as exc:
        sock.close()
        raise ShimUnavailable(f"connect to shim '{sock_path}': "
                              f"{exc.strerror or exc}") from exc
    return sock


def _read_line(sock, sock_path: str) -> dict:
    # Peek, then take exactly the line: after an attach answer the raw stream
    # follows at once, and must stay in the socket for the caller.
    while True:
        peeked = sock.recv(MAX_REQUEST, 2)  # MSG_PEEK
        newline = peeked.find(b"\n")
        if newline >= 0:
            line = sock.recv(newline + 1)
            break
        if not peeked:
            raise ShimUnavailable(f"shim '{sock_path}': closed without an answer")
        if len(peeked) >= MAX_REQUEST:
            raise ShimUnavailable(f"shim '{sock_path}': answer too long")
        import select

        select.select([sock], [], [], sock.gettimeout())
    try:
        answer = _json.loads(line)
    except ValueError:
        raise ShimUnavailable(f"shim '{sock_path}': answer is not JSON") from None
    if not isinstance(answer, dict):
        raise ShimUnavailable(f"shim '{sock_path}': answer is not an object")
    if answer.get("ok") is not True:
        raise Error(str(answer.get("error") or f"shim '{sock_path}': no ok in the answer"))
    return answer


def request(sock_path: str, message: dict, timeout: float | None = 10.0) -> dict:
    """Send MESSAGE to the shim at SOCK_PATH and return its answer.

    TIMEOUT bounds the whole exchange (None waits for ever: ``wait``, ``stop``).

    Raises:
        ShimUnavailable: no shim listens there, or it closed or timed out.
        Error: the shim answered ``{"error": ...}`` (its message).
    """
    sock = _connect(sock_path, timeout)
    try:
        sock.sendall(encode(message))
        return _read_line(sock, sock_path)
    except TimeoutError as exc:
        raise ShimUnavailable(f"shim '{sock_path}': no answer in {timeout} s") from exc
    except OSError as exc:
        raise ShimUnavailable(f"shim '{sock_path}': {exc.strerror or exc}") from exc
    finally:
        sock.close()


def attach(sock_path: str, *, stdin: bool = False, stdout: bool = True,
           stderr: bool = True, replay: bool = False, timeout: float | None = 10.0):
    """Attach to the container behind SOCK_PATH; return the raw socket.

    The socket is blocking (no timeout) once attached. Read the output with
    ``demux`` (or raw, with a tty); send stdin with ``sendall`` and close it
    with ``shutdown(SHUT_WR)``. The shim closes it when the run has exited.

    Raises:
        ShimUnavailable, Error: as ``request``.
    """
    sock = _connect(sock_path, timeout)
    try:
        sock.sendall(encode({"op": "attach", "stdin": stdin, "stdout": stdout,
                             "stderr": stderr, "replay": replay}))
        _read_line(sock, sock_path)
    except TimeoutError as exc:
        sock.close()
        raise ShimUnavailable(f"shim '{sock_path}': no answer in {timeout} s") from exc
    except OSError as exc:
        # A shim that stops listening resets connections it had not accepted.
        sock.close()
        raise ShimUnavailable(f"shim '{sock_path}': {exc.strerror or exc}") from exc
    except BaseException:
        sock.close()
        raise
    sock.settimeout(None)
    return sock


def demux(sock, tty: bool = False) -> Iterator[tuple[int, bytes]]:
    """``(stream, bytes)`` read from an attached SOCK until the shim closes it."""
    buffer = b""
    while True:
        data = sock.recv(1 << 16)
        if not data:
            return
        if tty:
            yield 1, data
            continue
        buffer += data
        while len(buffer) >= _HEADER.size:
            stream, size = _HEADER.unpack_from(buffer)
            if len(buffer) < _HEADER.size + size:
                break
            yield stream, buffer[_HEADER.size:_HEADER.size + size]
            buffer = buffer[_HEADER.size + size:]
