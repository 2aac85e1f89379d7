"""Tests for the one numeric-argument validator."""

import dataclasses
import fractions
import math
import re

import keras
import numpy as np
import pytest
import tensorflow as tf

from wpl_keras.utils.validation import check_fields, check_number, describe_range

# Every way a caller may hold one number: the result must not depend on it.
KINDS = {
    "python": lambda v: v,
    "np.float32": np.float32,
    "np.float64": np.float64,
    "np.array0d": np.array,
    "np.array1": lambda v: np.array([v]),
    "tf.constant": tf.constant,
    "tf.constant1": lambda v: tf.constant([v]),
    "tf.Variable": tf.Variable,
    "keras.tensor": keras.ops.convert_to_tensor,
    "keras.Variable": keras.Variable,
}
INT_KINDS = {
    "python": int,
    "np.int32": np.int32,
    "np.int64": np.int64,
    "np.uint8": np.uint8,
    "np.array0d": lambda v: np.array(v, np.int64),
    "tf.constant": lambda v: tf.constant(v, tf.int32),
    "tf.Variable": lambda v: tf.Variable(v, dtype=tf.int64),
    "keras.tensor": lambda v: keras.ops.convert_to_tensor(v, dtype="int32"),
}


@pytest.mark.parametrize("kind", KINDS)
def test_every_kind_of_scalar_gives_the_same_python_float(kind):
    got = check_number("alpha", KINDS[kind](2.5), minimum=0)
    assert got == 2.5 and type(got) is float


@pytest.mark.parametrize("kind", KINDS)
def test_negative_is_refused_for_every_kind(kind):
    with pytest.raises(ValueError, match=r"^alpha must be a finite number >= 0, got .*-1"):
        check_number("alpha", KINDS[kind](-1.0), minimum=0)


@pytest.mark.parametrize("kind", KINDS)
def test_nan_is_refused_for_every_kind_even_without_bounds(kind):
    with pytest.raises(ValueError, match=r"^alpha must be a finite number, got NaN"):
        check_number("alpha", KINDS[kind](float("nan")))
    with pytest.raises(ValueError, match="got NaN"):
        check_number("alpha", KINDS[kind](float("nan")), minimum=0, allow_inf=True)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_infinity_is_refused_unless_allowed(kind, sign):
    value = KINDS[kind](sign * math.inf)
    with pytest.raises(ValueError, match=r"alpha must be a finite number >= 0, got .*inf"):
        check_number("alpha", value, minimum=0)
    if sign > 0:
        assert check_number("alpha", value, minimum=0, allow_inf=True) == math.inf
    else:  # -inf is never meaningful: below any minimum, and refused without one
        with pytest.raises(ValueError, match=r"\(inf allowed\), got .*-inf"):
            check_number("alpha", value, minimum=0, allow_inf=True)
        with pytest.raises(ValueError, match="-inf"):
            check_number("alpha", value, allow_inf=True)


@pytest.mark.parametrize("value, why", [
    ("strong", "a string"),
    (b"1", "a string"),
    ("1.0", "a string"),
    (None, "None is not allowed"),
    (True, "a bool"),
    (np.bool_(False), "a bool"),
    (tf.constant(True), "a bool"),
    (np.array([True]), "a bool"),
    ([1.0], "a list"),
    ((1.0,), "a tuple"),
    ({"a": 1}, "a dict"),
    (np.array([1.0, 2.0]), r"shape \(2,\): one number is needed"),
    (np.zeros((0,)), r"shape \(0,\)"),
    (tf.constant([[1.0, 2.0]]), r"shape \(1, 2\)"),
    (keras.Variable(np.ones(3, np.float32)), r"shape \(3,\)"),
    (1 + 2j, "not a real number"),
    (np.complex64(1), "not a real number"),
    (tf.constant("x"), "not a real number"),
    (object(), "not a real number"),
    (keras.KerasTensor((None,)), "no concrete value"),
])
def test_non_numbers_are_type_errors_naming_argument_value_and_range(value, why):
    with pytest.raises(TypeError, match=rf"^lr must be a finite number > 0, got .*\(.*{why}"):
        check_number("lr", value, minimum=0, exclusive_minimum=True)


def test_a_symbolic_tensor_inside_tf_function_is_refused():
    @tf.function
    def traced(x):
        return tf.constant(check_number("lr", x, minimum=0))

    with pytest.raises(TypeError, match="lr must be .*no concrete value"):
        traced(tf.constant(1.0))


@pytest.mark.parametrize("kwargs, good, bad", [
    (dict(minimum=0), [0.0, 1e30], [-1e-30]),
    (dict(minimum=0, exclusive_minimum=True), [1e-30], [0.0, -1.0]),
    (dict(maximum=1), [1.0, -5.0], [1.0000001]),
    (dict(maximum=1, exclusive_maximum=True), [0.999], [1.0]),
    (dict(minimum=0, maximum=1, exclusive_minimum=True), [1.0, 0.5], [0.0, 1.5]),
    (dict(minimum=-2, maximum=2), [-2.0, 2.0], [-2.1, 2.1]),
])
@pytest.mark.parametrize("kind", ["python", "np.float64", "tf.constant"])
def test_bounds_and_their_ends(kwargs, good, bad, kind):
    make = KINDS[kind]
    for value in good:
        assert check_number("x", make(value), **kwargs) == pytest.approx(value)
    for value in bad:
        with pytest.raises(ValueError, match=re.escape(f"x must be {describe_range(**kwargs)}")):
            check_number("x", make(value), **kwargs)


@pytest.mark.parametrize("kind", INT_KINDS)
def test_counts_accept_every_integer_kind_and_give_python_ints(kind):
    got = check_number("every", INT_KINDS[kind](3), minimum=1, integer=True)
    assert got == 3 and type(got) is int
    with pytest.raises(ValueError, match=r"^every must be an integer >= 1, got .*0"):
        check_number("every", INT_KINDS[kind](0), minimum=1, integer=True)


@pytest.mark.parametrize("value", [3.0, 2.5, np.float32(3), tf.constant(3.0), "3", True, None,
                                   float("nan"), np.array([1, 2])])
def test_counts_refuse_non_integers(value):
    with pytest.raises(TypeError, match="^epochs must be an integer >= 0, got "):
        check_number("epochs", value, minimum=0, integer=True)


def test_negative_counts_and_unbounded_counts():
    with pytest.raises(ValueError, match=r"steps must be an integer >= 0, got np.int64\(-1\)"):
        check_number("steps", np.int64(-1), minimum=0, integer=True)
    assert check_number("seed", -7, integer=True) == -7


def test_optional_none_and_other_real_types():
    assert check_number("clip", None, minimum=0, optional=True) is None
    with pytest.raises(ValueError, match="clip must be a finite number >= 0 or None, got -1"):
        check_number("clip", -1, minimum=0, optional=True)
    assert check_number("x", fractions.Fraction(1, 4)) == 0.25
    assert type(check_number("x", 3)) is float


def test_describe_range_words():
    assert describe_range() == "a finite number"
    assert describe_range(minimum=0, allow_inf=True) == "a number >= 0 (inf allowed)"
    assert describe_range(minimum=0, maximum=1, exclusive_minimum=True) == \
        "a finite number in (0, 1]"
    assert describe_range(maximum=1, exclusive_maximum=True) == "a finite number < 1"
    assert describe_range(minimum=1, integer=True, optional=True) == "an integer >= 1 or None"


@dataclasses.dataclass(frozen=True)
class _Config:
    rate: float = 0.1
    epochs: int = 2
    clip: object = None


def test_check_fields_writes_python_numbers_back_and_names_the_field():
    config = _Config(rate=np.float32(0.5), epochs=np.int64(4), clip=tf.constant(2.0))
    check_fields(config, {"rate": dict(minimum=0), "epochs": dict(integer=True, minimum=1),
                          "clip": dict(minimum=0, optional=True)})
    assert (config.rate, config.epochs, config.clip) == (0.5, 4, 2.0)
    assert (type(config.rate), type(config.epochs), type(config.clip)) == (float, int, float)
    with pytest.raises(ValueError, match=r"^_Config.epochs must be an integer >= 1, got 0\."):
        check_fields(_Config(epochs=0), {"epochs": dict(integer=True, minimum=1)})
    with pytest.raises(TypeError, match=r"^_Config.rate must be a finite number >= 0, got 'x'"):
        check_fields(_Config(rate="x"), {"rate": dict(minimum=0)})
