"""Checkpoint coverage: what tf.train.Checkpoint leaves out of Keras 3 objects is found."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from wpl_keras.utils.checkpoint import (
    VariableBundle,
    check_checkpoint_covers,
    untracked_variables,
)


class _Holder(keras.layers.Layer):
    """Weights held in each of the structures a subclassed layer might use."""

    def __init__(self, how: str):
        super().__init__()

        def weight(name):
            return self.add_weight(shape=(2,), initializer="ones", name=name)

        if how == "attribute":
            self.w = weight("w")
        elif how == "tuple":
            self.w = (weight("a"), (weight("b"), None))
        elif how == "list":
            self.w = [weight("a"), weight("b")]
        elif how == "appended":
            self.w = ()
            self.more = []
            self.more.append(weight("a"))
        elif how == "dict":
            self.w = {"a": weight("a")}
        elif how == "tuple_of_dicts":
            self.w = ({"a": weight("a")},)
        elif how == "layer_list":
            dense = keras.layers.Dense(2)
            dense.build((None, 3))
            self.w = [dense]
        else:
            raise ValueError(how)


@pytest.mark.parametrize("how", ["attribute", "tuple"])
def test_attributes_and_tuples_are_covered(how):
    layer = _Holder(how)
    assert layer.variables
    assert untracked_variables(tf.train.Checkpoint(layer=layer), [layer]) == []
    check_checkpoint_covers(tf.train.Checkpoint(layer=layer), [layer])


@pytest.mark.parametrize("how", ["list", "appended", "dict", "tuple_of_dicts", "layer_list"])
def test_python_lists_and_dicts_are_reported(how):
    layer = _Holder(how)
    checkpoint = tf.train.Checkpoint(layer=layer)
    missing = untracked_variables(checkpoint, [layer])
    assert {id(v) for v in missing} == {id(v) for v in layer.variables}
    with pytest.raises(ValueError, match=r"would not save \d+ variable.*Python list or dict"):
        check_checkpoint_covers(checkpoint, [layer])


def test_what_is_reported_is_indeed_not_restored(tmp_path):
    saved, restored = _Holder("list"), _Holder("list")
    for v in saved.variables:
        v.assign(v * 7.0)
    path = tf.train.Checkpoint(layer=saved).write(str(tmp_path / "c"))
    tf.train.Checkpoint(layer=restored).read(path)
    np.testing.assert_array_equal(restored.variables[0].numpy(), np.ones(2))


def test_variable_bundle_covers_a_listed_layer(tmp_path):
    layer = _Holder("list")
    bundle = VariableBundle(layer, name="layer")
    assert untracked_variables(tf.train.Checkpoint(layer=bundle), [layer]) == []


def test_optimizer_slots_and_plain_variables_are_covered():
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    optimizer = keras.optimizers.SGD(0.1, momentum=0.9)
    optimizer.apply_gradients(zip([tf.ones_like(v) for v in model.trainable_variables],
                                  model.trainable_variables))
    counter = tf.Variable(0)
    checkpoint = tf.train.Checkpoint(model=model, optimizer=optimizer, counter=counter)
    assert untracked_variables(checkpoint, [model, optimizer, counter]) == []
    partial = tf.train.Checkpoint(model=model)
    assert len(untracked_variables(partial, [model, optimizer])) == len(optimizer.variables)
