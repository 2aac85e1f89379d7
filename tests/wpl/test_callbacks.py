"""Tests for the WPL callbacks."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from wpl_keras.wpl import (
    DivergenceGuard,
    FisherFlush,
    SnapshotAnchors,
    StrengthScheduler,
    WPLModel,
    WPLMonitor,
    WPLState,
    apply_wpl,
)
from wpl_keras.wpl.schedule import ScheduleConfig, flush_at, strength_at


@pytest.mark.parametrize("every, error", [
    (0, ValueError), (-2, ValueError), (np.int32(0), ValueError), (2.0, TypeError),
    ("3", TypeError), (None, TypeError), (True, TypeError), (np.array([2, 3]), TypeError),
])
def test_fisher_flush_every_must_be_a_count(every, error):
    state = WPLState([keras.Variable(np.ones(2, np.float32))])
    with pytest.raises(error, match=r"FisherFlush: every must be an integer >= 1"):
        FisherFlush(state, every=every)
    assert FisherFlush(state, every=np.int64(3)).every == 3
    assert FisherFlush(state, every=tf.constant(2)).every == 2


@pytest.mark.parametrize("factor, error", [
    (1.0, ValueError), (0.5, ValueError), (float("nan"), ValueError), (float("inf"), ValueError),
    ("big", TypeError), (None, TypeError),
])
def test_divergence_guard_factor_must_exceed_one(factor, error):
    with pytest.raises(error, match=r"DivergenceGuard: factor must be a finite number > 1"):
        DivergenceGuard(factor=factor)
    assert DivergenceGuard(factor=np.float32(10.0)).factor == 10.0


@pytest.mark.parametrize("schedule", [lambda epoch: 1.0, 60.0, None])
def test_strength_scheduler_takes_only_the_one_schedule_type(schedule):
    state = WPLState([keras.Variable(np.zeros(2, "float32"))])
    with pytest.raises(TypeError, match="schedule must be a wpl_keras.wpl.schedule.ScheduleConfig"):
        StrengthScheduler(state, schedule)


def _fit_with(callbacks_for, epochs=4):
    inputs = keras.Input((3,))
    model = keras.Model(inputs, keras.layers.Dense(2, name="d")(inputs))
    state = apply_wpl(model, ["d"], strength=1.0)
    state.assign_fisher([tf.ones_like(f) for f in state.fisher])
    model.compile(optimizer=keras.optimizers.SGD(0.01), loss="mse")
    seen = []

    class Record(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            seen.append((float(state.fisher_norm()), float(state.strength.numpy())))

    x = np.ones((8, 3), "float32")
    y = np.zeros((8, 2), "float32")
    history = model.fit(x, y, epochs=epochs, verbose=0, callbacks=callbacks_for(state) + [Record()])
    return state, seen, history


def test_fisher_flush_every_k_epochs(seed):
    state, seen, _ = _fit_with(lambda s: [FisherFlush(s, every=2)], epochs=4)
    norms = [n for n, _ in seen]
    assert norms[0] > 0 and norms[1] > 0 and norms[2] == 0.0


def test_strength_scheduler_and_monitor(seed):
    sched = ScheduleConfig(wpl_start_epoch=0, strength=10.0, strength_decay="linear",
                           strength_decay_start=1, strength_decay_rate=2.0, flush_every=0)
    state, seen, history = _fit_with(lambda s: [StrengthScheduler(s, sched), WPLMonitor(s)], epochs=3)
    assert [a for _, a in seen] == [10.0, 8.0, 6.0]
    assert history.history["wpl_strength"] == [10.0, 8.0, 6.0]
    assert "wpl_alpha" not in history.history
    assert all(p >= 0 for p in history.history["wpl_penalty"])


def test_strength_scheduler_applies_the_schedule_like_a_search(seed):
    """model.fit's epochs follow the same strength_at / flush_at as a search's: α 0 before
    wpl_start_epoch, the Fisher reset at the flush epochs (and nowhere else)."""
    sched = ScheduleConfig(wpl_start_epoch=1, strength=5.0, strength_decay="exponential",
                           strength_decay_start=2, strength_decay_rate=0.5, flush_every=2)
    state, seen, _ = _fit_with(lambda s: [StrengthScheduler(s, sched)], epochs=5)
    assert [a for _, a in seen] == [strength_at(e, sched) for e in range(5)] == [
        0.0, 5.0, 2.5, 1.25, 0.625]
    norms = [n for n, _ in seen]
    assert [e for e in range(5) if flush_at(e, sched)] == [3]
    # the Fisher set before fit is kept through epochs 0-2 and reset at 3 (fit does not refill it)
    assert all(n > 0 for n in norms[:3]) and norms[3] == norms[4] == 0.0


def test_snapshot_anchors_on_train_end(seed):
    state, _, _ = _fit_with(lambda s: [SnapshotAnchors(s)], epochs=1)
    for v, a in zip(state.protected_variables, state.anchors):
        np.testing.assert_array_equal(v.numpy(), a.numpy())


def test_callbacks_reject_non_state():
    with pytest.raises(TypeError, match="expected a WPLState"):
        FisherFlush(object())
    with pytest.raises(ValueError):
        FisherFlush(WPLState([keras.Variable(np.zeros(2, "float32"))]), every=0)


@pytest.mark.parametrize("normalization", ["tensor_norm", "mean"])
def test_callbacks_on_a_normalised_state(seed, normalization):
    """FisherFlush zeroes the normalised F and its raw EMA R (the next update starts from
    R = 0, so F is the normalised g² of that step); WPLMonitor logs the normalised F."""
    x = np.random.default_rng(0).normal(size=(8, 3)).astype("float32")
    y = np.zeros((8, 2), "float32")
    inputs = keras.Input((3,))
    model = WPLModel(inputs, keras.layers.Dense(2, name="d")(inputs))
    state = apply_wpl(model, ["d"], strength=1.0, update_fisher=True, clip_norm=3.0,
                      fisher_normalization=normalization)
    model.compile(optimizer=keras.optimizers.SGD(0.0), loss="mse")
    seen = []

    class Record(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            seen.append([float(np.sum(np.abs(v.numpy())))
                         for v in list(state.fisher) + list(state.fisher_raw)])

    history = model.fit(x, y, batch_size=8, epochs=3, verbose=0, shuffle=False,
                        callbacks=[FisherFlush(state, every=2), WPLMonitor(state), Record()])
    assert all(s > 0 for s in seen[1]) and all(s == 0.0 for s in seen[2])
    with tf.GradientTape() as tape:
        loss = keras.losses.MeanSquaredError()(y, model(x))
    grads = tape.gradient(loss, list(state.protected_variables))
    for f, r, g in zip(state.fisher, state.fisher_raw, grads):
        want = 0.9 * np.square(g.numpy().astype(np.float64))  # η_F g² from R = 0
        np.testing.assert_allclose(r.numpy(), want, rtol=1e-5, atol=1e-10)
        norm = (want / np.mean(want) if normalization == "mean"
                else 3.0 * want / np.linalg.norm(want))
        np.testing.assert_allclose(f.numpy(), norm, rtol=1e-4, atol=1e-6)
    total = np.sqrt(sum(np.sum(np.square(f.numpy())) for f in state.fisher))
    assert history.history["wpl_fisher_norm"][-1] == pytest.approx(total, rel=1e-5)


@pytest.mark.parametrize("with_state", [False, True])
def test_divergence_guard_without_wpl_names_the_data_loss_not_alpha(with_state):
    """Without a WPL state, or with α = 0, a divergence is the data loss's own: the message
    says so and suggests the step size, not α or proximal mode."""
    from wpl_keras.wpl import DivergenceGuard, WPLDivergenceError

    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1, name="shared")])
    state = apply_wpl(model, ["shared"], strength=0.0) if with_state else None
    model.compile(optimizer=keras.optimizers.SGD(50.0), loss="mse")
    x = np.random.default_rng(0).normal(size=(64, 4)).astype("float32") * 10
    with pytest.raises(WPLDivergenceError) as info:
        model.fit(x, x[:, :1], batch_size=8, epochs=5, verbose=0,
                  callbacks=[DivergenceGuard(state)])
    text = str(info.value)
    assert "without a WPL penalty" in text and "learning rate=50" in text
    assert "alpha" not in text and "proximal" not in text
