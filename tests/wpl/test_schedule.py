"""Tests for the one WPL schedule type: strength_schedule and ScheduleConfig's functions."""

import functools

import numpy as np
import pytest
import tensorflow as tf

from wpl_keras.wpl.schedule import (
    ScheduleConfig,
    flush_at,
    strength_at,
    strength_schedule,
    wpl_active_at,
)


def test_strength_schedule_values():
    assert strength_schedule(3, initial=60.0) == 60.0
    lin = functools.partial(strength_schedule, initial=60.0, decay="linear", start_epoch=15, rate=1.0, floor=5.0)
    assert [lin(e) for e in (0, 14, 15, 16)] == [60.0, 60.0, 59.0, 58.0]
    assert lin(200) == 5.0
    exp = functools.partial(strength_schedule, initial=8.0, decay="exponential", start_epoch=2, rate=0.5)
    assert [exp(e) for e in (1, 2, 3)] == [8.0, 4.0, 2.0]
    with pytest.raises(ValueError, match="decay must be"):
        strength_schedule(20, initial=1.0, decay="cosine")
    with pytest.raises(ValueError, match=r"rate must be a finite number in \(0, 1\]"):
        strength_schedule(20, initial=1.0, decay="exponential", rate=2.0)


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(epoch=-1), ValueError, "epoch must be an integer >= 0"),
    (dict(epoch=1.5), TypeError, "epoch must be an integer"),
    (dict(epoch=np.int64(2), initial=np.float32(-1)), ValueError, "initial must be a number >= 0"),
    (dict(initial="60"), TypeError, "initial"),
    (dict(initial=float("nan")), ValueError, "initial .*NaN"),
    (dict(start_epoch=None), TypeError, "start_epoch"),
    (dict(decay="linear", rate=-1.0), ValueError, "rate must be a finite number >= 0"),
    (dict(decay="linear", rate=float("inf")), ValueError, "rate"),
    (dict(decay="exponential", rate=0.0), ValueError, r"rate must be a finite number in \(0, 1\]"),
    (dict(floor=tf.constant(-1.0)), ValueError, "floor"),
    (dict(floor=True), TypeError, "floor"),
])
def test_strength_schedule_refuses_bad_numbers(kwargs, error, match):
    kwargs = {"epoch": 3, "initial": 60.0, **kwargs}
    with pytest.raises(error, match=f"strength_schedule: {match}"):
        strength_schedule(kwargs.pop("epoch"), **kwargs)


def test_strength_schedule_takes_numpy_and_tensor_scalars():
    value = strength_schedule(np.int64(16), initial=np.float32(60.0), decay="linear",
                              start_epoch=tf.constant(15), rate=tf.constant(1.0),
                              floor=np.float64(5.0))
    assert value == 58.0 and type(value) is float
    assert strength_schedule(0, initial=float("inf")) == float("inf")


def test_schedule_config_functions_and_validation():
    c = ScheduleConfig(wpl_start_epoch=1, strength=10.0, strength_decay="linear",
                       strength_decay_start=3, strength_decay_rate=2.0, flush_every=2)
    assert [wpl_active_at(e, c) for e in range(5)] == [False, True, True, True, True]
    assert [strength_at(e, c) for e in range(5)] == [0.0, 10.0, 10.0, 8.0, 6.0]
    assert [flush_at(e, c) for e in range(6)] == [False, False, False, True, False, True]
    never = ScheduleConfig(wpl_start_epoch=0, flush_every=0)
    assert not any(flush_at(e, never) for e in range(10))
    with pytest.raises(ValueError, match="ScheduleConfig.strength_decay"):
        ScheduleConfig(strength_decay="cosine")
    with pytest.raises(ValueError, match="strength"):
        ScheduleConfig(strength=-1.0)
    assert ScheduleConfig.from_json(c.to_json()) == c
