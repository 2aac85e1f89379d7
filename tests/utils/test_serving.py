"""SavedModel exports in TensorFlow Serving's layout that serve through the session-based
(TF1) loader, the path of TensorFlow Serving's C++ server."""

import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from tests.utils.session_loader import serve_in_session
from wpl_keras.utils.serving import (
    captured_variables,
    latest_version_dir,
    save_serving_module,
    version_numbers,
)
from wpl_keras.experiments.presets import cpu_small_rnn_task


def _dense_module():
    """A module whose function reaches a Keras layer through a closure."""
    layer = keras.layers.Dense(2, kernel_initializer="ones", bias_initializer="ones")
    layer.build((None, 3))
    module = tf.Module()

    @tf.function(input_signature=[tf.TensorSpec([None, 3], tf.float32, name="x")])
    def serve(x):
        return {"y": layer(x)}

    module.serve = serve
    return module, layer


def test_versions_are_numbered_and_written_whole(tmp_path):
    module, layer = _dense_module()
    assert [id(v) for v in captured_variables([module.serve])] == \
        [id(v.value) for v in layer.variables]  # the wrapped tf.Variables, not Keras' wrappers
    export = str(tmp_path / "export")
    assert version_numbers(export) == [] and latest_version_dir(export) is None
    side = []
    first = save_serving_module(module, export, {"serving_default": module.serve},
                                side_files=lambda folder: side.append(folder))
    assert first == os.path.join(export, "1") and side and side[0] != first
    os.makedirs(os.path.join(export, "7-notes"))  # not a version
    second = save_serving_module(module, export, {"serving_default": module.serve})
    assert second == os.path.join(export, "2") and version_numbers(export) == [1, 2]
    assert latest_version_dir(export) == second
    assert sorted(os.listdir(export)) == ["1", "2", "7-notes"]  # no partial folder left
    loaded = tf.saved_model.load(second)
    np.testing.assert_allclose(loaded.signatures["serving_default"](
        x=tf.ones([1, 3]))["y"], [[4.0, 4.0]])


def test_a_module_tracking_keras_variables_is_refused(tmp_path):
    module, layer = _dense_module()
    module.layer = layer  # tracked: its Keras variables would be saved, not the captured ones
    with pytest.raises(ValueError, match=r"tracks Keras variables \(dense.*closure"):
        save_serving_module(module, str(tmp_path), {"serving_default": module.serve})
    assert version_numbers(str(tmp_path)) == []


def _language_model_export(folder: str):
    from wpl_keras.nas.spaces.rnn.model import build_language_model, export_language_model
    from wpl_keras.nas.spaces.rnn.space import RNNCellSpace
    from wpl_keras.nas.spaces.rnn.config import RNNModelConfig

    # Output BatchNorm: non-trainable moving averages must be restored as well.
    config = cpu_small_rnn_task(model=RNNModelConfig(
        num_nodes=3, vocab_size=6, embedding_size=4, hidden_size=4, output_batch_norm=True))
    space = RNNCellSpace(3)
    model = build_language_model(space, (1, 0, 2, 1, 3), config, seed=1)
    model.bn_moving_mean.assign(tf.fill([4], 0.3))
    vocab = ["<unk>", "<eos>", "a", "b", "c", "d"]
    path = export_language_model(model, (1, 0, 2, 1, 3), space, folder, vocab=vocab)
    tokens = np.array([[2, 3, 4], [5, 1, 0]], np.int32)
    expected = tf.nn.log_softmax(model(tf.constant(tokens))[0], axis=-1).numpy()
    words = np.array([["a", "b", "c"], ["d", "<eos>", "never-seen"]])
    return path, tokens, words, expected


def _classifier_export(folder: str):
    from wpl_keras.data.cifar10_pipeline import normalize
    from wpl_keras.nas.spaces.cnn.model import (
        FinalConfig,
        build_final_model,
        classifier_of,
        export_classifier,
    )
    from wpl_keras.nas.spaces.cnn.space import MicroCellSpace

    arch = (0, 1, 1, 2, 2, 3, 0, 4) + (1, 0, 0, 2, 2, 1, 1, 3)
    config = FinalConfig(num_cells=1, filters=4, num_stages=2, batch_size=8)  # aux head on
    model = build_final_model(MicroCellSpace(num_nodes=2), arch, config, (8, 8, 3))
    raw = np.random.default_rng(1).uniform(0, 255, (3, 8, 8, 3)).astype(np.float32)
    expected = tf.nn.softmax(classifier_of(model)(normalize(raw), training=False)).numpy()
    paths = export_classifier(model, arch, MicroCellSpace(num_nodes=2), folder)
    return paths["saved_model"], raw, expected


@pytest.mark.slow
def test_exports_serve_through_the_session_loader(tmp_path, seed):
    """The language model (both signatures) and the classifier, loaded by
    ``tf.compat.v1.saved_model.loader.load`` in a subprocess, give the Python model's
    outputs (the defect this guards against: ``Could not find variable ...``)."""
    lm, tokens, words, lm_expected = _language_model_export(str(tmp_path / "lm"))
    cnn, images, cnn_expected = _classifier_export(str(tmp_path / "cnn"))
    assert lm.endswith(os.path.join("lm", "1")) and cnn.endswith(os.path.join("cnn", "1"))
    assert os.path.exists(os.path.join(lm, "cell.json"))
    assert os.path.exists(os.path.join(cnn, "cells.json"))
    by_tokens, by_words, by_images = serve_in_session([
        {"dir": lm, "signature": "serving_default", "inputs": {"tokens": tokens}},
        {"dir": lm, "signature": "serve_words", "inputs": {"words": words}},
        {"dir": cnn, "signature": "serving_default", "inputs": {"images": images}},
    ], str(tmp_path / "session"))
    np.testing.assert_allclose(by_tokens["log_probs"], lm_expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(by_words["ids"], [[2, 3, 4], [5, 1, 0]])  # unknown → <unk>
    np.testing.assert_allclose(by_words["log_probs"], lm_expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(by_images["probabilities"], cnn_expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("bad", [[[2, 6, 1]], [[-1, 2, 3]], [[2, 3], [4, 600]]])
def test_token_ids_outside_the_vocabulary_are_refused_by_name(tmp_path, seed, bad):
    path, tokens, _, expected = _language_model_export(str(tmp_path / "export"))
    serve = tf.saved_model.load(path).signatures["serving_default"]
    np.testing.assert_allclose(serve(tokens=tf.constant(tokens))["log_probs"], expected,
                               rtol=1e-5, atol=1e-6)
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"tokens: every id must be in \[0, 6\)"):
        serve(tokens=tf.constant(bad, tf.int32))
