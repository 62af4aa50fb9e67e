"""`corral run -it`, `attach` and `exec -it` let go of the container on the
detach keys (Ctrl-P Ctrl-Q, or --detach-keys) and leave it running."""

from __future__ import annotations

import os
import pty
import select
import termios
import time
import tty

from tests.integration.test_corral_containers import CORRAL, corral, wait_for  # noqa: F401


def _in_pty(cli, *args: str, send: list[tuple[bytes, bytes]]) -> tuple[int, str]:
    """Run corral in a pty; each (awaited, typed) pair types its bytes once the
    output shows the awaited text. Its status and output."""
    argv = [CORRAL, "--root", str(cli.root), "--run-root", str(cli.run_dir), *args]
    pid, fd = pty.fork()
    if pid == 0:
        # Raw from the start: no local echo of what is typed before corral
        # itself makes the terminal raw.
        tty.setraw(0)
        os.execv(CORRAL, argv)
    # Nothing typed before then: the cooked terminal would echo it itself.
    while termios.tcgetattr(fd)[3] & termios.ECHO:
        time.sleep(0.01)
    output, deadline = b"", time.monotonic() + 30
    while time.monotonic() < deadline:
        if send and send[0][0] in output:
            os.write(fd, send.pop(0)[1])
        if not select.select([fd], [], [], 0.2)[0]:
            continue
        try:
            data = os.read(fd, 4096)
        except OSError:
            break
        if not data:
            break
        output += data
    else:
        os.kill(pid, 9)
    _, status = os.waitpid(pid, 0)
    os.close(fd)
    return os.waitstatus_to_exitcode(status), output.decode(errors="replace")


def _running(cli, name: str) -> bool:
    return cli("inspect", "-f", "{{.State.Running}}", name).stdout.strip() == "true"


def test_run_it_detaches_on_ctrl_p_ctrl_q_and_attach_comes_back(corral,  # noqa: F811
                                                                busybox_image):
    status, text = _in_pty(corral, "run", "-it", "--name", "d1", busybox_image, "cat",
                           send=[(b"", b"one\r"), (b"one", b"\x10\x11")])
    assert status == 0, text
    assert "read escape sequence" in text
    assert _running(corral, "d1")
    # The container's stdin stayed open (stdin-once does not close a tty's).
    status, text = _in_pty(corral, "attach", "--detach-keys", "ctrl-x,y", "d1",
                           send=[(b"", b"two\r"), (b"two", b"\x18y")])
    assert status == 0, text
    assert _running(corral, "d1")
    status, text = _in_pty(corral, "attach", "d1",
                           send=[(b"", b"three\r"), (b"three", b"\x04")])
    assert status == 0, text
    wait_for(lambda: not _running(corral, "d1"))


def test_a_lone_ctrl_p_reaches_the_container(corral, busybox_image):  # noqa: F811
    # od shows the bytes it gets: the Ctrl-P, then the next two.
    status, text = _in_pty(corral, "run", "-it", "--rm", busybox_image, "sh", "-c",
                           "head -c 3 | od -An -c",
                           send=[(b"", b"\x10ab\r")])
    assert status == 0, text
    assert "020   a   b" in text


def test_bad_detach_keys_are_refused_before_the_run(corral, busybox_image):  # noqa: F811
    result = corral("run", "-it", "--detach-keys", "alt-q", "--name", "d2",
                    busybox_image, "true", check=False)
    assert result.returncode == 125
    assert "invalid detach keys 'alt-q'" in result.stderr
    assert "d2" not in corral("ps", "-a").stdout
