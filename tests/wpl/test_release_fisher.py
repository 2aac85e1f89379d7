"""The WPL release's effective strength, replayed in NumPy, against ``tensor_norm``.

The public WPL release (REFERENCE.md, "Known defects", correction of 2026-11-29) does, per
parameter tensor and at every Fisher update,

    ``T = (1 − η) S + η g²``,   ``S ← α · clip_by_norm(T, 10)``,

where ``S`` is the STORED value: the penalty uses it and the next update starts from it. For
gradients of realistic scale (``g² ≈ 1e-6 … 1e-3``) ``S`` grows by about ``α (1 − η)`` per
update until the clip binds, then sits at norm ``10 α`` (600 at α = 60). Our clean form
(``fisher_normalization="tensor_norm"``, ``clip_norm = c``) keeps the plain EMA ``R`` of ``g²``
and uses ``F = c R / ‖R‖``, so ``‖α F‖ = c α`` from the first update on. These tests replay the
release and check that ``α ‖F‖`` per tensor (per RNN node row, per CNN op slice) is within
5% of the release's stored norm once the release has settled, while ``"none"`` (α on the raw
EMA) is orders of magnitude weaker.

Only the norm is compared. The release's direction differs: before the clip binds,
``T_t = α (1 − η) T_{t−1} + η g²_t`` weights each older ``g²`` ``α (1 − η) = 6`` times more
than the next, and once it binds the new ``η g²`` (norm about 1e-3 … 1e-1 at these scales)
is small against the stored ``(1 − η) S`` (norm 60); so its Fisher is essentially the
``g²`` of the first update after a flush, frozen until the next flush. Ours follows the EMA
of recent ``g²``.
"""

import keras
import numpy as np
import pytest
import tensorflow as tf

from wpl_keras.wpl import WPLState
from wpl_keras.experiments.presets import cpu_small_rnn_task

ALPHA = 60.0
CLIP = 10.0
ETA = 0.9
TOLERANCE = 0.05  # relative gap allowed between α ‖F‖ and the release's stored norm


def release_update(stored: np.ndarray, grad: np.ndarray) -> np.ndarray:
    """One Fisher update of the release: ``S ← α · clip_by_norm((1 − η) S + η g², 10)``."""
    tmp = (1.0 - ETA) * stored + ETA * grad.astype(np.float64) ** 2
    norm = np.linalg.norm(tmp)
    if norm > CLIP:
        tmp = tmp * (CLIP / norm)
    return ALPHA * tmp


def small_gradient(rng: np.random.Generator, shape) -> np.ndarray:
    """Random signs, ``g²`` log-uniform in ``[1e-6, 1e-3]``."""
    g2 = np.exp(rng.uniform(np.log(1e-6), np.log(1e-3), size=shape))
    return (rng.choice([-1.0, 1.0], size=shape) * np.sqrt(g2)).astype(np.float32)


def _states(shapes):
    """A ``tensor_norm`` and a ``"none"`` state over the same fresh variables."""
    variables = [keras.Variable(np.zeros(s, np.float32)) for s in shapes]
    normed = WPLState(variables, strength=ALPHA, fisher_momentum=ETA, clip_norm=CLIP,
                      fisher_normalization="tensor_norm")
    plain = WPLState(variables, strength=ALPHA, fisher_momentum=ETA, clip_norm=CLIP)
    return normed, plain


def test_whole_tensors_reach_the_release_strength_and_none_does_not():
    shapes = [(16, 32), (8, 16), (50,), (3, 3, 4, 8)]  # dense, recurrent, bias, conv kernel
    rng = np.random.default_rng(0)
    normed, plain = _states(shapes)
    stored = [np.zeros(s) for s in shapes]
    ema = [np.zeros(s) for s in shapes]
    settled_at = [None] * len(shapes)
    for step in range(10):
        grads = [small_gradient(rng, s) for s in shapes]
        normed.update_fisher([tf.constant(g) for g in grads])
        plain.update_fisher([tf.constant(g) for g in grads])
        for k, g in enumerate(grads):
            stored[k] = release_update(stored[k], g)
            ema[k] = (1.0 - ETA) * ema[k] + ETA * g.astype(np.float64) ** 2
            release = np.linalg.norm(stored[k])
            ours = ALPHA * np.linalg.norm(normed.fisher[k].numpy())
            assert ours == pytest.approx(ALPHA * CLIP, rel=1e-5)  # from the first update on
            if settled_at[k] is None and abs(release / (ALPHA * CLIP) - 1.0) <= TOLERANCE:
                settled_at[k] = step
            if settled_at[k] is not None:
                assert abs(ours / release - 1.0) <= TOLERANCE, (k, step, ours, release)
            if step == 0:  # the release starts far below its settled norm
                assert release < 0.1 * ALPHA * CLIP
    for k in range(len(shapes)):
        # the release settles after a few updates and stays there
        assert settled_at[k] is not None and settled_at[k] <= 7, settled_at
        np.testing.assert_allclose(normed.fisher_raw[k].numpy(), ema[k], rtol=1e-4)
        np.testing.assert_allclose(normed.fisher[k].numpy(),
                                   CLIP * ema[k] / np.linalg.norm(ema[k]), rtol=1e-4)
        # "none": α on the raw EMA of g², orders of magnitude below the release
        weak = ALPHA * np.linalg.norm(plain.fisher[k].numpy())
        assert weak < 1e-2 * np.linalg.norm(stored[k]), (k, weak)


def _check_units(fisher_before, raw_before, fisher_after, raw_after, updated, unit_norms):
    """Units not updated keep ``F`` and ``R`` exactly; each updated unit has norm ``c``."""
    for u in range(fisher_before.shape[0]):
        if u in updated:
            assert unit_norms[u] == pytest.approx(CLIP, rel=1e-5)
        else:
            np.testing.assert_array_equal(fisher_after[u], fisher_before[u])
            np.testing.assert_array_equal(raw_after[u], raw_before[u])


def _unit_norms(values: np.ndarray) -> np.ndarray:
    """L2 norm of each unit along the leading axis (axis 0 after flattening the rest)."""
    return np.linalg.norm(values.reshape(values.shape[0], -1), axis=1)


def test_row_sliced_update_normalises_each_node_row_like_the_release():
    """RNN node matrices ``w_nodes [pairs, H, 2H]``: each step trains the N − 1 rows of one
    architecture (a row-slice gradient); the release keeps one tensor per (node, input)
    pair, so each row is one unit."""
    pairs, shape = 10, (8, 16)
    rng = np.random.default_rng(1)
    normed, plain = _states([(pairs,) + shape])
    stored = np.zeros((pairs,) + shape)
    ema = np.zeros((pairs,) + shape)
    updates = np.zeros(pairs, int)
    for step in range(40):
        rows = rng.choice(pairs, size=4, replace=False)
        values = small_gradient(rng, (4,) + shape)
        indices = rows
        if step == 3:  # a row gathered twice: its gradient is the sum of the parts
            indices = np.concatenate([rows, rows[:1]])
            values = np.concatenate([values, values[:1]])
        g = tf.IndexedSlices(tf.constant(values), tf.constant(indices, tf.int32),
                             tf.constant((pairs,) + shape))
        before = normed.fisher[0].numpy(), normed.fisher_raw[0].numpy()
        normed.update_fisher([g])
        plain.update_fisher([g])
        after = normed.fisher[0].numpy(), normed.fisher_raw[0].numpy()
        _check_units(before[0], before[1], after[0], after[1], set(rows.tolist()),
                     _unit_norms(after[0]))
        summed = np.zeros((pairs,) + shape)
        np.add.at(summed, indices, values)
        for r in rows:
            stored[r] = release_update(stored[r], summed[r])
            ema[r] = (1.0 - ETA) * ema[r] + ETA * summed[r].astype(np.float64) ** 2
            updates[r] += 1
    np.testing.assert_allclose(normed.fisher_raw[0].numpy(), ema, rtol=1e-4, atol=1e-12)
    release = _unit_norms(stored)
    ours = ALPHA * _unit_norms(normed.fisher[0].numpy())
    weak = ALPHA * _unit_norms(plain.fisher[0].numpy())
    settled = updates >= 8
    assert settled.sum() >= pairs // 2, updates  # most rows were trained often enough
    np.testing.assert_allclose(ours[settled], release[settled], rtol=TOLERANCE)
    assert np.all(weak[updates > 0] < 1e-2 * release[updates > 0])
    assert np.all(ours[updates == 0] == 0.0)


def _slices(values: np.ndarray) -> np.ndarray:
    """A stacked op weight ``[B, 2, ...]`` as ``[B·2, ...]``: one op slice per leading entry."""
    return values.reshape((-1,) + values.shape[2:])


def test_masked_update_normalises_each_op_slice_like_the_release():
    """CNN stacked op weights ``[B, 2, k, k, C]`` with ``clip_axes=[2, 3, 4]`` and a usage
    mask per ``[node, slot]`` slice, updated inside a traced step with a tensor flag."""
    shape = (4, 2, 3, 3, 6)
    rng = np.random.default_rng(2)
    normed, plain = _states([shape])
    axes = [list(range(2, len(shape)))]

    @tf.function
    def step(grad, mask, flag):
        normed.update_fisher([grad], masks=[mask], clip_axes=axes, update=flag)
        plain.update_fisher([grad], masks=[mask], clip_axes=axes, update=flag)

    stored = np.zeros(shape)
    updates = np.zeros(shape[:2], int)
    for t in range(30):
        used = rng.random(shape[:2]) < 0.6
        flag = 0.0 if t == 5 else 1.0  # one step with the Fisher update gated off
        grad = small_gradient(rng, shape)
        before = normed.fisher[0].numpy(), normed.fisher_raw[0].numpy()
        step(tf.constant(grad), tf.constant(used[:, :, None, None, None], tf.float32),
             tf.constant(flag))
        f, r = normed.fisher[0].numpy(), normed.fisher_raw[0].numpy()
        covered = set(np.flatnonzero(used.ravel()).tolist()) if flag else set()
        _check_units(_slices(before[0]), _slices(before[1]), _slices(f), _slices(r), covered,
                     _unit_norms(_slices(f)))
        if flag:
            for i, j in zip(*np.nonzero(used)):
                stored[i, j] = release_update(stored[i, j], grad[i, j])
                updates[i, j] += 1
    settled = updates >= 8
    assert settled.sum() >= 4, updates
    release = _unit_norms(_slices(stored))[settled.ravel()]
    ours = ALPHA * _unit_norms(_slices(normed.fisher[0].numpy()))
    np.testing.assert_allclose(ours[settled.ravel()], release, rtol=TOLERANCE)
    weak = ALPHA * _unit_norms(_slices(plain.fisher[0].numpy()))
    assert np.all(weak[settled.ravel()] < 1e-2 * release)


def test_rnn_search_node_rows_reach_the_release_strength(monkeypatch):
    """One tiny ENAS RNN search with α = 60, clip 10: every node row's ``α ‖F‖`` matches
    the release replayed on the very gradients the search fed to its Fisher."""
    from wpl_keras.data.ptb import PTBCorpus
    from wpl_keras.nas.spaces.rnn.task import RNNSearchTask
    from wpl_keras.nas.spaces.rnn.config import RNNModelConfig
    from wpl_keras.wpl.config import WPLConfig

    vocab, nodes = 30, 4
    rng = np.random.default_rng(3)
    ids = lambda n: rng.integers(0, vocab, n).astype(np.int32)  # noqa: E731
    corpus = PTBCorpus(ids(400), ids(120), ids(60), [f"w{i}" for i in range(vocab)], {})
    wpl = WPLConfig(fisher_momentum=ETA, clip_norm=CLIP, fisher_normalization="tensor_norm")
    config = cpu_small_rnn_task(
        model=RNNModelConfig(num_nodes=nodes, vocab_size=vocab, embedding_size=6,
                             hidden_size=6),
        batch_size=3, bptt=4, eval_batch_size=2, eval_bptt=4, wpl=wpl)
    task = RNNSearchTask(corpus, config, seed=0)
    state = task.wpl_state
    assert state.fisher_normalization == "tensor_norm"  # from config.wpl
    state.strength.assign(ALPHA)
    recorded = []
    update = state.update_fisher

    def recording_update(gradients, *args, **kwargs):
        node = gradients[0]
        recorded.append((node.indices.numpy(), node.values.numpy()))
        return update(gradients, *args, **kwargs)

    monkeypatch.setattr(state, "update_fisher", recording_update)
    tf.config.run_functions_eagerly(True)  # to read the gradients the step feeds the Fisher
    try:
        for _ in range(24):
            arch = tuple(int(rng.integers(size)) for size in task.space.decision_sizes)
            task.train_architecture(arch, 1, wpl_active=True)
    finally:
        tf.config.run_functions_eagerly(False)
    shape = tuple(state.fisher[0].shape)
    stored, ema, updates = np.zeros(shape), np.zeros(shape), np.zeros(shape[0], int)
    for indices, values in recorded:
        summed = np.zeros(shape)
        np.add.at(summed, indices, values)
        for r in np.unique(indices):
            stored[r] = release_update(stored[r], summed[r])
            ema[r] = (1.0 - ETA) * ema[r] + ETA * summed[r].astype(np.float64) ** 2
            updates[r] += 1
    assert len(recorded) == 24
    settled = updates >= 8
    assert settled.sum() >= 3, updates
    release = _unit_norms(stored)[settled]
    ours = ALPHA * _unit_norms(state.fisher[0].numpy())
    np.testing.assert_allclose(ours[settled], release, rtol=TOLERANCE)
    np.testing.assert_allclose(ours[updates > 0], ALPHA * CLIP, rtol=1e-5)
    # today's "none" (α on the EMA of g²) is orders of magnitude below the release
    assert np.all(ALPHA * _unit_norms(ema)[settled] < 1e-2 * release)
