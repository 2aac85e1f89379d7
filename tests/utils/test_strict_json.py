"""Tests for wpl_keras.utils.strict_json."""

import json
import math

from wpl_keras.utils.strict_json import finite_or_null


def test_non_finite_floats_become_null_recursively():
    value = {"a": math.nan, "b": [1.5, math.inf, (-math.inf, 2)], "c": {"d": "x", "e": 3}}
    out = finite_or_null(value)
    assert out == {"a": None, "b": [1.5, None, [None, 2]], "c": {"d": "x", "e": 3}}
    json.dumps(out, allow_nan=False)
