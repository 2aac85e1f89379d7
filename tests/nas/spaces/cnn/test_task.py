"""Tests of the micro-CNN search task's masked optimiser (wpl_keras.nas.spaces.cnn.task)."""

import numpy as np
import pytest
import tensorflow as tf

import wpl_keras.wpl.flat as flat_module
from wpl_keras.nas.spaces.cnn.task import MaskedMomentumSGD
from wpl_keras.wpl.flat import GROUPED_FROM

SHAPES = [(2, 3, 2, 2), (4,), (3, 2, 2), ()] * 5  # 20 weights


def _steps(nesterov, grouped, monkeypatch, steps=3):
    """``steps`` masked steps over 20 weights; returns weights and velocities."""
    if not grouped:
        monkeypatch.setattr(flat_module, "GROUPED_FROM", 10**6)
    rng = np.random.default_rng(0)
    variables = [tf.Variable(rng.normal(size=s), dtype=tf.float32) for s in SHAPES]
    sgd = MaskedMomentumSGD(variables, 0.1, momentum=0.9, nesterov=nesterov)
    for _ in range(steps):
        grads = [tf.constant(rng.normal(size=s), tf.float32) for s in SHAPES]
        masks = [tf.constant(rng.integers(0, 2, (s[0],) + (1,) * (len(s) - 1)), tf.float32)
                 if k % 2 == 0 and s else tf.constant(1.0) for k, s in enumerate(SHAPES)]
        sgd.apply(variables, grads, masks)
    monkeypatch.undo()
    return [v.numpy() for v in variables + sgd.velocities], sgd


@pytest.mark.parametrize("nesterov", [True, False])
def test_masked_step_laid_flat_equals_the_step_per_weight(monkeypatch, nesterov):
    assert len(SHAPES) >= GROUPED_FROM
    flat, sgd = _steps(nesterov, True, monkeypatch)
    each, _ = _steps(nesterov, False, monkeypatch)
    for a, b in zip(flat, each):
        np.testing.assert_array_equal(a, b)  # the same elementwise formula
    assert int(sgd.iterations.numpy()) == 3


def test_masked_out_slices_keep_weight_and_velocity():
    variables = [tf.Variable(tf.ones((2, 3))) for _ in range(GROUPED_FROM)]
    sgd = MaskedMomentumSGD(variables, 0.5, momentum=0.9, nesterov=False)
    mask = tf.constant([[1.0], [0.0]])
    sgd.apply(variables, [tf.ones((2, 3))] * len(variables), [mask] * len(variables))
    for v, vel in zip(variables, sgd.velocities):
        np.testing.assert_allclose(v.numpy(), [[0.5] * 3, [1.0] * 3])  # θ − lr · v, v = g
        np.testing.assert_allclose(vel.numpy(), [[1.0] * 3, [0.0] * 3])
