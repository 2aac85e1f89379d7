"""Tests for the keyed bank of shared weights."""

import os
import warnings

import keras
import numpy as np
import pytest

from wpl_keras.tuner.weight_bank import WeightBank, WeightKey, weight_key


def _sequential(units):
    keras.backend.clear_session()
    return keras.Sequential([keras.Input((3,)), keras.layers.Dense(units, name="dense_0"),
                             keras.layers.Dense(2, name="head")])


def test_the_key_is_the_layer_path_and_shape_without_the_model_name():
    model = _sequential(4)
    keys = [weight_key(model, v) for v in model.weights]
    assert keys == [WeightKey("dense_0/kernel", (3, 4)), WeightKey("dense_0/bias", (4,)),
                    WeightKey("head/kernel", (4, 2)), WeightKey("head/bias", (2,))]
    inputs = keras.Input((3,))
    functional = keras.Model(inputs, keras.layers.Dense(4, name="dense_0")(inputs),
                             name="other")
    assert weight_key(functional, functional.weights[0]) == keys[0]


def test_pull_takes_only_matching_keys_and_shapes_and_push_copies():
    bank = WeightBank()
    model = _sequential(4)
    keys = [weight_key(model, v) for v in model.weights]
    assert bank.pull("weight", zip(keys, model.weights)) == [False] * 4
    bank.push("weight", zip(keys, model.weights))
    stored = bank.get("weight", keys[0]).copy()
    model.weights[0].assign(np.zeros((3, 4)))
    np.testing.assert_array_equal(bank.get("weight", keys[0]), stored)  # a copy, not a view
    other = _sequential(5)  # dense_0 and head/kernel change shape: separate weights
    other_keys = [weight_key(other, v) for v in other.weights]
    with pytest.warns(UserWarning, match=r"'dense_0/kernel' has shape \[3, 5\].*'head/k"):
        odd = bank.check_shapes(other_keys)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert bank.check_shapes(other_keys) == odd  # warned once per path
    assert [k.path for k in odd] == ["dense_0/kernel", "dense_0/bias", "head/kernel"]
    assert bank.pull("weight", zip(other_keys, other.weights)) == [False, False, False, True]
    np.testing.assert_array_equal(other.weights[3].numpy(), bank.get("weight", keys[3]))


def test_reset_zeroes_one_kind_and_a_bad_kind_is_refused():
    bank = WeightBank()
    key = WeightKey("d/kernel", (2,))
    bank.values[("fisher", key)] = np.ones(2, np.float32)
    bank.values[("anchor", key)] = np.ones(2, np.float32)
    bank.reset("fisher")
    np.testing.assert_array_equal(bank.get("fisher", key), [0, 0])
    np.testing.assert_array_equal(bank.get("anchor", key), [1, 1])
    with pytest.raises(ValueError, match="kind must be one of"):
        bank.get("slot/", key)


def test_save_is_atomic_and_restore_checks_the_manifest(tmp_path):
    bank = WeightBank()
    key = WeightKey("d/kernel", (2, 3))
    bank.values[("weight", key)] = np.arange(6, dtype=np.float32).reshape(2, 3)
    bank.values[("slot/momentum", key)] = np.ones((2, 3), np.float32)
    bank.counters["optimizer_iterations"] = 7
    path = str(tmp_path / "bank.npz")
    bank.save(path)
    bank.save(path)  # replaces the file whole
    assert os.listdir(tmp_path) == ["bank.npz"]  # no temporary file left
    again = WeightBank()
    again.restore(path)
    assert again.manifest() == bank.manifest()
    np.testing.assert_array_equal(again.get("weight", key), bank.get("weight", key))
    assert again.counters == {"optimizer_iterations": 7}
    with np.load(path) as data:
        arrays = {name: data[name] for name in data.files}
    arrays["a0"] = np.zeros((3, 2), np.float32)
    np.savez(path, **arrays)
    with pytest.raises(ValueError, match="entry 0 \\(weight of d/kernel\\).*damaged"):
        again.restore(path)
