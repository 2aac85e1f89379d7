"""Tests for the chosen op of a supernet node slot and its hand-written gradient."""

import numpy as np
import pytest
import tensorflow as tf

from wpl_keras.nas.spaces.cnn.chosen_op import (SEP_OPS, chosen_input, chosen_op, chosen_stage,
                                                 fused_batch_norm)
from wpl_keras.nas.spaces.cnn.space import OPS


def _weights(rng, c=4, repeats=2):
    out = {}
    for op, k in SEP_OPS.items():
        out[op] = [
            tf.constant(rng.normal(0, 0.5, (repeats, k, k, c, 1)), tf.float32),
            tf.constant(rng.normal(0, 0.5, (repeats, 1, 1, c, c)), tf.float32),
            tf.constant(rng.uniform(0.5, 1.5, (repeats, c)), tf.float32),
            tf.constant(rng.normal(0, 0.3, (repeats, c)), tf.float32),
        ]
    return out


def _reference(x, op, weights):
    """The op written with plain TF ops, differentiated by TensorFlow."""
    if op == "identity":
        return x
    if op == "avg3x3":
        return tf.nn.avg_pool2d(x, 3, 1, "SAME")
    if op == "max3x3":
        return tf.nn.max_pool2d(x, 3, 1, "SAME")
    dw, pw, scale, offset = weights[op]
    y = x
    for r in range(dw.shape[0]):
        z = tf.nn.separable_conv2d(tf.nn.relu(y), dw[r], pw[r], [1, 1, 1, 1], "SAME")
        mean, var = tf.nn.moments(z, axes=[0, 1, 2])
        y = (z - mean) / tf.sqrt(var + 1e-5) * scale[r] + offset[r]
    return y


@pytest.mark.parametrize("op", OPS)
def test_output_and_gradients_equal_autodiff_of_the_op_written_out(op):
    rng = np.random.default_rng(OPS.index(op))
    x = tf.constant(rng.normal(0.3, 1.0, (3, 6, 6, 4)), tf.float32)
    weights = _weights(rng)
    upstream = tf.constant(rng.normal(0, 1, (3, 6, 6, 4)), tf.float32)
    flat = [w for name in SEP_OPS for w in weights[name]]

    def grads(fn):
        with tf.GradientTape() as tape:
            tape.watch([x] + flat)
            y = fn()
            loss = tf.reduce_sum(y * upstream)
        return y, tape.gradient(loss, [x] + flat, unconnected_gradients="zero")

    got_y, got = grads(lambda: chosen_op(x, tf.constant(OPS.index(op)), weights))
    want_y, want = grads(lambda: _reference(x, op, weights))
    np.testing.assert_allclose(got_y.numpy(), want_y.numpy(), rtol=1e-4, atol=1e-4)
    for g, w in zip(got, want):
        np.testing.assert_allclose(g.numpy(), w.numpy(), rtol=1e-3, atol=1e-4)
    unused = [name for name in SEP_OPS if name != op]
    for k, name in enumerate(SEP_OPS):
        if name in unused:
            for g in got[1 + 4 * k:5 + 4 * k]:
                assert not np.any(g.numpy())


def test_traced_chosen_op_picks_the_op_from_a_tensor():
    rng = np.random.default_rng(5)
    x = tf.constant(rng.normal(0, 1, (2, 5, 5, 4)), tf.float32)
    weights = _weights(rng)
    fn = tf.function(lambda i: chosen_op(x, i, weights), autograph=False)
    for op in OPS:
        np.testing.assert_allclose(fn(tf.constant(OPS.index(op))).numpy(),
                                   _reference(x, op, weights).numpy(), rtol=1e-4, atol=1e-4)
    assert len(fn._list_all_concrete_functions()) == 1


def test_fused_batch_norm_is_the_formula_with_epsilon_1e_5():
    rng = np.random.default_rng(2)
    x = tf.constant(rng.normal(1.0, 1e-3, (4, 3, 3, 2)), tf.float32)  # σ² ~ ε: ε matters
    scale, offset = tf.constant([0.5, 2.0]), tf.constant([0.1, -0.3])
    xd = x.numpy().astype(np.float64)
    want = (scale.numpy() * (xd - xd.mean(axis=(0, 1, 2)))
            / np.sqrt(xd.var(axis=(0, 1, 2)) + 1e-5) + offset.numpy())
    np.testing.assert_allclose(fused_batch_norm(x, scale, offset).numpy(), want, rtol=1e-4,
                               atol=1e-4)


def test_missing_weights_raise():
    with pytest.raises(ValueError, match="sep5x5"):
        chosen_op(tf.zeros([1, 3, 3, 2]), tf.constant(0),
                  {"sep3x3": [tf.zeros([2, 3, 3, 2, 1])] * 4})
    with pytest.raises(ValueError, match="sep3x3"):
        chosen_stage(tf.zeros([1, 3, 3, 2]), tf.constant(0), 0,
                     {"sep5x5": [tf.zeros([5, 5, 2, 1]), tf.zeros([1, 1, 2, 2])]})


def _stage_reference(x, op, repetition, stage):
    """A stage of the op written with plain TF ops (``stage``: per separable op, that
    repetition's depthwise and pointwise kernels), differentiated by TensorFlow."""
    if op in SEP_OPS:
        return tf.nn.separable_conv2d(tf.nn.relu(x), *stage[op], [1, 1, 1, 1], "SAME")
    return _reference(x, op, {}) if repetition == 0 else tf.identity(x)


def _gradients(fn, inputs, upstream):
    with tf.GradientTape() as tape:
        tape.watch(inputs)
        y = fn()
        loss = tf.reduce_sum(y * upstream)
    return y, tape.gradient(loss, inputs, unconnected_gradients="zero")


@pytest.mark.parametrize("repetition", [0, 1])
@pytest.mark.parametrize("op", OPS)
def test_stage_output_and_gradients_equal_autodiff_of_the_stage_written_out(op, repetition):
    """Every op at both repetitions: the pre-BN stage (a sep-conv, or the pool or identity at
    repetition 0 and identity after) and its gradients to the input and to both separable
    ops' weights of that repetition (zero for the unchosen op's)."""
    rng = np.random.default_rng(10 + OPS.index(op) + 7 * repetition)
    x = tf.constant(rng.normal(0.3, 1.0, (3, 6, 6, 4)), tf.float32)
    weights = _weights(rng)
    upstream = tf.constant(rng.normal(0, 1, (3, 6, 6, 4)), tf.float32)
    stage = {name: [weights[name][0][repetition], weights[name][1][repetition]]
             for name in SEP_OPS}
    flat = [w for name in SEP_OPS for w in stage[name]]
    got_y, got = _gradients(lambda: chosen_stage(x, tf.constant(OPS.index(op)), repetition,
                                                 stage), [x] + flat, upstream)
    want_y, want = _gradients(lambda: _stage_reference(x, op, repetition, stage), [x] + flat,
                              upstream)
    np.testing.assert_allclose(got_y.numpy(), want_y.numpy(), rtol=1e-4, atol=1e-4)
    for g, w in zip(got, want):
        np.testing.assert_allclose(g.numpy(), w.numpy(), rtol=1e-3, atol=1e-4)
    for k, name in enumerate(SEP_OPS):
        if name != op:
            assert not any(np.any(g.numpy()) for g in got[1 + 2 * k:3 + 2 * k])


def test_traced_stage_picks_the_op_from_a_tensor():
    rng = np.random.default_rng(6)
    x = tf.constant(rng.normal(0, 1, (2, 5, 5, 4)), tf.float32)
    weights = _weights(rng)
    stage = {name: [weights[name][0][1], weights[name][1][1]] for name in SEP_OPS}
    fn = tf.function(lambda i: chosen_stage(x, i, 1, stage), autograph=False)
    for op in OPS:
        want = _stage_reference(x, op, 1, stage)
        np.testing.assert_allclose(fn(tf.constant(OPS.index(op))).numpy(), want.numpy(),
                                   rtol=1e-4, atol=1e-4)
    assert len(fn._list_all_concrete_functions()) == 1


@pytest.mark.parametrize("index", [0, 1, 3])
def test_chosen_input_is_the_state_and_its_gradient_goes_to_it_alone(index):
    rng = np.random.default_rng(index)
    states = [tf.constant(rng.normal(0, 1, (2, 3, 3, 2)), tf.float32) for _ in range(4)]
    upstream = tf.constant(rng.normal(0, 1, (2, 3, 3, 2)), tf.float32)
    fn = tf.function(lambda i: _gradients(lambda: chosen_input(states, i), states, upstream),
                     autograph=False)
    y, grads = fn(tf.constant(index))
    np.testing.assert_array_equal(y.numpy(), states[index].numpy())
    for k, g in enumerate(grads):
        np.testing.assert_array_equal(g.numpy(), upstream.numpy() if k == index else 0.0)
    fn(tf.constant((index + 1) % 4))
    assert len(fn._list_all_concrete_functions()) == 1
