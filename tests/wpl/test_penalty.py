"""Tests for the pure WPL penalty, the stability bound, the proximal step and the regularizer."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from wpl_keras.wpl import (
    WeightPlasticity,
    WPLState,
    max_stable_strength,
    numpy_wpl_penalty,
    proximal_pull,
    wpl_penalty,
)


def test_penalty_matches_numpy_reference(seed):
    rng = np.random.default_rng(seed)
    params = [rng.normal(size=(3, 4)), rng.normal(size=(5,))]
    fisher = [rng.uniform(size=(3, 4)), rng.uniform(size=(5,))]
    anchors = [rng.normal(size=(3, 4)), rng.normal(size=(5,))]
    got = wpl_penalty(
        [tf.constant(p, tf.float32) for p in params],
        [tf.constant(f, tf.float32) for f in fisher],
        [tf.constant(a, tf.float32) for a in anchors],
        strength=7.5,
        l2=0.3,
    )
    want = numpy_wpl_penalty(params, fisher, anchors, 7.5, 0.3)
    np.testing.assert_allclose(float(got), want, rtol=1e-5)


def test_penalty_hand_computed_value():
    # (α/2) F (θ − θ*)² = (2/2) * 3 * (1 − 0.5)² = 0.75; (λ/2) θ² = 0.5 * 0.1 * 1 = 0.05
    got = wpl_penalty([tf.constant([1.0])], [tf.constant([3.0])], [tf.constant([0.5])], 2.0, 0.1)
    assert float(got) == pytest.approx(0.8)


def test_penalty_zero_at_anchor_and_grows_away():
    theta = tf.constant([[1.0, -2.0]])
    f = tf.constant([[1.0, 1.0]])
    assert float(wpl_penalty([theta], [f], [theta], 100.0)) == 0.0
    assert float(wpl_penalty([theta + 1], [f], [theta], 100.0)) > 0.0


def test_penalty_rejects_mismatched_lists_and_shapes():
    with pytest.raises(ValueError, match="one Fisher and one anchor"):
        wpl_penalty([tf.zeros(2)], [], [tf.zeros(2)], 1.0)
    with pytest.raises(ValueError, match="shape mismatch at entry 0"):
        wpl_penalty([tf.zeros(2)], [tf.zeros(3)], [tf.zeros(2)], 1.0)


def test_max_stable_strength_formula_and_divergence_boundary():
    bound = max_stable_strength(0.1, 4.0, momentum=0.0)
    assert bound == pytest.approx(2.0 / (0.1 * 4.0))
    # Gradient descent on (α F / 2) x² with α just below / above the bound.
    for alpha, should_converge in ((0.95 * bound, True), (1.05 * bound, False)):
        x = 1.0
        for _ in range(200):
            x -= 0.1 * alpha * 4.0 * x
        assert (abs(x) < 1.0) == should_converge
    assert max_stable_strength(0.1, 0.0) == float("inf")
    with pytest.raises(ValueError):
        max_stable_strength(0.0, 1.0)


def test_proximal_pull_is_convex_combination_for_any_strength():
    theta = tf.constant([2.0, -1.0])
    anchor = tf.constant([0.0, 1.0])
    f = tf.constant([1.0, 0.0])
    pulled = proximal_pull(theta, f, anchor, strength=1e9, learning_rate=0.1).numpy()
    np.testing.assert_allclose(pulled, [0.0, -1.0], atol=1e-6)  # F=0 leaves θ alone
    mid = proximal_pull(theta, f, anchor, strength=10.0, learning_rate=0.1).numpy()
    np.testing.assert_allclose(mid[0], (2.0 + 1.0 * 0.0) / 2.0)


def test_regularizer_config_round_trip_and_value(seed):
    reg = WeightPlasticity(l2=0.25)
    config = reg.get_config()
    assert config == {"l2": 0.25}
    clone = WeightPlasticity.from_config(config)
    assert clone.l2 == 0.25 and not clone.is_bound
    serialized = keras.saving.serialize_keras_object(reg)
    restored = keras.saving.deserialize_keras_object(serialized)
    assert isinstance(restored, WeightPlasticity) and restored.l2 == 0.25
    # Unbound: only L2.
    x = tf.constant([1.0, 2.0])
    assert float(clone(x)) == pytest.approx(0.5 * 0.25 * 5.0)
    # Bound: Fisher term against the state's anchor.
    layer = keras.layers.Dense(2)
    layer.build((None, 3))
    state = WPLState([layer.kernel], strength=4.0)
    bound = WeightPlasticity(l2=0.0).bind(state, layer.kernel)
    state.fisher[0].assign(tf.ones((3, 2)))
    layer.kernel.assign(layer.kernel + 1.0)
    assert float(bound(layer.kernel)) == pytest.approx(0.5 * 4.0 * 6.0, rel=1e-5)


def test_penalty_and_gradient_closed_form_matches_tape():
    from wpl_keras.wpl import wpl_penalty_and_gradient

    rng = np.random.default_rng(4)
    theta = tf.constant(rng.normal(size=(5, 3)), tf.float32)
    fisher = tf.constant(rng.uniform(size=(5, 3)), tf.float32)
    anchor = tf.constant(rng.normal(size=(5, 3)), tf.float32)
    with tf.GradientTape() as tape:
        tape.watch(theta)
        reference = wpl_penalty([theta], [fisher], [anchor], 7.0)
    penalty, grad = wpl_penalty_and_gradient(theta, fisher, anchor, 7.0)
    np.testing.assert_allclose(penalty, reference, rtol=1e-6)
    np.testing.assert_allclose(grad, tape.gradient(reference, theta), rtol=1e-6)
