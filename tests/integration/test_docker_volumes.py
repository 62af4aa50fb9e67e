"""Volumes through the real docker CLI against a private corrald: docker
volume's verbs and columns, -v/--mount/--volumes-from on docker run, the
errors users see; and, where the behaviour is not obvious (-v of a missing
host path, the first-use copy), the same commands against Debian's dockerd.
"""

from __future__ import annotations

import shutil
import uuid
from pathlib import Path

import pytest

from tests.integration import peers
from tests.integration.test_volumes import push_volume_image

IMAGE = peers.IMAGE  # corral.test/busybox:latest, loaded from an archive
RUN = ("run", "--rm", "--network", "none")


@pytest.fixture(scope="module")
def archive(rootfs_template, tmp_path_factory) -> Path:
    return peers.write_image_archive(rootfs_template,
                                     tmp_path_factory.mktemp("vimg") / "busybox.tar")


@pytest.fixture(scope="module")
def corrald(archive):
    if shutil.which("docker") is None:
        pytest.skip("the docker CLI is not on PATH (scripts/setup installs it)")
    daemon = peers.Corrald(peers.make_workdir("vol"))
    try:
        daemon.start()
        daemon.ok("load", "--input", str(archive))
        yield daemon
    finally:
        daemon.cleanup()


@pytest.fixture(scope="module")
def dockerd(archive):
    for program in ("dockerd", "containerd"):
        if shutil.which(program) is None:
            pytest.skip(f"{program} is not installed (apt-get install docker.io)")
    daemon = peers.Dockerd(peers.make_workdir("dvol"), {})
    try:
        daemon.start()
        daemon.load_image(archive)
        yield daemon
    finally:
        daemon.cleanup()


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def test_volume_verbs_and_columns(corrald):
    name = unique("verbs")
    assert corrald.ok("volume", "create", "--label", "tier=db", name) == f"{name}\n"
    listed = corrald.ok("volume", "ls", "--filter", f"name={name}")
    assert listed == f"DRIVER    VOLUME NAME\nlocal     {name}\n"
    assert corrald.ok("volume", "ls", "-q", "--filter", "label=tier=db") == f"{name}\n"
    shown = corrald.ok("volume", "inspect", "--format",
                       "{{.Driver}} {{.Scope}} {{.Labels.tier}} {{.Mountpoint}}", name)
    assert shown == f"local local db {corrald.root}/volumes/{name}/_data\n"

    container_id = corrald.ok("create", "--network", "none", "-v", f"{name}:/d", IMAGE,
                              "true").strip()
    result = corrald.docker("volume", "rm", name)
    assert result.returncode == 1
    assert result.stderr == (f"Error response from daemon: remove {name}: volume is in "
                             f"use - [{container_id}]\n")
    corrald.ok("rm", container_id)
    assert corrald.ok("volume", "rm", name) == f"{name}\n"
    result = corrald.docker("volume", "inspect", name)
    assert result.returncode == 1
    assert result.stderr == f"Error response from daemon: get {name}: no such volume\n"


def test_data_survives_and_rm_v_takes_anonymous_only(corrald):
    name = unique("keep")
    corrald.ok(*RUN, "-v", f"{name}:/store", IMAGE, "sh", "-c", "echo kept > /store/f")
    assert corrald.ok(*RUN, "--mount", f"source={name},target=/store", IMAGE,
                      "cat", "/store/f") == "kept\n"

    container_id = corrald.ok("create", "--network", "none", "-v", "/anon",
                              "-v", f"{name}:/named", IMAGE, "true").strip()
    anonymous = corrald.ok("inspect", "--format",
                           '{{range .Mounts}}{{if eq .Destination "/anon"}}{{.Name}}'
                           '{{end}}{{end}}', container_id).strip()
    assert len(anonymous) == 64
    corrald.ok("rm", "-v", container_id)
    names = corrald.ok("volume", "ls", "-q").split()
    assert name in names and anonymous not in names
    corrald.ok("volume", "rm", name)


def test_ro_bind_and_missing_sources(corrald, tmp_path):
    result = corrald.docker(*RUN, "-v", f"{tmp_path}:/ro:ro", IMAGE, "touch", "/ro/f")
    assert result.returncode == 1
    assert result.stderr == "touch: /ro/f: Read-only file system\n"

    made = tmp_path / "made-by-v"
    corrald.ok(*RUN, "-v", f"{made}:/x", IMAGE, "true")
    assert made.is_dir()
    missing = tmp_path / "missing"
    result = corrald.docker(*RUN, "--mount", f"type=bind,src={missing},dst=/x",
                            IMAGE, "true")
    assert result.returncode == 125
    assert result.stderr.startswith(
        f'docker: Error response from daemon: invalid mount config for type "bind": '
        f'bind source path does not exist: {missing}\n')
    assert not missing.exists()


def test_volumes_from_read_only(corrald):
    name = unique("from")
    source = corrald.ok("create", "--network", "none", "-v", f"{name}:/shared", IMAGE,
                        "true").strip()
    corrald.ok(*RUN, "-v", f"{name}:/shared", IMAGE, "sh", "-c", "echo hi > /shared/f")
    result = corrald.docker(*RUN, "--volumes-from", f"{source}:ro", IMAGE, "sh", "-c",
                            "cat /shared/f && touch /shared/g")
    assert (result.returncode, result.stdout) == (1, "hi\n")
    assert "Read-only file system" in result.stderr
    corrald.ok("rm", source)
    corrald.ok("volume", "rm", name)


def test_hostile_image_leaves_the_host_alone(corrald, registry, busybox_image, tmp_path):
    image = push_volume_image(registry, tmp_path / "layout")
    corrald.ok("pull", image)
    marker = unique("corral-hostile")
    corrald.ok(*RUN, "-v", f"{marker}:/hostile", image, "sh", "-c",
               f"echo pwned > /hostile/{marker}")
    assert not Path("/etc", marker).exists()
    # First use filled the volume from the image's /etc, not the host's.
    assert sorted(corrald.ok(*RUN, "-v", f"{marker}:/v", image, "ls", "/v").split()) \
        == sorted(["group", marker, "passwd"])
    corrald.ok("volume", "rm", marker)


def test_prune_takes_anonymous_volumes_then_all(corrald):
    named = unique("pruned")
    corrald.ok("volume", "create", named)
    container_id = corrald.ok("create", "--network", "none", "-v", "/anon", IMAGE,
                              "true").strip()
    corrald.ok("rm", container_id)
    out = corrald.ok("volume", "prune", "-f")
    assert out.startswith("Deleted Volumes:\n") and named not in out
    assert named in corrald.ok("volume", "ls", "-q").split()
    assert named in corrald.ok("volume", "prune", "-f", "-a")
    assert named not in corrald.ok("volume", "ls", "-q").split()


# The same commands against dockerd ---------------------------------------------------

def _first_use(daemon, tmp_path: Path) -> tuple:
    """What a daemon does with -v of a missing host path, and what a new
    volume over the image's /etc holds (name, mode, owner of its files)."""
    made = tmp_path / unique("made")
    daemon.docker(*RUN, "-v", f"{made}:/x", IMAGE, "true")
    volume = unique("copy")
    daemon.docker(*RUN, "-v", f"{volume}:/etc", IMAGE, "true")
    listing = daemon.docker(*RUN, "-v", f"{volume}:/v", IMAGE, "sh", "-c",
                            "stat -c '%n %a %u' /v/passwd /v/group; cat /v/passwd")
    daemon.docker("volume", "rm", volume)
    return made.is_dir(), listing.returncode, listing.stdout


def test_first_use_and_missing_source_as_dockerd(corrald, dockerd, tmp_path):
    ours = _first_use(corrald, tmp_path)
    theirs = _first_use(dockerd, tmp_path)
    assert ours == theirs
    assert ours[0] is True and ours[1] == 0 and "root:x:0:0" in ours[2]
