"""Tests of the flat layout (wpl_keras.wpl.flat) and of the WPL step over weights laid end to
end: the same values as the step computed weight by weight."""

import numpy as np
import pytest
import tensorflow as tf

import wpl_keras.wpl.flat as flat_module
from wpl_keras.wpl.config import WPLConfig
from wpl_keras.wpl.core import clip_fisher
from wpl_keras.wpl.fisher import WPLState
from wpl_keras.wpl.flat import GROUPED_FROM, FlatLayout, unit_size
from wpl_keras.wpl.step import Covered, WPLStep


def test_unit_sizes_and_layouts_that_cannot_be_laid_flat():
    assert unit_size((2, 3, 4), None) == 24
    assert unit_size((2, 3, 4), [1, 2]) == 12
    assert unit_size((2, 3, 4), [2]) == 4
    assert unit_size((2, 3, 4), [-1]) == 4
    assert unit_size((2, 3, 4), [0, 1]) is None  # not trailing: units not consecutive
    assert unit_size((2, 3, 4), [1]) is None
    assert FlatLayout.of([(2, 3), (4,)], [None, [0, 1]]) is None
    assert FlatLayout.of([tf.TensorShape([None, 3])]) is None
    layout = FlatLayout.of([(2, 3), (4,), ()], [[1], None, None])
    assert layout.units == (3, 4, 1) and layout.sizes == [6, 4, 1]


def test_flatten_round_trip_and_coverage():
    rng = np.random.default_rng(0)
    shapes = [(2, 3, 2), (5,), (), (1, 4)]
    values = [rng.normal(size=s).astype(np.float32) for s in shapes]
    layout = FlatLayout.of(shapes)
    flat = layout.flatten([tf.constant(v) for v in values])
    assert flat.shape == (12 + 5 + 1 + 4,)
    for got, want in zip(layout.unflatten(flat), values):
        np.testing.assert_array_equal(got.numpy(), want)
    assert layout.flatten_coverage([None] * 4) is None
    mask = tf.constant([[[1.0]], [[0.0]]])  # [2, 1, 1] over a (2, 3, 2) weight
    cov = layout.flatten_coverage([mask, None, None, tf.constant(0.0)]).numpy()
    np.testing.assert_array_equal(cov, [1.0] * 6 + [0.0] * 6 + [1.0] * 6 + [0.0] * 4)


def test_clip_per_unit_equals_the_clip_of_each_weight():
    rng = np.random.default_rng(1)
    shapes = [(3, 2, 4), (6,), (2, 5, 5), (1,), (0, 3), (2, 0)]
    axes = [[1, 2], None, [2], None, [1], [1]]  # and two weights of size 0
    values = [tf.constant(10 * rng.random(s), tf.float32) for s in shapes]
    values[3] = tf.zeros((1,))  # a zero unit stays zero (no 0/0)
    layout = FlatLayout.of(shapes, axes)
    clipped = layout.unflatten(layout.clip(layout.flatten(values), 3.0))
    for got, v, a in zip(clipped, values, axes):
        np.testing.assert_allclose(got.numpy(), clip_fisher(v, 3.0, a).numpy(), rtol=1e-6)


SHAPES = [(2, 3, 3), (3,), (4, 2), (2, 2, 2, 2)] * 5  # 20 weights


def _run(mode, grouped, *, dtype=tf.float32, alpha=3.0, applied=None, clip_axes=True,
         fisher_gradient="data", l2=0.0, l2_placement=None, with_clip=True, gate=None,
         update_fisher=True):
    """One WPL step over 20 weights (masked, clipped per slice), per weight or laid flat;
    returns ``(penalty, weights, Fisher, anchors)`` as numpy."""
    rng = np.random.default_rng(2)
    variables = [tf.Variable(rng.normal(size=s), dtype=dtype) for s in SHAPES]
    state = WPLState(variables, strength=alpha, fisher_momentum=0.7,
                     clip_norm=2.0 if with_clip else None)
    for v, f, a in zip(variables, state.fisher, state.anchors):
        f.assign(rng.random(v.shape))
        a.assign(tf.cast(v, a.dtype) + rng.normal(size=v.shape) * 0.1)
    masks = [tf.constant(rng.integers(0, 2, (s[0],) + (1,) * (len(s) - 1)), tf.float32)
             if k % 2 == 0 else None for k, s in enumerate(SHAPES)]
    axes = [list(range(1, len(s))) if clip_axes and len(s) > 1 and k % 3 else None
            for k, s in enumerate(SHAPES)]
    covered = [Covered(position=k, index=k, mask=m, clip_axes=a)
               for k, (m, a) in enumerate(zip(masks, axes))]
    grads = [tf.constant(rng.normal(size=s), dtype) for s in SHAPES]
    config = WPLConfig(mode=mode, fisher_gradient=fisher_gradient, l2_placement=l2_placement)
    step = WPLStep(state, config)
    assert (step.layout(covered) is not None) == grouped

    def apply(gs):
        for v, g in zip(variables, gs):
            v.assign_sub(0.1 * tf.cast(g, v.dtype))
        return applied

    def run():  # eagerly: the values, not the tracing, are compared here
        out = step([tf.convert_to_tensor(v) for v in variables], grads, apply, covered=covered,
                   learning_rate=tf.constant(0.1), l2=l2, grad_clip=5.0,
                   active=True if gate is None else gate, update_fisher=update_fisher)
        return out.penalty

    penalty = float(run())
    return (penalty, [v.numpy() for v in variables], [f.numpy() for f in state.fisher],
            [a.numpy() for a in state.anchors])


def _per_weight(monkeypatch, **kwargs):
    monkeypatch.setattr(flat_module, "GROUPED_FROM", 10**6)
    try:
        return _run(grouped=False, **kwargs)
    finally:
        monkeypatch.undo()


def _assert_same(flat, each, rtol=1e-5):
    assert flat[0] == pytest.approx(each[0], rel=rtol)
    for a, b in zip(flat[1:], each[1:]):
        for x, y in zip(a, b):
            np.testing.assert_allclose(x, y, rtol=rtol, atol=1e-6)


@pytest.mark.parametrize("case", [
    dict(mode="proximal"),
    dict(mode="gradient"),
    dict(mode="gradient", fisher_gradient="total", l2=0.01, l2_placement="before_wpl"),
    dict(mode="gradient", l2=0.01, l2_placement="penalty"),
    dict(mode="proximal", l2=0.01, l2_placement="after_clip", with_clip=False),
    dict(mode="proximal", applied=tf.constant(False)),  # a skipped step: no pull, no Fisher
    dict(mode="proximal", applied=tf.constant(True), gate=tf.constant(True)),
    dict(mode="gradient", gate=tf.constant(False)),  # WPL off in the graph
    dict(mode="proximal", alpha=float("inf")),
    dict(mode="proximal", dtype=tf.float64),
    dict(mode="gradient", clip_axes=False),
], ids=lambda c: "-".join(f"{k}={v}" for k, v in c.items() if not tf.is_tensor(v))
    + ("-tensor-flags" if any(tf.is_tensor(v) for v in c.values()) else ""))
def test_the_step_laid_flat_equals_the_step_per_weight(monkeypatch, case):
    assert len(SHAPES) >= GROUPED_FROM
    flat = _run(grouped=True, **case)
    each = _per_weight(monkeypatch, **case)
    _assert_same(flat, each)


def test_a_skipped_step_keeps_every_weight_fisher_and_anchor_exactly():
    # The test's optimiser moves the weights whatever it reports; after a step it reports
    # as not applied, no pull and no Fisher update follow: the state of a step with WPL and
    # the Fisher update off, exactly.
    off = _run("proximal", True, applied=tf.constant(True), gate=tf.constant(False),
               update_fisher=tf.constant(False))
    skipped = _run("proximal", True, applied=tf.constant(False))
    for x, y in zip(skipped[1] + skipped[2] + skipped[3], off[1] + off[2] + off[3]):
        np.testing.assert_array_equal(x, y)


def test_update_fisher_grouped_skips_none_gradients_and_falls_back_for_row_slices():
    variables = [tf.Variable(tf.ones((3, 2))) for _ in range(GROUPED_FROM)]
    state = WPLState(variables, fisher_momentum=0.5)
    grads = [tf.fill((3, 2), 2.0) if k % 2 else None for k in range(len(variables))]
    state.update_fisher(grads, grouped=True)
    for k, f in enumerate(state.fisher):
        np.testing.assert_allclose(f.numpy(), np.full((3, 2), 2.0 if k % 2 else 0.0))
    rows = [tf.IndexedSlices(tf.ones((1, 2)), tf.constant([1]), tf.constant([3, 2]))
            ] + [None] * (len(variables) - 1)
    state.update_fisher(rows, grouped=True)  # row slices: the per-weight path
    np.testing.assert_allclose(state.fisher[0].numpy(), [[0, 0], [0.5, 0.5], [0, 0]])
    assert int(state.num_fisher_updates.numpy()) == 2
    normalized = WPLState(variables, fisher_normalization="mean")
    normalized.update_fisher([tf.fill((3, 2), 2.0)] * len(variables), grouped=True)
    np.testing.assert_allclose(normalized.fisher[0].numpy(), np.ones((3, 2)))


@pytest.mark.slow
def test_a_traced_grouped_step_has_fewer_ops_per_weight(monkeypatch):
    """The laid-flat step's graph grows by a few ops per covered weight (reads, a reshape
    in, a slice out, the write), about half of what the per-weight formulas add (here 37
    against 75 per weight, the test's optimiser step included)."""
    def ops(n):
        variables = [tf.Variable(tf.ones((4, 3))) for _ in range(n)]
        state = WPLState(variables, strength=1.0, clip_norm=1.0)
        step = WPLStep(state, WPLConfig(mode="proximal"))
        covered = [Covered(position=k, index=k, mask=tf.ones((4, 1)), clip_axes=[1])
                   for k in range(n)]

        def apply(gs):
            for v, g in zip(variables, gs):
                v.assign_sub(g)

        fn = tf.function(lambda: step([tf.convert_to_tensor(v) for v in variables],
                                      [tf.ones((4, 3))] * n, apply, covered=covered,
                                      learning_rate=0.1, active=tf.constant(True)).penalty)
        graph = fn.get_concrete_function().graph.as_graph_def()
        return len(graph.node) + sum(len(f.node_def) for f in graph.library.function)

    n = GROUPED_FROM
    flat = (ops(n + 2) - ops(n)) / 2
    monkeypatch.setattr(flat_module, "GROUPED_FROM", 10**6)
    each = (ops(n + 2) - ops(n)) / 2
    assert flat < 0.6 * each, (flat, each)
