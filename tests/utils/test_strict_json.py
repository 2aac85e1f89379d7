"""Tests for wpl_keras.utils.strict_json."""

import json
import math
import os

import pytest

from wpl_keras.utils.strict_json import finite_or_null, write_json_atomic


def test_non_finite_floats_become_null_recursively():
    value = {"a": math.nan, "b": [1.5, math.inf, (-math.inf, 2)], "c": {"d": "x", "e": 3}}
    out = finite_or_null(value)
    assert out == {"a": None, "b": [1.5, None, [None, 2]], "c": {"d": "x", "e": 3}}
    json.dumps(out, allow_nan=False)


def test_write_json_atomic_writes_strict_json_and_keeps_the_old_file_on_failure(tmp_path):
    path = str(tmp_path / "deep" / "folder" / "out.json")
    write_json_atomic(path, {"a": math.nan, "b": [1, 2]})
    assert json.load(open(path)) == {"a": None, "b": [1, 2]}
    with pytest.raises(TypeError):
        write_json_atomic(path, {"c": object()})  # not serialisable: fails while writing
    assert json.load(open(path)) == {"a": None, "b": [1, 2]}
    assert os.listdir(os.path.dirname(path)) == ["out.json"]
