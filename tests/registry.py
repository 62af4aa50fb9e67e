"""Real registries for the image layer's tests, and the servers around them.

- ``Registry``: Debian's ``docker-registry serve`` (distribution 2.8) on
  127.0.0.1 and a free port, with a private storage directory; ``plain``,
  ``htpasswd`` (basic auth, served over TLS with a CA of our own) or
  ``token`` (bearer tokens from a ``TokenServer`` we run in a thread).
- ``TokenServer``: Docker's token protocol; issues ES256 JWTs that the
  registry checks against the certificate in its ``rootcertbundle``.
- ``FaultyFront``: an HTTP proxy in front of a registry that fails on
  purpose (5xx, a connection dropped mid-body) or redirects blob GETs to a
  ``BlobStore`` on another port, which records the headers it received.

What we found about distribution 2.8 (Debian's 2.8.2):

- htpasswd basic auth works over plain HTTP too (the docs say to use TLS,
  the code does not insist); we serve it over TLS anyway, as it is deployed,
  which also covers the client's certs.d handling.
- A token is accepted when its JWS header's ``kid`` names a key of the
  rootcertbundle: libtrust's key ID, the SHA-256 of the key's DER
  SubjectPublicKeyInfo cut to 30 bytes, base32 without padding, in groups
  of four joined by ``:``. ``iss`` must be the configured issuer and ``aud``
  the service; ``access`` lists what the token grants.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import http.client
import http.server
import ipaddress
import json
import os
import re
import signal
import socket
import ssl
import subprocess
import threading
import time
import urllib.parse
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import bcrypt
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.x509.oid import NameOID

REGISTRY_BINARY = "docker-registry"
SERVICE = "corral-test-registry"
ISSUER = "corral-test-token-issuer"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# --- TLS -------------------------------------------------------------------

@dataclass
class TLSFiles:
    """A private CA and a server certificate for 127.0.0.1 and localhost."""

    ca_cert: Path
    cert: Path
    key: Path


def make_tls(directory: Path) -> TLSFiles:
    directory.mkdir(parents=True, exist_ok=True)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "corral test CA")])
    ca = _certificate(ca_name, ca_name, ca_key.public_key(), ca_key, ca=True)
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    cert = _certificate(name, ca_name, key.public_key(), ca_key, ca=False)
    files = TLSFiles(directory / "ca.crt", directory / "server.crt", directory / "server.key")
    files.ca_cert.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    files.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    files.key.write_bytes(_key_pem(key))
    return files


def _certificate(subject, issuer, public_key, signing_key, *, ca: bool) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    builder = (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer)
               .public_key(public_key).serial_number(x509.random_serial_number())
               .not_valid_before(now - datetime.timedelta(minutes=5))
               .not_valid_after(now + datetime.timedelta(days=2))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if not ca:
        names = [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    return builder.sign(signing_key, hashes.SHA256())


def _key_pem(key) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM,
                             serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


# --- the registry ----------------------------------------------------------

@dataclass
class Registry:
    """One running docker-registry.

    Attributes:
        host: ``127.0.0.1:PORT``, the domain of references to it.
        url: its base URL (``http://`` or ``https://``).
        username, password: the credentials it accepts (auth variants).
        certs_dir: a certs.d directory with its CA under ``<host>/ca.crt``
            (TLS variant), to pass to ``Client(certs_dirs=[...])``.
        docker_config: a config.json holding the credentials.
        token_server: the TokenServer of the ``token`` variant.
    """

    kind: str
    workdir: Path
    host: str = ""
    url: str = ""
    username: str | None = None
    password: str | None = None
    certs_dir: Path | None = None
    ca_cert: Path | None = None
    docker_config: Path | None = None
    token_server: TokenServer | None = None
    process: subprocess.Popen | None = field(default=None, repr=False)

    @property
    def creds(self) -> str | None:
        """``user:password`` for skopeo's ``--dest-creds``."""
        return f"{self.username}:{self.password}" if self.username else None

    def ref(self, name: str) -> str:
        """A reference string to repository ``name`` here: ``127.0.0.1:P/name``."""
        return f"{self.host}/{name}"

    def ssl_context(self) -> ssl.SSLContext | None:
        if self.ca_cert is None:
            return None
        return ssl.create_default_context(cafile=str(self.ca_cert))

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.kill(self.process.pid, signal.SIGKILL)
                self.process.wait()
        if self.token_server is not None:
            self.token_server.stop()


def start_registry(workdir: Path, kind: str = "plain", *, username: str = "corral",
                   password: str = "s3cret-pw") -> Registry:
    """Start docker-registry in ``workdir``: ``plain``, ``htpasswd`` or ``token``.

    The caller stops it with ``Registry.stop()`` (the fixtures do).
    """
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    registry = Registry(kind, workdir, host=f"127.0.0.1:{port}")
    http_section: dict = {"addr": registry.host, "secret": uuid.uuid4().hex}
    auth = None
    if kind in ("htpasswd", "token"):
        registry.username, registry.password = username, password
        registry.docker_config = _write_docker_config(workdir / "docker", registry)
    if kind == "htpasswd":
        auth = {"htpasswd": {"realm": "corral-test", "path": _htpasswd(workdir, username,
                                                                        password)}}
        tls = make_tls(workdir / "tls")
        http_section["tls"] = {"certificate": str(tls.cert), "key": str(tls.key)}
        registry.ca_cert = tls.ca_cert
        registry.certs_dir = workdir / "certs.d"
        (registry.certs_dir / registry.host).mkdir(parents=True)
        (registry.certs_dir / registry.host / "ca.crt").write_bytes(tls.ca_cert.read_bytes())
    elif kind == "token":
        registry.token_server = TokenServer(workdir / "token", {username: password})
        auth = {"token": registry.token_server.registry_config()}
    elif kind != "plain":
        raise ValueError(f"unknown registry kind {kind!r}")
    scheme = "https" if "tls" in http_section else "http"
    registry.url = f"{scheme}://{registry.host}"
    config = {"version": 0.1, "log": {"level": "warn", "accesslog": {"disabled": True}},
              "storage": {"filesystem": {"rootdirectory": str(workdir / "storage")},
                          "delete": {"enabled": True}},
              "http": http_section}
    if auth:
        config["auth"] = auth
    # JSON is YAML, so the config needs no YAML writer.
    (workdir / "config.yml").write_text(json.dumps(config, indent=1))
    _launch(registry)
    return registry


def _htpasswd(workdir: Path, username: str, password: str) -> str:
    hashed = bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=5)).decode()
    path = workdir / "htpasswd"
    path.write_text(f"{username}:{hashed}\n")
    return str(path)


def _write_docker_config(directory: Path, registry: Registry) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    auth = base64.b64encode(f"{registry.username}:{registry.password}".encode()).decode()
    path = directory / "config.json"
    path.write_text(json.dumps({"auths": {registry.host: {"auth": auth}}}))
    return path


def _launch(registry: Registry) -> None:
    log = (registry.workdir / "registry.log").open("wb")
    registry.process = subprocess.Popen(
        [REGISTRY_BINARY, "serve", str(registry.workdir / "config.yml")],
        stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    log.close()
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if registry.process.poll() is not None:
            raise RuntimeError(f"docker-registry exited {registry.process.returncode}: "
                               f"{(registry.workdir / 'registry.log').read_text()}")
        if _answers(registry):
            return
        time.sleep(0.05)
    registry.stop()
    raise RuntimeError(f"docker-registry on {registry.host} did not answer GET /v2/")


def _answers(registry: Registry) -> bool:
    host, port = registry.host.split(":")
    context = registry.ssl_context()
    try:
        if context is not None:
            conn = http.client.HTTPSConnection(host, int(port), timeout=2, context=context)
        else:
            conn = http.client.HTTPConnection(host, int(port), timeout=2)
        conn.request("GET", "/v2/")
        status = conn.getresponse().status
        conn.close()
    except OSError:
        return False
    return status in (200, 401)


# --- the token server ------------------------------------------------------

def libtrust_key_id(public_key) -> str:
    """The key ID distribution 2.8 looks a token's ``kid`` up by."""
    der = public_key.public_bytes(serialization.Encoding.DER,
                                  serialization.PublicFormat.SubjectPublicKeyInfo)
    encoded = base64.b32encode(hashlib.sha256(der).digest()[:30]).decode().rstrip("=")
    return ":".join(encoded[i:i + 4] for i in range(0, len(encoded), 4))


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


class TokenServer:
    """Docker's token protocol for the ``token`` registry, in a thread.

    ``users`` maps user names to passwords. Each user may pull and push
    every repository except those under ``readonly/`` (pull only);
    anonymous requests get a token granting nothing, as Docker Hub does for
    private repositories. ``requests`` records the (user, service, scopes)
    of every token asked for; ``expires_in`` is what tokens say.
    """

    def __init__(self, workdir: Path, users: dict[str, str], expires_in: int = 300) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        self.users = users
        self.expires_in = expires_in
        self.requests: list[tuple[str | None, str | None, list[str]]] = []
        self._key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "corral token signer")])
        cert = _certificate(name, name, self._key.public_key(), self._key, ca=True)
        self.cert_path = workdir / "token-signer.crt"
        self.cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        self.kid = libtrust_key_id(self._key.public_key())
        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.realm = f"http://127.0.0.1:{self._server.server_port}/token"
        self._server.block_on_close = False
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()

    def registry_config(self) -> dict:
        return {"realm": self.realm, "service": SERVICE, "issuer": ISSUER,
                "rootcertbundle": str(self.cert_path)}

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def grant(self, user: str | None, scopes: list[str]) -> list[dict]:
        access = []
        for scope in scopes:
            kind, _, rest = scope.partition(":")
            name, _, actions = rest.rpartition(":")
            if kind != "repository" or user is None:
                continue
            allowed = {"pull"} if name.startswith("readonly/") else {"pull", "push"}
            granted = [a for a in actions.split(",") if a in allowed]
            access.append({"type": "repository", "name": name, "actions": granted})
        return access

    def issue(self, user: str | None, scopes: list[str]) -> str:
        now = int(time.time())
        header = {"typ": "JWT", "alg": "ES256", "kid": self.kid}
        claims = {"iss": ISSUER, "sub": user or "", "aud": SERVICE, "iat": now,
                  "nbf": now - 10, "exp": now + self.expires_in, "jti": uuid.uuid4().hex,
                  "access": self.grant(user, scopes)}
        signing_input = (_b64url(json.dumps(header).encode()) + "."
                         + _b64url(json.dumps(claims).encode()))
        der = self._key.sign(signing_input.encode(), ec.ECDSA(hashes.SHA256()))
        r, s = decode_dss_signature(der)
        return signing_input + "." + _b64url(r.to_bytes(32, "big") + s.to_bytes(32, "big"))

    def _user(self, authorization: str | None) -> tuple[bool, str | None]:
        """(acceptable, user): no header is anonymous; a wrong one is refused."""
        if not authorization:
            return True, None
        scheme, _, encoded = authorization.partition(" ")
        try:
            user, _, password = base64.b64decode(encoded).decode().partition(":")
        except ValueError:
            return False, None
        ok = scheme.lower() == "basic" and self.users.get(user) == password
        return ok, user if ok else None

    def _handler(self):
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                query = urllib.parse.parse_qs(urllib.parse.urlsplit(self.path).query)
                ok, user = server._user(self.headers.get("Authorization"))
                scopes = " ".join(query.get("scope", [])).split()
                server.requests.append((user, (query.get("service") or [None])[0], scopes))
                if not ok:
                    _answer(self, 401, b'{"details":"incorrect username or password"}')
                    return
                body = {"token": server.issue(user, scopes), "expires_in": server.expires_in}
                _answer(self, 200, json.dumps(body).encode())

            def log_message(self, *args):
                pass

        return Handler


def _answer(handler: http.server.BaseHTTPRequestHandler, status: int, body: bytes,
            headers: dict[str, str] | None = None) -> None:
    handler.send_response(status)
    for name, value in (headers or {"Content-Type": "application/json"}).items():
        handler.send_header(name, value)
    handler.send_header("Content-Length", str(len(body)))
    handler.end_headers()
    if handler.command != "HEAD":
        handler.wfile.write(body)


# --- the faulty front and the blob store -------------------------------------

@dataclass
class Fault:
    """What the front does to requests matching ``method`` and ``path`` (a
    regex searched in the path): ``status`` answers that status instead;
    ``drop`` forwards the answer but closes the connection after ``after``
    bytes of its body; ``redirect`` answers 307 to the BlobStore; ``serve``
    answers 200 with ``body`` and ``headers`` (a forged manifest). ``times``
    is how many requests it hits (None: all)."""

    kind: str
    path: str
    method: str = "GET"
    times: int | None = None
    status: int = 500
    after: int = 0
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    hits: int = 0

    def matches(self, method: str, path: str) -> bool:
        if method != self.method or not re.search(self.path, path):
            return False
        return self.times is None or self.hits < self.times


class _Forwarder:
    """Forwards one request to the upstream registry with http.client."""

    def __init__(self, registry: Registry) -> None:
        self.registry = registry
        self._host, port = registry.host.split(":")
        self._port = int(port)

    def open(self, method: str, path: str, headers: dict[str, str],
             body: bytes | None) -> tuple[http.client.HTTPConnection, http.client.HTTPResponse]:
        context = self.registry.ssl_context()
        if context is not None:
            conn = http.client.HTTPSConnection(self._host, self._port, timeout=30,
                                               context=context)
        else:
            conn = http.client.HTTPConnection(self._host, self._port, timeout=30)
        conn.request(method, path, body=body, headers=headers)
        return conn, conn.getresponse()


_HOP_HEADERS = frozenset({"connection", "keep-alive", "transfer-encoding", "proxy-connection",
                          "upgrade", "te", "trailer"})


class _Server:
    """A threaded HTTP/1.1 server on 127.0.0.1 and a free port."""

    def __init__(self, handler) -> None:
        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        # Do not wait at stop for handlers of keep-alive connections that a
        # client still holds open.
        self._server.block_on_close = False
        self.host = f"127.0.0.1:{self._server.server_port}"
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


class BlobStore(_Server):
    """Where the front redirects blob GETs: serves them from the upstream
    registry with its own credentials, and records the headers each request
    brought (``received``: a list of dicts, names lowercased)."""

    def __init__(self, registry: Registry) -> None:
        self.received: list[dict[str, str]] = []
        forwarder = _Forwarder(registry)
        store = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self):
                store.received.append({k.lower(): v for k, v in self.headers.items()})
                headers = {"Host": registry.host}
                if registry.username:
                    headers["Authorization"] = "Basic " + base64.b64encode(
                        registry.creds.encode()).decode()
                if "Range" in self.headers:
                    headers["Range"] = self.headers["Range"]
                conn, response = forwarder.open("GET", self.path, headers, None)
                _relay(self, response, None)
                conn.close()

            do_HEAD = do_GET

            def log_message(self, *args):
                pass

        super().__init__(Handler)


class FaultyFront(_Server):
    """A proxy in front of ``registry`` that misbehaves as told by ``faults``
    (see Fault); ``seen`` records (method, path, headers) of every request,
    header names lowercased."""

    def __init__(self, registry: Registry, store: BlobStore | None = None) -> None:
        self.faults: list[Fault] = []
        self.seen: list[tuple[str, str, dict[str, str]]] = []
        self._lock = threading.Lock()
        forwarder = _Forwarder(registry)
        front = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _handle(self):
                fault = front._take(self.command, self.path, self.headers)
                body = _read_body(self)
                if fault is not None and fault.kind == "status":
                    _answer(self, fault.status, b'{"errors":[{"code":"UNAVAILABLE",'
                                                b'"message":"injected fault"}]}')
                    return
                if fault is not None and fault.kind == "serve":
                    _answer(self, 200, fault.body, fault.headers)
                    return
                if fault is not None and fault.kind == "redirect":
                    target = f"http://{store.host}{self.path}"
                    _answer(self, 307, b"", {"Location": target})
                    return
                headers = {k: v for k, v in self.headers.items()
                           if k.lower() not in _HOP_HEADERS and k.lower() != "content-length"}
                headers["X-Forwarded-Proto"] = "http"
                conn, response = forwarder.open(self.command, self.path, headers, body)
                drop = fault.after if fault is not None and fault.kind == "drop" else None
                _relay(self, response, drop)
                conn.close()

            do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = _handle

            def log_message(self, *args):
                pass

        super().__init__(Handler)

    def fail(self, path: str, *, times: int | None, status: int = 500,
             method: str = "GET") -> Fault:
        return self._add(Fault("status", path, method, times, status=status))

    def drop(self, path: str, *, after: int, times: int | None = 1) -> Fault:
        return self._add(Fault("drop", path, "GET", times, after=after))

    def redirect(self, path: str = r"/blobs/sha256:", *, method: str = "GET") -> Fault:
        return self._add(Fault("redirect", path, method, None))

    def serve(self, path: str, body: bytes, headers: dict[str, str], *,
              times: int | None = None) -> Fault:
        return self._add(Fault("serve", path, "GET", times, body=body, headers=headers))

    def clear(self) -> None:
        with self._lock:
            self.faults.clear()

    def _add(self, fault: Fault) -> Fault:
        with self._lock:
            self.faults.append(fault)
        return fault

    def requests(self, method: str, path: str) -> list[dict[str, str]]:
        """The headers of each request seen whose path matches regex ``path``."""
        with self._lock:
            return [h for m, p, h in self.seen if m == method and re.search(path, p)]

    def _take(self, method: str, path: str, headers) -> Fault | None:
        with self._lock:
            self.seen.append((method, path, {k.lower(): v for k, v in headers.items()}))
            for fault in self.faults:
                if fault.matches(method, path):
                    fault.hits += 1
                    return fault
        return None


def _read_body(handler: http.server.BaseHTTPRequestHandler) -> bytes | None:
    if handler.headers.get("Transfer-Encoding", "").lower() == "chunked":
        parts = []
        while True:
            size = int(handler.rfile.readline().split(b";")[0], 16)
            if size == 0:
                handler.rfile.readline()
                return b"".join(parts)
            parts.append(handler.rfile.read(size))
            handler.rfile.readline()
    length = int(handler.headers.get("Content-Length") or 0)
    return handler.rfile.read(length) if length else None


def _relay(handler: http.server.BaseHTTPRequestHandler, response: http.client.HTTPResponse,
           drop_after: int | None) -> None:
    body = response.read()
    handler.send_response(response.status)
    for name, value in response.getheaders():
        if name.lower() not in _HOP_HEADERS and name.lower() != "content-length":
            handler.send_header(name, value)
    length = response.getheader("Content-Length")
    if handler.command == "HEAD" and length is not None:
        handler.send_header("Content-Length", length)
    else:
        handler.send_header("Content-Length", str(len(body)))
    handler.end_headers()
    if handler.command == "HEAD":
        return
    if drop_after is None or drop_after >= len(body):
        handler.wfile.write(body)
        return
    # Half the body, then a connection that ends: what a dying proxy does.
    handler.wfile.write(body[:drop_after])
    handler.wfile.flush()
    handler.close_connection = True
    handler.connection.shutdown(socket.SHUT_RDWR)
