"""The HTTP side of the registry client: endpoints, TLS, retries, auth, redirects.

One ``Transport`` owns one ``httpx.Client`` (whose connection pool is
thread-safe) and the state it learns per registry, under a lock: which
scheme a registry answers on and how it authenticates. The distribution spec
(OCI distribution-spec, "API") only says what to send; the choices here are
Docker's, so a registry that works with ``docker pull`` works with us:

- HTTPS, verifying certificates against the system CAs plus ``*.crt`` in
  ``<certs_dir>/<host[:port]>/`` (client certificates as ``*.cert`` and
  ``*.key``), as in Docker's certs.d;
- plain HTTP only for registries marked insecure and for loopback ones,
  after HTTPS failed to connect; the answer is kept per registry;
- ``docker.io`` is served by ``registry-1.docker.io``;
- redirects (blob storage elsewhere) are followed by hand, so that our
  Authorization header never goes to another host.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import ssl
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from ..errors import RegistryError, Unavailable
from .auth import Authenticator

log = logging.getLogger(__name__)

RETRY_STATUSES = frozenset({500, 502, 503, 504})
# Transport failures worth another try: refused or dropped connections and
# timeouts, not a URL we cannot speak (UnsupportedProtocol).
RETRY_ERRORS = (httpx.NetworkError, httpx.TimeoutException, httpx.RemoteProtocolError)
_MAX_REDIRECTS = 10
_DOCKER_HUB_HOST = "registry-1.docker.io"

Body = Callable[[], bytes | Iterator[bytes]]


@dataclass
class Request:
    """One registry request. ``url`` is a path under the registry
    (``/v2/...``) or an absolute URL (an upload's Location); ``body`` makes
    the content afresh for every attempt."""

    method: str
    domain: str
    url: str
    what: str  # the operation, for messages: "get manifest 'x:1'"
    scopes: tuple[str, ...]
    headers: dict[str, str] = field(default_factory=dict)
    params: list[tuple[str, str]] = field(default_factory=list)
    body: Body | None = None
    stream: bool = False
    idempotent: bool = True
    follow: bool = False


def registry_host(domain: str) -> str:
    return _DOCKER_HUB_HOST if domain == "docker.io" else domain


def is_loopback(domain: str) -> bool:
    """localhost, 127.0.0.0/8 or ::1, with or without a port."""
    host = domain.rsplit(":", 1)[0] if domain.count(":") == 1 else domain
    if host.startswith("["):
        host = host[1:host.find("]")]
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def ssl_mounts(certs_dirs: Sequence[Path]) -> dict[str, httpx.BaseTransport]:
    """A transport per registry that has a certs.d directory, first wins."""
    mounts: dict[str, httpx.BaseTransport] = {}
    for certs_dir in certs_dirs:
        try:
            hosts = sorted(p for p in certs_dir.iterdir() if p.is_dir())
        except OSError:
            continue
        for host_dir in hosts:
            key = f"https://{host_dir.name}"
            if key not in mounts:
                mounts[key] = httpx.HTTPTransport(verify=_ssl_context(host_dir))
                log.debug("certificates for %s from %s", host_dir.name, host_dir)
    return mounts


def _ssl_context(host_dir: Path) -> ssl.SSLContext:
    context = ssl.create_default_context()
    try:
        for ca in sorted(host_dir.glob("*.crt")):
            context.load_verify_locations(cafile=str(ca))
        for cert in sorted(host_dir.glob("*.cert")):
            context.load_cert_chain(str(cert), str(cert.with_suffix(".key")))
    except (OSError, ssl.SSLError) as exc:
        raise RegistryError(f"load certificates '{host_dir}': {exc}") from exc
    return context


def error_detail(response: httpx.Response) -> str:
    """What a registry said when it refused: its first error code and
    message (distribution-spec "Error Codes"), or the HTTP status."""
    status = f"{response.status_code} {response.reason_phrase}".strip()
    try:
        errors = json.loads(response.read()).get("errors") or []
        first = errors[0]
        return f"{status}: {first.get('code')}: {first.get('message')}"
    except (ValueError, AttributeError, IndexError, TypeError, httpx.HTTPError):
        return status


def describe(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__


class Transport:
    """Sends registry requests with retries, auth and redirects; thread-safe."""

    def __init__(self, *, insecure: Iterable[str], config_path: Path,
                 certs_dirs: Sequence[Path], retries: int, backoff: float,
                 timeout: float) -> None:
        self.retries = retries
        self.backoff = backoff
        self._insecure = frozenset(insecure)
        self.http = httpx.Client(timeout=httpx.Timeout(timeout), mounts=ssl_mounts(certs_dirs),
                                 verify=ssl.create_default_context(), follow_redirects=False)
        self.auth = Authenticator(self.http, config_path)
        self._bases: dict[str, str] = {}
        self._lock = threading.Lock()

    def close(self) -> None:
        self.http.close()

    def base_url(self, domain: str) -> str:
        """``https://host`` or, for an insecure registry that does not speak
        TLS, ``http://host``; probes an insecure registry once."""
        with self._lock:
            base = self._bases.get(domain)
        if base is not None:
            return base
        host = registry_host(domain)
        base = f"https://{host}"
        if domain in self._insecure or is_loopback(domain):
            base = self._probe(host)
        with self._lock:
            self._bases[domain] = base
        return base

    def _probe(self, host: str) -> str:
        # Docker's order for an insecure registry: HTTPS first, and HTTP if
        # that cannot connect (no TLS there, or a handshake that fails).
        try:
            self.http.get(f"https://{host}/v2/").close()
            return f"https://{host}"
        except httpx.ConnectError as exc:
            tls_failure = describe(exc)
            log.debug("https://%s: %s; trying plain HTTP", host, tls_failure)
        response = self.http.get(f"http://{host}/v2/")
        response.close()
        if response.status_code == 400 and "CERTIFICATE" in tls_failure.upper():
            # A TLS server refusing plain HTTP: the certificate is the problem.
            raise RegistryError(
                f"connect to registry '{host}': HTTPS failed ({tls_failure}) and it "
                f"refuses plain HTTP; if it uses a private CA, put the CA in "
                f"/etc/corral/certs.d/{host}/ca.crt")
        return f"http://{host}"

    def request(self, req: Request) -> httpx.Response:
        """Send ``req``; retry what is idempotent on 5xx and dropped
        connections, with exponential backoff; raise Unavailable at the end."""
        attempts = self.retries + 1 if req.idempotent else 1
        failure = ""
        for attempt in range(attempts):
            if attempt:
                time.sleep(self.backoff * 2 ** (attempt - 1))
            try:
                response = self._authorized(req)
            except RETRY_ERRORS as exc:
                failure = describe(exc)
                log.debug("%s: attempt %s: %s", req.what, attempt + 1, failure)
                continue
            if response.status_code not in RETRY_STATUSES:
                return response
            failure = error_detail(response)
            response.close()
            log.debug("%s: attempt %s: %s", req.what, attempt + 1, failure)
        tries = "1 attempt" if attempts == 1 else f"{attempts} attempts"
        raise Unavailable(f"{req.what}: registry '{req.domain}' failed {tries}: {failure}")

    def _authorized(self, req: Request) -> httpx.Response:
        # At most one answer to a challenge per request: a second 401 means
        # the credentials or the token's scope are refused.
        authorization = self.auth.header(req.domain, req.scopes)
        answered = False
        while True:
            response = self._send(req, authorization)
            if response.status_code != 401 or not self._is_registry(req, response):
                return response
            challenge = response.headers.get("www-authenticate")
            detail = error_detail(response)
            response.close()
            if answered or not challenge:
                raise self.auth.refused(req.domain, req.scopes, detail)
            authorization = self.auth.answer(req.domain, challenge, req.scopes)
            answered = True

    def _send(self, req: Request, authorization: str | None) -> httpx.Response:
        url = httpx.URL(self.base_url(req.domain)).join(req.url)
        if req.params:
            # Merged by hand: httpx's params= would drop the query an upload
            # Location already has (its _state).
            url = url.copy_merge_params(req.params)
        headers = dict(req.headers)
        if authorization:
            headers["Authorization"] = authorization
        content = req.body() if req.body is not None else None
        request = self.http.build_request(req.method, url, headers=headers,
                                          content=content)
        log.debug("%s %s", req.method, request.url)
        response = self.http.send(request, stream=req.stream)
        for _ in range(_MAX_REDIRECTS):
            if not (req.follow and response.is_redirect):
                return response
            target = response.url.join(response.headers["location"])
            response.close()
            if _origin(target) != _origin(url):
                headers.pop("Authorization", None)
            log.debug("%s redirected to %s", req.method, target)
            response = self.http.send(
                self.http.build_request(req.method, target, headers=headers),
                stream=req.stream)
        response.close()
        raise RegistryError(f"{req.what}: more than {_MAX_REDIRECTS} redirects")

    def _is_registry(self, req: Request, response: httpx.Response) -> bool:
        # A 401 from blob storage we were redirected to is not a challenge of
        # the registry; answering it would send our credentials there.
        return _origin(response.url) == _origin(httpx.URL(self.base_url(req.domain)))


def _origin(url: httpx.URL) -> tuple[str, str, int | None]:
    return url.scheme, url.host, url.port
