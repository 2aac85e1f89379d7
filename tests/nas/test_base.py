"""Strict parsing shared by every search space: integers, sizes, architectures and JSON."""

import json

import numpy as np
import pytest
import tensorflow as tf

from wpl_keras.nas.base import (
    InvalidArchitectureError,
    InvalidSpaceError,
    check_architecture,
    check_size,
    check_sizes,
    strict_int,
)
from wpl_keras.nas.spaces.cnn.space import MicroCellSpace
from wpl_keras.nas.spaces.rnn.space import RNNCellSpace

SPACES = [RNNCellSpace(num_nodes=3), MicroCellSpace(num_nodes=1)]


@pytest.mark.parametrize("value", [3, np.int8(3), np.int64(3), np.uint16(3)])
def test_strict_int_accepts_exact_integer_types(value):
    got = strict_int(value, "x")
    assert got == 3 and type(got) is int


@pytest.mark.parametrize("value", [True, np.bool_(False), 1.0, 1.7, np.float32(2.0), float("nan"),
                                   float("inf"), "3", b"3", None, [1], 1 + 0j])
def test_strict_int_rejects_everything_else_naming_field_and_value(value):
    with pytest.raises(InvalidArchitectureError, match=r"^x must be an integer, got "):
        strict_int(value, "x")
    with pytest.raises(InvalidSpaceError, match="num_nodes must be an integer"):
        check_size(value, "num_nodes", 1)


def test_check_size_and_sizes():
    assert check_size(np.int32(4), "n", 2) == 4
    for bad in (1, 0, -5):
        with pytest.raises(InvalidSpaceError, match=f"n must be an integer >= 2, got {bad}"):
            check_size(bad, "n", 2)
    assert check_sizes(np.array([2, 3])) == (2, 3)
    assert check_sizes([1]) == (1,)
    for bad, message in (([], "at least one decision"), ("23", "sequence of ints"),
                         (5, "sequence of ints"), ({2: 1}, "sequence of ints"),
                         ([2, 2.5], r"decision_sizes\[1\] must be an integer, got 2.5"),
                         ([2, True], r"decision_sizes\[1\] must be an integer, got True"),
                         ([2, -1], r"decision_sizes\[1\] must be an integer >= 1, got -1"),
                         (np.ones((2, 2), int), "one dimension")):
        with pytest.raises((InvalidSpaceError, TypeError), match=message):
            check_sizes(bad)


def test_check_architecture_accepts_ints_arrays_and_tensors():
    sizes = (3, 2)
    for arch in ([2, 1], (2, 1), np.array([2, 1], np.int32), np.array([2, 1], np.uint8),
                 tf.constant([2, 1]), (np.int64(2), np.int16(1)), iter([2, 1])):
        got = check_architecture(arch, sizes)
        assert got == (2, 1) and all(type(v) is int for v in got)


@pytest.mark.parametrize("arch, message", [
    ([1.7, 0], r"decision 0 must be an integer, got 1.7"),
    ([1.0, 0], r"decision 0 must be an integer, got 1.0"),
    (np.array([1.0, 0.0]), r"decision 0 must be an integer, got np.float64\(1.0\)|got 1.0"),
    ([float("inf"), 0], "decision 0 must be an integer, got inf"),
    ([float("nan"), 0], "decision 0 must be an integer, got nan"),
    ([True, 0], "decision 0 must be an integer, got True"),
    (["1", 0], "decision 0 must be an integer, got '1'"),
    ([None, 0], "decision 0 must be an integer, got None"),
    ([[1], 0], r"decision 0 is \[1\]"),
    ([-1, 0], r"decision 0 is -1, must be in \[0, 3\)"),
    ([0, 2], r"decision 1 is 2, must be in \[0, 2\)"),
    ([0, 10**30], r"decision 1 is 1000000000000000000000000000000, must be in \[0, 2\)"),
    ([0], "expected 2 decisions, got 1"),
    ([0, 0, 0], "expected 2 decisions, got 3"),
    ([], "expected 2 decisions, got 0"),
    (np.zeros((1, 2), int), r"flat sequence of ints.*shape \(1, 2\)"),
    ("01", "sequence of ints, got '01'"),
    (b"\x00\x01", "sequence of ints"),
    (7, "sequence of ints, got 7"),
    (None, "sequence of ints, got None"),
    ({0: 0, 1: 0}, "sequence of ints"),
    ({0, 1}, "sequence of ints"),
])
def test_check_architecture_rejects_malformed(arch, message):
    with pytest.raises(InvalidArchitectureError, match=message):
        check_architecture(arch, (3, 2), owner="toy")


@pytest.mark.parametrize("space", SPACES, ids=lambda s: s.name)
@pytest.mark.parametrize("obj, message", [
    ("[0, 1, 2]", "object .*got list"),
    ("null", "got NoneType None"),
    ("3", "got int 3"),
    ("2.5", "got float"),
    ('"text"', "got str"),
    ("{}", "has no 'decisions' field"),
    ("{not json", "does not parse"),
    ("", "does not parse"),
    ('{"decisions": null}', "sequence of ints, got None"),
    ('{"decisions": "0 0 0"}', "sequence of ints"),
    ('{"decisions": {"a": 1}}', "sequence of ints"),
    ('{"decisions": [0, 0], "config": {}}', "expected . decisions, got 2"),
    ('{"decisions": [Infinity, 0, 0, 0, 0, 0, 0, 0]}', "decision 0 .* got inf"),
    ('{"decisions": [NaN, 0, 0, 0, 0, 0, 0, 0]}', "decision 0 .* got nan"),
    ('{"decisions": [1.7, 0, 0, 0, 0, 0, 0, 0]}', "decision 0 .* got 1.7"),
    ('{"decisions": [true, 0, 0, 0, 0, 0, 0, 0]}', "decision 0 .* got True"),
    ('{"decisions": ["1", 0, 0, 0, 0, 0, 0, 0]}', "decision 0 .* got '1'"),
    ('{"decisions": [1e400, 0, 0, 0, 0, 0, 0, 0]}', "decision 0 .* got inf"),
    ('{"decisions": [-1, 0, 0, 0, 0, 0, 0, 0]}', r"decision 0 .*is -1, must be in"),
    ('{"decisions": [0, 0, 0]}', "expected . decisions, got 3"),
    ('{"space": "other", "decisions": [0]}', "for space 'other'"),
    ('{"space": ["enas_rnn"], "decisions": [0]}', "for space"),
    (["not", "a", "dict"], "object .*got list"),
    (None, "got NoneType"),
    (42, "got int 42"),
])
def test_from_json_rejects_malformed_with_own_error(space, obj, message):
    if space.num_decisions != 8:  # the RNN space of 3 nodes has 5 decisions, not 8
        if isinstance(obj, str):
            obj = obj.replace(", 0, 0, 0, 0, 0, 0, 0]", ", 0, 0, 0, 0]")
    with pytest.raises(InvalidArchitectureError, match=message):
        space.from_json(obj)


@pytest.mark.parametrize("space", SPACES, ids=lambda s: s.name)
def test_from_json_checks_the_string_against_the_decisions(space):
    arch = space.sample(np.random.default_rng(0))
    blob = space.to_json(arch)
    assert space.from_json(blob) == arch
    assert space.from_json(json.dumps(blob).encode()) == arch  # bytes are JSON text too
    assert space.from_json({"decisions": list(arch)}) == arch  # space and string are optional
    assert space.from_json(dict(blob, config={"units": 8})) == arch  # an export's extra keys
    other = tuple(0 if v else 1 for v in arch[:1]) + arch[1:]
    lying = dict(blob, string=space.to_string(other))
    with pytest.raises(InvalidArchitectureError, match="does not match its decisions"):
        space.from_json(lying)
    with pytest.raises(InvalidArchitectureError, match="does not match"):
        space.from_json(dict(blob, string=7))


@pytest.mark.parametrize("space", SPACES, ids=lambda s: s.name)
@pytest.mark.parametrize("text", [None, 3, b"n0=tanh", "", "   ", "garbage", "|", "n0=tanh |",
                                  "\x00", "n\u0663=tanh", "normal: | reduce:"])
def test_from_string_garbage_raises_own_error(space, text):
    with pytest.raises(InvalidArchitectureError):
        space.from_string(text)


@pytest.mark.parametrize("space", SPACES, ids=lambda s: s.name)
def test_validate_errors_are_value_errors_naming_the_space(space):
    with pytest.raises(ValueError, match=space.name):
        space.validate([0.5] * space.num_decisions)
