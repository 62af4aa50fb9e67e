"""Registry authentication: challenges, credentials and bearer tokens.

A registry that wants credentials answers 401 with a ``WWW-Authenticate``
challenge (RFC 7235). ``Basic`` means we send the user's password on every
request. ``Bearer`` is Docker's token protocol (the distribution project's
docs/spec/auth/token.md): we GET the challenge's ``realm`` with its
``service`` and the ``scope`` we need (``repository:<path>:pull`` or
``pull,push``), with our basic credentials if we have any, and send back the
``token`` (or OAuth2's ``access_token``) it returns, for ``expires_in``
seconds (60 if it does not say).

Credentials come from Docker's client config, ``config.json``, whose
``auths`` map is keyed by registry in several spellings, as ``docker login``
and older tools wrote them.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from ..errors import RegistryError, Unauthorized

log = logging.getLogger(__name__)

DOCKER_HUB_KEY = "https://index.docker.io/v1/"
_HUB_NAMES = frozenset({"docker.io", "index.docker.io", "registry-1.docker.io"})
# Tokens are refreshed this long before they expire, so that one is never
# sent in the last moments of its life and refused on arrival.
_EXPIRY_MARGIN = 5.0
_DEFAULT_EXPIRES_IN = 60.0


@dataclass(frozen=True)
class Challenge:
    """One challenge of a ``WWW-Authenticate`` header: ``scheme`` lowercased
    (``bearer``, ``basic``) and its parameters, names lowercased."""

    scheme: str
    params: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Credentials:
    username: str
    password: str
    source: str  # where they came from, for messages: a config.json path


def parse_challenges(header: str) -> list[Challenge]:
    """Parse a ``WWW-Authenticate`` value into its challenges, in order.

    Handles quoted strings with escapes and several challenges in one
    header (``Basic realm="a", Bearer realm="b",service="c"``).
    """
    challenges: list[Challenge] = []
    pos, end = 0, len(header)
    while pos < end:
        pos = _skip(header, pos, " \t,")
        token, pos = _token(header, pos)
        if not token:
            break
        pos = _skip(header, pos, " \t")
        if pos < end and header[pos] == "=" and challenges:
            # A bare "name=value" continues the last challenge's parameters.
            value, pos = _value(header, _skip(header, pos + 1, " \t"))
            challenges[-1].params[token.lower()] = value
            continue
        challenges.append(Challenge(token.lower(), {}))
        pos = _params(header, pos, challenges[-1].params)
    return challenges


def _params(header: str, pos: int, params: dict[str, str]) -> int:
    # name=value pairs until a token that is not followed by '=': a new scheme.
    while pos < len(header):
        start = _skip(header, pos, " \t,")
        name, after = _token(header, start)
        after = _skip(header, after, " \t")
        if not name or after >= len(header) or header[after] != "=":
            return start
        value, pos = _value(header, _skip(header, after + 1, " \t"))
        params[name.lower()] = value
    return pos


def _skip(text: str, pos: int, chars: str) -> int:
    while pos < len(text) and text[pos] in chars:
        pos += 1
    return pos


def _token(text: str, pos: int) -> tuple[str, int]:
    start = pos
    while pos < len(text) and text[pos] not in ' \t,="':
        pos += 1
    return text[start:pos], pos


def _value(text: str, pos: int) -> tuple[str, int]:
    if pos >= len(text) or text[pos] != '"':
        return _token(text, pos)
    chars, pos = [], pos + 1
    while pos < len(text) and text[pos] != '"':
        if text[pos] == "\\" and pos + 1 < len(text):
            pos += 1
        chars.append(text[pos])
        pos += 1
    return "".join(chars), pos + 1


def docker_config_path(explicit: Path | None = None) -> Path:
    """Where Docker's client config is: the argument (a file, or a directory
    holding config.json), else ``$DOCKER_CONFIG/config.json``, else
    ``~/.docker/config.json``."""
    if explicit is not None:
        return explicit / "config.json" if explicit.is_dir() else explicit
    env = os.environ.get("DOCKER_CONFIG")
    if env:
        return Path(env) / "config.json"
    return Path.home() / ".docker" / "config.json"


def load_docker_config(path: Path) -> dict:
    """Read a Docker config.json; a missing file is an empty config."""
    try:
        data = json.loads(path.read_bytes())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise RegistryError(f"read docker config '{path}': {exc}") from exc
    if not isinstance(data, dict):
        raise RegistryError(f"read docker config '{path}': not a JSON object")
    return data


def normalize_key(key: str) -> str:
    """The registry an ``auths`` key names: ``https://host:5000/v1/`` and
    ``host:5000`` are both ``host:5000``; every Docker Hub name is docker.io."""
    host = key.strip().lower()
    for scheme in ("https://", "http://"):
        host = host.removeprefix(scheme)
    host = host.split("/", 1)[0]
    return "docker.io" if host in _HUB_NAMES else host


def find_credentials(config: dict, registry: str, *, source: str) -> Credentials | None:
    """The credentials ``config`` (a parsed config.json) holds for
    ``registry`` (a reference's domain, ``host[:port]``), or None.

    TODO: credential helpers (``credsStore``, ``credHelpers``) are not run;
    a user whose ``docker login`` stored the password in a helper is seen as
    anonymous and gets Unauthorized.
    """
    wanted = normalize_key(registry)
    auths = config.get("auths")
    if not isinstance(auths, dict):
        return None
    # An exact key wins over another spelling of the same registry.
    keys = sorted(auths, key=lambda k: k != registry and k != DOCKER_HUB_KEY)
    for key in keys:
        entry = auths[key]
        if normalize_key(key) == wanted and isinstance(entry, dict):
            found = _entry_credentials(entry, key, source)
            if found is not None:
                return found
    return None


def _entry_credentials(entry: dict, key: str, source: str) -> Credentials | None:
    encoded = entry.get("auth")
    if isinstance(encoded, str) and encoded:
        try:
            decoded = base64.b64decode(encoded, validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            raise RegistryError(f"read docker config '{source}': auths['{key}'].auth "
                                f"is not base64 of 'user:password'") from None
        username, sep, password = decoded.partition(":")
        if not sep:
            raise RegistryError(f"read docker config '{source}': auths['{key}'].auth "
                                f"has no ':' between user and password")
        return Credentials(username, password, source)
    username, password = entry.get("username"), entry.get("password")
    if isinstance(username, str) and isinstance(password, str) and username:
        return Credentials(username, password, source)
    return None


def basic_header(credentials: Credentials) -> str:
    raw = f"{credentials.username}:{credentials.password}".encode()
    return "Basic " + base64.b64encode(raw).decode()


class TokenCache:
    """Bearer tokens by (registry, scopes) until they expire; thread-safe."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._tokens: dict[tuple[str, tuple[str, ...]], tuple[str, float]] = {}
        self._lock = threading.Lock()

    def get(self, registry: str, scopes: tuple[str, ...]) -> str | None:
        with self._lock:
            found = self._tokens.get((registry, scopes))
            if found is None:
                return None
            token, expires = found
            if self._clock() >= expires:
                del self._tokens[(registry, scopes)]
                return None
            return token

    def put(self, registry: str, scopes: tuple[str, ...], token: str,
            expires_in: float) -> None:
        expires = self._clock() + max(expires_in - _EXPIRY_MARGIN, 0.0)
        with self._lock:
            self._tokens[(registry, scopes)] = (token, expires)


class Authenticator:
    """Answers a registry's challenges and remembers the answers.

    ``header`` gives what to send before any challenge, once we know how a
    registry authenticates; ``answer`` handles a 401 and returns the header
    for the retry. One instance serves all threads of a client.
    """

    def __init__(self, http: httpx.Client, config_path: Path) -> None:
        self._http = http
        self._config_path = config_path
        self._config: dict | None = None
        self._tokens = TokenCache()
        self._schemes: dict[str, Challenge] = {}
        self._lock = threading.Lock()

    def credentials(self, registry: str) -> Credentials | None:
        with self._lock:
            if self._config is None:
                self._config = load_docker_config(self._config_path)
            config = self._config
        return find_credentials(config, registry, source=str(self._config_path))

    def header(self, registry: str, scopes: tuple[str, ...]) -> str | None:
        """The Authorization value to send now, if we already have one."""
        with self._lock:
            challenge = self._schemes.get(registry)
        if challenge is None:
            return None
        if challenge.scheme == "basic":
            credentials = self.credentials(registry)
            return basic_header(credentials) if credentials else None
        token = self._tokens.get(registry, scopes)
        return f"Bearer {token}" if token else None

    def answer(self, registry: str, header: str, scopes: tuple[str, ...]) -> str:
        """The Authorization value that answers ``header`` (a 401's
        WWW-Authenticate) for ``scopes``; raise Unauthorized if we have none."""
        challenges = {c.scheme: c for c in parse_challenges(header)}
        challenge = challenges.get("bearer") or challenges.get("basic")
        if challenge is None:
            raise Unauthorized(f"log in to '{registry}': unsupported challenge "
                               f"'{header}' (corral speaks Basic and Bearer)")
        with self._lock:
            self._schemes[registry] = challenge
        credentials = self.credentials(registry)
        if challenge.scheme == "basic":
            if credentials is None:
                raise Unauthorized(self._no_credentials(registry))
            return basic_header(credentials)
        token, expires_in = self._fetch_token(registry, challenge, scopes, credentials)
        self._tokens.put(registry, scopes, token, expires_in)
        return f"Bearer {token}"

    def refused(self, registry: str, scopes: Iterable[str], detail: str) -> Unauthorized:
        """The error for a registry that refused what we sent."""
        credentials = self.credentials(registry)
        if credentials is None:
            return Unauthorized(self._no_credentials(registry) + f" ({detail})")
        return Unauthorized(
            f"log in to '{registry}': access refused to '{credentials.username}' for "
            f"{' '.join(scopes)} ({detail}); check the username and password in "
            f"'{credentials.source}' and that this user may do it")

    def _no_credentials(self, registry: str) -> str:
        return (f"log in to '{registry}': the registry requires credentials and "
                f"'{self._config_path}' has none for it (docker login {registry})")

    def _fetch_token(self, registry: str, challenge: Challenge, scopes: tuple[str, ...],
                     credentials: Credentials | None) -> tuple[str, float]:
        realm = challenge.params.get("realm")
        if not realm:
            raise Unauthorized(f"log in to '{registry}': bearer challenge without a realm")
        params = [("scope", scope) for scope in scopes]
        if "service" in challenge.params:
            params.insert(0, ("service", challenge.params["service"]))
        headers = {"Authorization": basic_header(credentials)} if credentials else {}
        log.debug("token for %s %s from %s", registry, scopes, realm)
        try:
            response = self._http.get(realm, params=params, headers=headers)
        except httpx.HTTPError as exc:
            raise Unauthorized(f"log in to '{registry}': token server '{realm}': "
                               f"{exc}") from exc
        if response.status_code in (401, 403):
            raise self.refused(registry, scopes, f"token server said "
                                                 f"{response.status_code}")
        if response.status_code != 200:
            raise Unauthorized(f"log in to '{registry}': token server '{realm}' "
                               f"answered {response.status_code}")
        return _parse_token(response.content, registry)


def _parse_token(body: bytes, registry: str) -> tuple[str, float]:
    try:
        data = json.loads(body)
    except ValueError:
        data = None
    if not isinstance(data, dict):
        raise Unauthorized(f"log in to '{registry}': token server answered no JSON")
    token = data.get("token") or data.get("access_token")
    if not isinstance(token, str) or not token:
        raise Unauthorized(f"log in to '{registry}': token server answered no token")
    expires_in = data.get("expires_in")
    if not isinstance(expires_in, (int, float)) or expires_in <= 0:
        expires_in = _DEFAULT_EXPIRES_IN
    return token, float(expires_in)
