"""The engine's API spoken over HTTP to a corrald (``corral -H``).

``Remote`` has the methods of ``corral.manager.engine.Engine`` that the CLI
uses, with the same arguments and the same Docker JSON results, so a
command does not know which one it holds. Errors come back as the classes
the engine raises, from the status code (404 NotFound, 409 Conflict, 400
InvalidArgument), with the daemon's message.
"""

from __future__ import annotations

import json
import socket
import urllib.parse
from collections.abc import Iterator

import httpx

from .volume import RemoteVolumes

API_VERSION = "1.43"


def _errors():
    from ..manager import errors

    return errors


class Remote(RemoteVolumes):
    def __init__(self, host: str) -> None:
        if not host.startswith("unix://"):
            raise SystemExit(f"corral: -H '{host}': only unix:// sockets are supported")
        self.path = host[len("unix://"):]
        transport = httpx.HTTPTransport(uds=self.path)
        self._http = httpx.Client(transport=transport, base_url="http://corrald",
                                  timeout=None)

    def close(self) -> None:
        self._http.close()

    # Plumbing ---------------------------------------------------------------

    def _call(self, method: str, path: str, *, params: dict | None = None,
              body: object = None, expect_json: bool = True):
        try:
            response = self._http.request(method, f"/v{API_VERSION}{path}",
                                          params=_params(params), json=body)
        except httpx.TransportError as exc:
            raise _errors().Error(f"cannot connect to corrald at {self.path}: {exc}") from None
        _raise_for(response)
        if not expect_json or response.status_code == 204 or not response.content:
            return None
        return response.json()

    def _stream(self, path: str, params: dict | None = None) -> Iterator[bytes]:
        with self._http.stream("GET", f"/v{API_VERSION}{path}",
                               params=_params(params)) as response:
            if response.status_code >= 400:
                response.read()
                _raise_for(response)
            yield from response.iter_raw()

    def hijack(self, path: str, params: dict | None = None,
               body: object = None) -> socket.socket:
        """POST with ``Upgrade: tcp``; the raw socket once the daemon answers 101."""
        query = urllib.parse.urlencode(_params(params) or {})
        data = json.dumps(body).encode() if body is not None else b""
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.connect(self.path)
        request = (f"POST /v{API_VERSION}{path}?{query} HTTP/1.1\r\nHost: corrald\r\n"
                   f"Connection: Upgrade\r\nUpgrade: tcp\r\n"
                   f"Content-Type: application/json\r\nContent-Length: {len(data)}\r\n\r\n")
        sock.sendall(request.encode() + data)
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = sock.recv(1)
            if not chunk:
                raise _errors().Error("corrald closed the connection")
            head += chunk
        status = head.split(b" ", 2)[1]
        if status != b"101":
            sock.close()
            raise _errors().Error(f"corrald refused the stream: {head.decode(errors='replace')}")
        return sock

    # The engine's methods ---------------------------------------------------------

    def create(self, body: dict, *, name: str | None = None, platform: str | None = None):
        return self._call("POST", "/containers/create",
                          params={"name": name, "platform": platform}, body=body)

    def start(self, ref: str) -> None:
        self._call("POST", f"/containers/{ref}/start", expect_json=False)

    def stop(self, ref: str, *, timeout: int | None = None, signal: str | None = None):
        self._call("POST", f"/containers/{ref}/stop", params={"t": timeout, "signal": signal},
                   expect_json=False)

    def kill(self, ref: str, signal: str = "KILL") -> None:
        self._call("POST", f"/containers/{ref}/kill", params={"signal": signal},
                   expect_json=False)

    def restart(self, ref: str, *, timeout: int | None = None) -> None:
        self._call("POST", f"/containers/{ref}/restart", params={"t": timeout},
                   expect_json=False)

    def pause(self, ref: str) -> None:
        self._call("POST", f"/containers/{ref}/pause", expect_json=False)

    def unpause(self, ref: str) -> None:
        self._call("POST", f"/containers/{ref}/unpause", expect_json=False)

    def wait(self, ref: str, *, condition: str = "not-running") -> dict:
        return self._call("POST", f"/containers/{ref}/wait", params={"condition": condition})

    def remove(self, ref: str, *, force: bool = False, volumes: bool = False) -> None:
        self._call("DELETE", f"/containers/{ref}", params={"force": force, "v": volumes},
                   expect_json=False)

    def list(self, *, all: bool = False, filters: dict | None = None, size: bool = False,
             limit: int = -1) -> list:
        return self._call("GET", "/containers/json", params={
            "all": all, "size": size, "limit": limit if limit > 0 else None,
            "filters": json.dumps(filters) if filters else None})

    def inspect(self, ref: str, *, size: bool = False) -> dict:
        return self._call("GET", f"/containers/{ref}/json", params={"size": size})

    def logs(self, ref: str, *, stdout=True, stderr=True, follow=False, since=None,
             until=None, tail=None, timestamps=False) -> Iterator[tuple[int, bytes]]:
        from .streams import frames

        chunks = self._stream(f"/containers/{ref}/logs", {
            "stdout": stdout, "stderr": stderr, "follow": follow, "since": since,
            "until": until, "tail": tail, "timestamps": timestamps})
        yield from frames(chunks)

    def attach(self, ref: str, *, stdin=False, stdout=True, stderr=True, logs=False,
               stream=True) -> socket.socket:
        return self.hijack(f"/containers/{ref}/attach", {
            "stdin": stdin, "stdout": stdout, "stderr": stderr, "logs": logs,
            "stream": stream})

    def resize(self, ref: str, *, height: int, width: int) -> None:
        self._call("POST", f"/containers/{ref}/resize", params={"h": height, "w": width},
                   expect_json=False)

    def top(self, ref: str, ps_args: str = "-ef") -> dict:
        return self._call("GET", f"/containers/{ref}/top", params={"ps_args": ps_args})

    def stats(self, ref: str, *, stream: bool = True) -> Iterator[dict]:
        if not stream:
            yield self._call("GET", f"/containers/{ref}/stats", params={"stream": False})
            return
        buffer = b""
        for chunk in self._stream(f"/containers/{ref}/stats", {"stream": True}):
            buffer += chunk
            while b"\n" in buffer:
                line, buffer = buffer.split(b"\n", 1)
                if line.strip():
                    yield json.loads(line)

    def rename(self, ref: str, name: str) -> None:
        self._call("POST", f"/containers/{ref}/rename", params={"name": name},
                   expect_json=False)

    def prune(self, filters: dict | None = None) -> dict:
        return self._call("POST", "/containers/prune",
                          params={"filters": json.dumps(filters) if filters else None})

    def exec_create(self, ref: str, body: dict) -> dict:
        return self._call("POST", f"/containers/{ref}/exec", body=body)

    def exec_start(self, exec_id: str, *, detach: bool = False, tty: bool = False):
        body = {"Detach": detach, "Tty": tty}
        if detach:
            self._call("POST", f"/exec/{exec_id}/start", body=body, expect_json=False)
            return None
        return self.hijack(f"/exec/{exec_id}/start", body=body)

    def exec_resize(self, exec_id: str, *, height: int, width: int) -> None:
        self._call("POST", f"/exec/{exec_id}/resize", params={"h": height, "w": width},
                   expect_json=False)

    def exec_inspect(self, exec_id: str) -> dict:
        return self._call("GET", f"/exec/{exec_id}/json")

    def events(self, *, since=None, until=None, filters=None) -> Iterator[dict]:
        buffer = b""
        for chunk in self._stream("/events", {
                "since": since, "until": until,
                "filters": json.dumps(filters) if filters else None}):
            buffer += chunk
            while b"\n" in buffer:
                line, buffer = buffer.split(b"\n", 1)
                if line.strip():
                    yield json.loads(line)

    def info(self) -> dict:
        return self._call("GET", "/info")

    def version(self) -> dict:
        return self._call("GET", "/version")

    # Networks -------------------------------------------------------------------

    def network_list(self, *, filters: dict | None = None) -> list:
        return self._call("GET", "/networks",
                          params={"filters": json.dumps(filters) if filters else None})

    def network_inspect(self, ref: str) -> dict:
        return self._call("GET", f"/networks/{ref}")

    def network_create(self, body: dict) -> dict:
        return self._call("POST", "/networks/create", body=body)

    def network_remove(self, ref: str) -> None:
        self._call("DELETE", f"/networks/{ref}", expect_json=False)

    def network_connect(self, ref: str, body: dict) -> None:
        self._call("POST", f"/networks/{ref}/connect", body=body, expect_json=False)

    def network_disconnect(self, ref: str, body: dict) -> None:
        self._call("POST", f"/networks/{ref}/disconnect", body=body, expect_json=False)

    def network_prune(self, filters: dict | None = None) -> dict:
        return self._call("POST", "/networks/prune",
                          params={"filters": json.dumps(filters) if filters else None})

    def pull(self, image: str, *, platform: str | None = None) -> None:
        """POST /images/create, reading the progress stream to its end."""
        ref, _, tag = image.rpartition(":") if "@" not in image else (image, "", "")
        if "/" in tag or not ref:
            ref, tag = image, ""
        params = {"fromImage": ref, "tag": tag or None, "platform": platform}
        with self._http.stream("POST", f"/v{API_VERSION}/images/create",
                               params=_params(params)) as response:
            if response.status_code >= 400:
                response.read()
                _raise_for(response)
            for line in response.iter_lines():
                if line.strip() and "error" in (event := json.loads(line)):
                    raise _errors().Error(event["error"])


def _params(params: dict | None) -> dict | None:
    if params is None:
        return None
    out = {}
    for key, value in params.items():
        if value is None:
            continue
        out[key] = ("1" if value else "0") if isinstance(value, bool) else str(value)
    return out


def _raise_for(response: httpx.Response) -> None:
    if response.status_code < 400:
        return
    exit_status = None
    try:
        body = response.json()
        message = body.get("message", response.text)
        exit_status = body.get("ExitStatus")
    except ValueError:
        message = response.text
    errors = _errors()
    if isinstance(exit_status, int):
        raise errors.StartFailed(message, exit_status=exit_status)
    kind = {404: errors.NotFound, 409: errors.Conflict,
            400: errors.InvalidArgument}.get(response.status_code, errors.Error)
    raise kind(message)
