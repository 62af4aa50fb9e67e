"""corrald end to end: the daemon started on a private socket and root, the
real docker CLI 28 and docker-py as its clients, images pulled from the test
registry (tests/image_fixtures.py), and dockerd (tests/integration/peers.py)
where its answers can be compared.

One corrald serves the whole module; tests that need a state of their own
give their images names of their own.
"""

from __future__ import annotations

import json
import os
import subprocess
import time

import pytest

from tests.integration import peers

UnixHTTPConnection = peers.UnixHTTPConnection
Corrald = peers.Corrald


def _need_docker_cli() -> None:
    if subprocess.run(["sh", "-c", "command -v docker"], capture_output=True).returncode:
        pytest.skip("the docker CLI is not on PATH (scripts/setup installs it)")


@pytest.fixture(scope="module")
def corrald():
    _need_docker_cli()
    daemon = Corrald(peers.make_workdir("api"))
    try:
        yield daemon.start()
    finally:
        daemon.cleanup()


@pytest.fixture(scope="module")
def pulled(corrald, busybox_image) -> str:
    """busybox pulled into corrald by the docker CLI; its reference."""
    corrald.ok("pull", busybox_image)
    return busybox_image


@pytest.fixture
def docker_py(corrald):
    import docker

    client = docker.DockerClient(base_url=f"unix://{corrald.socket}", version="auto")
    yield client
    client.close()


# System ---------------------------------------------------------------------------

def test_version_negotiated_by_the_docker_cli(corrald):
    out = corrald.ok("version", "--format", "{{.Client.APIVersion}} "
                     "{{.Server.APIVersion}} {{.Server.MinAPIVersion}}")
    assert out.split() == ["1.47", "1.47", "1.24"]


def test_ping_head_and_get_carry_the_api_version(corrald):
    for method in ("HEAD", "GET"):
        status, body, headers = corrald.request(method, "/_ping")
        assert status == 200
        assert headers["Api-Version"] == "1.47"
        assert body == (b"OK" if method == "GET" else b"")


def test_versions_outside_the_range_are_refused(corrald):
    status, body, _ = corrald.request("GET", "/v1.50/version")
    assert status == 400
    assert json.loads(body) == {"message": "client version 1.50 is too new. Maximum "
                                           "supported API version is 1.47"}
    status, body, _ = corrald.request("GET", "/v1.23/version")
    assert status == 400 and "too old" in json.loads(body)["message"]
    assert corrald.request("GET", "/v1.24/version")[0] == 200


def test_unknown_endpoints_are_404_page_not_found(corrald):
    for path in ("/v1.47/no/such/thing", "/nothing"):
        status, body, _ = corrald.request("GET", path)
        assert (status, json.loads(body)) == (404, {"message": "page not found"})


def test_docker_py_reads_version_and_info(corrald, docker_py):
    assert docker_py.api.api_version == "1.47"
    assert docker_py.ping() is True
    info = docker_py.info()
    assert info["OSType"] == "linux"
    assert info["DockerRootDir"] == str(corrald.root)


def test_docker_info_prints_the_server_section(corrald):
    out = corrald.ok("info", "--format", "{{.OSType}} {{.ServerVersion}}")
    assert out.split() == ["linux", "0.1.0"]


# Images with the docker CLI ------------------------------------------------------------

def test_pull_shows_docker_progress_and_summary(corrald, busybox_image):
    first = corrald.docker("pull", busybox_image)
    assert first.returncode == 0, first.stderr
    lines = first.stdout.splitlines()
    repository, tag = busybox_image.rsplit(":", 1)
    assert lines[0] == f"{tag}: Pulling from {repository.split('/', 1)[1]}"
    assert any(line.endswith(": Pull complete") or line.endswith(": Already exists")
               for line in lines)
    assert lines[-3].startswith("Digest: sha256:")
    assert lines[-2].startswith("Status: ") and lines[-2].endswith(f" for {busybox_image}")
    assert lines[-1] == busybox_image
    again = corrald.ok("pull", busybox_image).splitlines()
    assert again[-2] == f"Status: Image is up to date for {busybox_image}"


def test_pull_of_a_missing_tag_fails_with_the_registry_message(corrald, registry):
    result = corrald.docker("pull", registry.ref("test/busybox:no-such-tag"))
    assert result.returncode == 1
    assert "Error response from daemon" in result.stderr
    assert "no-such-tag" in result.stderr


def test_images_and_inspect_format(corrald, pulled):
    listed = corrald.ok("images", "--format", "{{.Repository}}:{{.Tag}} {{.ID}}")
    assert any(line.startswith(f"{pulled} ") for line in listed.splitlines())
    image_id = corrald.ok("image", "inspect", "--format", "{{.Id}}", pulled).strip()
    assert image_id.startswith("sha256:")
    shown = corrald.ok("image", "inspect", "--format", "{{.Os}}/{{.Architecture}} "
                       "{{index .RepoTags 0}}", pulled).strip()
    assert shown.split() == ["linux/amd64", pulled]
    assert corrald.ok("images", "-q", pulled).strip() == image_id[7:19]


def test_tag_and_rmi(corrald, pulled):
    corrald.ok("tag", pulled, "corral.test/tagged:one")
    listed = corrald.ok("images", "--format", "{{.Repository}}:{{.Tag}}")
    assert "corral.test/tagged:one" in listed.splitlines()
    out = corrald.ok("rmi", "corral.test/tagged:one")
    assert out.strip() == "Untagged: corral.test/tagged:one"
    assert "corral.test/tagged:one" not in corrald.ok("images", "--format",
                                                       "{{.Repository}}:{{.Tag}}")
    # Still there under its first name.
    corrald.ok("image", "inspect", pulled)


def test_missing_images_are_docker_404s(corrald):
    result = corrald.docker("rmi", "corral.test/nothing:here")
    assert (result.returncode, result.stderr) == (
        1, "Error response from daemon: No such image: corral.test/nothing:here\n")
    result = corrald.docker("image", "inspect", "corral.test/nothing:here")
    assert result.returncode == 1
    assert result.stderr.splitlines()[-1].endswith(
        "No such image: corral.test/nothing:here")


def test_history(corrald, pulled):
    rows = corrald.ok("history", "--format", "{{.ID}}|{{.CreatedBy}}", pulled)
    first = rows.splitlines()[0].split("|")
    image_id = corrald.ok("image", "inspect", "--format", "{{.Id}}", pulled).strip()
    assert first[0] == image_id[7:19]


def test_save_rmi_load_round_trip(corrald, pulled, tmp_path):
    corrald.ok("tag", pulled, "corral.test/saved:1")
    image_id = corrald.ok("image", "inspect", "--format", "{{.Id}}",
                          "corral.test/saved:1").strip()
    archive = tmp_path / "saved.tar"
    corrald.ok("save", "-o", str(archive), "corral.test/saved:1")
    assert archive.stat().st_size > 100_000
    corrald.ok("rmi", "corral.test/saved:1")
    out = corrald.ok("load", "-i", str(archive))
    assert out.strip() == "Loaded image: corral.test/saved:1"
    assert corrald.ok("image", "inspect", "--format", "{{.Id}}",
                      "corral.test/saved:1").strip() == image_id
    corrald.ok("rmi", "corral.test/saved:1")


def test_save_of_a_missing_image_is_an_error_not_an_empty_tar(corrald, tmp_path):
    archive = tmp_path / "none.tar"
    result = corrald.docker("save", "-o", str(archive), "corral.test/nothing:here")
    assert result.returncode == 1
    assert "No such image" in result.stderr
    assert not archive.exists() or archive.stat().st_size == 0


# Images with docker-py ------------------------------------------------------------------

def test_docker_py_pull_list_tag_history_save_load(corrald, docker_py, busybox_image):
    import docker

    repository, tag = busybox_image.rsplit(":", 1)
    image = docker_py.images.pull(repository, tag=tag)
    assert busybox_image in image.tags
    assert image.attrs["Os"] == "linux"
    assert image.tag("corral.test/py", "two")
    assert "corral.test/py:two" in docker_py.images.get(image.id).tags
    assert [row["Id"] for row in image.history()][0] == image.id
    data = b"".join(docker_py.images.get("corral.test/py:two").save(named="corral.test/py:two"))
    docker_py.images.remove("corral.test/py:two")
    with pytest.raises(docker.errors.ImageNotFound):
        docker_py.images.get("corral.test/py:two")
    loaded = docker_py.images.load(data)
    assert [i.id for i in loaded] == [image.id]
    docker_py.images.remove("corral.test/py:two")


def test_docker_py_pull_error_is_an_api_error(corrald, docker_py, registry):
    import docker

    with pytest.raises(docker.errors.APIError) as caught:
        docker_py.images.pull(registry.ref("test/nothing"), tag="1")
    assert caught.value.response.status_code == 404


# Containers ------------------------------------------------------------------------------

def test_run_detached_ps_logs_stats_stop_wait_rm_events(corrald, pulled):
    started = time.time() - 1
    container_id = corrald.ok("run", "-d", "--name", "api-detached", pulled, "sh", "-c",
                              "echo started; trap 'echo bye; exit 7' TERM; "
                              "while true; do sleep 0.1; done").strip()
    assert len(container_id) == 64
    try:
        listed = corrald.ok("ps", "--format", "{{.ID}} {{.Names}} {{.Status}}")
        row = [line for line in listed.splitlines() if line.startswith(container_id[:12])]
        assert row and row[0].split()[1:3] == ["api-detached", "Up"]
        deadline = time.monotonic() + 10
        while "started" not in corrald.ok("logs", "api-detached"):
            assert time.monotonic() < deadline, "no output in the logs"
            time.sleep(0.1)
        stats = corrald.ok("stats", "--no-stream", "--format", "{{.Name}} {{.PIDs}}",
                           "api-detached")
        assert stats.split()[0] == "api-detached" and int(stats.split()[1]) >= 1
        assert corrald.ok("stop", "api-detached").strip() == "api-detached"
        assert corrald.ok("wait", "api-detached").strip() == "7"
        assert corrald.ok("logs", "api-detached") == "started\nbye\n"
        state = corrald.ok("inspect", "--format", "{{.State.Status}} {{.State.ExitCode}}",
                           "api-detached")
        assert state.split() == ["exited", "7"]
    finally:
        corrald.docker("rm", "-f", "api-detached")
    assert "api-detached" not in corrald.ok("ps", "-a", "--format", "{{.Names}}")
    events = corrald.ok("events", "--since", str(int(started)), "--until",
                        str(int(time.time()) + 1), "--filter", f"container={container_id}",
                        "--format", "{{.Action}}").split()
    assert [a for a in events if a in ("create", "start", "die", "destroy")] == [
        "create", "start", "die", "destroy"]


def test_run_of_a_missing_program_exits_127_with_the_message(corrald, pulled):
    result = corrald.docker("run", "-d", pulled, "/no/such/program")
    assert result.returncode == 127
    message = result.stderr.splitlines()[0]
    assert message.startswith("docker: Error response from daemon: start container")
    assert "/no/such/program" in message and "{" not in message


def test_create_refuses_malformed_and_mistyped_bodies(corrald):
    headers = {"Content-Type": "application/json"}
    status, body, _ = corrald.request("POST", "/v1.47/containers/create", b'{"Image": ',
                                      headers)
    assert status == 400
    assert json.loads(body)["message"].startswith("request body: malformed JSON")
    status, body, _ = corrald.request("POST", "/v1.47/containers/create", b'[1]', headers)
    assert status == 400
    status, body, _ = corrald.request("POST", "/v1.47/containers/create",
                                      b'{"Image": 1}', headers)
    assert status == 400 and "Image" in json.loads(body)["message"]


# Streams: attach, resize, exec ----------------------------------------------------

# The client sizes the terminal once the process runs: wait for it.
STTY_SIZE = ('for i in $(seq 100); do size=$(stty size 2>&1); '
             'case $size in [1-9]*) break;; esac; sleep 0.05; done; echo "$size"')


def in_pty(corrald, *args: str) -> tuple[int, str]:
    return peers.run_in_pty(["docker", *args], env=corrald.env(), rows=33, columns=101)


@pytest.fixture
def running(corrald, pulled):
    """A running container to exec in; removed afterwards."""
    container_id = corrald.ok("run", "-d", pulled, "sleep", "300").strip()
    yield container_id
    corrald.docker("rm", "-f", container_id)


def test_run_rm_prints_output_and_exit_status(corrald, pulled):
    result = corrald.docker("run", "--rm", pulled, "sh", "-c", "echo out; echo err >&2; "
                            "exit 3", timeout=60)
    assert (result.returncode, result.stdout, result.stderr) == (3, "out\n", "err\n")


def test_run_i_with_stdin_piped(corrald, pulled):
    result = corrald.docker("run", "-i", "--rm", pulled, "cat", input=b"hi\n")
    assert (result.returncode, result.stdout, result.stderr) == (0, "hi\n", "")


def test_run_t_through_a_pty_follows_the_terminal_size(corrald, pulled):
    status, shown = in_pty(corrald, "run", "--rm", "-it", pulled, "sh", "-c",
                           f"tty; {STTY_SIZE}; exit 2")
    assert status == 2
    assert shown.startswith("/dev/pts/") and shown.endswith("\r\n33 101\r\n")


def test_exec_streams_and_exit_codes(corrald, running):
    result = corrald.docker("exec", running, "sh", "-c", "echo o; echo e >&2; exit 5")
    assert (result.returncode, result.stdout, result.stderr) == (5, "o\n", "e\n")
    result = corrald.docker("exec", "-i", running, "cat", input=b"piped\n")
    assert (result.returncode, result.stdout) == (0, "piped\n")
    result = corrald.docker("exec", "-e", "A=b", "-w", "/tmp", "-u", "app", running,
                            "sh", "-c", "echo $A; pwd; id -u")
    assert (result.returncode, result.stdout) == (0, "b\n/tmp\n1000\n")


def test_exec_it_through_a_pty(corrald, running):
    status, shown = in_pty(corrald, "exec", "-it", running, "sh", "-c",
                           f"tty; {STTY_SIZE}; exit 4")
    assert status == 4
    assert shown.startswith("/dev/pts/") and shown.endswith("\r\n33 101\r\n")


def test_exec_of_a_missing_program_is_dockers_126(corrald, running):
    # dockerd 20.10 writes the same line, CR LF, on the stdout stream; exits 126.
    result = corrald.docker("exec", running, "nonexist")
    assert result.returncode == 126
    assert result.stdout == ('OCI runtime exec failed: exec failed: unable to start '
                             'container process: exec: "nonexist": executable file not '
                             'found in $PATH: unknown\r\n')


def test_exec_in_a_stopped_container_is_refused(corrald, pulled):
    container_id = corrald.ok("create", pulled, "true").strip()
    try:
        result = corrald.docker("exec", container_id, "ls")
        assert result.returncode == 1
        assert result.stderr == (f"Error response from daemon: Container {container_id} "
                                 f"is not running\n")
    finally:
        corrald.docker("rm", "-f", container_id)


def test_attach_to_a_running_container(corrald, pulled):
    container_id = corrald.ok("run", "-d", pulled, "sh", "-c",
                              "echo before; sleep 1; echo after; exit 7").strip()
    try:
        result = corrald.docker("attach", container_id)
        assert (result.returncode, result.stdout) == (7, "after\n")
    finally:
        corrald.docker("rm", "-f", container_id)


def test_exec_inspect_and_no_leftovers_in_corrald(corrald, running):
    before = _corrald_threads(corrald)
    for _ in range(3):
        corrald.docker("exec", running, "true")
    exec_ids = json.loads(corrald.ok("inspect", running))[0]["ExecIDs"]
    assert len(exec_ids) >= 3
    status, body, _ = corrald.request("GET", f"/v1.47/exec/{exec_ids[-1]}/json")
    document = json.loads(body)
    assert status == 200
    assert (document["Running"], document["ExitCode"], document["ContainerID"]) == (
        False, 0, running)
    # Every exec reaped, every relay thread gone.
    assert _zombies(corrald.process.pid) == []
    deadline = time.monotonic() + 5
    while _corrald_threads(corrald) > before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _corrald_threads(corrald) <= before


def _zombies(parent: int) -> list[int]:
    found = []
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                stat = open(f"/proc/{entry.name}/stat").read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if stat[0] == "Z" and int(stat[1]) == parent:
                found.append(int(entry.name))
    return found


def _corrald_threads(corrald) -> int:
    return len(os.listdir(f"/proc/{corrald.process.pid}/task"))


def test_sigterm_stops_corrald_and_leaves_containers_running(corrald, pulled, tmp_path):
    archive = tmp_path / "busybox.tar"
    corrald.ok("save", "-o", str(archive), pulled)
    daemon = Corrald(peers.make_workdir("api")).start()
    try:
        daemon.ok("load", "-i", str(archive))
        daemon.ok("run", "-d", "--name", "survivor", pulled, "sleep", "300")
        assert daemon.stop() == 0
        assert not daemon.socket.exists()
        daemon.start()
        assert daemon.ok("ps", "--format", "{{.Names}} {{.State}}").split() == [
            "survivor", "running"]
        daemon.ok("rm", "-f", "survivor")
    finally:
        daemon.cleanup()
