"""The registry client against real docker-registry 2.8 instances: what
skopeo pushed, the auth variants, faults on the way, and pushes that skopeo
then reads back."""

from __future__ import annotations

import hashlib
import json
import threading

import pytest

from corral.image import mediatypes
from corral.image.digest import Digest
from corral.image.errors import (
    BadContent,
    NotFound,
    NotSupported,
    RegistryError,
    Unauthorized,
    Unavailable,
)
from corral.image.reference import parse

from .. import images
from ..registry import BlobStore, FaultyFront, free_port


def _fetch(client, ref, digest: str, **kwargs) -> bytes:
    with client.fetch_blob(ref, Digest.parse(digest), **kwargs) as stream:
        return b"".join(stream)


def _sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@pytest.fixture(scope="module")
def small_layout(tmp_path_factory) -> images.Layout:
    """Two layers, about 3 MB: big enough for several chunks and resumes."""
    return images.layered_layout(tmp_path_factory.mktemp("small") / "layout", layers=2,
                                 total_mb=3, seed=7, tag="small")


# --- pulling what skopeo pushed --------------------------------------------

def test_pull_manifest_and_blobs(make_client, busybox_image, busybox_layout_dir):
    client = make_client()
    ref = parse(busybox_image)
    manifest = client.get_manifest(ref)
    assert manifest.media_type == mediatypes.OCI_MANIFEST
    assert str(manifest.digest) == busybox_layout_dir.manifest.digest
    assert _sha256(manifest.data) == busybox_layout_dir.manifest.digest

    document = json.loads(manifest.data)
    for descriptor in [document["config"], *document["layers"]]:
        data = _fetch(client, ref, descriptor["digest"])
        assert _sha256(data) == descriptor["digest"]
        assert len(data) == descriptor["size"]
        assert client.blob_size(ref, Digest.parse(descriptor["digest"])) == len(data)
    assert client.base_url(ref.domain).startswith("http://")

    by_digest = client.get_manifest(ref.with_digest(manifest.digest))
    assert by_digest.data == manifest.data


def test_blob_from_an_offset(make_client, busybox_image, busybox_layout_dir):
    client = make_client()
    layer = busybox_layout_dir.layers[0]
    with client.fetch_blob(parse(busybox_image), Digest.parse(layer.digest),
                           offset=1000) as stream:
        data = b"".join(stream)
        assert (stream.offset, stream.size) == (1000, layer.size)
    assert data == busybox_layout_dir.blob(layer.digest)[1000:]


def test_missing_tag_repository_and_blob(make_client, registry, busybox_image):
    client = make_client()
    with pytest.raises(NotFound, match=rf"get manifest '{registry.host}/test/busybox:nope'"):
        client.get_manifest(parse(registry.ref("test/busybox:nope")))
    with pytest.raises(NotFound, match="not found"):
        client.get_manifest(parse(registry.ref("test/never-pushed:1")))
    absent = Digest.of(b"not a blob of this registry")
    assert client.blob_size(parse(busybox_image), absent) is None
    with pytest.raises(NotFound, match=f"fetch blob '{absent}'"):
        _fetch(client, parse(busybox_image), str(absent))


def test_list_tags(make_client, registry, busybox_layout_dir):
    for tag in ("a", "b", "1.0"):
        images.push(busybox_layout_dir.path, busybox_layout_dir.tag,
                    registry.ref(f"test/tags:{tag}"))
    client = make_client()
    assert sorted(client.list_tags(parse(registry.ref("test/tags")))) == ["1.0", "a", "b"]
    with pytest.raises(NotFound):
        client.list_tags(parse(registry.ref("test/no-such-repo")))


def test_umoci_layout(make_client, registry, tmp_path):
    layout = images.umoci_layout(tmp_path / "umoci", tmp_path)
    images.push(layout, "umoci", registry.ref("test/umoci:1"))
    client = make_client()
    ref = parse(registry.ref("test/umoci:1"))
    manifest = client.get_manifest(ref)
    document = json.loads(manifest.data)
    config = json.loads(_fetch(client, ref, document["config"]["digest"]))
    assert config["config"]["Cmd"] == ["sh"]
    for layer in document["layers"]:
        assert _sha256(_fetch(client, ref, layer["digest"])) == layer["digest"]


def test_parallel_downloads_share_one_client(make_client, token_registry,
                                             busybox_layout_dir):
    images.push(busybox_layout_dir.path, busybox_layout_dir.tag,
                token_registry.ref("test/parallel:1"), creds=token_registry.creds)
    client = make_client(docker_config=token_registry.docker_config)
    ref = parse(token_registry.ref("test/parallel:1"))
    layer = busybox_layout_dir.layers[0].digest
    results: list[str] = []

    def fetch() -> None:
        results.append(_sha256(_fetch(client, ref, layer)))

    threads = [threading.Thread(target=fetch) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert results == [layer] * 6


# --- auth ------------------------------------------------------------------

def test_basic_auth_over_tls(make_client, auth_registry, busybox_layout_dir):
    reference = auth_registry.ref("test/busybox:1")
    images.push(busybox_layout_dir.path, busybox_layout_dir.tag, reference,
                creds=auth_registry.creds)
    client = make_client(docker_config=auth_registry.docker_config,
                         certs_dirs=[auth_registry.certs_dir])
    manifest = client.get_manifest(parse(reference))
    assert str(manifest.digest) == busybox_layout_dir.manifest.digest
    assert client.base_url(auth_registry.host) == f"https://{auth_registry.host}"


def test_basic_auth_refusals(make_client, auth_registry, busybox_layout_dir, tmp_path):
    ref = parse(auth_registry.ref("test/busybox:1"))
    anonymous = make_client(certs_dirs=[auth_registry.certs_dir])
    with pytest.raises(Unauthorized, match="requires credentials.*docker login"):
        anonymous.get_manifest(ref)

    wrong = tmp_path / "wrong.json"
    wrong.write_text(json.dumps({"auths": {f"https://{auth_registry.host}/v1/": {
        "username": auth_registry.username, "password": "not-the-password"}}}))
    client = make_client(docker_config=wrong, certs_dirs=[auth_registry.certs_dir])
    with pytest.raises(Unauthorized, match=rf"check the username and password in '{wrong}'"):
        client.get_manifest(ref)


def test_tls_without_the_ca(make_client, auth_registry):
    client = make_client(docker_config=auth_registry.docker_config)
    with pytest.raises(RegistryError, match=r"HTTPS failed .*CERTIFICATE_VERIFY_FAILED"
                                            r".*ca\.crt"):
        client.get_manifest(parse(auth_registry.ref("test/busybox:1")))


def test_bearer_token_auth(make_client, token_registry, busybox_layout_dir):
    server = token_registry.token_server
    reference = token_registry.ref("test/busybox:1")
    images.push(busybox_layout_dir.path, busybox_layout_dir.tag, reference,
                creds=token_registry.creds)
    client = make_client(docker_config=token_registry.docker_config)
    before = len(server.requests)
    ref = parse(reference)
    manifest = client.get_manifest(ref)
    assert str(manifest.digest) == busybox_layout_dir.manifest.digest
    _fetch(client, ref, busybox_layout_dir.config.digest)
    client.get_manifest(ref)
    # One token for the pull scope, cached for the next requests.
    assert server.requests[before:] == [
        (token_registry.username, "corral-test-registry", ["repository:test/busybox:pull"])]


def test_bearer_token_refusals(make_client, token_registry, busybox_layout_dir, tmp_path):
    ref = parse(token_registry.ref("test/busybox:1"))
    with pytest.raises(Unauthorized, match="requires credentials"):
        make_client().get_manifest(ref)

    wrong = tmp_path / "wrong.json"
    wrong.write_text(json.dumps({"auths": {token_registry.host: {
        "username": token_registry.username, "password": "nope"}}}))
    with pytest.raises(Unauthorized, match="token server said 401.*check the username"):
        make_client(docker_config=wrong).get_manifest(ref)

    # readonly/ repositories are pull-only for every user: push is refused.
    client = make_client(docker_config=token_registry.docker_config)
    config = busybox_layout_dir.config
    with pytest.raises(Unauthorized, match="repository:readonly/x:pull,push"):
        client.push_blob(parse(token_registry.ref("readonly/x")), Digest.parse(config.digest),
                         config.size, busybox_layout_dir.blob_path(config.digest))
    asked = token_registry.token_server.requests[-1]
    assert asked[2] == ["repository:readonly/x:pull,push"]


# --- faults ----------------------------------------------------------------

def test_retries_after_5xx(make_client, faulty_front, busybox_image):
    faulty_front.fail(r"/manifests/", times=2, status=503)
    client = make_client()
    manifest = client.get_manifest(parse(f"{faulty_front.host}/test/busybox:1.35"))
    assert manifest.media_type == mediatypes.OCI_MANIFEST
    assert len(faulty_front.requests("GET", r"/manifests/")) == 3


def test_dropped_body_resumes(make_client, faulty_front, busybox_image, busybox_layout_dir):
    layer = busybox_layout_dir.layers[0]
    faulty_front.drop(r"/blobs/sha256:", after=300_000, times=2)
    client = make_client()
    ref = parse(f"{faulty_front.host}/test/busybox")
    data = _fetch(client, ref, layer.digest)
    assert _sha256(data) == layer.digest
    ranges = [h.get("range") for h in faulty_front.requests("GET", r"/blobs/sha256:")]
    assert ranges == [None, "bytes=300000-", "bytes=600000-"]


def test_gives_up_with_unavailable(make_client, faulty_front, busybox_image):
    faulty_front.fail(r"/manifests/", times=None)
    client = make_client(retries=2)
    with pytest.raises(Unavailable, match=rf"registry '{faulty_front.host}' failed "
                                          r"3 attempts: 500"):
        client.get_manifest(parse(f"{faulty_front.host}/test/busybox:1.35"))
    assert len(faulty_front.requests("GET", r"/manifests/")) == 3


def test_refused_connection_is_unavailable(make_client):
    host = f"127.0.0.1:{free_port()}"
    with pytest.raises(Unavailable, match=rf"get manifest '{host}/x:1': registry '{host}' "
                                          r"failed 2 attempts"):
        make_client(retries=1).get_manifest(parse(f"{host}/x:1"))


def test_redirect_drops_authorization(make_client, auth_registry, busybox_layout_dir,
                                      tmp_path):
    images.push(busybox_layout_dir.path, busybox_layout_dir.tag,
                auth_registry.ref("test/redirect:1"), creds=auth_registry.creds)
    store = BlobStore(auth_registry)
    front = FaultyFront(auth_registry, store)
    try:
        front.redirect(r"/blobs/sha256:")
        config = tmp_path / "config.json"
        config.write_text(json.dumps({"auths": {front.host: {
            "username": auth_registry.username, "password": auth_registry.password}}}))
        client = make_client(docker_config=config)
        ref = parse(f"{front.host}/test/redirect:1")
        client.get_manifest(ref)
        layer = busybox_layout_dir.layers[0].digest
        assert _sha256(_fetch(client, ref, layer)) == layer
    finally:
        front.stop()
        store.stop()
    # The front got our credentials; the other host did not.
    assert front.requests("GET", r"/blobs/")[0]["authorization"].startswith("Basic ")
    assert len(store.received) == 1
    assert "authorization" not in store.received[0]


def _manifest_of(layout: images.Layout) -> bytes:
    return layout.blob(layout.manifest.digest)


def test_forged_manifests(make_client, faulty_front, busybox_layout_dir):
    client = make_client()
    ref = parse(f"{faulty_front.host}/test/busybox:1.35")
    schema1 = json.dumps({"schemaVersion": 1, "name": "test/busybox", "fsLayers": []})
    faulty_front.serve(r"/manifests/", schema1.encode(),
                       {"Content-Type": mediatypes.DOCKER_SCHEMA1_SIGNED}, times=1)
    with pytest.raises(NotSupported, match="is a schema 1 manifest, which corral does "
                                           "not support; push it again"):
        client.get_manifest(ref)
    faulty_front.serve(r"/manifests/", schema1.encode(),
                       {"Content-Type": "application/json"}, times=1)
    with pytest.raises(NotSupported, match="schema 1"):
        client.get_manifest(ref)

    faulty_front.serve(r"/manifests/", b"{}", {"Content-Type": "text/html"}, times=1)
    with pytest.raises(BadContent, match="unknown manifest media type 'text/html'"):
        client.get_manifest(ref)

    # Bytes that are not those of the digest the registry (or we) named.
    data = _manifest_of(busybox_layout_dir)
    other = str(Digest.of(b"something else"))
    faulty_front.serve(r"/manifests/", data, {"Content-Type": mediatypes.OCI_MANIFEST,
                                              "Docker-Content-Digest": other}, times=1)
    with pytest.raises(BadContent, match=f"digest mismatch: expected {other}"):
        client.get_manifest(ref)
    faulty_front.serve(r"/manifests/", data + b" ", {"Content-Type": mediatypes.OCI_MANIFEST},
                       times=1)
    pinned = ref.with_digest(Digest.parse(busybox_layout_dir.manifest.digest))
    with pytest.raises(BadContent, match="digest mismatch"):
        client.get_manifest(pinned)
    # And the real thing still passes once the forgeries are used up.
    assert client.get_manifest(pinned).data == data


def test_push_starts_again_after_5xx(make_client, faulty_front, tmp_path):
    path = tmp_path / "blob"
    path.write_bytes(b"x" * 5000)
    digest = Digest.of(path.read_bytes())
    faulty_front.fail(r"/blobs/uploads/", method="PUT", times=1, status=502)
    client = make_client()
    ref = parse(f"{faulty_front.host}/test/restarted")
    client.push_blob(ref, digest, 5000, path)
    assert client.blob_size(ref, digest) == 5000
    assert len(faulty_front.requests("POST", r"/blobs/uploads/")) == 2


# --- pushing ---------------------------------------------------------------

def test_push_monolithic_and_chunked(make_client, registry, small_layout):
    client = make_client()
    ref = parse(registry.ref("test/pushed:small"))
    blobs = [small_layout.config, *small_layout.layers]
    sent: list[int] = []
    for index, blob in enumerate(blobs):
        digest = Digest.parse(blob.digest)
        assert client.blob_size(ref, digest) is None
        chunk_size = 256 * 1024 if index == 1 else None
        client.push_blob(ref, digest, blob.size, small_layout.blob_path(blob.digest),
                         chunk_size=chunk_size, progress=sent.append)
        assert client.blob_size(ref, digest) == blob.size
    assert sum(sent) == sum(blob.size for blob in blobs)
    assert max(sent) <= 1 << 20

    manifest = small_layout.blob(small_layout.manifest.digest)
    digest = client.put_manifest(ref, manifest, mediatypes.OCI_MANIFEST)
    assert str(digest) == small_layout.manifest.digest
    seen = images.inspect(registry.ref("test/pushed:small"))
    assert seen["Digest"] == small_layout.manifest.digest
    assert seen["Layers"] == [layer.digest for layer in small_layout.layers]
    assert seen["Labels"] == {"corral.test": "layered"}


def test_push_with_a_wrong_digest(make_client, registry, tmp_path):
    path = tmp_path / "blob"
    path.write_bytes(b"some content")
    client = make_client()
    ref = parse(registry.ref("test/wrong"))
    with pytest.raises(BadContent, match="refused the content"):
        client.push_blob(ref, Digest.of(b"other content"), 12, path)
    with pytest.raises(BadContent, match="refused the content"):
        client.push_blob(ref, Digest.of(b"other content"), 12, path, chunk_size=5)


def test_cross_repository_mount(make_client, registry, busybox_image, busybox_layout_dir):
    client = make_client()
    target = parse(registry.ref("test/mounted"))
    layer = busybox_layout_dir.layers[0]
    assert client.blob_size(target, Digest.parse(layer.digest)) is None
    assert client.mount_blob(target, Digest.parse(layer.digest),
                             registry.ref("test/busybox")) is True
    assert client.blob_size(target, Digest.parse(layer.digest)) == layer.size

    absent = Digest.of(b"nowhere")
    assert client.mount_blob(parse(registry.ref("test/mounted2")), absent,
                             "test/busybox") is False
    # The registry opened an upload instead, and we cancelled it: its data
    # is gone (distribution 2.8 leaves the session's hash state behind).
    uploads = (registry.workdir / "storage/docker/registry/v2/repositories/test/mounted2"
               / "_uploads")
    assert len(list(uploads.iterdir())) == 1
    assert list(uploads.glob("*/data")) == []


def test_mount_with_token_asks_both_scopes(make_client, token_registry, busybox_layout_dir):
    images.push(busybox_layout_dir.path, busybox_layout_dir.tag,
                token_registry.ref("test/source:1"), creds=token_registry.creds)
    client = make_client(docker_config=token_registry.docker_config)
    layer = busybox_layout_dir.layers[0]
    assert client.mount_blob(parse(token_registry.ref("test/dest")),
                             Digest.parse(layer.digest), "test/source") is True
    assert token_registry.token_server.requests[-1][2] == [
        "repository:test/dest:pull,push", "repository:test/source:pull"]
