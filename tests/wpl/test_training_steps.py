"""WPL follows the optimiser's applied steps (wpl/training.py).

Every WPL state change of a ``WPLModel`` step (proximal pull, Fisher update, its counter) must
happen exactly when the optimiser applies an update, from what it applied: not on a step a
``LossScaleOptimizer`` skips for overflow, not on the micro-steps of gradient accumulation
(the Fisher then uses the mean of the accumulated gradients), the same under
``steps_per_execution``, ``jit_compile``, ``MirroredStrategy`` and ``use_ema``. Each case is
checked against :func:`_reference`, a plain TensorFlow loop that applies SGD by hand.
"""

import json
import os
import pathlib
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf

from wpl_keras.wpl.callbacks import SnapshotAnchors
from wpl_keras.wpl.training import WPLModel, _applies_every_call, apply_wpl

# The subprocess imports this file as ``tests.wpl.test_training_steps`` from the repository root.
REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]
ALPHA, F0, ETA_F, LR, EMA_MOMENTUM = 3.0, 0.5, 0.4, 0.05, 0.5
BATCH, BATCHES = 8, 7
# An overflow batch has y = 1e18: its loss (~1e36) and unscaled gradients (~1e17) are finite,
# its gradients times the loss scale 2^80 are not (float32 ends at 3.4e38), as an fp16
# gradient overflows under mixed precision. Scaling by a power of 2 is exact.
OVERFLOW_Y, LOSS_SCALE = 1e18, 2.0**80


def _data(overflow=()):
    """7 batches of 8 rows of a linear target; the batches in ``overflow`` get ``y = 1e18``,
    whose scaled gradients overflow (a LossScaleOptimizer skips them)."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(BATCH * BATCHES, 4)).astype("float32")
    y = (x @ np.array([[1.0], [-1.0], [0.5], [2.0]]) + 0.5).astype("float32")
    for b in overflow:
        y[b * BATCH:(b + 1) * BATCH] = OVERFLOW_Y
    return x, y


def _model(cls=WPLModel):
    keras.utils.set_random_seed(7)
    inputs = keras.Input((4,))
    hidden = keras.layers.Dense(3, activation="tanh", name="shared")(inputs)
    return cls(inputs, keras.layers.Dense(1, name="head", dtype="float32")(hidden))


def _optimizer(*, k=None, ema=False, lso=False, initial_scale=LOSS_SCALE,
               cls=keras.optimizers.SGD):
    optimizer = cls(LR, gradient_accumulation_steps=k, use_ema=ema, ema_momentum=EMA_MOMENTUM)
    if lso:
        optimizer = keras.optimizers.LossScaleOptimizer(optimizer, initial_scale=initial_scale)
    return optimizer


def _fit(*, mode="proximal", update_fisher=True, cls=WPLModel, overflow=(), k=None, lso=False,
         scale=LOSS_SCALE, spe=1, jit=False, ema=False, callbacks=None, strategy=None,
         optimizer_cls=keras.optimizers.SGD):
    """Trains the tiny model one epoch (7 batches, no shuffle) with WPL; returns the weights
    at the start, the anchors, the model and its state. ``callbacks(state)``: fit's callbacks;
    ``strategy``: the ``tf.distribute`` strategy to build the model under; ``optimizer_cls``:
    an SGD class (a subclass that skips steps)."""
    with (strategy or tf.distribute.get_strategy()).scope():
        model = _model(cls)
        state = apply_wpl(model, ["shared"], strength=ALPHA, update_fisher=update_fisher,
                          mode=mode, fisher_momentum=ETA_F)
        state.assign_fisher([tf.fill(f.shape, F0) for f in state.fisher])
        for v in state.protected_variables:  # away from the anchors: the pull acts at once
            v.assign(v + 0.3)
        start = [w.numpy() for w in model.trainable_weights]
        anchors = [a.numpy() for a in state.anchors]
        model.compile(optimizer=_optimizer(k=k, ema=ema, lso=lso, initial_scale=scale,
                                           cls=optimizer_cls),
                      loss="mse", steps_per_execution=spe, jit_compile=jit)
    x, y = _data(overflow)
    model.fit(x, y, batch_size=BATCH, epochs=1, shuffle=False, verbose=0,
              callbacks=[] if callbacks is None else callbacks(state))
    return start, anchors, model, state


def _reference(start, anchors, *, mode, update_fisher=True, overflow=(), k=1, ema=False):
    """The weights, Fisher and number of applied updates after the same epoch, by hand.

    A skipped (overflow) batch changes nothing. Every other batch adds its gradient (plus, in
    gradient mode, ``α F (θ − θ*)``) to the optimiser's sum, and its data gradient to the
    Fisher's; every ``k``-th consumed batch applies ``θ ← θ − η sum / k``, then (proximal
    mode) ``θ ← (θ + η α F θ*) / (1 + η α F)`` and ``F ← (1 − η_F) F + η_F (sum / k)²``.
    With ``ema``, the average ``A ← m A + (1 − m) θ`` (``A = θ`` at the first update) of the
    weights after each optimiser step, before the pull, becomes the final weights.
    """
    assert not (ema and k > 1), "Keras also averages on micro-steps; not modelled here"
    x, y = _data(overflow)
    theta = [tf.constant(w) for w in start]
    fisher = [tf.fill(a.shape, F0) for a in anchors]
    zeros = [tf.zeros_like(t) for t in theta]
    applied_sum, data_sum, consumed, updates, average = list(zeros), list(zeros[:2]), 0, 0, None
    for b in range(BATCHES):
        if b in overflow:
            continue
        xb, yb = x[b * BATCH:(b + 1) * BATCH], y[b * BATCH:(b + 1) * BATCH]
        with tf.GradientTape() as tape:
            tape.watch(theta)
            out = tf.tanh(xb @ theta[0] + theta[1]) @ theta[2] + theta[3]
            loss = tf.reduce_mean(tf.square(out - yb))
        grads = tape.gradient(loss, theta)
        step = list(grads)
        if mode == "gradient":
            step[:2] = [g + ALPHA * f * (t - a)
                        for g, f, t, a in zip(grads, fisher, theta, anchors)]
        applied_sum = [s + g for s, g in zip(applied_sum, step)]
        data_sum = [s + g for s, g in zip(data_sum, grads[:2])]
        consumed += 1
        if consumed % k:
            continue
        theta = [t - LR * s / k for t, s in zip(theta, applied_sum)]
        if ema:
            average = list(theta) if updates == 0 else [
                EMA_MOMENTUM * a + (1 - EMA_MOMENTUM) * t for a, t in zip(average, theta)]
        if mode == "proximal":
            theta[:2] = [(t + LR * ALPHA * f * a) / (1 + LR * ALPHA * f)
                         for t, f, a in zip(theta, fisher, anchors)]
        if update_fisher:
            fisher = [(1 - ETA_F) * f + ETA_F * tf.square(s / k) for f, s in zip(fisher, data_sum)]
        applied_sum, data_sum, updates = list(zeros), list(zeros[:2]), updates + 1
    if ema:
        theta = average
    return [t.numpy() for t in theta], [f.numpy() for f in fisher], updates


def _assert_matches(model, state, want, *, rtol=1e-4, atol=1e-6, anchors=None):
    theta, fisher, updates = want
    for got, expected in zip(model.trainable_weights, theta):
        np.testing.assert_allclose(got.numpy(), expected, rtol=rtol, atol=atol,
                                   err_msg=got.path)
    for got, expected in zip(state.fisher, fisher):
        np.testing.assert_allclose(got.numpy(), expected, rtol=rtol, atol=atol)
    if anchors is not None:
        for got, expected in zip(state.anchors, anchors):
            np.testing.assert_allclose(got.numpy(), expected, rtol=rtol, atol=atol)
    assert int(model.optimizer.iterations.numpy()) == updates
    if getattr(model, "wpl_update_fisher", False):
        assert int(state.num_fisher_updates.numpy()) == updates


# (mode, fit options): loss-scale overflow, gradient accumulation (with a skipped micro-batch),
# steps_per_execution, jit_compile, and their mixes.
CASES = {
    "overflow-proximal": ("proximal", dict(lso=True, overflow=(2, 5))),
    "overflow-gradient": ("gradient", dict(lso=True, overflow=(2,))),
    "accumulate-proximal": ("proximal", dict(k=3)),
    "accumulate-overflow-gradient": ("gradient", dict(k=3, lso=True, overflow=(1,))),
    "steps_per_execution-accumulate-proximal": ("proximal", dict(k=2, spe=3)),
    "steps_per_execution-gradient": ("gradient", dict(spe=4, lso=True, overflow=(3,))),
    "jit-accumulate-proximal": ("proximal", dict(k=2, jit=True)),
    "jit-overflow-gradient": ("gradient", dict(jit=True, lso=True, overflow=(0,))),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_wpl_state_changes_only_on_applied_updates(seed, case):
    mode, options = CASES[case]
    start, anchors, model, state = _fit(mode=mode, **options)
    want = _reference(start, anchors, mode=mode, overflow=options.get("overflow", ()),
                      k=options.get("k") or 1)
    _assert_matches(model, state, want, anchors=anchors)
    assert 0 < want[2] < BATCHES  # some steps applied, some not: the gating was exercised
    assert model.jit_compile == options.get("jit", False)


class _SkipLargeSGD(keras.optimizers.SGD):
    """SGD that skips a step (no update, ``iterations`` not counted) whose gradients exceed
    1e6 in magnitude, as a user's guard against bad batches would: a Keras optimiser whose
    ``apply`` is not Keras' own, so WPL must read what it applied."""

    def apply(self, grads, trainable_variables=None):
        large = tf.reduce_any(tf.stack([tf.reduce_any(tf.abs(g) > 1e6) for g in grads]))

        def update():
            keras.optimizers.SGD.apply(self, grads, trainable_variables)
            return tf.constant(True)

        tf.cond(large, lambda: tf.constant(False), update)


@pytest.mark.parametrize("mode", ["gradient", "proximal"])
@pytest.mark.parametrize("overflow", [(2, 5), (0,)])
def test_an_optimizer_subclass_that_skips_steps_is_followed(seed, mode, overflow):
    # The overflow batches' gradients (~1e17) are finite and above the subclass's 1e6 guard:
    # it skips them as a LossScaleOptimizer skips an overflow, with no loss scale involved.
    start, anchors, model, state = _fit(mode=mode, overflow=overflow,
                                        optimizer_cls=_SkipLargeSGD)
    want = _reference(start, anchors, mode=mode, overflow=overflow)
    _assert_matches(model, state, want, anchors=anchors)
    assert want[2] == BATCHES - len(overflow)


def _subclass(name, **methods):
    return type(name, (keras.optimizers.SGD,), methods)


@pytest.mark.parametrize("make, expected", [
    (lambda: keras.optimizers.SGD(0.1), True),
    (lambda: keras.optimizers.SGD(0.1, momentum=0.9, nesterov=True, clipnorm=1.0), True),
    (lambda: keras.optimizers.Adam(), True),
    (lambda: keras.optimizers.AdamW(), True),
    (lambda: keras.optimizers.RMSprop(), True),
    (lambda: keras.optimizers.Adagrad(), True),
    (lambda: keras.optimizers.Lion(), True),
    (lambda: keras.optimizers.SGD(0.1, use_ema=True), True),
    (lambda: _subclass("Plain")(0.1), True),  # a subclass that keeps Keras' apply
    (lambda: keras.optimizers.LossScaleOptimizer(keras.optimizers.SGD(0.1)), False),
    (lambda: keras.optimizers.SGD(0.1, gradient_accumulation_steps=2), False),
    (lambda: keras.optimizers.Adam(gradient_accumulation_steps=3), False),
    (lambda: _SkipLargeSGD(0.1), False),
    (lambda: _subclass("OwnApplyGradients", apply_gradients=lambda self, pairs: None)(0.1),
     False),
    (lambda: _subclass("OwnBackend",
                       _backend_apply_gradients=lambda self, grads, variables: None)(0.1),
     False),
])
def test_which_optimizers_are_known_to_apply_every_call(make, expected):
    assert _applies_every_call(make()) is expected


def test_a_plain_optimizer_step_has_no_per_weight_selects(seed):
    # SGD applies on every call, so the step's WPL state changes are not gated on
    # `iterations` (python True when tracing): no select per weight in the traced step
    # (gradient mode: the proximal pull has selects of its own formula).
    _, _, model, _ = _fit(mode="gradient")
    x, y = _data()
    step = tf.function(model.train_step)
    graph = step.get_concrete_function((tf.constant(x[:BATCH]), tf.constant(y[:BATCH]))).graph
    definition = graph.as_graph_def()
    ops = [n.op for n in definition.node] + [
        n.op for f in definition.library.function for n in f.node_def]
    assert ops.count("SelectV2") == 0 and ops.count("Select") == 0
    assert ops.count("MatMul") > 0 and ops.count("AssignVariableOp") > 0  # the step is there


@pytest.mark.parametrize("mode", ["gradient", "proximal"])
def test_use_ema_trains_raw_weights_and_anchors_at_the_average(seed, mode):
    # WPL acts on the raw weights the optimiser trains; Keras writes their average into the
    # model when fit ends, before on_train_end, so SnapshotAnchors anchors at the average.
    start, anchors, model, state = _fit(mode=mode, ema=True, lso=True, overflow=(1,),
                                        callbacks=lambda s: [SnapshotAnchors(s)])
    want = _reference(start, anchors, mode=mode, overflow=(1,), ema=True)
    _assert_matches(model, state, want, anchors=want[0][:2])


def test_plain_model_regularizer_path_changes_no_state(seed):
    # apply_wpl on a plain model attaches regularizers only: the penalty is part of the loss,
    # so Keras accumulates and skips it with the data loss; the Fisher and anchors never move.
    start, anchors, model, state = _fit(mode="gradient", update_fisher=False, cls=keras.Model,
                                        k=3, lso=True, overflow=(1,))
    want = _reference(start, anchors, mode="gradient", update_fisher=False, overflow=(1,), k=3)
    _assert_matches(model, state, want, anchors=anchors)
    assert int(state.num_fisher_updates.numpy()) == 0


@pytest.mark.parametrize("mode", ["gradient", "proximal"])
def test_mixed_float16_overflow_leaves_the_fisher_finite(seed, mode):
    # The case: under mixed_float16 a LossScaleOptimizer skips the step whose float16
    # gradients overflow; WPL skips it too, so the Fisher stays finite and training goes on.
    # The reference is float32: float16 compute rounds to about 1e-3.
    policy = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        start, anchors, model, state = _fit(mode=mode, lso=True, scale=256.0, overflow=(2, 4))
    finally:
        keras.mixed_precision.set_global_policy(policy)
    assert model.get_layer("shared").compute_dtype == "float16"
    for v in model.trainable_weights + state.fisher:
        assert np.all(np.isfinite(v.numpy())), v.path
    want = _reference(start, anchors, mode=mode, overflow=(2, 4))
    _assert_matches(model, state, want, rtol=2e-2, atol=2e-3, anchors=anchors)
    assert float(model.optimizer.dynamic_scale.numpy()) == 64.0  # halved once per overflow


MIRRORED_SCRIPT = textwrap.dedent(
    """
    import json, sys
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    from tests.wpl import test_training_steps as steps
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    out = {}
    for case, (mode, options) in json.loads(sys.argv[1]).items():
        start, anchors, model, state = steps._fit(mode=mode, strategy=strategy, **options)
        out[case] = {"start": [w.tolist() for w in start], "anchors": [a.tolist() for a in anchors],
                     "weights": [w.numpy().tolist() for w in model.trainable_weights],
                     "fisher": [f.numpy().tolist() for f in state.fisher],
                     "iterations": int(model.optimizer.iterations.numpy()),
                     "fisher_updates": int(state.num_fisher_updates.numpy()),
                     "replicas": model.distribute_strategy.num_replicas_in_sync}
    print(json.dumps(out))
    """
)

# Keras 3.15 itself cannot train a plain model under MirroredStrategy with
# gradient_accumulation_steps (its accumulation cond holds the all-reduce: "merge_call called
# while defining a new graph") or with steps_per_execution > 1 ("You must feed a value for
# placeholder tensor 'while/cond/Placeholder'"); the distributed cases are loss-scale skips.
MIRRORED_CASES = {
    "overflow-proximal": ("proximal", dict(lso=True, overflow=(2,))),
    "overflow-gradient": ("gradient", dict(lso=True, overflow=(3, 4))),
}


@pytest.mark.slow
def test_mirrored_strategy_on_two_logical_cpus_follows_applied_updates(tmp_path):
    # One subprocess (the logical CPUs must be set before TensorFlow starts) runs both cases.
    script = tmp_path / "mirrored.py"
    script.write_text(MIRRORED_SCRIPT)
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT), TF_CPP_MIN_LOG_LEVEL="3")
    proc = subprocess.run([sys.executable, str(script), json.dumps(MIRRORED_CASES)],
                          capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    for case, (mode, options) in MIRRORED_CASES.items():
        got = out[case]
        assert got["replicas"] == 2
        start = [np.asarray(w, np.float32) for w in got["start"]]
        anchors = [np.asarray(a, np.float32) for a in got["anchors"]]
        theta, fisher, updates = _reference(start, anchors, mode=mode, k=options.get("k") or 1,
                                            overflow=options["overflow"])
        for a, b in zip(got["weights"] + got["fisher"], theta + fisher):
            np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6, err_msg=case)
        assert got["iterations"] == got["fisher_updates"] == updates, case
