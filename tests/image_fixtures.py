"""Fixtures for the image layer's tests: real registries and test images.

Session-scoped, started once for the whole run and stopped by their PID:

- ``registry``: a plain-HTTP docker-registry on 127.0.0.1 (no auth);
- ``auth_registry``: htpasswd basic auth over TLS; pass
  ``certs_dirs=[auth_registry.certs_dir]`` and
  ``docker_config=auth_registry.docker_config`` to the client;
- ``token_registry``: bearer tokens from ``token_registry.token_server``;
  ``docker_config=token_registry.docker_config`` holds the credentials;
- ``busybox_layout_dir``: the busybox OCI layout (``tests.images.Layout``);
- ``busybox_image``: that image pushed to ``registry``, as a reference
  string ``127.0.0.1:PORT/test/busybox:1.35``.

Function-scoped: ``faulty_front`` (a FaultyFront before ``registry``) and
``make_client`` (a factory of ``corral.image.registry.Client`` closed at the
end of the test, with fast retries).

See tests/registry.py and tests/images.py for the helpers themselves.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator

import pytest

from . import images
from .registry import REGISTRY_BINARY, BlobStore, FaultyFront, Registry, start_registry

__all__ = ["registry", "auth_registry", "token_registry", "busybox_layout_dir",
           "busybox_image", "faulty_front", "make_client"]


def _need(program: str) -> None:
    if shutil.which(program) is None:
        pytest.skip(f"{program} is not installed (scripts/setup installs it)")


def _registry(tmp_path_factory, kind: str) -> Iterator[Registry]:
    _need(REGISTRY_BINARY)
    started = start_registry(tmp_path_factory.mktemp(f"registry-{kind}"), kind)
    try:
        yield started
    finally:
        started.stop()


@pytest.fixture(scope="session")
def registry(tmp_path_factory) -> Iterator[Registry]:
    """A plain-HTTP registry without auth."""
    yield from _registry(tmp_path_factory, "plain")


@pytest.fixture(scope="session")
def auth_registry(tmp_path_factory) -> Iterator[Registry]:
    """A registry with htpasswd basic auth, over TLS with a private CA."""
    yield from _registry(tmp_path_factory, "htpasswd")


@pytest.fixture(scope="session")
def token_registry(tmp_path_factory) -> Iterator[Registry]:
    """A registry with bearer-token auth; its TokenServer runs in a thread."""
    yield from _registry(tmp_path_factory, "token")


@pytest.fixture(scope="session")
def busybox_layout_dir(tmp_path_factory) -> images.Layout:
    return images.busybox_layout(tmp_path_factory.mktemp("busybox") / "layout")


@pytest.fixture(scope="session")
def busybox_image(registry, busybox_layout_dir) -> str:
    """busybox pushed to ``registry`` with skopeo; its reference string."""
    _need("skopeo")
    reference = registry.ref("test/busybox:1.35")
    images.push(busybox_layout_dir.path, busybox_layout_dir.tag, reference)
    return reference


@pytest.fixture
def faulty_front(registry) -> Iterator[FaultyFront]:
    """A misbehaving proxy before ``registry``, with a BlobStore to redirect
    to at ``faulty_front.store``."""
    store = BlobStore(registry)
    front = FaultyFront(registry, store)
    front.store = store
    try:
        yield front
    finally:
        front.stop()
        store.stop()


@pytest.fixture
def make_client(tmp_path):
    """``make_client(**kwargs)``: a registry Client, closed after the test;
    retries back off from 10 ms, and no certs.d or docker config is read
    unless given."""
    from corral.image.registry import Client

    clients = []

    def factory(**kwargs) -> Client:
        kwargs.setdefault("backoff", 0.01)
        kwargs.setdefault("certs_dirs", ())
        # Never the credentials of whoever runs the tests.
        kwargs.setdefault("docker_config", tmp_path / "no-docker-config.json")
        client = Client(**kwargs)
        clients.append(client)
        return client

    yield factory
    for client in clients:
        client.close()
