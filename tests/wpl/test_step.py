"""Hand-computed tests of the one composed WPL step (wpl_keras.wpl.step.WPLStep)."""

import math

import numpy as np
import pytest
import tensorflow as tf

from wpl_keras.wpl.config import WPLConfig
from wpl_keras.wpl.fisher import WPLState, read_rows
from wpl_keras.wpl.step import Covered, WPLStep

THETA = [1.0, 2.0]
DATA = [0.5, -1.0]
FISHER = [1.0, 0.5]
LR, ALPHA, L2 = 0.1, 2.0, 0.1


def _state(theta=THETA, fisher=FISHER, alpha=ALPHA, momentum=0.5):
    """One weight θ with anchors 0, Fisher ``fisher``, α, η_F (no Fisher clip)."""
    v = tf.Variable(theta, dtype=tf.float32)
    state = WPLState([v], strength=alpha, fisher_momentum=momentum)
    state.anchors[0].assign(tf.zeros_like(v))
    state.fisher[0].assign(fisher)
    return v, state


def _sgd(variable, flag=None):
    """The optimiser's step ``θ ← θ − η g`` (flag: what it reports as applied)."""
    def apply(grads):
        variable.assign_sub(LR * grads[0])
        return flag
    return apply


def _step(config, data=DATA, default="before_wpl", **kwargs):
    v, state = _state()
    step = WPLStep(state, config, default_l2_placement=default)
    out = step([tf.convert_to_tensor(v)], [tf.constant(data)], _sgd(v),
               covered=[Covered(position=0, index=0)], learning_rate=LR, **kwargs)
    return v, state, out


def test_gradient_mode_l2_before_wpl_and_data_fisher():
    v, state, out = _step(WPLConfig(mode="gradient", l2_placement="before_wpl"), l2=L2)
    # g = [0.5, −1] + 0.1 θ = [0.6, −0.8]; + α F (θ − θ*) = 2·[1, 1] → [2.6, 1.2]
    np.testing.assert_allclose(v.numpy(), [1.0 - 0.26, 2.0 - 0.12], rtol=1e-6)
    assert float(out.penalty) == pytest.approx(3.0)  # (α/2) Σ F θ² = 1·(1 + 0.5·4)
    assert out.grad_norm is None and out.applied is True
    # F ← 0.5 F + 0.5 g², g the raw data gradient
    np.testing.assert_allclose(state.fisher[0].numpy(), [0.625, 0.75], rtol=1e-6)
    assert int(state.num_fisher_updates.numpy()) == 1


def test_total_fisher_gradient_is_the_gradient_handed_to_the_optimizer():
    _, state, _ = _step(WPLConfig(mode="gradient", fisher_gradient="total",
                                  l2_placement="before_wpl"), l2=L2)
    np.testing.assert_allclose(state.fisher[0].numpy(), [0.5 + 0.5 * 2.6**2, 0.25 + 0.5 * 1.44],
                               rtol=1e-6)


def test_l2_in_the_penalty_is_scaled_like_the_data_gradient():
    v, _, out = _step(WPLConfig(mode="gradient"), default="penalty", l2=L2,
                      scale=tf.constant(0.5))
    # g + s (α F θ + λ θ) = [0.5 + 0.5·2.1, −1 + 0.5·2.2] = [1.55, 0.1]
    np.testing.assert_allclose(v.numpy(), [1.0 - 0.155, 2.0 - 0.01], rtol=1e-6)
    assert float(out.penalty) == pytest.approx(3.0 + 0.05 * 5.0)


def test_l2_after_the_clip_is_not_clipped_and_not_in_the_total_fisher():
    v, state, out = _step(WPLConfig(mode="gradient", fisher_gradient="total"),
                          default="after_clip", l2=L2, grad_clip=1.0)
    g = np.array([2.5, 1.0])  # data + α F θ, no L2 before the clip
    norm = math.sqrt(7.25)
    assert float(out.grad_norm) == pytest.approx(norm, rel=1e-6)
    clipped = g / norm
    np.testing.assert_allclose(v.numpy(), np.array(THETA) - LR * (clipped + L2 * np.array(THETA)),
                               rtol=1e-6)
    np.testing.assert_allclose(state.fisher[0].numpy(),
                               0.5 * np.array(FISHER) + 0.5 * clipped**2, rtol=1e-6)


def test_proximal_mode_pulls_after_the_step_and_reports_the_penalty_before_it():
    v, state, out = _step(WPLConfig(mode="proximal"), l2=L2)
    moved = np.array(THETA) - LR * (np.array(DATA) + L2 * np.array(THETA))  # [0.94, 2.08]
    k = LR * ALPHA * np.array(FISHER)  # θ* = 0: θ ← θ̃ / (1 + k)
    np.testing.assert_allclose(v.numpy(), moved / (1 + k), rtol=1e-6)
    assert float(out.penalty) == pytest.approx(3.0)
    np.testing.assert_allclose(state.fisher[0].numpy(), [0.625, 0.75], rtol=1e-6)
    with pytest.raises(ValueError, match="needs the step's learning_rate"):
        WPLStep(state, WPLConfig(mode="proximal"))([v], [tf.constant(DATA)], _sgd(v),
                                                    covered=[Covered(0, 0)])


@pytest.mark.parametrize("mode", ["gradient", "proximal"])
def test_masks_cover_slices_only(mode):
    v = tf.Variable([[1.0, 1.0], [2.0, 2.0]])
    state = WPLState([v], strength=2.0, fisher_momentum=0.5)
    state.anchors[0].assign(tf.zeros([2, 2]))
    state.fisher[0].assign(tf.ones([2, 2]))
    mask = tf.constant([[1.0], [0.0]])  # row 0 used, row 1 not
    out = WPLStep(state, WPLConfig(mode=mode))(
        [tf.convert_to_tensor(v)], [tf.fill([2, 2], 1.0)], _sgd(v),
        covered=[Covered(0, 0, mask=mask)], learning_rate=LR)
    if mode == "gradient":  # row 0: θ − η (1 + 2·1) = 0.7; row 1: its gradient masked out
        np.testing.assert_allclose(v.numpy(), [[0.7, 0.7], [2.0, 2.0]], rtol=1e-6)
    else:  # row 0: (1 − 0.1) / (1 + 0.2) = 0.75
        np.testing.assert_allclose(v.numpy(), [[0.75, 0.75], [2.0, 2.0]], rtol=1e-6)
    assert float(out.penalty) == pytest.approx(2.0)  # (2/2)·(1 + 1), row 0 only
    np.testing.assert_allclose(state.fisher[0].numpy(), [[1.0, 1.0], [1.0, 1.0]])  # 0.5 + 0.5


@pytest.mark.parametrize("mode", ["gradient", "proximal"])
def test_row_slices_touch_only_their_rows(mode):
    v = tf.Variable([[1.0, 1.0], [5.0, 5.0], [2.0, 2.0]])
    state = WPLState([v], strength=2.0, fisher_momentum=0.5, clip_norm=1.0)
    state.anchors[0].assign(tf.zeros([3, 2]))
    state.fisher[0].assign(tf.fill([3, 2], 0.5))
    rows = tf.constant([0, 2])

    def apply(grads):
        v.scatter_sub(tf.IndexedSlices(LR * grads[0], rows))

    out = WPLStep(state, WPLConfig(mode=mode))(
        [read_rows(v, rows)], [tf.constant([[1.0, 0.0], [0.0, 1.0]])], apply,
        covered=[Covered(0, 0, rows=rows)], learning_rate=LR)
    got = v.numpy()
    np.testing.assert_array_equal(got[1], [5.0, 5.0])  # not in the step
    theta = np.array([[1.0, 1.0], [2.0, 2.0]])
    data = np.array([[1.0, 0.0], [0.0, 1.0]])
    if mode == "gradient":
        want = theta - LR * (data + 2.0 * 0.5 * theta)
    else:
        want = (theta - LR * data) / (1 + LR * 2.0 * 0.5)
    np.testing.assert_allclose(got[[0, 2]], want, rtol=1e-6)
    assert float(out.penalty) == pytest.approx(1.0 * 0.5 * (2 + 8))  # (α/2) Σ F θ² on rows
    fisher = state.fisher[0].numpy()
    np.testing.assert_array_equal(fisher[1], [0.5, 0.5])
    new = 0.25 + 0.5 * data**2  # (1 − η_F) F + η_F g², then clipped to norm 1 as a block
    new = new * min(1.0, 1.0 / np.linalg.norm(new))
    np.testing.assert_allclose(fisher[[0, 2]], new, rtol=1e-6)


@pytest.mark.parametrize("mode", ["gradient", "proximal"])
def test_flags_gate_wpl_and_fisher_in_one_trace(mode):
    v, state = _state()
    step = WPLStep(state, WPLConfig(mode=mode))
    traces = []

    @tf.function
    def run(active, update):
        traces.append(1)
        return step([tf.convert_to_tensor(v)], [tf.constant(DATA)], _sgd(v),
                    covered=[Covered(0, 0)], learning_rate=LR, active=active,
                    update_fisher=update).penalty

    penalty = run(tf.constant(False), tf.constant(False))
    assert float(penalty) == 0.0  # WPL off: no term, no pull, no Fisher update
    np.testing.assert_allclose(v.numpy(), np.array(THETA) - LR * np.array(DATA), rtol=1e-6)
    np.testing.assert_array_equal(state.fisher[0].numpy(), FISHER)
    assert int(state.num_fisher_updates.numpy()) == 0
    assert float(run(tf.constant(True), tf.constant(True))) > 0.0
    assert int(state.num_fisher_updates.numpy()) == 1
    assert len(traces) == 1  # tensor flags: one trace serves every value


@pytest.mark.parametrize("mode", ["gradient", "proximal"])
def test_a_step_the_optimizer_did_not_apply_changes_no_wpl_state(mode):
    v, state = _state()
    step = WPLStep(state, WPLConfig(mode=mode))
    out = step([tf.convert_to_tensor(v)], [tf.constant(DATA)], _sgd(v, tf.constant(False)),
               covered=[Covered(0, 0)], learning_rate=LR)
    assert float(out.penalty) == pytest.approx(3.0)  # still reported
    np.testing.assert_array_equal(state.fisher[0].numpy(), FISHER)
    assert int(state.num_fisher_updates.numpy()) == 0
    if mode == "proximal":  # the SGD closure moved θ, but no pull followed
        np.testing.assert_allclose(v.numpy(), np.array(THETA) - LR * np.array(DATA), rtol=1e-6)


@pytest.mark.parametrize("mode", ["gradient", "proximal"])
def test_a_skipped_step_with_a_nan_gradient_keeps_the_fisher_exactly(mode):
    """A skipped step (e.g. a loss-scale overflow) may hand inf/NaN gradients to the Fisher
    update; the select on ``applied`` keeps ``F`` bit for bit."""
    v, state = _state()
    step = WPLStep(state, WPLConfig(mode=mode))
    step([tf.convert_to_tensor(v)], [tf.constant([math.nan, math.inf])],
         lambda grads: tf.constant(False), covered=[Covered(0, 0)], learning_rate=LR)
    np.testing.assert_array_equal(state.fisher[0].numpy(), FISHER)


@pytest.mark.parametrize("mode", ["gradient", "proximal"])
def test_a_traced_step_reads_fisher_and_anchor_once_per_weight(mode):
    """Whole weights: ``F`` and ``θ*`` are read once per step (penalty, WPL term or pull, and
    the Fisher update share the reads); the same values as the eager step."""
    v, state = _state()
    step = WPLStep(state, WPLConfig(mode=mode))

    def run():
        return step([tf.convert_to_tensor(v)], [tf.constant(DATA)], _sgd(v),
                    covered=[Covered(0, 0)], learning_rate=LR).penalty

    graph = tf.function(run).get_concrete_function().graph
    handles = {id(t): name for name, t in (("fisher", state.fisher[0].value.handle),
                                            ("anchor", state.anchors[0].value.handle))}
    captured = {graph.captures[k][1].name: handles[id(graph.captures[k][0])]
                for k in range(len(graph.captures)) if id(graph.captures[k][0]) in handles}
    reads = {"fisher": 0, "anchor": 0}
    for op in graph.get_operations():
        if op.type == "ReadVariableOp" and op.inputs[0].name in captured:
            reads[captured[op.inputs[0].name]] += 1
    assert reads == {"fisher": 1, "anchor": 1}
    _, eager_state, eager = _step(WPLConfig(mode=mode))
    v.assign(THETA)
    state.fisher[0].assign(FISHER)
    assert float(tf.function(run)()) == pytest.approx(float(eager.penalty))
    np.testing.assert_allclose(state.fisher[0].numpy(), eager_state.fisher[0].numpy(), rtol=1e-6)


def test_fisher_gradients_hook_and_fisher_only_pass():
    v, state = _state()
    step = WPLStep(state, WPLConfig())
    seen = []

    def hook(values, applied):
        seen.append(applied)
        return [2.0 * g for g in values]

    step.update_fisher([tf.constant(DATA)], [Covered(0, 0)], fisher_gradients=hook)
    assert seen == [True]
    np.testing.assert_allclose(state.fisher[0].numpy(), [0.5 + 0.5, 0.25 + 2.0], rtol=1e-6)
    step.update_fisher([tf.constant(DATA)], [Covered(0, 0)], update=False)
    assert int(state.num_fisher_updates.numpy()) == 1


def test_config_choices_are_checked():
    assert (WPLConfig().fisher_gradient, WPLConfig().l2_placement) == ("data", None)
    with pytest.raises(ValueError, match="WPLConfig.fisher_gradient must be one of"):
        WPLConfig(fisher_gradient="clipped")
    with pytest.raises(ValueError, match="WPLConfig.l2_placement must be one of"):
        WPLConfig(l2_placement="inside")
    _, state = _state()
    with pytest.raises(ValueError, match="default_l2_placement must be one of"):
        WPLStep(state, WPLConfig(), default_l2_placement="core")
    with pytest.raises(TypeError, match="config must be a WPLConfig"):
        WPLStep(state, {"mode": "proximal"})
    assert WPLStep(state, WPLConfig(l2_placement="penalty"),
                   default_l2_placement="after_clip").l2_placement == "penalty"
