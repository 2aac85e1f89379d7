"""Hand-computed tests of the WPL functional core (wpl_keras.wpl.core)."""

import numpy as np
import pytest
import tensorflow as tf

import wpl_keras.wpl.core as core

THETA = tf.constant([1.0, 2.0, -1.0])
FISHER = tf.constant([0.5, 0.0, 2.0])
ANCHOR = tf.constant([0.0, 1.0, 1.0])


def test_penalty_and_gradient_by_hand():
    penalty, (grad,) = core.wpl_penalty([THETA], [FISHER], [ANCHOR], 3.0, with_gradients=True)
    # α F (θ − θ*) = 3 · [0.5·1, 0·1, 2·(−2)] = [1.5, 0, −12]
    np.testing.assert_allclose(grad, [1.5, 0.0, -12.0])
    # (α/2) Σ F (θ − θ*)² = 1.5 · (0.5 + 0 + 8) = 12.75
    assert float(penalty) == pytest.approx(12.75)
    penalty, (grad,) = core.wpl_penalty([THETA], [FISHER], [ANCHOR], 3.0,
                                        masks=[tf.constant([1.0, 1.0, 0.0])],
                                        with_gradients=True)
    np.testing.assert_allclose(grad, [1.5, 0.0, 0.0])
    assert float(penalty) == pytest.approx(0.75)
    # + (λ/2) Σ θ² = 0.05 · 6; the returned gradient is the Fisher term's only
    with_l2 = core.wpl_penalty([THETA], [FISHER], [ANCHOR], 3.0, l2=0.1)
    assert float(with_l2) == pytest.approx(12.75 + 0.3)
    assert float(core.wpl_penalty([], [], [], 3.0, l2=0.1)) == 0.0


def test_proximal_pull_by_hand_with_coverage():
    pulled = core.proximal_pull(THETA, FISHER, ANCHOR, 3.0, 0.1)
    k = 0.1 * 3.0 * np.array([0.5, 0.0, 2.0])
    want = (np.array([1.0, 2.0, -1.0]) + k * np.array([0.0, 1.0, 1.0])) / (1 + k)
    np.testing.assert_allclose(pulled, want, rtol=1e-6)
    covered = core.proximal_pull(THETA, FISHER, ANCHOR, 3.0, 0.1,
                                 coverage=tf.constant([1.0, 1.0, 0.0]))
    np.testing.assert_allclose(covered, [want[0], 2.0, -1.0], rtol=1e-6)


def test_mask_covers_slices_only():
    theta = tf.constant([[1.0, 1.0], [2.0, 2.0]])
    anchor = tf.zeros_like(theta)
    fisher = tf.ones_like(theta)
    mask = tf.constant([[1.0], [0.0]])  # row 0 used, row 1 not
    penalty, (grad,) = core.wpl_penalty([theta], [fisher], [anchor], 2.0, masks=[mask],
                                        with_gradients=True)
    np.testing.assert_allclose(grad, [[2.0, 2.0], [0.0, 0.0]])
    assert float(penalty) == pytest.approx(2.0)
    pulled = core.proximal_pull(theta, fisher, anchor, 2.0, 0.5, coverage=mask)
    np.testing.assert_allclose(pulled, [[0.5, 0.5], [2.0, 2.0]])
    new = core.fisher_update(fisher, tf.fill([2, 2], 3.0), 0.5, coverage=mask)
    np.testing.assert_allclose(new, [[5.0, 5.0], [1.0, 1.0]])  # 0.5·1 + 0.5·9
    np.testing.assert_allclose(core.snapshot(theta, anchor, mask), [[1.0, 1.0], [0.0, 0.0]])
    np.testing.assert_allclose(core.snapshot(theta, anchor), theta)


def test_fisher_update_formula_clip_and_flags():
    new = core.fisher_update(tf.constant([1.0, 2.0]), tf.constant([3.0, -1.0]), 0.9)
    np.testing.assert_allclose(new, [0.1 + 8.1, 0.2 + 0.9], rtol=1e-6)
    clipped = core.fisher_update(tf.zeros([4]), tf.constant([10.0, 0.0, 0.0, 0.0]), 1.0,
                                 clip_norm=1.0)
    assert float(tf.norm(clipped)) == pytest.approx(1.0)
    per_row = core.clip_fisher(tf.constant([[3.0, 4.0], [0.3, 0.4]]), 1.0, axes=[1])
    np.testing.assert_allclose(per_row, [[0.6, 0.8], [0.3, 0.4]], rtol=1e-6)
    f, g = tf.constant([1.0]), tf.constant([2.0])
    for off in (False, tf.constant(False), tf.constant(0.0)):
        np.testing.assert_allclose(core.fisher_update(f, g, 0.5, update=off), [1.0])
    for on in (True, tf.constant(True), tf.constant(1.0)):
        np.testing.assert_allclose(core.fisher_update(f, g, 0.5, update=on), [2.5])
    raw, fisher = core.normalized_fisher_update(f, f, g, 0.5, normalization="mean",
                                                update=False)
    np.testing.assert_allclose([raw, fisher], [[1.0], [1.0]])


def test_row_slices_are_blocks_of_the_dense_formula():
    theta = tf.reshape(tf.range(8, dtype=tf.float32), [4, 2])
    fisher = tf.fill([4, 2], 0.5)
    anchor = tf.zeros([4, 2])
    grads = tf.IndexedSlices(tf.constant([[1.0, 1.0], [2.0, 0.0], [1.0, 1.0]]),
                             tf.constant([1, 3, 1]), tf.constant([4, 2]))
    rows, values = core.unique_rows(grads)
    np.testing.assert_array_equal(rows, [1, 3])
    np.testing.assert_allclose(values, [[2.0, 2.0], [2.0, 0.0]])
    dense_grad = tf.convert_to_tensor(grads)  # the same gradient, dense
    dense = core.fisher_update(fisher, dense_grad, 0.9)
    block = core.fisher_update(tf.gather(fisher, rows), values, 0.9)
    np.testing.assert_allclose(tf.gather(dense, rows), block)
    p_rows, (g_rows,) = core.wpl_penalty(
        [tf.gather(theta, rows)], [tf.gather(fisher, rows)], [tf.gather(anchor, rows)], 2.0,
        with_gradients=True)
    p_mask, (g_mask,) = core.wpl_penalty(
        [theta], [fisher], [anchor], 2.0, masks=[tf.constant([[0.0], [1.0], [0.0], [1.0]])],
        with_gradients=True)
    assert float(p_rows) == pytest.approx(float(p_mask))
    np.testing.assert_allclose(g_rows, tf.gather(g_mask, rows))


def test_pull_keeps_float64_and_lists_must_align():
    theta = tf.constant([1.0, 2.0], tf.float64)
    pulled = core.proximal_pull(theta, tf.constant([1.0, 0.0], tf.float64),
                                tf.zeros([2], tf.float64), 1.0, 1.0)
    assert pulled.dtype == tf.float64
    np.testing.assert_allclose(pulled, [0.5, 2.0])
    with pytest.raises(ValueError, match="one Fisher tensor, anchor and mask per parameter"):
        core.wpl_penalty([THETA], [FISHER], [ANCHOR], 1.0, masks=[None, None])
    with pytest.raises(ValueError, match="shape mismatch at entry 0"):
        core.wpl_penalty([THETA], [tf.zeros([2])], [ANCHOR], 1.0)
    with pytest.raises(ValueError, match="mode must be one of"):
        core.check_wpl_mode("adam")


def test_global_norm_squared():
    assert float(core.global_norm_squared([tf.constant([3.0]), None, tf.constant([4.0])])) == 25.0
    assert float(core.global_norm_squared([None])) == 0.0


# ----------------------------------------------------------------- Fisher normalisation
def test_normalize_fisher_tensor_norm_per_unit_by_hand():
    raw = tf.constant([[3.0, 4.0], [0.0, 0.0], [1e-20, 0.0]])
    whole = core.normalize_fisher(raw, "tensor_norm", target_norm=10.0)
    # ‖R‖ = 5 over the whole tensor (1e-20 is negligible): 10 R / 5
    np.testing.assert_allclose(whole, [[6.0, 8.0], [0.0, 0.0], [2e-20, 0.0]], rtol=1e-5)
    rows = core.normalize_fisher(raw, "tensor_norm", target_norm=10.0, axes=[1])
    # each row to norm 10; the zero row stays 0 (no NaN); a row of tiny values does not
    # underflow to 0 (its norm is taken after dividing by its largest entry)
    np.testing.assert_allclose(rows, [[6.0, 8.0], [0.0, 0.0], [10.0, 0.0]], rtol=1e-6)
    assert core.normalize_fisher(raw, "none") is not None
    np.testing.assert_array_equal(core.normalize_fisher(raw, "none"), raw)


def test_normalize_fisher_mean_and_errors():
    raw = tf.constant([[1.0, 3.0], [0.0, 0.0]])
    np.testing.assert_allclose(core.normalize_fisher(raw, "mean", axes=[1]),
                               [[0.5, 1.5], [0.0, 0.0]])
    np.testing.assert_allclose(core.normalize_fisher(raw, "mean"), [[1.0, 3.0], [0.0, 0.0]])
    with pytest.raises(ValueError, match="target_norm"):
        core.normalize_fisher(raw, "tensor_norm")
    for bad in ("tensor-norm", "", None, 1):
        with pytest.raises(ValueError, match="fisher_normalization must be one of"):
            core.check_fisher_normalization(bad)


def test_normalized_fisher_update_keeps_raw_ema_and_respects_coverage():
    raw = tf.constant([[1.0, 1.0], [2.0, 2.0]])
    fisher = tf.constant([[7.0, 7.0], [9.0, 9.0]])
    grad = tf.constant([[3.0, 1.0], [3.0, 1.0]])
    new_raw, new = core.normalized_fisher_update(
        raw, fisher, grad, 0.5, normalization="tensor_norm", target_norm=2.0, axes=[1],
        coverage=tf.constant([[1.0], [0.0]]))
    # row 0: R' = 0.5·1 + 0.5·[9, 1] = [5, 1] (no clip, no feedback of F); F' = 2 R'/‖R'‖
    np.testing.assert_allclose(new_raw, [[5.0, 1.0], [2.0, 2.0]])
    np.testing.assert_allclose(new[0], 2.0 * np.array([5.0, 1.0]) / np.sqrt(26.0), rtol=1e-6)
    np.testing.assert_array_equal(new[1], [9.0, 9.0])  # not covered: exactly the old F
    r, f = core.normalized_fisher_update(raw, fisher, grad, 0.5, normalization="mean",
                                         update=tf.constant(0.0))
    np.testing.assert_array_equal(r, raw)
    np.testing.assert_array_equal(f, fisher)
    r, f = core.normalized_fisher_update(raw, fisher, grad, 0.5, normalization="mean",
                                         update=tf.constant(True))
    np.testing.assert_allclose(r, [[5.0, 1.0], [5.5, 1.5]])
    np.testing.assert_allclose(float(tf.reduce_mean(f)), 1.0, rtol=1e-6)
