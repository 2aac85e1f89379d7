"""Tests for apply_wpl, WPLModel's train step, saving, divergence and tf.distribute."""

import json
import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf

from wpl_keras.wpl import (
    DivergenceGuard,
    WPLDivergenceError,
    WPLModel,
    apply_wpl,
)


def _data(n=128, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 6)).astype("float32")
    y = (x[:, 0] + x[:, 1] > 0).astype("int32")
    return x, y


def _model(cls=keras.Model):
    inputs = keras.Input((6,))
    hidden = keras.layers.Dense(8, activation="relu", name="shared")(inputs)
    outputs = keras.layers.Dense(2, name="head")(hidden)
    return cls(inputs, outputs)


def _compile(model, lr=0.1, momentum=0.0):
    model.compile(
        optimizer=keras.optimizers.SGD(lr, momentum=momentum),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )


def _distance_to_anchor(model, alpha, seed_value, cls=keras.Model):
    keras.utils.set_random_seed(seed_value)
    model = _model(cls)
    state = apply_wpl(model, ["shared"], strength=alpha)
    state.assign_fisher([tf.ones_like(f) for f in state.fisher])
    _compile(model)
    x, y = _data(seed=1)
    y = 1 - y  # a different task pulls the shared layer away
    model.fit(x, y, epochs=3, batch_size=32, verbose=0)
    return sum(
        float(tf.reduce_sum(tf.square(v - a)))
        for v, a in zip(state.protected_variables, state.anchors)
    )


@pytest.mark.parametrize("cls", [keras.Model, WPLModel])
def test_fit_with_wpl_keeps_shared_weights_near_anchors(seed, cls):
    free = _distance_to_anchor(None, 0.0, seed, cls)
    held = _distance_to_anchor(None, 5.0, seed, cls)
    assert held < 0.5 * free


def test_plain_model_gets_regularizer_and_wpl_model_does_not(seed):
    plain = _model()
    apply_wpl(plain, ["shared"], strength=1.0)
    assert all(v.regularizer is not None for v in plain.get_layer("shared").trainable_weights)
    wpl_model = _model(WPLModel)
    apply_wpl(wpl_model, ["shared"], strength=1.0)
    assert all(v.regularizer is None for v in wpl_model.get_layer("shared").trainable_weights)


def test_fisher_update_uses_data_gradient_only(seed):
    model = _model(WPLModel)
    state = apply_wpl(model, ["shared"], strength=3.0, update_fisher=True, fisher_momentum=0.9)
    state.assign_fisher([tf.fill(f.shape, 0.5) for f in state.fisher])
    # Move the weights off their anchors so that the penalty has a gradient.
    for v in state.protected_variables:
        v.assign(v + 0.1)
    x, y = _data(32)
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    with tf.GradientTape() as tape:
        data_loss = loss_fn(y, model(x, training=True))
    g_data = tape.gradient(data_loss, list(state.protected_variables))
    want = [0.1 * 0.5 + 0.9 * tf.square(g) for g in g_data]
    _compile(model, lr=0.0)
    history = model.fit(x, y, batch_size=32, epochs=1, verbose=0, shuffle=False)
    for f, w in zip(state.fisher, want):
        np.testing.assert_allclose(f.numpy(), w.numpy(), rtol=1e-4, atol=1e-7)
    for key in ("wpl_strength", "wpl_penalty", "wpl_fisher_norm"):
        assert key in history.history
    assert history.history["wpl_strength"][0] == pytest.approx(3.0)


def test_proximal_mode_is_stable_where_gradient_mode_diverges(seed):
    x, y = _data(256)
    y = 1 - y

    def run(mode):
        keras.utils.set_random_seed(7)
        model = _model(WPLModel)
        state = apply_wpl(model, ["shared"], strength=1e5, mode=mode)
        state.assign_fisher([tf.ones_like(f) for f in state.fisher])
        for v in state.protected_variables:
            v.assign(v + 0.05)
        _compile(model, lr=0.1, momentum=0.9)
        model.fit(x, y, epochs=2, batch_size=32, verbose=0, callbacks=[DivergenceGuard(state)])
        return state

    with pytest.raises(WPLDivergenceError, match=r"alpha=100000.*learning rate=0\.1"):
        run("gradient")
    state = run("proximal")
    for v, a in zip(state.protected_variables, state.anchors):
        assert np.all(np.isfinite(v.numpy()))
        np.testing.assert_allclose(v.numpy(), a.numpy(), atol=1e-3)


def test_save_and_load_weights_keep_wpl_state(tmp_path, seed):
    model = _model(WPLModel)
    state = apply_wpl(model, ["shared"], strength=2.5)
    state.assign_fisher([tf.random.uniform(f.shape) for f in state.fisher])
    path = str(tmp_path / "model.weights.h5")
    model.save_weights(path)
    clone = _model(WPLModel)
    clone_state = apply_wpl(clone, ["shared"], strength=0.0)
    clone.load_weights(path)
    for a, b in zip(state.weights, clone_state.weights):
        np.testing.assert_allclose(a.numpy(), b.numpy())
    ckpt_path = tf.train.Checkpoint(model=model.wpl_state).save(str(tmp_path / "ck"))
    other = apply_wpl(_model(WPLModel), ["shared"])
    tf.train.Checkpoint(model=other).restore(ckpt_path).assert_consumed()
    np.testing.assert_allclose(other.fisher[0].numpy(), state.fisher[0].numpy())


def test_apply_wpl_bad_inputs(seed):
    model = _model()
    with pytest.raises(ValueError, match="no layer named 'nope'"):
        apply_wpl(model, ["nope"])
    with pytest.raises(ValueError, match="need the WPL train step"):
        apply_wpl(model, ["shared"], update_fisher=True)
    with pytest.raises(ValueError, match="mode must be one of"):
        apply_wpl(model, ["shared"], mode="magic")
    with pytest.raises(ValueError, match="strength=inf needs mode='proximal'"):
        apply_wpl(model, ["shared"], strength=float("inf"))
    reg_model = _model()
    reg_model.get_layer("shared").kernel.regularizer = keras.regularizers.L2(0.1)
    with pytest.raises(ValueError, match="already has regularizer"):
        apply_wpl(reg_model, ["shared"])


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(strength=-1.0), ValueError, r"strength \(α\) must be a number >= 0 \(inf allowed\), got -1.0"),
    (dict(strength=np.float32(-1)), ValueError, r"strength \(α\) .*got np.float32\(-1.0\)"),
    (dict(strength=np.float32("nan")), ValueError, r"strength \(α\) .*got NaN"),
    (dict(strength=tf.constant(-2.0)), ValueError, r"strength \(α\)"),
    (dict(strength=np.float64("-inf")), ValueError, r"strength \(α\)"),
    (dict(strength="strong"), TypeError, r"strength \(α\) .*got 'strong' \(a string"),
    (dict(strength=None), TypeError, r"strength \(α\)"),
    (dict(strength=True), TypeError, r"strength \(α\) .*a bool"),
    (dict(strength=np.array([1.0, 2.0])), TypeError, r"strength \(α\) .*one number"),
    (dict(strength=keras.KerasTensor(())), TypeError, r"strength \(α\) .*no concrete value"),
    (dict(l2=np.float32(-0.1)), ValueError, r"l2 \(λ\) must be a finite number >= 0"),
    (dict(l2="0"), TypeError, r"l2 \(λ\)"),
    (dict(l2=float("inf")), ValueError, r"l2 \(λ\)"),
    (dict(fisher_momentum=np.float32(0.0)), ValueError, r"fisher_momentum \(η_F\) .*\(0, 1\]"),
    (dict(fisher_momentum="0.9"), TypeError, r"fisher_momentum \(η_F\)"),
    (dict(momentum=2), ValueError, r"fisher_momentum \(η_F\)"),
    (dict(clip_norm=np.float32(0)), ValueError, r"clip_norm must be a finite number > 0 or None"),
    (dict(clip_norm=float("nan")), ValueError, "clip_norm"),
    (dict(clip_norm=[10.0]), TypeError, "clip_norm"),
])
def test_apply_wpl_refuses_bad_numbers_naming_argument_value_and_range(kwargs, error, match):
    with pytest.raises(error, match=f"apply_wpl: {match}"):
        apply_wpl(_model(), ["shared"], **kwargs)


@pytest.mark.parametrize("kind", [float, np.float32, np.float64, np.array, tf.constant,
                                  keras.ops.convert_to_tensor, tf.Variable, keras.Variable])
def test_apply_wpl_takes_numpy_and_tensor_scalars(kind):
    model = _model(WPLModel)
    state = apply_wpl(model, ["shared"], strength=kind(2.0), l2=kind(0.5),
                      fisher_momentum=kind(0.5), clip_norm=kind(3.0))
    assert float(state.strength.numpy()) == 2.0
    assert (state.fisher_momentum, state.clip_norm, model.wpl_l2) == (0.5, 3.0, 0.5)
    assert type(model.wpl_l2) is float
    inf = apply_wpl(_model(WPLModel), ["shared"], strength=kind(float("inf")), mode="proximal")
    assert float(inf.strength.numpy()) == float("inf")


MIRRORED_SCRIPT = textwrap.dedent(
    """
    import json, os, sys
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
    import numpy as np, tensorflow as tf, keras
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration(), tf.config.LogicalDeviceConfiguration()])
    from wpl_keras.wpl import WPLModel, apply_wpl

    def run(strategy, mode, depth):
        # depth 9: 18 shared weights, so the one-device step lays them end to end
        # (wpl_keras.wpl.flat) while each of two replicas pulls them one by one.
        keras.utils.set_random_seed(3)
        with strategy.scope():
            inputs = keras.Input((6,))
            h = keras.layers.Dense(8, activation="relu", name="shared")(inputs)
            for k in range(1, depth):
                h = keras.layers.Dense(8, activation="relu", name=f"shared{k}")(h)
            model = WPLModel(inputs, keras.layers.Dense(2)(h))
            names = ["shared"] + [f"shared{k}" for k in range(1, depth)]
            state = apply_wpl(model, names, strength=4.0, update_fisher=True, mode=mode)
            state.assign_fisher([tf.fill(f.shape, 0.3) for f in state.fisher])
            model.compile(optimizer=keras.optimizers.SGD(0.1, momentum=0.9),
                          loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        rng = np.random.default_rng(0)
        x = rng.normal(size=(64, 6)).astype("float32")
        y = (x[:, 0] > 0).astype("int32")
        ds = tf.data.Dataset.from_tensor_slices((x, 1 - y)).batch(16)
        h = model.fit(ds, epochs=3, verbose=0)
        return {"loss": h.history["loss"], "penalty": h.history["wpl_penalty"],
                "fisher": float(state.fisher_norm()),
                "kernel": model.get_layer("shared").kernel.numpy().ravel().tolist()}

    devices = [d.name for d in tf.config.list_logical_devices("CPU")]
    depth = int(sys.argv[1])  # one depth per process: TensorFlow's collective instances
    out = {}                  # are not told apart across strategies of other shapes
    for mode in ("gradient", "proximal"):
        out[f"{mode}-{depth}"] = {
            "one": run(tf.distribute.OneDeviceStrategy(devices[0]), mode, depth),
            "two": run(tf.distribute.MirroredStrategy(devices[:2]), mode, depth)}
    print(json.dumps(out))
    """
)


@pytest.mark.slow
def test_mirrored_strategy_on_two_logical_cpus_matches_one_device(tmp_path):
    script = tmp_path / "mirrored.py"
    script.write_text(MIRRORED_SCRIPT)
    env = dict(os.environ, PYTHONPATH=os.getcwd())
    procs = [subprocess.Popen([sys.executable, str(script), str(depth)], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, env=env) for depth in (1, 9)]
    out = {}
    for proc in procs:
        stdout, stderr = proc.communicate(timeout=300)
        assert proc.returncode == 0, stderr[-3000:]
        out.update(json.loads(stdout.strip().splitlines()[-1]))
    assert len(out) == 4
    for mode, runs in out.items():
        one, two = runs["one"], runs["two"]
        np.testing.assert_allclose(one["loss"], two["loss"], rtol=1e-4, err_msg=mode)
        np.testing.assert_allclose(one["penalty"], two["penalty"], rtol=1e-3, atol=1e-6, err_msg=mode)
        np.testing.assert_allclose(one["fisher"], two["fisher"], rtol=1e-4, err_msg=mode)
        np.testing.assert_allclose(one["kernel"], two["kernel"], rtol=1e-4, atol=1e-6, err_msg=mode)


def test_loss_tracker_adapter_finds_the_metric_fit_reports_as_loss(seed):
    # training._loss_tracker relies on Keras listing its loss tracker in `model.metrics` under
    # the name "loss" once compiled: this pins that behaviour.
    from wpl_keras.wpl.training import _loss_tracker

    model = _model(WPLModel)
    with pytest.raises(RuntimeError, match="compile it with a loss"):
        _loss_tracker(model)
    model.compile(optimizer="sgd", loss="mse", metrics=["mae"])
    tracker = _loss_tracker(model)
    assert tracker.name == "loss" and tracker in model.metrics
    tracker.update_state(3.0)
    assert float(tracker.result()) == pytest.approx(3.0)


def test_wpl_package_uses_no_private_keras():
    import pathlib

    import wpl_keras.wpl as package

    for path in pathlib.Path(package.__file__).parent.glob("*.py"):
        text = path.read_text()
        assert "keras.src" not in text, path
        assert "_tracker" not in text.replace("_loss_tracker", ""), path


def test_logged_loss_and_penalty_match_the_formula(seed):
    model = _model(WPLModel)
    state = apply_wpl(model, ["shared"], strength=2.0, l2=0.1)
    state.assign_fisher([tf.fill(f.shape, 0.5) for f in state.fisher])
    for v in state.protected_variables:
        v.assign(v + 0.2)
    x, y = _data(32)
    _compile(model, lr=0.0)
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    data_loss = float(loss_fn(y, model(x)))
    sizes = sum(int(np.prod(v.shape)) for v in state.protected_variables)
    squares = sum(float(tf.reduce_sum(tf.square(v))) for v in state.protected_variables)
    want_penalty = 0.5 * 2.0 * 0.5 * 0.04 * sizes + 0.5 * 0.1 * squares
    assert float(model.compute_loss(x, y, model(x), training=True)) == pytest.approx(
        data_loss + want_penalty, rel=1e-5)
    assert float(model.compute_loss(x, y, model(x), training=False)) == pytest.approx(
        data_loss, rel=1e-5)
    history = model.fit(x, y, batch_size=32, epochs=1, verbose=0, shuffle=False)
    assert history.history["wpl_penalty"][0] == pytest.approx(want_penalty, rel=1e-5)
    assert history.history["loss"][0] == pytest.approx(data_loss + want_penalty, rel=1e-5)


def test_fisher_momentum_and_its_former_name(seed):
    assert apply_wpl(_model(WPLModel), ["shared"], fisher_momentum=0.3).fisher_momentum == 0.3
    state = apply_wpl(_model(WPLModel), ["shared"], momentum=0.4)
    assert state.fisher_momentum == 0.4 and state.momentum == 0.4
    with pytest.raises(ValueError, match="not both"):
        apply_wpl(_model(WPLModel), ["shared"], fisher_momentum=0.3, momentum=0.4)


@pytest.mark.parametrize("mode", ["gradient", "proximal"])
def test_loss_scale_optimizer_gives_the_same_step_and_fisher(seed, mode):
    x, y = _data(64)

    def run(wrap):
        keras.utils.set_random_seed(4)
        model = _model(WPLModel)
        state = apply_wpl(model, ["shared"], strength=5.0, update_fisher=True, mode=mode)
        state.assign_fisher([tf.fill(f.shape, 0.2) for f in state.fisher])
        for v in state.protected_variables:
            v.assign(v + 0.1)
        optimizer = keras.optimizers.SGD(0.1)
        if wrap:
            optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
        model.compile(optimizer=optimizer,
                      loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        history = model.fit(x, y, batch_size=16, epochs=1, verbose=0, shuffle=False)
        return model, state, history.history

    plain, plain_state, plain_logs = run(False)
    scaled, scaled_state, scaled_logs = run(True)
    for a, b in zip(plain.weights + plain_state.weights, scaled.weights + scaled_state.weights):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(plain_logs["wpl_penalty"], scaled_logs["wpl_penalty"], rtol=1e-5)


class _SeeLogs(keras.callbacks.Callback):
    """Records the logs every batch and epoch, and the model's wpl_logs() after each batch."""

    def __init__(self):
        super().__init__()
        self.batch, self.epoch, self.asked = [], [], []

    def on_train_batch_end(self, batch, logs=None):
        self.batch.append(dict(logs))
        self.asked.append(self.model.wpl_logs())

    def on_epoch_end(self, epoch, logs=None):
        self.epoch.append(dict(logs))


def _penalty_now(state, l2=0.0):
    squares = sum(float(tf.reduce_sum(tf.square(v))) for v in state.protected_variables)
    return float(state.penalty()) + 0.5 * l2 * squares


@pytest.mark.parametrize("mode", ["gradient", "proximal"])
def test_wpl_values_reach_epoch_logs_before_other_callbacks(seed, mode):
    model = _model(WPLModel)
    state = apply_wpl(model, ["shared"], strength=2.0, update_fisher=True, mode=mode, l2=0.1)
    state.assign_fisher([tf.fill(f.shape, 0.25) for f in state.fisher])
    for v in state.protected_variables:
        v.assign(v + 0.3)
    _compile(model, lr=0.05)
    x, y = _data(64)
    seen = _SeeLogs()
    penalties = []

    class Before(keras.callbacks.Callback):  # P at the weights the next step starts from
        def on_train_batch_begin(self, batch, logs=None):
            penalties.append(_penalty_now(state, l2=0.1))

    history = model.fit(x, y, batch_size=16, epochs=2, verbose=0, shuffle=False,
                        callbacks=[Before(), seen])
    assert len(seen.epoch) == 2 and len(seen.batch) == 8
    for logs, epoch_end in zip(seen.epoch, (3, 7)):
        # a callback listed by the user already sees the values of the epoch that ended
        assert logs["wpl_strength"] == pytest.approx(2.0)
        assert logs["wpl_penalty"] == pytest.approx(penalties[epoch_end], rel=1e-5)
        assert logs["wpl_penalty"] == pytest.approx(seen.asked[epoch_end]["wpl_penalty"])
    assert seen.epoch[-1]["wpl_fisher_norm"] == pytest.approx(float(state.fisher_norm()))
    assert history.history["wpl_penalty"] == [e["wpl_penalty"] for e in seen.epoch]
    # per batch: only the compiled loss; the values are there on request
    assert all(set(b) == {"loss"} for b in seen.batch)
    for asked, before in zip(seen.asked, penalties):  # P of the step that just ended
        assert asked["wpl_penalty"] == pytest.approx(before, rel=1e-5)


def test_wpl_logs_with_positional_callbacks_and_callback_list(seed):
    model = _model(WPLModel)
    state = apply_wpl(model, ["shared"], strength=3.0, update_fisher=True)
    _compile(model)
    x, y = _data(32)
    seen = _SeeLogs()
    # fit(x, y, batch_size, epochs, verbose, callbacks): callbacks given positionally
    history = model.fit(x, y, 16, 1, 0, [seen], shuffle=False)
    assert seen.epoch[0]["wpl_strength"] == pytest.approx(3.0)
    assert history.history["wpl_fisher_norm"][0] == pytest.approx(float(state.fisher_norm()))
    listed = _SeeLogs()
    callbacks = keras.callbacks.CallbackList([listed], model=model)
    model.fit(x, y, batch_size=16, epochs=1, verbose=0, callbacks=callbacks)
    model.fit(x, y, batch_size=16, epochs=1, verbose=0, callbacks=callbacks)  # no second logger
    assert len(callbacks.callbacks) == 2
    assert all("wpl_penalty" in e and "wpl_strength" in e for e in listed.epoch)


def test_model_without_wpl_state_fits_and_logs_plainly(seed):
    model = _model(WPLModel)
    _compile(model)
    x, y = _data(32)
    history = model.fit(x, y, batch_size=16, epochs=1, verbose=0)
    assert model.wpl_logs() == {}
    assert set(history.history) == {"loss"}


def _hand_ema(model, state, x, y, batch, eta):
    """The plain EMA ``R ← (1 − η) R + η g²`` of the data gradients, batch by batch, at the
    model's fixed weights (lr 0), from R = 0."""
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    raw = [np.zeros(v.shape, np.float64) for v in state.protected_variables]
    for start in range(0, len(x), batch):
        with tf.GradientTape() as tape:
            loss = loss_fn(y[start:start + batch], model(x[start:start + batch], training=True))
        grads = tape.gradient(loss, list(state.protected_variables))
        raw = [(1 - eta) * r + eta * np.square(g.numpy().astype(np.float64))
               for r, g in zip(raw, grads)]
    return raw


@pytest.mark.parametrize("mode", ["gradient", "proximal"])
@pytest.mark.parametrize("normalization", ["tensor_norm", "mean"])
def test_normalised_fisher_from_the_train_step(seed, normalization, mode):
    clip = 2.5
    model = _model(WPLModel)
    state = apply_wpl(model, ["shared"], strength=3.0, update_fisher=True, mode=mode,
                      fisher_momentum=0.6, clip_norm=clip, fisher_normalization=normalization)
    assert state.fisher_normalization == normalization and len(state.fisher_raw) == 2
    x, y = _data(64)
    want_raw = _hand_ema(model, state, x, y, 16, 0.6)
    _compile(model, lr=0.0)
    history = model.fit(x, y, batch_size=16, epochs=1, verbose=0, shuffle=False)
    assert int(state.num_fisher_updates.numpy()) == 4
    for f, r, want in zip(state.fisher, state.fisher_raw, want_raw):
        f, r = f.numpy().astype(np.float64), r.numpy().astype(np.float64)
        assert np.max(want) > 0
        np.testing.assert_allclose(r, want, rtol=1e-4, atol=1e-9 * np.max(want))
        if normalization == "tensor_norm":
            assert np.linalg.norm(f) == pytest.approx(clip, rel=1e-5)
            np.testing.assert_allclose(f, clip * want / np.linalg.norm(want), rtol=1e-4,
                                       atol=1e-6)
        else:
            assert np.mean(f) == pytest.approx(1.0, rel=1e-5)
            np.testing.assert_allclose(f, want / np.mean(want), rtol=1e-4, atol=1e-6)
    total = np.sqrt(sum(np.sum(np.square(f.numpy())) for f in state.fisher))
    assert history.history["wpl_fisher_norm"][0] == pytest.approx(total, rel=1e-5)


def test_normalised_fisher_is_what_the_step_penalises(seed):
    """With lr 0 the weights stay off their anchors; the second epoch's logged penalty is
    (α/2) Σ F (θ − θ*)² with the normalised F of the first epoch's end, not the raw EMA."""
    model = _model(WPLModel)
    state = apply_wpl(model, ["shared"], strength=4.0, update_fisher=True, clip_norm=1.5,
                      fisher_normalization="tensor_norm")
    for v in state.protected_variables:
        v.assign(v + 0.3)
    x, y = _data(32)
    _compile(model, lr=0.0)
    model.fit(x, y, batch_size=32, epochs=1, verbose=0, shuffle=False)
    want = 0.5 * 4.0 * sum(float(np.sum(f.numpy() * 0.09)) for f in state.fisher)
    raw_penalty = 0.5 * 4.0 * sum(float(np.sum(r.numpy() * 0.09)) for r in state.fisher_raw)
    assert want != pytest.approx(raw_penalty, rel=1e-2)
    history = model.fit(x, y, batch_size=32, epochs=1, verbose=0, shuffle=False)
    assert history.history["wpl_penalty"][0] == pytest.approx(want, rel=1e-4)


def test_none_normalisation_keeps_the_clipped_ema_and_no_raw_state(seed):
    model = _model(WPLModel)
    state = apply_wpl(model, ["shared"], strength=1.0, update_fisher=True, clip_norm=1e-3)
    assert state.fisher_normalization == "none" and state.fisher_raw == []
    x, y = _data(32)
    _compile(model, lr=0.0)
    model.fit(x, y, batch_size=32, epochs=1, verbose=0, shuffle=False)
    for f in state.fisher:
        assert np.linalg.norm(f.numpy()) == pytest.approx(1e-3, rel=1e-4)
    assert model.get_config()["wpl"]["fisher_normalization"] == "none"


def test_fisher_normalisation_arguments(seed):
    with pytest.raises(ValueError, match="fisher_normalization must be one of"):
        apply_wpl(_model(WPLModel), ["shared"], fisher_normalization="max")
    with pytest.raises(ValueError, match="pass clip_norm"):
        apply_wpl(_model(WPLModel), ["shared"], fisher_normalization="tensor_norm")
    plain = _model()  # a plain model takes the mode too (its regularizers record it)
    assert apply_wpl(plain, ["shared"], fisher_normalization="mean").fisher_normalization == "mean"
    state = apply_wpl(_model(WPLModel), ["shared"], fisher_normalization="mean")
    assert state.clip_norm is None and state.fisher_normalization == "mean"
