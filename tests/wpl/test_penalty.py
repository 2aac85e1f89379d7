"""Tests for the pure WPL penalty, the stability bound, the proximal step and the regularizer."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from wpl_keras.wpl.core import proximal_pull, wpl_penalty
from wpl_keras.wpl.fisher import WPLState
from wpl_keras.wpl.penalty import WeightPlasticity, max_stable_strength


def numpy_wpl_penalty(params, fisher, anchors, strength, l2=0.0) -> float:
    """float64 NumPy reference: (α/2) Σ F (θ − θ*)² + (λ/2) Σ θ²."""
    total = 0.0
    for theta, f, anchor in zip(params, fisher, anchors):
        theta = np.asarray(theta, np.float64)
        total += 0.5 * strength * float(np.sum(np.asarray(f, np.float64) * (theta - anchor) ** 2))
        total += 0.5 * l2 * float(np.sum(theta**2))
    return total


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
    got = wpl_penalty([tf.constant([1.0])], [tf.constant([3.0])], [tf.constant([0.5])], 2.0,
                      l2=0.1)
    assert float(got) == pytest.approx(0.8)


def test_penalty_zero_at_anchor_and_grows_away():
    theta = tf.constant([[1.0, -2.0]])
    f = tf.constant([[1.0, 1.0]])
    assert float(wpl_penalty([theta], [f], [theta], 100.0)) == 0.0
    assert float(wpl_penalty([theta + 1], [f], [theta], 100.0)) > 0.0


def test_penalty_rejects_mismatched_lists_and_shapes():
    with pytest.raises(ValueError, match="one Fisher tensor, anchor and mask"):
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


def test_penalty_with_gradients_closed_form_matches_tape():
    rng = np.random.default_rng(4)
    theta = tf.constant(rng.normal(size=(5, 3)), tf.float32)
    fisher = tf.constant(rng.uniform(size=(5, 3)), tf.float32)
    anchor = tf.constant(rng.normal(size=(5, 3)), tf.float32)
    with tf.GradientTape() as tape:
        tape.watch(theta)
        reference = wpl_penalty([theta], [fisher], [anchor], 7.0)
    penalty, (grad,) = wpl_penalty([theta], [fisher], [anchor], 7.0, with_gradients=True)
    np.testing.assert_allclose(penalty, reference, rtol=1e-6)
    np.testing.assert_allclose(grad, tape.gradient(reference, theta), rtol=1e-6)
    # a mask c: the penalty and the gradient of the masked-out entries are 0
    mask = tf.constant([[1.0], [0.0], [1.0], [0.0], [1.0]])
    masked, (masked_grad,) = wpl_penalty([theta], [fisher], [anchor], 7.0, masks=[mask],
                                         with_gradients=True)
    np.testing.assert_allclose(masked_grad, grad * mask, rtol=1e-6)
    want = 3.5 * float(tf.reduce_sum(mask * fisher * (theta - anchor) ** 2))
    assert float(masked) == pytest.approx(want, rel=1e-6)


# ------------------------------------------------------------------ proximal_pull edge cases
# θ̃ = 3 (both entries), θ* = 1, F = (2, 0): k = η α F, θ = (θ̃ + k θ*) / (1 + k).


@pytest.mark.parametrize("dtype", [tf.float16, tf.bfloat16, tf.float32, tf.float64])
def test_proximal_pull_infinite_strength_holds_anchor_where_fisher_positive(dtype):
    theta = tf.constant([3.0, 3.0, -7.5], dtype)
    anchor = tf.constant([1.0, 1.0, 0.25], dtype)
    fisher = tf.constant([2.0, 0.0, 1e-30], tf.float32)
    pulled = proximal_pull(theta, fisher, anchor, strength=float("inf"), learning_rate=0.1)
    assert pulled.dtype == dtype
    # F > 0 (even tiny): held at θ*; F = 0: left free (θ̃ exactly, no 0 · ∞ = NaN).
    np.testing.assert_array_equal(pulled.numpy().astype(np.float64), [1.0, 3.0, 0.25])


@pytest.mark.parametrize(
    "strength, learning_rate", [(float("inf"), 0.0), (0.0, 0.5), (float("inf"), 1e300)]
)
def test_proximal_pull_zero_products_and_huge_values(strength, learning_rate):
    theta = tf.constant([1e-8, 2.0], tf.float64)
    anchor = tf.constant([1.0, -4.0], tf.float64)
    fisher = tf.constant([0.5, 0.0], tf.float64)
    pulled = proximal_pull(theta, fisher, anchor, strength, learning_rate).numpy()
    # η = 0 or α = 0: no pull at all (θ̃ bit for bit); otherwise F > 0 entries go to θ*.
    first = 1e-8 if strength * learning_rate == 0 or learning_rate == 0 else 1.0
    np.testing.assert_array_equal(pulled, [first, 2.0])


def test_proximal_pull_float16_does_not_overflow():
    # η α = 0.01 · 1e8 = 1e6 overflows float16 (max 65504); the step must not.
    theta = tf.constant([2.0, 2.0, -3.0, 5.0], tf.float16)
    anchor = tf.constant([1.0, 1.0, 1.0, 5.0], tf.float16)
    fisher = tf.constant([1.0, 2.0**-20, 0.0, 1.0], tf.float16)
    pulled = proximal_pull(theta, fisher, anchor, strength=1e8, learning_rate=0.01)
    assert pulled.dtype == tf.float16
    k = 0.01 * 1e8 * np.array([1.0, 2.0**-20, 0.0, 1.0])
    # k = (1e6, 0.95367…, 0, 1e6): (2 + 1e6)/(1 + 1e6) = 1.000001 → 1.0 in float16;
    # (2 + 0.95367)/(1.95367) = 1.51186…; F = 0 keeps −3; θ̃ = θ* = 5 stays 5.
    want = (np.array([2.0, 2.0, -3.0, 5.0]) + k * np.array([1.0, 1.0, 1.0, 5.0])) / (1 + k)
    np.testing.assert_allclose(pulled.numpy().astype(np.float64), want, rtol=1e-3)
    assert np.all(np.isfinite(pulled.numpy()))


def test_proximal_pull_bfloat16_past_float32_range_goes_to_anchor():
    # k = 1 · 1e30 · 1e10 = 1e40 > float32 max: the pull saturates at θ*, never NaN.
    theta = tf.constant([3.0e38, -2.0], tf.bfloat16)
    anchor = tf.constant([-3.0e38, 0.5], tf.bfloat16)
    pulled = proximal_pull(theta, tf.constant([1e10, 1e10]), anchor, 1e30, 1.0)
    assert pulled.dtype == tf.bfloat16
    np.testing.assert_array_equal(pulled.numpy().astype(np.float64),
                                  anchor.numpy().astype(np.float64))


def test_proximal_pull_float64_keeps_strength_and_rate_in_float64():
    # α = 1/3, η = 0.1, F = 1: k = 1/30 and θ = 1/(1 + 1/30) = 30/31 to float64 precision;
    # α or η rounded through float32 would be off by ~1e-9.
    theta = tf.constant([1.0, 0.0], tf.float64)
    anchor = tf.constant([0.0, 1.0], tf.float64)
    fisher = tf.constant([1.0, 3.0], tf.float64)
    cases = ((1.0 / 3.0, 0.1), (np.float64(1.0 / 3.0), np.float64(0.1)),
             (tf.constant(1.0 / 3.0, tf.float64), tf.Variable(0.1, dtype=tf.float64)))
    for strength, rate in cases:
        pulled = proximal_pull(theta, fisher, anchor, strength, rate)
        assert pulled.dtype == tf.float64
        # second entry: k = 0.1, θ = (0 + 0.1 · 1) / 1.1 = 1/11
        np.testing.assert_allclose(pulled.numpy(), [30.0 / 31.0, 1.0 / 11.0], rtol=1e-15)


def test_proximal_pull_matches_convex_combination_formula(seed):
    rng = np.random.default_rng(seed)
    theta, anchor = rng.normal(size=(2, 4, 3))
    fisher = rng.uniform(size=(4, 3))
    for strength in (1e-3, 1.0, 1e3, 1e12):
        k = 0.05 * strength * fisher
        want = (theta + k * anchor) / (1.0 + k)
        got = proximal_pull(tf.constant(theta), tf.constant(fisher), tf.constant(anchor),
                            strength, 0.05)
        np.testing.assert_allclose(got.numpy(), want, rtol=1e-12, atol=1e-15)
        between = (got.numpy() - theta) * (got.numpy() - anchor)
        assert np.all(between <= 1e-12)  # never outside [θ̃, θ*]


def test_proximal_pull_infinite_strength_variable_and_inside_tf_function():
    strength = tf.Variable(float("inf"))  # WPLState keeps α as a float32 variable
    pull = tf.function(lambda t, f, a: proximal_pull(t, f, a, strength, 0.01))
    got = pull(tf.constant([4.0, 4.0]), tf.constant([1.0, 0.0]), tf.constant([-1.0, -1.0]))
    np.testing.assert_array_equal(got.numpy(), [-1.0, 4.0])
    strength.assign(0.0)
    got = pull(tf.constant([4.0, 4.0]), tf.constant([1.0, 0.0]), tf.constant([-1.0, -1.0]))
    np.testing.assert_array_equal(got.numpy(), [4.0, 4.0])


@pytest.mark.parametrize("bad", [-1.0, float("nan"), -float("inf")])
def test_proximal_pull_rejects_negative_or_nan_numbers(bad):
    x = tf.constant([1.0])
    with pytest.raises(ValueError, match=r"strength must be a number >= 0 \(inf allowed\)"):
        proximal_pull(x, x, x, bad, 0.1)
    with pytest.raises(ValueError, match=r"learning_rate must be a number >= 0 \(inf allowed"):
        proximal_pull(x, x, x, 1.0, bad)
    with pytest.raises(ValueError, match="proximal_pull: strength"):
        proximal_pull(x, x, x, np.float32(bad), 0.1)
    with pytest.raises(TypeError, match="proximal_pull: strength"):
        proximal_pull(x, x, x, np.array([1.0, 2.0]), 0.1)


def test_proximal_pull_nan_fisher_is_not_hidden():
    got = proximal_pull(tf.constant([1.0, 1.0]), tf.constant([float("nan"), 1.0]),
                        tf.constant([0.0, 0.0]), 1.0, 1.0).numpy()
    assert np.isnan(got[0]) and got[1] == pytest.approx(0.5)


def test_infinite_strength_gives_zero_not_nan_at_the_anchors():
    theta = tf.constant([1.0, 2.0, 3.0])
    anchor = tf.constant([1.0, 2.0, 5.0])
    fisher = tf.constant([0.0, 4.0, 0.0])
    # every entry has F = 0 or θ = θ*: the Fisher term is 0 for any α, also α = ∞
    assert float(wpl_penalty([theta], [fisher], [anchor], float("inf"))) == 0.0
    penalty, (grad,) = wpl_penalty([theta], [fisher], [anchor], float("inf"),
                                   with_gradients=True)
    assert float(penalty) == 0.0
    np.testing.assert_array_equal(grad.numpy(), [0.0, 0.0, 0.0])
    # away from the anchor with F > 0 the formula says ∞, and so does the function
    far = tf.constant([1.0, 3.0, 3.0])
    assert float(wpl_penalty([far], [fisher], [anchor], float("inf"))) == float("inf")


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(learning_rate=float("nan"), max_fisher=1.0), "learning_rate"),
        (dict(learning_rate=0.1, max_fisher=float("nan")), "max_fisher"),
        (dict(learning_rate=0.1, max_fisher=float("inf")), "max_fisher"),
        (dict(learning_rate=0.1, max_fisher=-1.0), "max_fisher"),
        (dict(learning_rate=0.1, max_fisher=1.0, momentum=-0.5), "momentum"),
        (dict(learning_rate=0.1, max_fisher=1.0, momentum=1.0), "momentum"),
        (dict(learning_rate=np.float32(-0.1), max_fisher=1.0), "learning_rate"),
        (dict(learning_rate=0.1, max_fisher=tf.constant(float("nan"))), "max_fisher"),
    ],
)
def test_max_stable_strength_refuses_meaningless_inputs(kwargs, match):
    with pytest.raises(ValueError, match=f"max_stable_strength: {match} must be"):
        max_stable_strength(**kwargs)


@pytest.mark.parametrize("kwargs, match", [
    (dict(learning_rate="fast", max_fisher=1.0), "learning_rate"),
    (dict(learning_rate=0.1, max_fisher=None), "max_fisher"),
    (dict(learning_rate=0.1, max_fisher=1.0, momentum=True), "momentum"),
])
def test_max_stable_strength_refuses_non_numbers_with_a_type_error(kwargs, match):
    with pytest.raises(TypeError, match=f"max_stable_strength: {match} must be"):
        max_stable_strength(**kwargs)


def test_max_stable_strength_takes_scalar_tensors():
    got = max_stable_strength(tf.constant(0.1), tf.constant(2.0), momentum=tf.constant(0.5))
    assert got == pytest.approx(2.0 * 1.5 / (0.1 * 2.0))


@pytest.mark.parametrize("l2, error", [
    (-0.1, ValueError), (np.float32(-1), ValueError), (float("nan"), ValueError),
    (float("inf"), ValueError), ("0.1", TypeError), (None, TypeError), (False, TypeError),
])
def test_weight_plasticity_l2_is_checked(l2, error):
    with pytest.raises(error, match=r"WeightPlasticity: l2 \(λ\) must be a finite number >= 0"):
        WeightPlasticity(l2=l2)
    regularizer = WeightPlasticity(l2=tf.constant(0.5))
    assert regularizer.get_config() == {"l2": 0.5}
