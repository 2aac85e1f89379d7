"""Tests for the mapping from KerasTuner hyperparameters to controller decisions."""

import keras_tuner
import numpy as np
import pytest

from wpl_keras.tuner.hyperparameter_decisions import (
    DecisionOptions,
    active_mask,
    decisions_from_hyperparameters,
    hyperparameter_values,
    indices_to_values,
    values_to_indices,
)


def _one(declare, options=DecisionOptions()):
    hp = keras_tuner.HyperParameters()
    declare(hp)
    (decision,) = decisions_from_hyperparameters(hp, options)
    return decision


@pytest.mark.parametrize("declare, kind, values", [
    (lambda hp: hp.Choice("act", ["relu", "tanh", "gelu"]), "Choice", ("relu", "tanh", "gelu")),
    (lambda hp: hp.Choice("units", [64, 16, 32]), "Choice", (64, 16, 32)),
    (lambda hp: hp.Boolean("bn"), "Boolean", (False, True)),
    (lambda hp: hp.Fixed("depth", 3), "Fixed", (3,)),
    (lambda hp: hp.Int("layers", 1, 4), "Int", (1, 2, 3, 4)),
    (lambda hp: hp.Int("filters", 16, 70, step=16), "Int", (16, 32, 48, 64)),
    (lambda hp: hp.Int("batch", 2, 32, step=2, sampling="log"), "Int", (2, 4, 8, 16, 32)),
    (lambda hp: hp.Int("k", 3, 6, sampling="log"), "Int", (3, 4, 5, 6)),
    (lambda hp: hp.Float("drop", 0.0, 0.5, step=0.25), "Float", (0.0, 0.25, 0.5)),
    (lambda hp: hp.Float("lr", 1e-4, 1e-1, step=10, sampling="log"), "Float",
     (1e-4, 1e-3, 1e-2, 1e-1)),
])
def test_every_kind_becomes_a_finite_decision(declare, kind, values):
    decision = _one(declare)
    assert decision.kind == kind and decision.size == len(values)
    if kind == "Float":
        np.testing.assert_allclose(decision.values, values, rtol=1e-12)
    else:
        assert decision.values == values
        assert [type(v) for v in decision.values] == [type(v) for v in values]
    assert decision.conditions == ()


def test_step_less_float_is_refused_naming_it_and_the_fix():
    with pytest.raises(ValueError, match=r"Float hyperparameter 'lr' has no step.*step=.*"
                                         r"float_bins=\{'lr': n\}"):
        _one(lambda hp: hp.Float("lr", 1e-4, 1e-1, sampling="log"))


@pytest.mark.parametrize("bins", [4, {"lr": 4}])
def test_float_bins_split_the_range_along_its_sampling(bins):
    decision = _one(lambda hp: hp.Float("lr", 1e-4, 1e-1, sampling="log"),
                    DecisionOptions(float_bins=bins))
    np.testing.assert_allclose(decision.values, [1e-4, 1e-3, 1e-2, 1e-1], rtol=1e-9)
    linear = _one(lambda hp: hp.Float("lr", 0.0, 1.0), DecisionOptions(float_bins=bins)
                  if isinstance(bins, int) else DecisionOptions(float_bins={"lr": 5}))
    assert linear.values[0] == 0.0 and linear.values[-1] == 1.0
    assert np.allclose(np.diff(linear.values), linear.values[1])


def test_bins_for_another_name_still_refuse():
    with pytest.raises(ValueError, match="'wd' has no step"):
        _one(lambda hp: hp.Float("wd", 0.0, 1.0), DecisionOptions(float_bins={"lr": 3}))


def test_large_int_grid_is_refused_with_the_fix_and_small_limit_is_an_option():
    with pytest.raises(ValueError, match=r"'units' has 113 values.*max_int_values=100.*larger "
                                         r"step"):
        _one(lambda hp: hp.Int("units", 16, 128))
    decision = _one(lambda hp: hp.Int("units", 16, 128), DecisionOptions(max_int_values=200))
    assert decision.size == 113
    with pytest.raises(ValueError, match="max_int_values=2"):
        _one(lambda hp: hp.Int("layers", 1, 3), DecisionOptions(max_int_values=2))


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(float_bins=1), ValueError, "float_bins"),
    (dict(float_bins={"lr": 1.5}), TypeError, r"float_bins\['lr'\]"),
    (dict(max_int_values=0), ValueError, "max_int_values"),
])
def test_bad_options_name_the_field(kwargs, error, match):
    with pytest.raises(error, match=match):
        DecisionOptions(**kwargs)


def test_unknown_kind_is_a_type_error():
    class Odd(keras_tuner.engine.hyperparameters.Fixed):
        pass

    with pytest.raises(TypeError, match="'x' is a Odd"):
        hyperparameter_values(Odd("x", 1))


def _conditional_space():
    hp = keras_tuner.HyperParameters()
    hp.Choice("model", ["mlp", "cnn"])
    with hp.conditional_scope("model", ["mlp"]):
        hp.Int("units", 8, 32, step=8)
    with hp.conditional_scope("model", ["cnn"]):
        hp.Boolean("pool")
        with hp.conditional_scope("pool", [True]):
            hp.Choice("pool_size", [2, 3])
    hp.Float("drop", 0.0, 0.5, step=0.5)
    return decisions_from_hyperparameters(hp)


def test_conditions_select_the_active_decisions_as_keras_tuner_does():
    decisions = _conditional_space()
    assert [d.name for d in decisions] == ["model", "units", "pool", "pool_size", "drop"]
    assert [len(d.conditions) for d in decisions] == [0, 1, 1, 2, 0]
    assert indices_to_values(decisions, (0, 2, 1, 1, 1)) == {"model": "mlp", "units": 24,
                                                             "drop": 0.5}
    assert indices_to_values(decisions, (1, 2, 1, 1, 0)) == {
        "model": "cnn", "pool": True, "pool_size": 3, "drop": 0.0}
    assert indices_to_values(decisions, (1, 3, 0, 1, 0)) == {"model": "cnn", "pool": False,
                                                             "drop": 0.0}
    np.testing.assert_array_equal(active_mask(decisions, (0, 2, 1, 1, 1)), [1, 1, 0, 0, 1])
    np.testing.assert_array_equal(active_mask(decisions, (1, 3, 0, 1, 0)), [1, 0, 1, 0, 1])
    with pytest.raises(ValueError, match="index 4 of decision 'units'"):
        indices_to_values(decisions, (0, 4, 0, 0, 0))
    with pytest.raises(ValueError, match="got 2 indices for 5 decisions"):
        active_mask(decisions, (0, 1))


def test_values_to_indices_inverts_active_values_and_masks_the_rest():
    decisions = _conditional_space()
    for arch in [(0, 2, 1, 1, 1), (1, 0, 1, 1, 0), (1, 0, 0, 0, 1)]:
        values = indices_to_values(decisions, arch)
        indices, mask = values_to_indices(decisions, values)
        np.testing.assert_array_equal(mask, active_mask(decisions, arch))
        assert [i for i, m in zip(indices, mask) if m] == [a for a, m in zip(arch, mask) if m]
        assert all(i == 0 for i, m in zip(indices, mask) if not m)
    # A value off the grid (e.g. a default the controller never chose) is not learned from,
    # and children still follow the trial's own value.
    indices, mask = values_to_indices(decisions, {"model": "mlp", "units": 12, "drop": 0.5})
    np.testing.assert_array_equal(mask, [1, 0, 0, 0, 1])
    indices, mask = values_to_indices(decisions, {"model": "cnn", "drop": 0.0})
    np.testing.assert_array_equal(mask, [1, 0, 0, 0, 1])  # pool absent: it and its child skip


def test_describe_is_json_ready():
    decisions = _conditional_space()
    assert decisions[3].describe() == {
        "name": "pool_size", "kind": "Choice", "values": [2, 3],
        "conditions": [{"name": "model", "values": ["cnn"]}, {"name": "pool", "values": [True]}],
    }
    assert decisions[4].describe()["values"] == [0.0, 0.5]
