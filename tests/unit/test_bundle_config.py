"""From an image config to a runtime spec: Docker's rules for the process."""

from __future__ import annotations

import json
import os

import pytest

from corral.image.bundle import RunOptions, resolve_user, runtime_spec
from corral.image.errors import InvalidArgument, NotFound
from corral.image.manifest import parse_config

PASSWD = "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000::/home/app:/bin/sh\n"
GROUP = "root:x:0:\napp:x:1000:\nwheel:x:10:app,other\naudio:x:29:app\n"


def image(**inner):
    return parse_config(json.dumps({"os": "linux", "architecture": "amd64",
                                    "rootfs": {"type": "layers", "diff_ids": []},
                                    "config": inner}).encode(), "c")


@pytest.fixture
def rootfs(tmp_path):
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc/passwd").write_text(PASSWD)
    (tmp_path / "etc/group").write_text(GROUP)
    return tmp_path


@pytest.mark.parametrize("inner, options, args", [
    ({"Cmd": ["sh"]}, RunOptions(), ["sh"]),
    ({"Entrypoint": ["/init"], "Cmd": ["-v"]}, RunOptions(), ["/init", "-v"]),
    ({"Entrypoint": ["/init"], "Cmd": ["-v"]}, RunOptions(command=("-q",)), ["/init", "-q"]),
    ({"Entrypoint": ["/init"], "Cmd": ["-v"]}, RunOptions(entrypoint=("/bin/sh",)),
     ["/bin/sh"]),
    ({"Entrypoint": ["/init"]}, RunOptions(entrypoint=("env",), command=("-i",)),
     ["env", "-i"]),
])
def test_entrypoint_and_cmd_as_docker_combines_them(rootfs, inner, options, args):
    assert runtime_spec(image(**inner), rootfs, options)["process"]["args"] == args


def test_no_command_at_all(rootfs):
    with pytest.raises(InvalidArgument, match="neither Entrypoint nor Cmd"):
        runtime_spec(image(), rootfs)


def test_env_has_a_default_path_and_run_env_wins(rootfs):
    spec = runtime_spec(image(Cmd=["sh"], Env=["A=1", "B=2"]), rootfs,
                        RunOptions(env=("B=3",)))
    env = spec["process"]["env"]
    assert "A=1" in env and "B=3" in env and "B=2" not in env
    assert any(e.startswith("PATH=/usr/local/sbin") for e in env)


def test_workdir_is_made_inside_the_rootfs(rootfs):
    (rootfs / "link").symlink_to("/tmp-outside-of-rootfs")
    spec = runtime_spec(image(Cmd=["sh"], WorkingDir="/link/work"), rootfs)
    assert spec["process"]["cwd"] == "/link/work"
    assert (rootfs / "tmp-outside-of-rootfs/work").is_dir()
    assert not os.path.exists("/tmp-outside-of-rootfs")


@pytest.mark.parametrize("user, expected", [
    ("", (0, 0, [])),
    ("app", (1000, 1000, [10, 29])),
    ("1000", (1000, 1000, [10, 29])),
    ("app:wheel", (1000, 10, [])),
    ("4242", (4242, 0, [])),
    ("4242:77", (4242, 77, [])),
])
def test_users_resolve_through_the_images_own_files(rootfs, user, expected):
    assert resolve_user(rootfs, user) == expected


def test_unknown_user_and_group(rootfs):
    with pytest.raises(NotFound, match="no user 'nobody' in the image's /etc/passwd"):
        resolve_user(rootfs, "nobody")
    with pytest.raises(NotFound, match="no group 'staff'"):
        resolve_user(rootfs, "app:staff")


def test_passwd_symlinked_to_the_host_is_read_inside_the_rootfs(tmp_path):
    (tmp_path / "etc").mkdir()
    # The host's /etc/shadow exists; inside this rootfs the link dangles.
    (tmp_path / "etc/passwd").symlink_to("/../../../etc/shadow")
    with pytest.raises(NotFound, match="no user 'root'"):
        resolve_user(tmp_path, "root")
    (tmp_path / "etc/group").symlink_to("group")
    with pytest.raises(InvalidArgument, match="/etc/group of the image: .*Too many levels"):
        resolve_user(tmp_path, "0:wheel")
