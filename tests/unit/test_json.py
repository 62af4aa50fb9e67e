"""corral._json must agree with the json package on what it reads and writes."""

import json

import pytest

from corral import _json

SAMPLES = [
    {"a": [1, 2.5, True, False, None, "x\u00e9\n\"\\"], "b": {}, "c": []},
    [], {}, "text", 0, -12, 1e300, [[[]]], {"nested": {"deep": [{"k": "v"}]}},
]


@pytest.mark.parametrize("value", SAMPLES)
def test_round_trip_matches_json(value):
    text = _json.dumps(value)
    assert json.loads(text) == value
    assert _json.loads(text) == value
    assert _json.loads(json.dumps(value, indent=2)) == value


@pytest.mark.parametrize("text", ['{"a": ', "[1] x", "", "{'a': 1}", "[1,]", "\x00"])
def test_bad_input_is_a_value_error(text):
    with pytest.raises(ValueError):
        _json.loads(text)


def test_bytes_and_whitespace():
    assert _json.loads(b'  \n {"a": 1} \t') == {"a": 1}


@pytest.mark.parametrize("value", [float("nan"), {1: "x"}, object()])
def test_unencodable(value):
    with pytest.raises((ValueError, TypeError)):
        _json.dumps(value)
