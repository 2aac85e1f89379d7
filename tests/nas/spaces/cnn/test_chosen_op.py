"""Tests for the chosen op of a supernet node slot and its hand-written gradient."""

import numpy as np
import pytest
import tensorflow as tf

from wpl_keras.nas.spaces.cnn.chosen_op import (SEP_OPS, _chosen_op_function,
                                                 _chosen_stage_function, chosen_input, chosen_op,
                                                 chosen_stage, fused_batch_norm)
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


@pytest.mark.parametrize("staged", [False, True])
def test_slots_of_one_shape_share_one_traced_function_called_not_inlined(staged):
    # Four slots of one shape and one of another in a traced step: at most two traces of
    # the op's function, two distinct functions called five times forward and five times
    # backward, calls that stay calls (`_noinline`), and the right values through them.
    rng = np.random.default_rng(11)
    shapes = [(2, 5, 5, 4)] * 4 + [(2, 3, 3, 6)]
    xs = [tf.constant(rng.normal(0, 1, s), tf.float32) for s in shapes]
    weights = {4: _weights(rng, c=4), 6: _weights(rng, c=6)}
    if staged:
        weights = {c: {op: [w[0][0], w[1][0]] for op, w in ws.items()}
                   for c, ws in weights.items()}
    function = _chosen_stage_function if staged else _chosen_op_function
    before = function.experimental_get_tracing_count()

    def one(x, i):
        ws = weights[int(x.shape[-1])]
        return chosen_stage(x, i, 0, ws) if staged else chosen_op(x, i, ws)

    @tf.function(autograph=False)
    def step(ops):
        with tf.GradientTape() as tape:
            tape.watch(xs)
            loss = tf.add_n([tf.reduce_sum(one(x, ops[k]) ** 2) for k, x in enumerate(xs)])
        return loss, tape.gradient(loss, xs)

    ops = tf.constant([OPS.index("sep3x3"), OPS.index("max3x3"), OPS.index("sep5x5"),
                       OPS.index("identity"), OPS.index("sep3x3")])
    loss, grads = step(ops)
    assert function.experimental_get_tracing_count() - before <= 2  # 0 for a shape seen before
    definition = step.get_concrete_function(ops).graph.as_graph_def()
    called = [n.attr["f"].func.name for n in definition.node
              if n.op in ("PartitionedCall", "StatefulPartitionedCall")]
    for part in ("__forward_", "__backward_"):  # the op's forward and its gradient
        names = [name for name in called if part in name]
        assert len(names) == len(xs) and len(set(names)) == 2, called
    library = {f.signature.name: f for f in definition.library.function}
    assert all(library[name].attr["_noinline"].b for name in called)
    want = sum(float(tf.reduce_sum(_ref_stage(x, OPS[int(i)], weights[int(x.shape[-1])], staged)
                                   ** 2)) for x, i in zip(xs, ops))
    np.testing.assert_allclose(float(loss), want, rtol=1e-4)
    assert all(g is not None and np.all(np.isfinite(g.numpy())) for g in grads)


def _ref_stage(x, op, weights, staged):
    if not staged:
        return _reference(x, op, weights)
    if op in SEP_OPS:
        dw, pw = weights[op]
        return tf.nn.separable_conv2d(tf.nn.relu(x), dw, pw, [1, 1, 1, 1], "SAME")
    return _reference(x, op, weights)


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
