"""Tests for WPLState: anchors, Fisher momentum, clipping, rows, flush, several models."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from wpl_keras.wpl.core import fisher_update
from wpl_keras.wpl.fisher import WPLState


def _vars(shapes):
    return [keras.Variable(np.full(s, 1.0, np.float32)) for s in shapes]


def test_state_creates_anchor_equal_to_weights_and_zero_fisher():
    v = _vars([(2, 3), (3,)])
    state = WPLState(v, strength=5.0)
    for var, anchor, f in zip(v, state.anchors, state.fisher):
        np.testing.assert_array_equal(anchor.numpy(), var.numpy())
        assert float(tf.reduce_sum(f)) == 0.0
    assert float(state.strength.numpy()) == 5.0
    assert not any(w.trainable for w in state.weights)


def test_fisher_momentum_update_matches_formula():
    v = _vars([(2,)])
    state = WPLState(v, fisher_momentum=0.9)
    state.fisher[0].assign([1.0, 2.0])
    g = tf.constant([3.0, -1.0])
    state.update_fisher([g])
    want = 0.1 * np.array([1.0, 2.0]) + 0.9 * np.array([9.0, 1.0])
    np.testing.assert_allclose(state.fisher[0].numpy(), want, rtol=1e-6)
    np.testing.assert_allclose(fisher_update(tf.constant([1.0]), tf.constant([2.0]), 0.5), [2.5])
    assert int(state.num_fisher_updates.numpy()) == 1


def test_fisher_clip_by_norm():
    v = _vars([(4,)])
    state = WPLState(v, fisher_momentum=1.0, clip_norm=1.0)
    state.update_fisher([tf.constant([10.0, 0.0, 0.0, 0.0])])
    np.testing.assert_allclose(np.linalg.norm(state.fisher[0].numpy()), 1.0, rtol=1e-6)


def test_indexed_slices_update_touches_only_rows_and_sums_duplicates():
    v = _vars([(4, 2)])
    state = WPLState(v, fisher_momentum=1.0)
    g = tf.IndexedSlices(
        values=tf.constant([[1.0, 1.0], [2.0, 0.0], [1.0, 1.0]]),
        indices=tf.constant([1, 3, 1]),
        dense_shape=tf.constant([4, 2]),
    )
    state.update_fisher([g])
    f = state.fisher[0].numpy()
    np.testing.assert_allclose(f[0], [0, 0])
    np.testing.assert_allclose(f[2], [0, 0])
    np.testing.assert_allclose(f[1], [4.0, 4.0])  # (1 + 1)² after summing duplicate rows
    np.testing.assert_allclose(f[3], [4.0, 0.0])


def test_snapshot_rows_and_penalty_of_rows():
    v = _vars([(3, 2)])
    state = WPLState(v, strength=2.0)
    state.fisher[0].assign(tf.ones((3, 2)))
    v[0].assign(tf.constant([[2.0, 2.0], [3.0, 3.0], [4.0, 4.0]]))
    # Penalty of row 1 only: (2/2) * 2 * (3 − 1)² = 8
    assert float(state.penalty(index=0, rows=tf.constant([1]))) == pytest.approx(8.0)
    state.snapshot_anchors(rows={0: tf.constant([1])})
    np.testing.assert_allclose(state.anchors[0].numpy()[1], [3.0, 3.0])
    np.testing.assert_allclose(state.anchors[0].numpy()[0], [1.0, 1.0])
    state.snapshot_anchors()
    assert float(state.penalty()) == 0.0


def test_whole_weight_snapshot_and_penalty_of_one_weight():
    v = _vars([(3, 2), (2,)])
    state = WPLState(v, strength=2.0)
    state.fisher[1].assign([1.0, 3.0])
    v[1].assign([2.0, 0.0])
    penalty = state.penalty(index=1)
    # penalty = (α/2) Σ F (θ − θ*)² = (2/2)(1·1 + 3·1) = 4
    assert float(penalty) == pytest.approx(4.0)
    assert float(state.penalty(index=1, strength=4.0)) == pytest.approx(8.0)
    with pytest.raises(ValueError, match="rows needs index"):
        state.penalty(rows=tf.constant([0]))
    assert float(penalty) == pytest.approx(float(state.penalty()))
    v[0].assign(tf.fill((3, 2), 7.0))
    # rows={1: None}: the whole of weight 1, nothing of weight 0.
    state.snapshot_anchors(rows={1: None})
    np.testing.assert_allclose(state.anchors[1].numpy(), [2.0, 0.0])
    np.testing.assert_allclose(state.anchors[0].numpy(), np.ones((3, 2)))


def test_apply_proximal_whole_weight_and_rows():
    v = _vars([(3, 2)])
    state = WPLState(v, strength=4.0)  # anchors = ones
    state.fisher[0].assign([[1.0, 0.0], [2.0, 2.0], [0.5, 0.5]])
    v[0].assign(tf.fill((3, 2), 3.0))
    # rows only: (θ + η α F θ*) / (1 + η α F) with η = 0.5, α = 4 → k = 2 F.
    # The penalty of row 1 before the pull: (4/2) * 2 * 2 * (3 − 1)² = 32.
    assert float(state.penalty(index=0, rows=tf.constant([1]))) == pytest.approx(32.0)
    state.apply_proximal(0, 0.5, rows=tf.constant([1]))
    np.testing.assert_allclose(v[0].numpy()[1], [(3 + 4) / 5] * 2, rtol=1e-6)
    np.testing.assert_allclose(v[0].numpy()[[0, 2]], np.full((2, 2), 3.0))
    state.apply_proximal(0, 0.5)
    np.testing.assert_allclose(v[0].numpy()[0], [(3 + 2) / 3, 3.0], rtol=1e-6)
    # Never past the anchor, however large α: a huge α lands on θ* where F > 0.
    state.apply_proximal(0, 0.5, strength=1e12)
    np.testing.assert_allclose(v[0].numpy()[2], [1.0, 1.0], rtol=1e-5)
    assert v[0].numpy()[0, 1] == 3.0


def test_reset_and_add_model_equals_sum_of_penalties():
    v = _vars([(3,)])
    state = WPLState(v, strength=1.0)
    f1 = tf.constant([1.0, 2.0, 0.0])
    state.assign_fisher([f1])
    anchor1 = v[0].numpy().copy()
    v[0].assign([3.0, -1.0, 2.0])
    anchor2 = v[0].numpy().copy()
    f2 = tf.constant([0.5, 0.0, 0.0])
    state.add_model([f2])
    theta_a, theta_b = np.array([0.0, 1.0, 5.0]), np.array([2.0, -3.0, 1.0])

    def summed(theta):
        return 0.5 * (np.sum(f1.numpy() * (theta - anchor1) ** 2) + np.sum(f2.numpy() * (theta - anchor2) ** 2))

    def merged(theta):
        v[0].assign(theta)
        return float(state.penalty())

    # Equal up to a constant: the differences agree.
    np.testing.assert_allclose(merged(theta_a) - merged(theta_b), summed(theta_a) - summed(theta_b), rtol=1e-5)
    state.reset_fisher()
    assert float(state.fisher_norm()) == 0.0


def test_bad_inputs_raise_clear_errors():
    with pytest.raises(ValueError, match="at least one variable"):
        WPLState([])
    v = _vars([(2,)])
    state = WPLState(v)
    with pytest.raises(ValueError, match="shape"):
        state.assign_fisher([tf.zeros((3,))])
    with pytest.raises(ValueError, match="NaN or Inf"):
        state.assign_fisher([tf.constant([np.nan, 1.0])])
    with pytest.raises(ValueError, match="2 gradients for 1"):
        state.update_fisher([tf.zeros(2), tf.zeros(2)])
    other = keras.Variable(np.zeros((2,), np.float32))
    with pytest.raises(KeyError, match="has no WPL anchor"):
        state.index_of(other)


def test_state_round_trips_through_tf_checkpoint(tmp_path):
    v = _vars([(2,)])
    state = WPLState(v, strength=3.0)
    state.update_fisher([tf.constant([1.0, 2.0])])
    path = tf.train.Checkpoint(state=state).save(str(tmp_path / "ckpt"))
    v2 = _vars([(2,)])
    restored = WPLState(v2, strength=0.0)
    tf.train.Checkpoint(state=restored).restore(path).assert_consumed()
    np.testing.assert_allclose(restored.fisher[0].numpy(), state.fisher[0].numpy())
    assert float(restored.strength.numpy()) == 3.0



def test_read_rows_reads_tf_and_keras_variables_row_wise():
    from wpl_keras.wpl.fisher import read_rows

    values = np.arange(24, dtype=np.float32).reshape(4, 3, 2)
    rows = tf.constant([3, 1])
    tf_var = tf.Variable(values)
    keras_var = keras.Variable(values)
    for var in (tf_var, keras_var):
        np.testing.assert_array_equal(read_rows(var, rows), values[[3, 1]])
    with tf.GradientTape() as tape:
        out = tf.reduce_sum(read_rows(tf_var, rows))
    g = tape.gradient(out, tf_var)
    assert isinstance(g, tf.IndexedSlices)
    np.testing.assert_array_equal(np.sort(g.indices), [1, 3])


def test_update_fisher_with_masks_flags_and_slice_clip():
    v = [keras.Variable(np.ones((2, 2), np.float32))]
    state = WPLState(v, fisher_momentum=0.5)
    state.fisher[0].assign(np.ones((2, 2), np.float32))
    g = tf.fill([2, 2], 3.0)
    state.update_fisher([g], masks=[tf.constant([[1.0], [0.0]])])
    np.testing.assert_allclose(state.fisher[0].numpy(), [[5.0, 5.0], [1.0, 1.0]])
    state.update_fisher([g], update=tf.constant(0.0))  # gated off in the graph
    np.testing.assert_allclose(state.fisher[0].numpy(), [[5.0, 5.0], [1.0, 1.0]])
    assert int(state.num_fisher_updates.numpy()) == 1
    state.update_fisher([g], update=False)
    assert int(state.num_fisher_updates.numpy()) == 1
    clipped = WPLState(v, fisher_momentum=1.0, clip_norm=1.0)
    clipped.update_fisher([tf.constant([[3.0, 4.0], [0.3, 0.4]]) ** 0.5], clip_axes=[[1]])
    np.testing.assert_allclose(clipped.fisher[0].numpy(), [[0.6, 0.8], [0.3, 0.4]], rtol=1e-5)


def test_fisher_momentum_name_and_alias():
    v = _vars([(2,)])
    assert WPLState(v, fisher_momentum=0.25).fisher_momentum == 0.25
    old = WPLState(v, momentum=0.5)
    assert old.fisher_momentum == 0.5 and old.momentum == 0.5
    with pytest.raises(ValueError, match="not both"):
        WPLState(v, fisher_momentum=0.5, momentum=0.5)
    with pytest.raises(ValueError, match=r"fisher_momentum \(η_F\) must be a finite number in \(0, 1\]"):
        WPLState(v, fisher_momentum=0.0)


def test_masked_snapshot_and_masked_proximal_rows():
    v = [keras.Variable(np.array([[1.0, 1.0], [2.0, 2.0], [3.0, 3.0]], np.float32))]
    state = WPLState(v, strength=2.0)
    v[0].assign(v[0] + 1.0)
    state.snapshot_anchors(masks=[tf.constant([[1.0], [0.0], [1.0]])])
    np.testing.assert_allclose(state.anchors[0].numpy(), [[2, 2], [2, 2], [4, 4]])
    state.fisher[0].assign(np.ones((3, 2), np.float32))
    # rows 0 and 1 only; of those, the mask keeps row 1 free
    state.apply_proximal(0, 0.5, rows=tf.constant([0, 1]), mask=tf.constant([[0.0], [1.0]]))
    # row 1: θ = 3, θ* = 2, η α F = 1 → (3 + 2) / 2 = 2.5
    np.testing.assert_allclose(v[0].numpy(), [[2, 2], [2.5, 2.5], [4, 4]])


# ----------------------------------------------------------------- Fisher normalisation
def test_normalization_choices_and_errors():
    v = _vars([(2, 3)])
    assert WPLState(v).fisher_normalization == "none"
    assert WPLState(v).fisher_raw == [] and len(WPLState(v).weights) == 4
    state = WPLState(v, clip_norm=10.0, fisher_normalization="tensor_norm")
    assert state.normalized and len(state.fisher_raw) == 1 and len(state.weights) == 5
    assert not any(w.trainable for w in state.weights)
    with pytest.raises(ValueError, match="pass clip_norm"):
        WPLState(v, fisher_normalization="tensor_norm")
    with pytest.raises(ValueError, match="fisher_normalization must be one of"):
        WPLState(v, clip_norm=1.0, fisher_normalization="norm")
    assert WPLState(v, fisher_normalization="mean").normalized


def test_tensor_norm_update_keeps_raw_ema_and_writes_normalised_fisher():
    v = _vars([(2, 2), (3,)])
    state = WPLState(v, fisher_momentum=0.5, clip_norm=2.0, fisher_normalization="tensor_norm")
    g = [tf.constant([[3.0, 0.0], [0.0, 4.0]]), tf.constant([1e-3, 0.0, 0.0])]
    state.update_fisher(g)
    state.update_fisher(g)
    # R = (1 − ¼) g² after two updates from 0; F = 2 R / ‖R‖
    raw0 = 0.75 * np.array([[9.0, 0.0], [0.0, 16.0]])
    np.testing.assert_allclose(state.fisher_raw[0].numpy(), raw0, rtol=1e-6)
    np.testing.assert_allclose(state.fisher[0].numpy(), 2.0 * raw0 / np.linalg.norm(raw0),
                               rtol=1e-6)
    np.testing.assert_allclose(state.fisher[1].numpy(), [2.0, 0.0, 0.0], rtol=1e-6)
    assert float(state.fisher_norm()) == pytest.approx(np.sqrt(8.0), rel=1e-6)
    assert int(state.num_fisher_updates.numpy()) == 2
    # a per-call clip_norm is the target norm of that update
    state.update_fisher([None, g[1]], clip_norm=5.0)
    np.testing.assert_allclose(state.fisher[1].numpy(), [5.0, 0.0, 0.0], rtol=1e-6)
    np.testing.assert_allclose(state.fisher[0].numpy(), 2.0 * raw0 / np.linalg.norm(raw0),
                               rtol=1e-6)  # None gradient: unchanged


def test_normalised_state_flush_checkpoint_assign_and_add_model(tmp_path):
    v = _vars([(2, 2)])
    state = WPLState(v, strength=3.0, fisher_momentum=1.0, clip_norm=1.0,
                     fisher_normalization="tensor_norm")
    state.update_fisher([tf.constant([[1.0, 2.0], [2.0, 4.0]])])
    path = tf.train.Checkpoint(state=state).save(str(tmp_path / "ckpt"))
    restored = WPLState(_vars([(2, 2)]), clip_norm=1.0, fisher_normalization="tensor_norm")
    tf.train.Checkpoint(state=restored).restore(path).assert_consumed()
    np.testing.assert_allclose(restored.fisher_raw[0].numpy(), [[1, 4], [4, 16]])
    np.testing.assert_allclose(restored.fisher[0].numpy(), state.fisher[0].numpy())
    state.reset_fisher()
    assert float(state.fisher_norm()) == 0.0
    assert float(tf.reduce_sum(state.fisher_raw[0])) == 0.0
    state.assign_fisher([tf.constant([[3.0, 4.0], [0.0, 0.0]])], clip_axes=[[1]])
    np.testing.assert_allclose(state.fisher_raw[0].numpy(), [[3, 4], [0, 0]])
    np.testing.assert_allclose(state.fisher[0].numpy(), [[0.6, 0.8], [0.0, 0.0]], rtol=1e-6)
    v[0].assign(np.full((2, 2), 3.0, np.float32))  # anchors are 1
    state.add_model([tf.constant([[3.0, 4.0], [2.0, 0.0]])])
    # anchors merged with the raw weights: (R θ* + F_new θ) / (R + F_new)
    np.testing.assert_allclose(state.anchors[0].numpy(), [[2.0, 2.0], [3.0, 1.0]])
    raw = np.array([[6.0, 8.0], [2.0, 0.0]])
    np.testing.assert_allclose(state.fisher_raw[0].numpy(), raw)
    np.testing.assert_allclose(state.fisher[0].numpy(), raw / np.linalg.norm(raw), rtol=1e-6)


def test_mean_normalisation_gives_unit_mean_per_slice_inside_tf_function():
    v = [keras.Variable(np.zeros((2, 3, 4), np.float32))]
    state = WPLState(v, fisher_normalization="mean")
    rng = np.random.default_rng(0)
    g = tf.constant(rng.normal(scale=1e-3, size=(2, 3, 4)), tf.float32)

    @tf.function
    def step(flag):
        state.update_fisher([g], clip_axes=[[1, 2]], update=flag)

    step(tf.constant(0.0))
    assert float(state.fisher_norm()) == 0.0
    step(tf.constant(1.0))
    np.testing.assert_allclose(state.fisher[0].numpy().mean(axis=(1, 2)), [1.0, 1.0], rtol=1e-5)
    np.testing.assert_allclose(state.fisher_raw[0].numpy(), 0.9 * g.numpy() ** 2, rtol=1e-5)


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(strength=np.float32(-1)), ValueError, r"strength \(α\) must be a number >= 0"),
    (dict(strength=np.float32("nan")), ValueError, r"strength \(α\) .* got NaN"),
    (dict(strength="strong"), TypeError, r"strength \(α\) .* got 'strong'"),
    (dict(strength=None), TypeError, r"strength \(α\)"),
    (dict(fisher_momentum=np.float64(1.5)), ValueError, "fisher_momentum"),
    (dict(momentum="0.9"), TypeError, "fisher_momentum"),
    (dict(clip_norm=tf.constant(-1.0)), ValueError, "clip_norm"),
    (dict(clip_norm=float("inf")), ValueError, "clip_norm"),
    (dict(clip_norm=True), TypeError, "clip_norm"),
])
def test_state_refuses_bad_numbers_naming_the_argument(kwargs, error, match):
    with pytest.raises(error, match=f"WPLState: {match}"):
        WPLState(_vars([(2,)]), **kwargs)


def test_state_takes_numpy_and_tensor_scalars():
    v = _vars([(2,)])
    state = WPLState(v, strength=tf.constant(2.0), fisher_momentum=np.float32(0.5),
                     clip_norm=keras.ops.convert_to_tensor(3.0))
    assert float(state.strength.numpy()) == 2.0
    assert (state.fisher_momentum, state.clip_norm) == (0.5, 3.0)
    assert float(WPLState(v, strength=float("inf")).strength.numpy()) == float("inf")
    with pytest.raises(ValueError, match="update_fisher: fisher_momentum"):
        state.update_fisher([tf.ones(2)], fisher_momentum=np.float32(0.0))
    with pytest.raises(TypeError, match="update_fisher: clip_norm"):
        state.update_fisher([tf.ones(2)], clip_norm="10")
    state.update_fisher([tf.ones(2)], fisher_momentum=np.float32(1.0))
    np.testing.assert_allclose(state.fisher[0].numpy(), [1.0, 1.0])
