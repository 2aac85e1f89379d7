"""estimate_fisher against a per-example loop and a hand-computed Fisher; fit keeps anchors."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from wpl_keras.wpl.fisher import estimate_fisher
from wpl_keras.wpl.training import WPLModel, apply_wpl


def _tiny_model(softmax=False):
    inputs = keras.Input((4,))
    h = keras.layers.Dense(5, activation="relu", name="hidden")(inputs)
    out = keras.layers.Dense(3, activation="softmax" if softmax else None, name="out")(h)
    return keras.Model(inputs, out)


def _data(n=12, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, 4)).astype(np.float32), rng.integers(0, 3, n).astype(np.int32)


@pytest.mark.parametrize("kind", ["empirical", "true"])
def test_vectorized_equals_loop(seed, kind):
    model = _tiny_model()
    x, y = _data()
    kwargs = dict(num_samples=11, batch_size=4, kind=kind, seed=7)  # uneven last batch
    fast = estimate_fisher(model, (x, y), **kwargs)
    slow = estimate_fisher(model, (x, y), method="loop", **kwargs)
    assert len(fast) == len(model.trainable_variables)
    assert len(model._wpl_fisher_functions) == 1  # traced once, reused by the second call
    for f, s in zip(fast, slow):
        np.testing.assert_allclose(f.numpy(), s.numpy(), rtol=1e-5, atol=1e-8)
        assert float(tf.reduce_sum(f)) > 0


def test_matches_hand_computed_softmax_regression(seed):
    # For logits = x W + b: d log p(y|x) / dW = x (onehot(y) - p)^T, d/db = onehot(y) - p.
    inputs = keras.Input((4,))
    model = keras.Model(inputs, keras.layers.Dense(3)(inputs))
    x, y = _data(9)
    w, b = (v.numpy() for v in model.trainable_variables)
    logits = x @ w + b
    p = np.exp(logits - logits.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    r = np.eye(3)[y] - p
    expected_w = np.mean(np.einsum("ni,nj->nij", x, r) ** 2, axis=0)
    expected_b = np.mean(r**2, axis=0)
    fisher = estimate_fisher(model, (x, y), num_samples=9, batch_size=4)
    np.testing.assert_allclose(fisher[0].numpy(), expected_w, rtol=1e-4, atol=1e-7)
    np.testing.assert_allclose(fisher[1].numpy(), expected_b, rtol=1e-4, atol=1e-7)


def test_softmax_dataset_subset_and_num_samples_agree(seed):
    # A softmax-output model fed a batched dataset, limited to 8 examples and to the hidden
    # layer, gives the Fisher of the same logits model on the first 8 examples as arrays.
    logits_model = _tiny_model()
    softmax_model = _tiny_model(softmax=True)
    softmax_model.set_weights(logits_model.get_weights())
    x, y = _data(20)
    dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(5)
    hidden = softmax_model.get_layer("hidden").trainable_weights
    a = estimate_fisher(softmax_model, dataset, hidden, num_samples=8, batch_size=4)
    b = estimate_fisher(logits_model, (x[:8], y[:8]),
                        logits_model.get_layer("hidden").trainable_weights, num_samples=100)
    assert [tuple(f.shape) for f in a] == [tuple(v.shape) for v in hidden]
    for fa, fb in zip(a, b):
        np.testing.assert_allclose(fa.numpy(), fb.numpy(), rtol=1e-3, atol=1e-6)


def test_empty_dataset_raises(seed):
    model = _tiny_model()
    x, y = _data()
    with pytest.raises(ValueError, match="empty"):
        estimate_fisher(model, (x[:0], y[:0]))


def test_nan_model_raises(seed):
    model = _tiny_model()
    x, y = _data()
    kernel = model.get_layer("out").kernel
    kernel.assign(np.full(kernel.shape, np.nan, np.float32))
    with pytest.raises(ValueError, match="non-finite"):
        estimate_fisher(model, (x, y))


def test_bad_arguments_raise(seed):
    model = _tiny_model()
    x, y = _data()
    with pytest.raises(ValueError, match="kind"):
        estimate_fisher(model, (x, y), kind="observed")
    with pytest.raises(ValueError, match="method"):
        estimate_fisher(model, (x, y), method="fast")
    with pytest.raises(ValueError, match="num_samples"):
        estimate_fisher(model, (x, y), num_samples=0)


def _fit_distance(mode, wpl, strength):
    keras.utils.set_random_seed(3)
    inputs = keras.Input((4,))
    shared = keras.layers.Dense(6, activation="relu", name="shared")
    model = WPLModel(inputs, keras.layers.Dense(3, name="head")(shared(inputs)))
    x, y = _data(64, seed=1)
    anchor = [v.numpy().copy() for v in shared.trainable_weights]
    if wpl:
        state = apply_wpl(model, ["shared"], strength=strength, mode=mode)
        state.assign_fisher(estimate_fisher(model, (x, y), shared.trainable_weights, num_samples=64))
    model.compile(optimizer=keras.optimizers.SGD(0.2, momentum=0.9),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    # Labels the model did not learn: the data gradient pulls the shared weights away.
    model.fit(x, (y + 1) % 3, batch_size=16, epochs=3, verbose=0)
    return sum(float(np.sum((v.numpy() - a) ** 2)) for v, a in zip(shared.trainable_weights, anchor))


@pytest.mark.parametrize("mode,strength", [("gradient", 5.0), ("proximal", 1e4)])
def test_fit_with_wpl_keeps_weights_near_anchors(seed, mode, strength):
    free = _fit_distance(mode, wpl=False, strength=strength)
    held = _fit_distance(mode, wpl=True, strength=strength)
    assert free > 1e-3
    assert held < 0.5 * free
