"""docker run's flags to the create body: what the docker CLI would send."""

from __future__ import annotations

import argparse

import pytest

from corral.cli.create_flags import FlagError, add_create_flags, create_body, size


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(add_help=False)
    add_create_flags(parser)
    return parser.parse_args(argv)


def test_a_full_command_line(tmp_path, monkeypatch):
    env_file = tmp_path / "env"
    env_file.write_text("# comment\nFROM_FILE=1\n\nPASSED\n")
    monkeypatch.setenv("PASSED", "through")
    args = parse("--name", "web", "-i", "-t", "-e", "A=1", "--env-file", str(env_file),
                 "-w", "/srv", "-u", "app", "-h", "box", "-l", "tier=front",
                 "--read-only", "--cap-add", "NET_ADMIN", "--cap-drop", "ALL",
                 "--init", "--stop-signal", "SIGINT", "--stop-timeout", "3",
                 "--ulimit", "nofile=100:200", "--tmpfs", "/run:size=1m",
                 "-m", "256m", "--memory-swap", "-1", "--cpus", "1.5", "-c", "512",
                 "--pids-limit", "50", "--restart", "on-failure:3",
                 "--log-opt", "max-size=1m", "busybox", "sh", "-c", "echo hi")
    body = create_body(args, attach=True)
    assert body["Image"] == "busybox" and body["Cmd"] == ["sh", "-c", "echo hi"]
    assert body["Env"] == ["FROM_FILE=1", "PASSED=through", "A=1"]
    assert (body["Tty"], body["OpenStdin"], body["StdinOnce"]) == (True, True, True)
    assert (body["WorkingDir"], body["User"], body["Hostname"]) == ("/srv", "app", "box")
    assert body["Labels"] == {"tier": "front"}
    assert (body["StopSignal"], body["StopTimeout"]) == ("SIGINT", 3)
    host = body["HostConfig"]
    assert host["Memory"] == 256 << 20 and host["MemorySwap"] == -1
    assert host["NanoCpus"] == 1_500_000_000 and host["CpuShares"] == 512
    assert host["PidsLimit"] == 50 and host["ReadonlyRootfs"] is True
    assert host["CapAdd"] == ["NET_ADMIN"] and host["CapDrop"] == ["ALL"]
    assert host["Init"] is True
    assert host["RestartPolicy"] == {"Name": "on-failure", "MaximumRetryCount": 3}
    assert host["Ulimits"] == [{"Name": "nofile", "Soft": 100, "Hard": 200}]
    assert host["Tmpfs"] == {"/run": "size=1m"}
    assert host["LogConfig"] == {"Type": "json-file", "Config": {"max-size": "1m"}}


def test_detached_run_attaches_nothing():
    body = create_body(parse("-i", "busybox"), attach=False)
    assert not body["AttachStdin"] and not body["AttachStdout"] and not body["StdinOnce"]
    assert "Cmd" not in body


@pytest.mark.parametrize("text, value", [
    ("100", 100), ("1k", 1024), ("512m", 512 << 20), ("1g", 1 << 30), ("1gb", 1 << 30),
    ("1.5m", int(1.5 * (1 << 20))), ("7b", 7),
])
def test_sizes(text, value):
    assert size(text, "-m") == value


@pytest.mark.parametrize("argv, message", [
    (("-m", "lots", "x"), "invalid size: 'lots' for --memory"),
    (("--restart", "sometimes", "x"), "invalid restart policy 'sometimes'"),
    (("--restart", "always:3", "x"), "on-failure only"),
    (("--rm", "--restart", "always", "x"), "cannot specify both --restart and --rm"),
    (("--ulimit", "nofile=many", "x"), "invalid ulimit"),
    (("--tmpfs", "run", "x"), "must be absolute"),
    (("-e", "=x", "x"), "invalid environment variable"),
])
def test_bad_flags(argv, message):
    with pytest.raises(FlagError, match=message):
        create_body(parse(*argv), attach=True)
