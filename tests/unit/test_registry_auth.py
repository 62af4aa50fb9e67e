"""Registry auth logic: challenges, docker config credentials, token expiry,
loopback detection and certs.d loading."""

from __future__ import annotations

import base64
import json

import pytest

from corral.image.errors import RegistryError, Unauthorized
from corral.image.registry import _http
from corral.image.registry.auth import (
    Challenge,
    TokenCache,
    _parse_token,
    docker_config_path,
    find_credentials,
    load_docker_config,
    normalize_key,
    parse_challenges,
)


def _auth(user: str, password: str) -> str:
    return base64.b64encode(f"{user}:{password}".encode()).decode()


def test_bearer_challenge():
    header = ('Bearer realm="https://auth.docker.io/token",service="registry.docker.io",'
              'scope="repository:library/busybox:pull"')
    assert parse_challenges(header) == [Challenge("bearer", {
        "realm": "https://auth.docker.io/token", "service": "registry.docker.io",
        "scope": "repository:library/busybox:pull"})]


def test_basic_challenge_and_case():
    assert parse_challenges('BASIC Realm="corral test"') == [
        Challenge("basic", {"realm": "corral test"})]


def test_several_challenges_and_quoting():
    header = r'Basic realm="a, b", Bearer realm="http://t/x",scope="a:b:pull,push", error=x'
    assert parse_challenges(header) == [
        Challenge("basic", {"realm": "a, b"}),
        Challenge("bearer", {"realm": "http://t/x", "scope": "a:b:pull,push", "error": "x"}),
    ]
    assert parse_challenges(r'Bearer realm="say \"hi\""')[0].params["realm"] == 'say "hi"'


def test_garbage_challenge():
    assert parse_challenges("") == []
    assert parse_challenges("Negotiate") == [Challenge("negotiate", {})]


@pytest.mark.parametrize(("key", "registry"), [
    ("https://index.docker.io/v1/", "docker.io"),
    ("index.docker.io", "docker.io"),
    ("registry-1.docker.io", "docker.io"),
    ("docker.io", "docker.io"),
    ("https://reg.example:5000/v2/", "reg.example:5000"),
    ("http://127.0.0.1:5000", "127.0.0.1:5000"),
    ("Reg.Example", "reg.example"),
])
def test_normalize_key(key, registry):
    assert normalize_key(key) == registry


def test_credentials_by_every_spelling():
    config = {"auths": {
        "https://index.docker.io/v1/": {"auth": _auth("hub", "pw:with:colons")},
        "http://127.0.0.1:5000/v1/": {"auth": _auth("local", "x")},
        "reg.example:443": {"username": "u", "password": "p"},
        "empty.example": {},
    }}
    hub = find_credentials(config, "docker.io", source="c.json")
    assert (hub.username, hub.password, hub.source) == ("hub", "pw:with:colons", "c.json")
    assert find_credentials(config, "127.0.0.1:5000", source="c").username == "local"
    assert find_credentials(config, "reg.example:443", source="c").password == "p"
    assert find_credentials(config, "reg.example", source="c") is None
    assert find_credentials(config, "empty.example", source="c") is None
    assert find_credentials({}, "docker.io", source="c") is None


def test_exact_key_wins():
    config = {"auths": {"https://127.0.0.1:5000/v1/": {"auth": _auth("old", "1")},
                        "127.0.0.1:5000": {"auth": _auth("new", "2")}}}
    assert find_credentials(config, "127.0.0.1:5000", source="c").username == "new"


@pytest.mark.parametrize(("auth", "message"), [
    ("%%%", "is not base64"),
    (base64.b64encode(b"nocolon").decode(), "has no ':'"),
])
def test_bad_auth_entry(auth, message):
    with pytest.raises(RegistryError, match=message):
        find_credentials({"auths": {"r.io": {"auth": auth}}}, "r.io", source="c")


def test_config_files(tmp_path, monkeypatch):
    assert load_docker_config(tmp_path / "missing.json") == {}
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(RegistryError, match=f"read docker config '{bad}'"):
        load_docker_config(bad)
    (tmp_path / "config.json").write_text(json.dumps({"auths": {}}))
    assert docker_config_path(tmp_path) == tmp_path / "config.json"
    assert docker_config_path(bad) == bad
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "d"))
    assert docker_config_path() == tmp_path / "d" / "config.json"
    monkeypatch.delenv("DOCKER_CONFIG")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert docker_config_path() == tmp_path / ".docker" / "config.json"


def test_token_cache_expiry():
    now = [100.0]
    cache = TokenCache(clock=lambda: now[0])
    scopes = ("repository:a:pull",)
    cache.put("r", scopes, "tok", expires_in=60)
    assert cache.get("r", scopes) == "tok"
    assert cache.get("r", ("repository:a:pull,push",)) is None
    assert cache.get("other", scopes) is None
    now[0] += 54  # refreshed 5 s before the end
    assert cache.get("r", scopes) == "tok"
    now[0] += 1
    assert cache.get("r", scopes) is None


def test_token_answer_forms():
    assert _parse_token(b'{"token": "a", "expires_in": 300}', "r") == ("a", 300.0)
    assert _parse_token(b'{"access_token": "b"}', "r") == ("b", 60.0)
    with pytest.raises(Unauthorized, match="answered no token"):
        _parse_token(b'{"expires_in": 3}', "r")


@pytest.mark.parametrize(("domain", "loopback"), [
    ("localhost", True), ("localhost:5000", True), ("127.0.0.1:5000", True),
    ("127.9.8.7", True), ("[::1]:5000", True), ("::1", True),
    ("10.0.0.1:5000", False), ("registry.example", False), ("docker.io", False),
])
def test_loopback(domain, loopback):
    assert _http.is_loopback(domain) is loopback


def test_docker_hub_host():
    assert _http.registry_host("docker.io") == "registry-1.docker.io"
    assert _http.registry_host("quay.io") == "quay.io"


def test_certs_dirs(tmp_path):
    assert _http.ssl_mounts([tmp_path / "none"]) == {}
    (tmp_path / "a" / "reg.example:5000").mkdir(parents=True)
    (tmp_path / "b" / "reg.example:5000").mkdir(parents=True)
    (tmp_path / "b" / "other.example").mkdir()
    mounts = _http.ssl_mounts([tmp_path / "a", tmp_path / "b"])
    assert sorted(mounts) == ["https://other.example", "https://reg.example:5000"]
    (tmp_path / "c" / "bad.example").mkdir(parents=True)
    (tmp_path / "c" / "bad.example" / "ca.crt").write_text("not a certificate")
    with pytest.raises(RegistryError, match="load certificates"):
        _http.ssl_mounts([tmp_path / "c"])
