"""Tests for the benchmark's CIFAR-10 hypermodel."""

import keras
import keras_tuner
import numpy as np
import pytest

from wpl_keras.experiments.cifar_hypermodel import MAX_BLOCKS, build_cifar_hypermodel


def test_declares_eleven_hyperparameters_with_conditional_kernels():
    hp = keras_tuner.HyperParameters()
    build_cifar_hypermodel(hp)
    names = [p.name for p in hp.space]
    assert len(names) == 11
    conditional = {p.name: p.conditions for p in hp.space if p.conditions}
    assert set(conditional) == {"kernel_1", "kernel_2"}
    assert hp.is_active("kernel_0") and not hp.is_active("kernel_1")  # default: one block


@pytest.mark.parametrize("blocks, batch_norm, pooling", [(1, False, "flatten"),
                                                         (MAX_BLOCKS, True, "global_average")])
def test_layers_are_named_by_role_and_the_model_predicts_logits(blocks, batch_norm, pooling):
    hp = keras_tuner.HyperParameters()
    build_cifar_hypermodel(hp)
    hp.values.update(blocks=blocks, batch_norm=batch_norm, pooling=pooling, kernel_1=5,
                     kernel_2=3)
    keras.utils.clear_session()
    model = build_cifar_hypermodel(hp)
    names = {layer.name for layer in model.layers}
    assert {f"block{i}_conv" for i in range(blocks)} <= names
    assert f"block{blocks}_conv" not in names
    assert ("block0_bn" in names) == batch_norm
    assert {"dense_hidden", "classifier"} <= names
    images = np.random.default_rng(0).integers(0, 256, (2, 32, 32, 3)).astype("float32")
    assert model.predict(images, verbose=0).shape == (2, 10)
    if blocks == MAX_BLOCKS:
        assert model.get_layer("block1_conv").kernel.shape[:2] == (5, 5)
