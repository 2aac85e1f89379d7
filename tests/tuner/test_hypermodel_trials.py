"""Tests for the trials of a user's hypermodel on weights shared by key, with WPL."""

import copy

import keras
import keras_tuner
import numpy as np
import pytest

from wpl_keras.tuner.hypermodel_trials import HypermodelTrials, check_compiled, optimizer_slots
from wpl_keras.tuner.weight_bank import WeightKey, weight_key
from wpl_keras.wpl.config import WPLConfig

HIDDEN = WeightKey("hidden/kernel", (6, 4))


def build(hp):
    """A user's build: ``units`` changes the hidden layer's shape, ``lr`` the SGD rate."""
    model = keras.Sequential([keras.Input((6,))])
    model.add(keras.layers.Dense(hp.Choice("units", [4, 8]), activation="tanh", name="hidden"))
    model.add(keras.layers.Dense(2, name="head"))
    model.compile(optimizer=keras.optimizers.SGD(hp.Choice("lr", [0.1, 0.0]), momentum=0.9),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])
    return model


def hp_of(units=4, lr=0.1):
    hp = keras_tuner.HyperParameters()
    hp.Choice("units", [4, 8], default=units)
    hp.Choice("lr", [0.1, 0.0], default=lr)
    return hp


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(96, 6)).astype("float32")
    y = (x[:, 0] + x[:, 1] > 0).astype("int32")
    return (x, y), {"validation_data": (x[:32], y[:32]), "batch_size": 16}


def _trials(mode="gradient", steps=3):
    return HypermodelTrials(build, steps_per_trial=steps, wpl_config=WPLConfig(mode=mode))


def _run(trials, data, hp, *, active=False, strength=0.0, flush=False):
    args, kwargs = data
    return trials.run(hp, wpl_active=active, strength=strength, flush=flush, args=args,
                      kwargs=kwargs)


@pytest.mark.slow  # ~5 s of CPU
def test_a_trained_weight_and_its_slots_start_the_next_trial_with_the_same_key(data, seed):
    trials = _trials()
    first = _run(trials, data, hp_of(4, 0.1))
    assert first["shared_fraction"] == 0.0 and {"val_loss", "val_accuracy"} <= set(first)
    bank = trials.bank
    trained = bank.get("weight", HIDDEN).copy()
    momentum = bank.get("slot/momentum", HIDDEN).copy()
    assert np.abs(momentum).max() > 0 and bank.counters["optimizer_iterations"] == 3
    # lr 0: SGD's m <- 0.9 m - 0 g, θ <- θ + m, from the shared m and θ: after 3 steps
    # m = 0.9³ m0 and θ = θ0 + (0.9 + 0.9² + 0.9³) m0 (fresh values would give other numbers).
    second = _run(trials, data, hp_of(4, 0.0))
    assert second["shared_fraction"] == 1.0
    np.testing.assert_allclose(bank.get("slot/momentum", HIDDEN), 0.9**3 * momentum, rtol=1e-5)
    np.testing.assert_allclose(bank.get("weight", HIDDEN),
                               trained + (0.9 + 0.9**2 + 0.9**3) * momentum, rtol=1e-5,
                               atol=1e-6)
    assert bank.counters["optimizer_iterations"] == 6  # the iteration count is shared too
    loaded = trials.load_model(hp_of(4, 0.1))
    np.testing.assert_array_equal(loaded.get_layer("hidden").kernel.numpy(),
                                  bank.get("weight", HIDDEN))


def test_another_shape_is_a_fresh_weight_and_unused_keys_keep_their_values(data, seed):
    trials = _trials()
    _run(trials, data, hp_of(4), active=True, strength=1.0)
    bank = trials.bank
    before = {item: value.copy() for item, value in bank.values.items()}
    with pytest.warns(UserWarning, match="'hidden/kernel' has shape \\[6, 8\\]"):
        metrics = _run(trials, data, hp_of(8), active=True, strength=1.0)
    assert metrics["shared_fraction"] == 0.25  # head/bias only: (2,) in both
    wide = WeightKey("hidden/kernel", (6, 8))
    assert bank.get("weight", wide) is not None and bank.get("fisher", wide).max() > 0
    for kind in ("weight", "fisher", "anchor", "slot/momentum"):
        np.testing.assert_array_equal(bank.get(kind, HIDDEN), before[(kind, HIDDEN)])
    head_bias = WeightKey("head/bias", (2,))
    assert not np.array_equal(bank.get("weight", head_bias), before[("weight", head_bias)])


@pytest.mark.slow  # ~5 s of CPU
def test_a_model_without_an_input_is_built_on_a_batch_and_shares_its_weights(data):
    def lazy(hp):
        model = keras.Sequential([keras.layers.Dense(4, name="hidden"),
                                  keras.layers.Dense(2, name="head")])
        model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
        return model

    trials = HypermodelTrials(lazy, steps_per_trial=1, wpl_config=WPLConfig())
    assert _run(trials, data, hp_of())["shared_fraction"] == 0.0
    assert _run(trials, data, hp_of())["shared_fraction"] == 1.0
    np.testing.assert_array_equal(trials.load_model(hp_of()).get_layer("hidden").kernel.numpy(),
                                  trials.bank.get("weight", HIDDEN))


@pytest.mark.slow
def test_fisher_and_anchors_per_key_follow_the_trials(data, seed):
    trials = _trials()
    off = _run(trials, data, hp_of(4))
    bank = trials.bank
    assert off["wpl_penalty"] == 0.0 and bank.get("fisher", HIDDEN).max() == 0.0
    np.testing.assert_array_equal(bank.get("anchor", HIDDEN), bank.get("weight", HIDDEN))
    on = _run(trials, data, hp_of(4), active=True, strength=5.0)
    fisher = bank.get("fisher", HIDDEN).copy()
    assert on["wpl_penalty"] == 0.0 and fisher.max() > 0  # F was 0 during this trial
    np.testing.assert_array_equal(bank.get("anchor", HIDDEN), bank.get("weight", HIDDEN))
    anchor = bank.get("anchor", HIDDEN).copy()
    again = _run(trials, data, hp_of(4), active=True, strength=5.0)
    assert again["wpl_penalty"] > 0  # F > 0 and θ moved away from θ*
    new_fisher = bank.get("fisher", HIDDEN)
    assert not np.array_equal(new_fisher, fisher) and not np.array_equal(
        bank.get("anchor", HIDDEN), anchor)
    _run(trials, data, hp_of(4), flush=True)  # the flush zeroes every key's Fisher first
    assert bank.get("fisher", HIDDEN).max() == 0.0


def test_the_fisher_update_uses_the_configured_momentum(data):
    """F starts at 0, so one update gives F = η_F g² (g: the last step's data gradient, the
    same for both runs: same seed, same batches)."""
    fishers = []
    for momentum in (0.9, 0.3):
        keras.utils.set_random_seed(7)
        trials = HypermodelTrials(build, steps_per_trial=2,
                                  wpl_config=WPLConfig(fisher_momentum=momentum, clip_norm=None))
        _run(trials, data, hp_of(4), active=True, strength=1.0)
        fishers.append(trials.bank.get("fisher", HIDDEN))
    assert fishers[0].max() > 0
    np.testing.assert_allclose(fishers[1], fishers[0] * (0.3 / 0.9), rtol=1e-5, atol=1e-12)


@pytest.mark.slow  # ~5 s of CPU
def test_proximal_mode_holds_weights_with_fisher_at_their_anchors(data, seed):
    trials = _trials(mode="proximal")
    _run(trials, data, hp_of(4), active=True, strength=1.0)
    bank = trials.bank
    start = copy.deepcopy(bank.values)
    anchor, fisher = bank.get("anchor", HIDDEN).copy(), bank.get("fisher", HIDDEN)
    metrics = _run(trials, data, hp_of(4), active=True, strength=float("inf"))
    held = fisher > 0
    assert held.mean() > 0.5 and metrics["wpl_penalty"] == 0.0  # θ = θ* after every step
    np.testing.assert_array_equal(bank.get("weight", HIDDEN)[held], anchor[held])
    bank.values = start  # the same trial without WPL moves those weights
    _run(trials, data, hp_of(4), active=False)
    assert not np.allclose(bank.get("weight", HIDDEN)[held], anchor[held])


def test_optimizer_slots_map_to_their_weights_by_keras_slot_names():
    keras.backend.clear_session()
    model = build(hp_of(4))
    trainable = model.trainable_variables
    model.optimizer.build(trainable)
    keys = [weight_key(model, v) for v in trainable]
    slots = optimizer_slots(model.optimizer, trainable, keys)
    assert [(kind, key.path) for kind, key, _ in slots] == [
        ("slot/momentum", "hidden/kernel"), ("slot/momentum", "hidden/bias"),
        ("slot/momentum", "head/kernel"), ("slot/momentum", "head/bias")]


def test_bad_models_and_arguments_are_refused(data):
    plain = keras.Sequential([keras.Input((6,)), keras.layers.Dense(2)])
    with pytest.raises(keras_tuner.errors.FatalValueError, match="not compiled.*model.compile"):
        check_compiled(plain)
    with pytest.raises(keras_tuner.errors.FatalTypeError, match="must return a keras.Model"):
        check_compiled("model")
    for steps, error in ((0, ValueError), (2.5, TypeError)):
        with pytest.raises(error, match="steps_per_trial"):
            HypermodelTrials(build, steps_per_trial=steps, wpl_config=WPLConfig())
    with pytest.raises(ValueError, match="fisher_source='train'"):
        HypermodelTrials(build, steps_per_trial=1, wpl_config=WPLConfig(fisher_source="valid"))
    trials = _trials()
    (x, y), kwargs = data
    with pytest.raises(ValueError, match="unknown arguments \\['epochs'\\]"):
        trials.run(hp_of(), wpl_active=False, strength=0.0, flush=False, args=(x, y),
                   kwargs={**kwargs, "epochs": 2})
    with pytest.raises(ValueError, match="needs validation_data"):
        trials.run(hp_of(), wpl_active=False, strength=0.0, flush=False, args=(x, y),
                   kwargs={"batch_size": 16})


def test_a_loss_scale_optimizer_is_refused_by_name(data):
    def scaled(hp):
        model = build(hp)
        model.compile(optimizer=keras.optimizers.LossScaleOptimizer(keras.optimizers.SGD()),
                      loss="sparse_categorical_crossentropy")
        return model

    trials = HypermodelTrials(scaled, steps_per_trial=1, wpl_config=WPLConfig())
    with pytest.raises(keras_tuner.errors.FatalValueError, match="LossScaleOptimizer.*bfloat16"):
        _run(trials, data, hp_of())


def test_a_diverging_trial_fails_and_leaves_the_bank_untouched(data):
    trials = _trials()
    (x, y), kwargs = data
    bad = x.copy()
    bad[:, 0] = np.nan
    with pytest.raises(keras_tuner.errors.FailedTrialError, match="diverged.*nothing was written"):
        trials.run(hp_of(), wpl_active=False, strength=0.0, flush=False, args=(bad, y),
                   kwargs=kwargs)
    assert trials.bank.values == {}
