"""Saving and loading models trained with WPL: ``.keras`` round trips, weights files, export.

A round trip trains k steps, saves, loads and trains k more; weights, Fisher, anchors, α and
the logged penalty must equal k + k steps of the same model without saving (plain SGD, fixed
seeds, the same batches).
"""

import keras
import numpy as np
import pytest
import tensorflow as tf

from wpl_keras.wpl import (
    WeightPlasticity,
    WPLModel,
    WPLMonitor,
    WPLSequential,
    WPLTrainingMixin,
    apply_wpl,
    load_wpl_model,
    restore_wpl,
)

K = 3  # steps before and after saving
BATCH = 16


def _data(seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(2 * K * BATCH, 6)).astype("float32")
    y = (x[:, 0] - x[:, 2] > 0).astype("int32")
    return x, y


@keras.saving.register_keras_serializable(package="wpl_tests")
class TinyNet(WPLTrainingMixin, keras.Model):
    """A subclassed model with the WPL mixin."""

    def __init__(self, units=8, **kwargs):
        super().__init__(**kwargs)
        self.units = units
        self.shared = keras.layers.Dense(units, activation="relu", name="shared")
        self.middle = keras.layers.Dense(units, activation="tanh", name="middle")
        self.head = keras.layers.Dense(2, name="head")

    def call(self, x):
        return self.head(self.middle(self.shared(x)))

    def get_config(self):
        return {**super().get_config(), "units": self.units}


def _layers():
    return [keras.layers.Dense(8, activation="relu", name="shared"),
            keras.layers.Dense(8, activation="tanh", name="middle"),
            keras.layers.Dense(2, name="head")]


def _build(kind, seed=11):
    keras.utils.set_random_seed(seed)
    if kind in ("functional", "wpl_functional"):
        inputs = keras.Input((6,))
        h = inputs
        for layer in _layers():
            h = layer(h)
        return (WPLModel if kind == "wpl_functional" else keras.Model)(inputs, h)
    if kind in ("sequential", "wpl_sequential"):
        cls = WPLSequential if kind == "wpl_sequential" else keras.Sequential
        return cls([keras.Input((6,))] + _layers())
    model = TinyNet()
    model(np.zeros((1, 6), np.float32))
    return model


def _protect(model, **wpl):
    state = apply_wpl(model, ["shared", "middle"], **wpl)
    rng = np.random.default_rng(5)
    state.assign_fisher([rng.uniform(0.1, 1.0, size=f.shape).astype("float32")
                         for f in state.fisher])
    for v in state.protected_variables:  # off the anchors: the penalty and its pull act
        v.assign(v + 0.05)
    model.compile(optimizer=keras.optimizers.SGD(0.1),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return state


def _fit(model, x, y, part, callbacks=()):
    sl = slice(part * K * BATCH, (part + 1) * K * BATCH)
    callbacks = list(callbacks)
    if not isinstance(model, WPLTrainingMixin):
        callbacks.insert(0, WPLMonitor(model.wpl_state))
    history = model.fit(x[sl], y[sl], batch_size=BATCH, epochs=1, shuffle=False, verbose=0,
                        callbacks=callbacks)
    return history.history


def _state_arrays(model):
    return [w.numpy() for w in model.wpl_state.weights]


def _assert_same(a, b):
    for u, v in zip(a.weights, b.weights):
        np.testing.assert_allclose(u.numpy(), v.numpy(), rtol=1e-6, atol=1e-7, err_msg=u.path)
    for u, v in zip(_state_arrays(a), _state_arrays(b)):
        np.testing.assert_allclose(u, v, rtol=1e-6, atol=1e-7)


def _round_trip(tmp_path, kind, load=keras.models.load_model, **wpl):
    x, y = _data()
    reference = _build(kind)
    _protect(reference, **wpl)
    _fit(reference, x, y, 0)
    want = _fit(reference, x, y, 1)

    model = _build(kind)
    _protect(model, **wpl)
    _fit(model, x, y, 0)
    path = str(tmp_path / "m.keras")
    model.save(path)
    loaded = load(path)
    assert loaded.wpl_state is not None
    got = _fit(loaded, x, y, 1)
    _assert_same(reference, loaded)
    for key in ("loss", "wpl_penalty", "wpl_fisher_norm", "wpl_strength"):
        np.testing.assert_allclose(got[key], want[key], rtol=1e-6, err_msg=key)
    return loaded


@pytest.mark.parametrize(
    "wpl",
    [
        dict(mode="proximal", update_fisher=True, strength=30.0, fisher_momentum=0.7,
             clip_norm=0.5, l2=0.01),
        dict(mode="proximal", update_fisher=False, strength=1e4),
        dict(mode="gradient", update_fisher=True, strength=2.0, clip_norm=3.0),
        dict(mode="gradient", update_fisher=False, strength=4.0, l2=0.02),
        dict(mode="proximal", update_fisher=True, strength=30.0, fisher_momentum=0.7,
             clip_norm=0.5, fisher_normalization="tensor_norm"),
        dict(mode="gradient", update_fisher=True, strength=2.0, fisher_normalization="mean"),
    ],
    ids=["proximal-fisher-clip-l2", "proximal-strong", "gradient-fisher-clip", "gradient-l2",
         "proximal-tensor-norm", "gradient-mean"],
)
def test_wpl_model_round_trip_equals_uninterrupted_training(tmp_path, wpl):
    loaded = _round_trip(tmp_path, "wpl_functional", **wpl)
    state = loaded.wpl_state
    assert isinstance(loaded, WPLModel)
    assert loaded.wpl_step_config.mode == wpl["mode"]
    assert loaded.wpl_update_fisher == wpl["update_fisher"]
    assert loaded.wpl_l2 == pytest.approx(wpl.get("l2", 0.0))
    assert state.clip_norm == wpl.get("clip_norm")
    assert state.fisher_momentum == pytest.approx(wpl.get("fisher_momentum", 0.9))
    assert float(state.strength.numpy()) == pytest.approx(wpl["strength"])
    assert state.fisher_normalization == wpl.get("fisher_normalization", "none")
    assert len(state.fisher_raw) == (0 if state.fisher_normalization == "none" else 4)
    assert loaded.get_config()["wpl"]["fisher_normalization"] == state.fisher_normalization
    kernels = [loaded.get_layer(n).kernel for n in ("shared", "middle")]
    assert all(any(v is k for v in state.protected_variables) for k in kernels)
    assert len(state.protected_variables) == 4  # two kernels, two biases
    assert all(v.regularizer is None for v in loaded.weights)  # the train step, not a loss


@pytest.mark.parametrize("kind", ["wpl_sequential", "subclass"])
def test_other_wpl_model_kinds_round_trip(tmp_path, kind):
    loaded = _round_trip(tmp_path, kind, mode="proximal", update_fisher=True, strength=20.0,
                         clip_norm=1.0)
    assert isinstance(loaded, WPLTrainingMixin)
    assert loaded.wpl_step_config.mode == "proximal"


@pytest.mark.parametrize("kind", ["functional", "sequential"])
def test_plain_model_round_trip_restores_the_regularizer_binding(tmp_path, kind):
    loaded = _round_trip(tmp_path, kind, load=load_wpl_model, strength=5.0, l2=0.01,
                         fisher_momentum=0.8, clip_norm=2.0)
    regs = [v.regularizer for v in loaded.get_layer("shared").weights]
    assert all(isinstance(r, WeightPlasticity) and r.is_bound for r in regs)
    assert loaded.wpl_state.fisher_momentum == pytest.approx(0.8)
    assert loaded.wpl_state.clip_norm == 2.0
    assert loaded.get_layer("head").kernel.regularizer is None


def test_plain_model_loaded_without_restore_fails_loudly_not_silently(tmp_path):
    x, y = _data()
    model = _build("functional")
    _protect(model, strength=5.0)
    path = str(tmp_path / "plain.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    reg = loaded.get_layer("shared").kernel.regularizer
    assert isinstance(reg, WeightPlasticity) and reg.binding["index"] == 0 and not reg.is_bound
    np.testing.assert_allclose(loaded.predict(x, verbose=0), model.predict(x, verbose=0),
                               rtol=1e-6)
    with pytest.raises(ValueError, match="load_wpl_model"):
        loaded.fit(x, y, batch_size=BATCH, verbose=0)
    state = restore_wpl(loaded, path)
    for u, v in zip(model.wpl_state.weights, state.weights):
        np.testing.assert_allclose(u.numpy(), v.numpy())


def test_model_saved_before_training_loads_with_wpl(tmp_path):
    model = _build("wpl_functional")
    state = _protect(model, mode="proximal", update_fisher=True, strength=7.0)
    path = str(tmp_path / "fresh.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    for u, v in zip(state.weights, loaded.wpl_state.weights):
        np.testing.assert_allclose(u.numpy(), v.numpy())
    assert loaded.wpl_step_config.mode == "proximal"
    assert int(loaded.optimizer.iterations.numpy()) == 0


def test_uncompiled_model_without_wpl_still_saves_and_loads(tmp_path):
    model = _build("wpl_functional")
    path = str(tmp_path / "none.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    assert isinstance(loaded, WPLModel) and loaded.wpl_state is None
    assert "wpl" not in loaded.get_config()


def test_weights_file_into_fresh_model_with_apply_wpl_continues_identically(tmp_path):
    x, y = _data()
    wpl = dict(mode="gradient", update_fisher=True, strength=3.0)
    reference = _build("wpl_functional")
    _protect(reference, **wpl)
    _fit(reference, x, y, 0)
    want = _fit(reference, x, y, 1)
    model = _build("wpl_functional")
    _protect(model, **wpl)
    _fit(model, x, y, 0)
    path = str(tmp_path / "m.weights.h5")
    model.save_weights(path)
    fresh = _build("wpl_functional")
    _protect(fresh, **wpl)
    fresh.optimizer.build(fresh.trainable_variables)
    fresh.load_weights(path)
    got = _fit(fresh, x, y, 1)
    _assert_same(reference, fresh)
    np.testing.assert_allclose(got["wpl_penalty"], want["wpl_penalty"], rtol=1e-6)


def test_loading_into_a_model_without_the_protected_weight_names_it(tmp_path):
    model = _build("wpl_functional")
    _protect(model, strength=1.0)
    config = model.get_config()
    config["wpl"]["shared"][0] = {"path": "nope/kernel", "index": 999}
    with pytest.raises(ValueError, match="no weight 'nope/kernel'"):
        WPLModel.from_config(config)


@pytest.mark.parametrize("kind", ["functional", "sequential", "wpl_functional"])
def test_export_serves_inference_only(tmp_path, kind):
    """``model.export`` carries the model's weights and its forward pass, no WPL state."""
    x, y = _data()
    model = _build(kind)
    _protect(model, **_SETTINGS[kind])
    _fit(model, x, y, 0)
    export_dir = str(tmp_path / "exported")
    model.export(export_dir, verbose=False)
    served = tf.saved_model.load(export_dir)
    np.testing.assert_allclose(served.serve(x).numpy(), model.predict(x, verbose=0),
                               rtol=1e-5, atol=1e-6)
    assert not hasattr(served, "fit") and not hasattr(served, "wpl_state")
    assert sorted(tuple(v.shape) for v in served.variables) == sorted(
        tuple(w.shape) for w in model.weights)


@pytest.mark.parametrize("normalization", ["tensor_norm", "mean"])
@pytest.mark.parametrize("kind", ["wpl_sequential", "subclass"])
def test_normalised_fisher_round_trips_through_load_wpl_model(tmp_path, kind, normalization):
    """The raw EMA R and the normalised F come back from the file (``_round_trip`` compares
    every state weight and the next steps); after loading, F is still the normalised R."""
    loaded = _round_trip(tmp_path, kind, load=load_wpl_model, mode="gradient",
                         update_fisher=True, strength=3.0, clip_norm=2.0,
                         fisher_normalization=normalization)
    state = loaded.wpl_state
    assert state.fisher_normalization == normalization
    for f, r in zip(state.fisher, state.fisher_raw):
        f, r = f.numpy().astype(np.float64), r.numpy().astype(np.float64)
        want = r / np.mean(r) if normalization == "mean" else 2.0 * r / np.linalg.norm(r)
        np.testing.assert_allclose(f, want, rtol=1e-5, atol=1e-7)


def test_config_without_fisher_normalisation_loads_as_none(tmp_path):
    model = _build("wpl_functional")
    _protect(model, mode="gradient", update_fisher=True, strength=2.0)
    config = model.get_config()
    del config["wpl"]["fisher_normalization"]  # a file saved before the option existed
    clone = WPLModel.from_config(config)
    assert clone.wpl_state.fisher_normalization == "none" and clone.wpl_state.fisher_raw == []


@pytest.mark.parametrize("normalization", ["tensor_norm", "mean"])
@pytest.mark.parametrize("kind", ["functional", "sequential"])
def test_plain_model_keeps_its_fisher_normalisation_through_load_wpl_model(
        tmp_path, kind, normalization):
    """A plain model's WeightPlasticity bindings record the mode: load_wpl_model re-creates
    the state with it, R and F come back from the file, and training continues identically."""
    x, y = _data()
    model = _build(kind)
    state = _protect(model, strength=3.0, clip_norm=2.0, fisher_normalization=normalization)
    _fit(model, x, y, 0)
    path = str(tmp_path / "plain.keras")
    model.save(path)
    loaded = load_wpl_model(path)
    got = loaded.wpl_state
    assert got.fisher_normalization == normalization
    for u, v in zip(state.weights, got.weights):
        np.testing.assert_allclose(u.numpy(), v.numpy(), rtol=1e-7)
    for f, r in zip(got.fisher, got.fisher_raw):
        r = r.numpy().astype(np.float64)
        want = r / np.mean(r) if normalization == "mean" else 2.0 * r / np.linalg.norm(r)
        np.testing.assert_allclose(f.numpy(), want, rtol=1e-5)
    np.testing.assert_allclose(_fit(loaded, x, y, 1)["loss"], _fit(model, x, y, 1)["loss"],
                               rtol=1e-6)


# --------------------------------------------------------------------------------------
# Every way to save: the WPL state of plain and WPL models survives each one.

_SHARED = ["shared", "middle"]
_SETTINGS = {  # plain models: regularizers (gradient mode); WPLModel: its train step
    "functional": dict(strength=5.0, l2=0.01, fisher_momentum=0.8, clip_norm=2.0,
                       fisher_normalization="mean"),
    "sequential": dict(strength=5.0, l2=0.01, fisher_momentum=0.8, clip_norm=2.0,
                       fisher_normalization="mean"),
    "wpl_functional": dict(mode="proximal", update_fisher=True, strength=30.0, clip_norm=0.5,
                           fisher_normalization="tensor_norm"),
}
_SETTINGS["subclass"] = _SETTINGS["wpl_functional"]  # TinyNet: a subclassed WPL model
_REFERENCES = {}


def _reference(kind):
    """Weights, WPL state and part-2 history of 2 × K uninterrupted steps (cached per kind)."""
    if kind not in _REFERENCES:
        x, y = _data()
        model = _build(kind)
        _protect(model, **_SETTINGS[kind])
        _fit(model, x, y, 0)
        history = _fit(model, x, y, 1)
        _REFERENCES[kind] = ([w.numpy() for w in model.weights], _state_arrays(model), history)
    return _REFERENCES[kind]


def _fresh(kind, saved_state, apply=True):
    """Another model of ``kind`` (other initial weights), protected by a fresh apply_wpl with
    another α, so its Fisher, anchors, α and update count all differ from ``saved_state``."""
    model = _build(kind, seed=12)
    if apply:
        apply_wpl(model, _SHARED, **{**_SETTINGS[kind], "strength": 0.5})
        for got, want in zip(_state_arrays(model), saved_state):
            assert not np.any(want != 0) or not np.allclose(got, want)  # all but zero biases
    model.compile(optimizer=keras.optimizers.SGD(0.1),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return model


def _load_weights(kind, path, saved):
    model = _fresh(kind, saved)
    model.optimizer.build(model.trainable_variables)
    model.load_weights(path)
    return model


def _restore_checkpoint(kind, path, saved):
    model = _fresh(kind, saved)
    tf.train.Checkpoint(model=model, optimizer=model.optimizer).read(path).assert_consumed()
    return model


def _restore_before_apply_wpl(kind, path, saved):
    """Deferred restoration: the state is filled when apply_wpl attaches it."""
    model = _build(kind, seed=12)
    status = tf.train.Checkpoint(model=model).read(path)
    state = apply_wpl(model, _SHARED, **{**_SETTINGS[kind], "strength": 0.5})
    for got, want in zip(_state_arrays(model), saved):
        np.testing.assert_array_equal(got, want)
    assert state is model.wpl_state
    model.compile(optimizer=keras.optimizers.SGD(0.1),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    status.assert_consumed()  # the optimizer (model.optimizer) too, once compile made it
    return model


def _checkpoint_manager(model, tmp_path):
    return tf.train.CheckpointManager(
        tf.train.Checkpoint(model=model, optimizer=model.optimizer), str(tmp_path / "mgr"),
        max_to_keep=2)


def _restore_from_manager(kind, tmp_path, saved):
    model = _fresh(kind, saved)
    manager = _checkpoint_manager(model, tmp_path)
    manager.checkpoint.restore(manager.latest_checkpoint).assert_consumed()
    return model


# way: (callbacks for the first fit, save after it, load into a new model)
_WAYS = {
    "save_weights": (
        lambda tmp: [], lambda m, tmp: m.save_weights(str(tmp / "m.weights.h5")),
        lambda kind, tmp, saved: _load_weights(kind, str(tmp / "m.weights.h5"), saved)),
    "checkpoint": (
        lambda tmp: [],
        lambda m, tmp: tf.train.Checkpoint(model=m, optimizer=m.optimizer).write(
            str(tmp / "ckpt")),
        lambda kind, tmp, saved: _restore_checkpoint(kind, str(tmp / "ckpt"), saved)),
    "checkpoint_before_apply_wpl": (
        lambda tmp: [], lambda m, tmp: tf.train.Checkpoint(model=m).write(str(tmp / "ckpt")),
        lambda kind, tmp, saved: _restore_before_apply_wpl(kind, str(tmp / "ckpt"), saved)),
    "checkpoint_manager": (
        lambda tmp: [], lambda m, tmp: _checkpoint_manager(m, tmp).save(),
        _restore_from_manager),
    "model_checkpoint_weights": (
        lambda tmp: [keras.callbacks.ModelCheckpoint(str(tmp / "mc.weights.h5"),
                                                     save_weights_only=True)],
        lambda m, tmp: None,
        lambda kind, tmp, saved: _load_weights(kind, str(tmp / "mc.weights.h5"), saved)),
    "model_checkpoint_keras": (
        lambda tmp: [keras.callbacks.ModelCheckpoint(str(tmp / "mc.keras"))],
        lambda m, tmp: None,
        lambda kind, tmp, saved: load_wpl_model(str(tmp / "mc.keras"))),
}


@pytest.mark.parametrize(
    "kind,way",
    [(kind, way) for kind in ("functional", "sequential", "wpl_functional") for way in _WAYS]
    + [("subclass", "checkpoint"), ("subclass", "checkpoint_before_apply_wpl")])
def test_every_way_to_save_keeps_the_wpl_state(tmp_path, kind, way):
    """Train K steps, save, restore into a model with another α, Fisher and anchors: the
    Fisher (and raw EMA), anchors, α and update count are the saved ones, and K more steps
    equal 2 K steps without the save (weights, state and logged loss)."""
    callbacks, save, load = _WAYS[way]
    x, y = _data()
    model = _build(kind)
    _protect(model, **_SETTINGS[kind])
    _fit(model, x, y, 0, callbacks=callbacks(tmp_path))
    save(model, tmp_path)
    saved = _state_arrays(model)
    assert float(model.wpl_state.fisher_norm().numpy()) > 0
    restored = load(kind, tmp_path, saved)
    state = restored.wpl_state
    for got, want in zip(_state_arrays(restored), saved):
        np.testing.assert_array_equal(got, want)
    assert float(state.strength.numpy()) == _SETTINGS[kind]["strength"]
    assert state.fisher_normalization == _SETTINGS[kind]["fisher_normalization"]
    got = _fit(restored, x, y, 1)
    weights, state_arrays, want = _reference(kind)
    for u, v in zip([w.numpy() for w in restored.weights] + _state_arrays(restored),
                    weights + state_arrays):
        np.testing.assert_allclose(u, v, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(got["loss"], want["loss"], rtol=1e-6)


class _StopAfterEpoch(keras.callbacks.Callback):
    """Simulates a crash: raises at the end of epoch ``epoch`` (after earlier callbacks)."""

    def __init__(self, epoch):
        super().__init__()
        self.epoch = epoch

    def on_epoch_end(self, epoch, logs=None):
        if epoch == self.epoch:
            raise KeyboardInterrupt(f"stopped after epoch {epoch}")


@pytest.mark.parametrize("kind", ["functional", "sequential", "wpl_functional"])
def test_backup_and_restore_resumes_with_the_wpl_state(tmp_path, kind):
    """fit(epochs=2) with BackupAndRestore, interrupted after epoch 0 and resumed in a new
    model (other α, Fisher, anchors), ends where an uninterrupted fit(epochs=2) ends."""
    x, y = _data()
    data = dict(x=x[: K * BATCH], y=y[: K * BATCH], batch_size=BATCH, epochs=2,
                shuffle=False, verbose=0)
    reference = _build(kind)
    _protect(reference, **_SETTINGS[kind])
    reference.fit(**data)
    model = _build(kind)
    _protect(model, **_SETTINGS[kind])
    backup = str(tmp_path / "backup")
    with pytest.raises(KeyboardInterrupt):
        model.fit(**data, callbacks=[keras.callbacks.BackupAndRestore(backup),
                                     _StopAfterEpoch(0)])
    resumed = _fresh(kind, _state_arrays(model))
    history = resumed.fit(**data, callbacks=[keras.callbacks.BackupAndRestore(backup)])
    assert len(history.history["loss"]) == 1  # only epoch 1 ran
    assert float(resumed.wpl_state.strength.numpy()) == _SETTINGS[kind]["strength"]
    _assert_same(reference, resumed)


@pytest.mark.parametrize("kind", ["functional", "wpl_functional"])
def test_loading_a_state_of_another_layout_names_the_fix(tmp_path, kind):
    """A file or checkpoint saved with one Fisher normalisation does not load into a state
    with another (the raw EMA and the meaning of F differ), by any way; the error names the
    saved setting and apply_wpl."""
    model = _build(kind)
    _protect(model, **{**_SETTINGS[kind], "fisher_normalization": "mean"})
    model.save_weights(str(tmp_path / "m.weights.h5"))
    path = tf.train.Checkpoint(model=model).write(str(tmp_path / "ckpt"))
    other = {**_SETTINGS[kind], "fisher_normalization": "tensor_norm"}
    match = "saved with fisher_normalization='mean'.*apply_wpl"
    fresh = _build(kind, seed=12)
    apply_wpl(fresh, _SHARED, **other)
    with pytest.raises(ValueError, match=match):
        fresh.load_weights(str(tmp_path / "m.weights.h5"))
    with pytest.raises(ValueError, match=match):
        tf.train.Checkpoint(model=fresh).read(path)
    deferred = _build(kind, seed=12)
    tf.train.Checkpoint(model=deferred).read(path)
    with pytest.raises(ValueError, match=match):
        apply_wpl(deferred, _SHARED, **other)
    with pytest.raises(ValueError, match="4 protected weights.*2 weights"):
        fewer = _build(kind, seed=12)
        apply_wpl(fewer, ["shared"], **{**_SETTINGS[kind], "fisher_normalization": "mean"})
        fewer.load_weights(str(tmp_path / "m.weights.h5"))


def test_weights_without_wpl_state_refuse_to_load_into_a_protected_model(tmp_path):
    model = _build("functional")
    model.save_weights(str(tmp_path / "plain.weights.h5"))
    fresh = _build("functional", seed=12)
    apply_wpl(fresh, _SHARED, strength=1.0)
    with pytest.raises(ValueError, match="holds no WPL state.*before calling apply_wpl"):
        fresh.load_weights(str(tmp_path / "plain.weights.h5"))
