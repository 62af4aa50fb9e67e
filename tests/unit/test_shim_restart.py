"""Restart policies and the back-off (corral.shim.restart)."""

from __future__ import annotations

import pytest

from corral.shim.errors import InvalidArgument
from corral.shim.restart import Backoff, RestartPolicy


@pytest.mark.parametrize("text, name, retries", [
    ("", "no", 0), ("no", "no", 0), ("always", "always", 0),
    ("unless-stopped", "unless-stopped", 0), ("on-failure", "on-failure", 0),
    ("on-failure:3", "on-failure", 3),
])
def test_parse(text, name, retries):
    policy = RestartPolicy.parse(text)
    assert (policy.name, policy.max_retries) == (name, retries)


@pytest.mark.parametrize("text", ["sometimes", "always:3", "on-failure:x", "on-failure:-1"])
def test_parse_rejects(text):
    with pytest.raises(InvalidArgument, match=f"restart policy '{text}'"):
        RestartPolicy.parse(text)


def test_should_restart():
    on_failure = RestartPolicy.parse("on-failure:2")
    assert on_failure.should_restart(1, 0, False)
    assert on_failure.should_restart(1, 1, False)
    assert not on_failure.should_restart(1, 2, False)
    assert not on_failure.should_restart(0, 0, False)
    assert RestartPolicy.parse("on-failure").should_restart(1, 1000, False)
    for name in ("always", "unless-stopped"):
        assert RestartPolicy.parse(name).should_restart(0, 99, False)
        assert not RestartPolicy.parse(name).should_restart(1, 0, True)
    assert not RestartPolicy.parse("no").should_restart(1, 0, False)


def test_backoff_doubles_to_a_minute_and_resets_after_a_long_run():
    backoff = Backoff()
    delays = [backoff.next_delay(0.5) for _ in range(12)]
    assert delays[:4] == [0.1, 0.2, 0.4, 0.8]
    assert delays[-1] == 60.0 and max(delays) == 60.0
    assert backoff.next_delay(10.0) == 0.1
    assert backoff.next_delay(1.0) == 0.2
