"""Tests for the final micro-CNN model: build, train, export and reload (tiny 8x8 images)."""

import json

import numpy as np
import pytest
import tensorflow as tf

from wpl_keras.data.cifar10 import CIFAR10Arrays, normalize
from wpl_keras.nas.base import InvalidArchitectureError
from wpl_keras.nas.cnn_model import (
    FinalConfig,
    build_final_model,
    classifier_of,
    export_classifier,
    train_final,
)
from wpl_keras.nas.cnn_space import MicroCellSpace

ARCH = (0, 1, 1, 2, 2, 3, 0, 4) + (1, 0, 0, 2, 2, 1, 1, 3)


def _tiny_config(**kwargs):
    base = dict(num_cells=1, filters=4, num_stages=2, aux_weight=0.4, drop_path_keep=0.8,
                cutout=3, batch_size=8, lr_max=0.05, lr_min=0.001)
    base.update(kwargs)
    return FinalConfig(**base)


def _arrays(n_train=32, n_test=16):
    rng = np.random.default_rng(0)
    return CIFAR10Arrays(
        rng.integers(0, 256, (n_train, 8, 8, 3), dtype=np.uint8),
        rng.integers(0, 10, n_train).astype(np.int32),
        rng.integers(0, 256, (n_test, 8, 8, 3), dtype=np.uint8),
        rng.integers(0, 10, n_test).astype(np.int32),
        "synthetic",
    )


def test_build_has_cells_aux_head_and_is_deterministic_at_inference(seed):
    space = MicroCellSpace(num_nodes=2)
    model = build_final_model(space, ARCH, _tiny_config(), input_shape=(8, 8, 3))
    assert len(model.outputs) == 2
    names = [layer.name for layer in model.layers]
    assert any(n.startswith("cell1_reduce") for n in names)
    assert "cell0_normal_n2x_sep0" in names  # sep3x3 on node 2, input x
    assert "cell0_normal_n3x" in names  # avg3x3 pool
    x = tf.random.normal([3, 8, 8, 3])
    logits, aux = model(x, training=False)
    assert logits.shape == (3, 10) and aux.shape == (3, 10)
    np.testing.assert_allclose(model(x, training=False)[0], logits, atol=1e-6)
    single = build_final_model(space, ARCH, _tiny_config(aux_weight=0.0, num_stages=1),
                               input_shape=(8, 8, 3))
    assert len(single.outputs) == 1 and classifier_of(single) is single


def test_bad_inputs():
    space = MicroCellSpace(num_nodes=2)
    with pytest.raises(InvalidArchitectureError):
        build_final_model(space, ARCH[:-1], _tiny_config(), input_shape=(8, 8, 3))
    with pytest.raises(ValueError, match="even"):
        FinalConfig(filters=7)
    with pytest.raises(ValueError, match="drop_path_keep"):
        FinalConfig(drop_path_keep=1.5)
    with pytest.raises(ValueError, match="epochs >= 1"):
        train_final(space, ARCH, _tiny_config(), _arrays(), epochs=0)


def test_train_export_reload_round_trip(seed, tmp_path):
    space = MicroCellSpace(num_nodes=2)
    model, report = train_final(space, ARCH, _tiny_config(num_stages=1), _arrays(), epochs=1,
                                seed=seed)
    assert 0.0 <= report["test_error_percent"] <= 100.0
    assert np.isfinite(report["train_loss"]) and report["replicas"] == 1
    paths = export_classifier(model, ARCH, space, str(tmp_path / "export"))
    cells = json.load(open(paths["cells_json"]))
    assert space.from_json(cells) == ARCH and cells["normal"][0] == [0, 1, 1, 2]
    assert open(paths["cells_png"], "rb").read()[:4] == b"\x89PNG"
    raw = np.random.default_rng(1).uniform(0, 255, (5, 8, 8, 3)).astype(np.float32)
    expected = tf.nn.softmax(classifier_of(model)(normalize(raw), training=False)).numpy()
    loaded = tf.saved_model.load(paths["saved_model"])
    got = loaded.signatures["serving_default"](images=tf.constant(raw))["probabilities"].numpy()
    np.testing.assert_allclose(got, expected, atol=1e-5)
    np.testing.assert_allclose(got.sum(axis=1), 1.0, atol=1e-5)
