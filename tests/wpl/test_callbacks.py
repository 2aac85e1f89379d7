"""Tests for the α schedule and the WPL callbacks."""

import functools

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
    strength_schedule,
)


def test_strength_schedule_values():
    assert strength_schedule(3, initial=60.0) == 60.0
    lin = functools.partial(strength_schedule, initial=60.0, decay="linear", start_epoch=15, rate=1.0, floor=5.0)
    assert [lin(e) for e in (0, 14, 15, 16)] == [60.0, 60.0, 59.0, 58.0]
    assert lin(200) == 5.0
    exp = functools.partial(strength_schedule, initial=8.0, decay="exponential", start_epoch=2, rate=0.5)
    assert [exp(e) for e in (1, 2, 3)] == [8.0, 4.0, 2.0]
    with pytest.raises(ValueError, match="decay must be"):
        strength_schedule(20, initial=1.0, decay="cosine")
    with pytest.raises(ValueError, match=r"rate must be a finite number in \(0, 1\]"):
        strength_schedule(20, initial=1.0, decay="exponential", rate=2.0)


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(epoch=-1), ValueError, "epoch must be an integer >= 0"),
    (dict(epoch=1.5), TypeError, "epoch must be an integer"),
    (dict(epoch=np.int64(2), initial=np.float32(-1)), ValueError, "initial must be a number >= 0"),
    (dict(initial="60"), TypeError, "initial"),
    (dict(initial=float("nan")), ValueError, "initial .*NaN"),
    (dict(start_epoch=None), TypeError, "start_epoch"),
    (dict(decay="linear", rate=-1.0), ValueError, "rate must be a finite number >= 0"),
    (dict(decay="linear", rate=float("inf")), ValueError, "rate"),
    (dict(decay="exponential", rate=0.0), ValueError, r"rate must be a finite number in \(0, 1\]"),
    (dict(floor=tf.constant(-1.0)), ValueError, "floor"),
    (dict(floor=True), TypeError, "floor"),
])
def test_strength_schedule_refuses_bad_numbers(kwargs, error, match):
    kwargs = {"epoch": 3, "initial": 60.0, **kwargs}
    with pytest.raises(error, match=f"strength_schedule: {match}"):
        strength_schedule(kwargs.pop("epoch"), **kwargs)


def test_strength_schedule_takes_numpy_and_tensor_scalars():
    value = strength_schedule(np.int64(16), initial=np.float32(60.0), decay="linear",
                              start_epoch=tf.constant(15), rate=tf.constant(1.0),
                              floor=np.float64(5.0))
    assert value == 58.0 and type(value) is float
    assert strength_schedule(0, initial=float("inf")) == float("inf")


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


@pytest.mark.parametrize("alpha, error", [
    (-1.0, ValueError), (np.float32("nan"), ValueError), ("10", TypeError), (None, TypeError),
])
def test_strength_scheduler_refuses_a_bad_alpha_naming_the_epoch(alpha, error):
    inputs = keras.Input((3,))
    model = keras.Model(inputs, keras.layers.Dense(2, name="d")(inputs))
    state = apply_wpl(model, ["d"], strength=1.0)
    model.compile(optimizer=keras.optimizers.SGD(0.01), loss="mse")
    callback = StrengthScheduler(state, lambda epoch: alpha)
    with pytest.raises(error, match=r"StrengthScheduler: schedule\(0\) \(α\) must be"):
        model.fit(np.ones((4, 3), "float32"), np.zeros((4, 2), "float32"), epochs=1,
                  verbose=0, callbacks=[callback])
    assert float(state.strength.numpy()) == 1.0


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
    sched = functools.partial(strength_schedule, initial=10.0, decay="linear", start_epoch=1, rate=2.0)
    state, seen, history = _fit_with(lambda s: [StrengthScheduler(s, sched), WPLMonitor(s)], epochs=3)
    assert [a for _, a in seen] == [10.0, 8.0, 6.0]
    assert history.history["wpl_strength"] == [10.0, 8.0, 6.0]
    assert all(p >= 0 for p in history.history["wpl_penalty"])


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
