"""estimate_fisher against a per-example loop and NumPy references for every usual output head,
every way of feeding data, and malformed labels; fit keeps anchors."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from wpl_keras.wpl import fisher as fisher_module
from wpl_keras.wpl.fisher_estimation import estimate_fisher, fisher_to_numpy
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
        state.assign_fisher(
            estimate_fisher(model, (x, y), shared.trainable_weights, num_samples=64))
    model.compile(optimizer=keras.optimizers.SGD(0.2, momentum=0.9),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    # Labels the model did not learn: the data gradient pulls the shared weights away.
    model.fit(x, (y + 1) % 3, batch_size=16, epochs=3, verbose=0)
    weights = shared.trainable_weights
    return sum(float(np.sum((v.numpy() - a) ** 2)) for v, a in zip(weights, anchor))


@pytest.mark.parametrize("mode,strength", [("gradient", 5.0), ("proximal", 1e4)])
def test_fit_with_wpl_keeps_weights_near_anchors(seed, mode, strength):
    free = _fit_distance(mode, wpl=False, strength=strength)
    held = _fit_distance(mode, wpl=True, strength=strength)
    assert free > 1e-3
    assert held < 0.5 * free


# --------------------------------------------------------------- output heads vs NumPy reference
def _softmax_reference(x, y, w, b):
    """For logits z = x W + b: d log p(y|x)/dW = x (onehot(y) − p)ᵀ, d/db = onehot(y) − p."""
    z = x.astype(np.float64) @ w + b
    p = np.exp(z - z.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    r = np.eye(w.shape[1])[y] - p
    return np.mean(np.einsum("ni,nj->nij", x, r) ** 2, axis=0), np.mean(r**2, axis=0)


def _bernoulli_reference(x, y, w, b):
    """For a logit z = x w + b: d log p(y|x)/dz = y − σ(z), so d/dw = x (y − σ), d/db = y − σ."""
    z = x.astype(np.float64) @ w + b
    r = y[:, None] - 1.0 / (1.0 + np.exp(-z))
    return np.mean((x * r) ** 2, axis=0)[:, None], np.mean(r**2, axis=0)


def _head_model(head):
    """Input(4) → Dense(units) → head; the Dense layer holds all the weights."""
    inputs = keras.Input((4,))
    units = 1 if "sigmoid" in head or head == "binary_logit" else 3
    activation = {"dense_softmax": "softmax", "dense_log_softmax": "log_softmax",
                  "keras_softmax_callable": keras.activations.softmax,
                  "tf_softmax_callable": tf.nn.softmax, "dense_sigmoid": "sigmoid"}.get(head)
    dense = keras.layers.Dense(units, activation=activation, name="dense")
    out = dense(inputs)
    if head == "activation_softmax":
        out = keras.layers.Activation("softmax")(out)
    elif head == "softmax_layer":
        out = keras.layers.Softmax()(out)
    elif head == "ops_softmax":
        out = keras.ops.softmax(out)
    elif head == "softmax_then_dropout":
        out = keras.layers.Dropout(0.5)(keras.layers.Softmax()(out))
    elif head == "activation_sigmoid":
        out = keras.layers.Activation("sigmoid")(out)
    return keras.Model(inputs, out), dense


SOFTMAX_HEADS = ["logits", "dense_softmax", "activation_softmax", "softmax_layer", "ops_softmax",
                 "keras_softmax_callable", "tf_softmax_callable", "dense_log_softmax",
                 "softmax_then_dropout"]


@pytest.mark.parametrize("head", SOFTMAX_HEADS)
def test_every_softmax_head_gives_the_reference_fisher(seed, head):
    model, dense = _head_model(head)
    x, y = _data(10, seed=2)
    w, b = (v.numpy().astype(np.float64) for v in dense.trainable_weights)
    expected_w, expected_b = _softmax_reference(x, y, w, b)
    fisher = estimate_fisher(model, (x, y), num_samples=10, batch_size=4)
    np.testing.assert_allclose(fisher[0].numpy(), expected_w, rtol=2e-4, atol=1e-7)
    np.testing.assert_allclose(fisher[1].numpy(), expected_b, rtol=2e-4, atol=1e-7)
    loop = estimate_fisher(model, (x, y), num_samples=10, batch_size=4, method="loop")
    np.testing.assert_allclose(loop[0].numpy(), expected_w, rtol=2e-4, atol=1e-7)


@pytest.mark.parametrize("head", ["dense_softmax", "softmax_layer", "activation_softmax"])
def test_true_fisher_of_probability_head_equals_logits_model(seed, head):
    model, dense = _head_model(head)
    logits_model, logits_dense = _head_model("logits")
    logits_dense.set_weights(dense.get_weights())
    x, y = _data(12, seed=3)
    a = estimate_fisher(model, (x, y), kind="true", seed=5, batch_size=6)
    b = estimate_fisher(logits_model, (x, y), kind="true", seed=5, batch_size=6)
    for fa, fb in zip(a, b):
        np.testing.assert_allclose(fa.numpy(), fb.numpy(), rtol=2e-4, atol=1e-7)


@pytest.mark.parametrize("head", ["binary_logit", "dense_sigmoid", "activation_sigmoid"])
def test_binary_heads_give_the_bernoulli_reference(seed, head):
    model, dense = _head_model(head)
    x, _ = _data(10, seed=4)
    y = np.array([0, 1, 1, 0, 1, 0, 0, 1, 1, 1], np.int32)
    w, b = (v.numpy().astype(np.float64) for v in dense.trainable_weights)
    expected_w, expected_b = _bernoulli_reference(x, y, w, b)
    for labels in (y, y.astype(np.float32)[:, None]):  # [N] ints and Keras-style [N, 1] floats
        fisher = estimate_fisher(model, (x, labels), num_samples=10, batch_size=3)
        np.testing.assert_allclose(fisher[0].numpy(), expected_w, rtol=2e-4, atol=1e-7)
        np.testing.assert_allclose(fisher[1].numpy(), expected_b, rtol=2e-4, atol=1e-7)


class SubclassedSoftmax(keras.Model):
    def __init__(self):
        super().__init__()
        self.dense = keras.layers.Dense(3)
        self.dense.build((None, 4))

    def call(self, x):
        return tf.nn.softmax(self.dense(x))


def _lambda_softmax_model():
    inputs = keras.Input((4,))
    dense = keras.layers.Dense(3, name="dense")
    return keras.Model(inputs, keras.layers.Lambda(tf.nn.softmax)(dense(inputs))), dense


@pytest.mark.parametrize("make, message", [
    (lambda: _lambda_softmax_model()[0], "Lambda"),
    (lambda: SubclassedSoftmax(), "subclassed model"),
    (lambda: keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, activation="relu")]),
     "dense"),
    (lambda: keras.Sequential([keras.Input((4,)),
                               keras.layers.Dense(3, activation=lambda z: z * 2.0)]), "dense"),
    (lambda: keras.Sequential([keras.Input((4,)), keras.layers.Dense(3),
                               keras.layers.LayerNormalization()]), "LayerNormalization"),
])
def test_undecidable_head_asks_for_from_logits(seed, make, message):
    model = make()
    x, y = _data(6)
    with pytest.raises(ValueError, match=f"(?s){message}.*from_logits=True"):
        estimate_fisher(model, (x, y))


def test_undecidable_head_works_with_explicit_from_logits(seed):
    model, dense = _lambda_softmax_model()
    x, y = _data(8, seed=5)
    w, b = (v.numpy().astype(np.float64) for v in dense.trainable_weights)
    fisher = estimate_fisher(model, (x, y), from_logits=False, batch_size=8)
    np.testing.assert_allclose(fisher[0].numpy(), _softmax_reference(x, y, w, b)[0], rtol=2e-4)
    subclassed = SubclassedSoftmax()
    subclassed.dense.set_weights(dense.get_weights())
    fisher = estimate_fisher(subclassed, (x, y), from_logits=False, batch_size=8)
    np.testing.assert_allclose(fisher[0].numpy(), _softmax_reference(x, y, w, b)[0], rtol=2e-4)


def test_multi_unit_sigmoid_and_contradicting_from_logits_raise(seed):
    x, y = _data(6)
    multi = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, activation="sigmoid")])
    with pytest.raises(ValueError, match="sigmoid over 3 units"):
        estimate_fisher(multi, (x, y))
    softmax_model, _ = _head_model("softmax_layer")
    with pytest.raises(ValueError, match="from_logits=True but .*probabilities"):
        estimate_fisher(softmax_model, (x, y), from_logits=True)
    logits_model, _ = _head_model("logits")
    with pytest.raises(ValueError, match="from_logits=False but .*logits"):
        estimate_fisher(logits_model, (x, y), from_logits=False)
    lambda_logits = keras.Model(*(lambda i: (i, keras.layers.Lambda(lambda z: z)(
        keras.layers.Dense(3)(i))))(keras.Input((4,))))
    with pytest.raises(ValueError, match="not probabilities"):
        estimate_fisher(lambda_logits, (x, y), from_logits=False)


def test_output_that_is_not_batch_by_classes_raises(seed):
    inputs = keras.Input((2, 4))
    model = keras.Model(inputs, keras.layers.Dense(3)(inputs))  # [B, 2, 3]
    x = np.zeros((4, 2, 4), np.float32)
    with pytest.raises(ValueError, match=r"\[batch, classes\]"):
        estimate_fisher(model, (x, np.zeros(4, np.int32)))


# ------------------------------------------------------------------------ every way of feeding
def _conv_model():
    inputs = keras.Input((3, 2))  # images of 3 × 2: an unbatched x has rank 2, like a batch
    flat = keras.layers.Flatten()(inputs)
    return keras.Model(inputs, keras.layers.Dense(3, name="dense")(flat))


@pytest.mark.parametrize("feed", ["arrays", "unbatched", "batched", "drop_remainder",
                                  "drop_remainder_one", "labels_column", "drop_remainder_2d_x"])
def test_data_in_any_form_gives_the_same_fisher(seed, feed):
    x, y = _data(12, seed=6)
    model = _head_model("logits")[0] if feed != "drop_remainder_2d_x" else _conv_model()
    if feed == "drop_remainder_2d_x":
        x = np.random.default_rng(6).normal(size=(12, 3, 2)).astype(np.float32)
    reference = estimate_fisher(model, (x[:8], y[:8]), num_samples=8, batch_size=8)
    make = tf.data.Dataset.from_tensor_slices
    data = {
        "arrays": (x, y),
        "unbatched": make((x, y)),
        "batched": make((x, y)).batch(5),
        "drop_remainder": make((x, y)).batch(4, drop_remainder=True),
        "drop_remainder_one": make((x, y)).batch(1, drop_remainder=True),
        "labels_column": make((x, y[:, None])).batch(3, drop_remainder=True),
        "drop_remainder_2d_x": make((x, y)).batch(4, drop_remainder=True),
    }[feed]
    if feed != "arrays":
        assert feed == "unbatched" or data.element_spec[0].shape.rank == x.ndim
    got = estimate_fisher(model, data, num_samples=8, batch_size=3)
    for g, r in zip(got, reference):
        np.testing.assert_allclose(g.numpy(), r.numpy(), rtol=1e-5, atol=1e-8)


def test_lazily_built_sequential_static_batches_without_input_rank(seed):
    x, y = _data(8)
    dense = keras.layers.Dense(3)
    dense.build((None, 4))
    model = keras.Sequential([dense])  # no Input and never called: no input rank to read
    with pytest.raises(ValueError, match="cannot tell whether the dataset is batched"):
        estimate_fisher(model, tf.data.Dataset.from_tensor_slices((x, y)).batch(
            4, drop_remainder=True), from_logits=True)
    column = tf.data.Dataset.from_tensor_slices((x, y[:, None])).batch(4, drop_remainder=True)
    unbatched = tf.data.Dataset.from_tensor_slices((x, y))
    a = estimate_fisher(model, column, from_logits=True)  # labels [4, 1]: batches
    b = estimate_fisher(model, unbatched, from_logits=True)  # scalar labels: examples
    for fa, fb in zip(a, b):
        np.testing.assert_allclose(fa.numpy(), fb.numpy(), rtol=1e-5, atol=1e-8)


def test_malformed_data_raises(seed):
    model = _tiny_model()
    x, y = _data(6)
    with pytest.raises(ValueError, match="x has 6 examples but y has 5"):
        estimate_fisher(model, (x, y[:5]))
    with pytest.raises(TypeError, match="tuple"):
        estimate_fisher(model, x)
    with pytest.raises(ValueError, match=r"\(x, y\) pairs"):
        estimate_fisher(model, tf.data.Dataset.from_tensor_slices(x))
    for bad in (0, -3, np.int64(0)):
        with pytest.raises(ValueError, match="batch_size must be an integer >= 1"):
            estimate_fisher(model, (x, y), batch_size=bad)
    for name in ("batch_size", "num_samples"):
        for bad in (2.5, True, "8", None, np.float32(4.0), np.array([2, 3])):
            with pytest.raises(TypeError, match=f"estimate_fisher: {name} must be an integer"):
                estimate_fisher(model, (x, y), **{name: bad})
    with pytest.raises(TypeError, match="estimate_fisher: seed must be an integer"):
        estimate_fisher(model, (x, y), seed=0.5)


# ------------------------------------------------------------------------------------- labels
@pytest.mark.parametrize("labels, message", [
    (np.array([0, 1, -1, 2]), r"label -1 is outside the model's classes \[0, 3\)"),
    (np.array([0, 3, 1, 2]), r"label 3 is outside the model's classes \[0, 3\)"),
    (np.array([0, 1, 2, 100000]), r"label 100000 is outside"),
    (np.array([0.0, 1.5, 2.0, 1.0], np.float32),
     r"label 1.5 is not an integer class id in \[0, 3\)"),
    (np.array([0.0, np.nan, 2.0, 1.0]), r"label nan is not an integer class id"),
    (np.eye(3, dtype=np.float32)[[0, 1, 2, 0]], r"shape \(4, 3\).*one-hot"),
    (np.array([True, False, True, True]), "integer class ids, got bool"),
    (np.array(["0", "1", "2", "1"]), "integer class ids"),
])
def test_bad_labels_raise_naming_the_range(seed, labels, message):
    model = _tiny_model()
    x, _ = _data(4)
    with pytest.raises(ValueError, match=message):
        estimate_fisher(model, (x, labels))


def test_bad_labels_in_a_later_batch_and_binary_range(seed):
    model = _tiny_model()
    x, y = _data(12)
    y = y.copy()
    y[10] = 7
    with pytest.raises(ValueError, match=r"label 7 is outside the model's classes \[0, 3\)"):
        estimate_fisher(model, tf.data.Dataset.from_tensor_slices((x, y)).batch(4))
    binary, _ = _head_model("dense_sigmoid")
    with pytest.raises(ValueError, match=r"label 2 is outside .*\[0, 2\).*binary"):
        estimate_fisher(binary, (x[:3], np.array([0, 1, 2])))


def test_integral_float_labels_equal_int_labels(seed):
    model = _tiny_model()
    x, y = _data(8)
    a = estimate_fisher(model, (x, y))
    b = estimate_fisher(model, (x, y.astype(np.float64)))
    for fa, fb in zip(a, b):
        np.testing.assert_array_equal(fa.numpy(), fb.numpy())


def test_package_api_and_numpy_conversion(seed):
    import wpl_keras.wpl as wpl

    assert wpl.estimate_fisher is estimate_fisher and wpl.fisher_to_numpy is fisher_to_numpy
    assert not hasattr(fisher_module, "estimate_fisher")  # defined in fisher_estimation only
    model = _tiny_model()
    arrays = fisher_to_numpy(estimate_fisher(model, _data(4), num_samples=4))
    assert all(isinstance(a, np.ndarray) and a.dtype == np.float32 for a in arrays)


@pytest.mark.parametrize("normalization", ["tensor_norm", "mean"])
def test_estimated_fisher_into_a_normalised_state(seed, normalization):
    """``state.assign_fisher(estimate_fisher(...))`` and ``state.add_model(...)`` keep the
    estimate as the raw R and give the penalty the normalised F per weight; a WPLModel then
    trains on the normalised F."""
    inputs = keras.Input((4,))
    shared = keras.layers.Dense(6, activation="relu", name="shared")
    model = WPLModel(inputs, keras.layers.Dense(3, name="head")(shared(inputs)))
    x, y = _data(32, seed=2)
    state = apply_wpl(model, ["shared"], strength=2.0, clip_norm=4.0,
                      fisher_normalization=normalization)
    estimate = estimate_fisher(model, (x, y), shared.trainable_weights, num_samples=32)

    def check(raw):
        for f, r, want in zip(state.fisher, state.fisher_raw, raw):
            want = np.asarray(want, np.float64)
            np.testing.assert_allclose(r.numpy(), want, rtol=1e-6, atol=1e-12)
            norm = want / np.mean(want) if normalization == "mean" else (
                4.0 * want / np.linalg.norm(want))
            np.testing.assert_allclose(f.numpy(), norm, rtol=1e-5, atol=1e-7)

    state.assign_fisher(estimate)
    check([e.numpy() for e in estimate])
    second = estimate_fisher(model, (x[:16], y[:16]), shared.trainable_weights, num_samples=16)
    state.add_model(second)
    check([e.numpy() + s.numpy() for e, s in zip(estimate, second)])
    for v in shared.trainable_weights:
        v.assign(v + 0.1)
    model.compile(optimizer=keras.optimizers.SGD(0.0),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    history = model.fit(x, y, batch_size=32, epochs=1, verbose=0)
    anchors_gap = [np.square(v.numpy() - a.numpy()) for v, a in
                   zip(state.protected_variables, state.anchors)]
    want = 0.5 * 2.0 * sum(float(np.sum(f.numpy() * d)) for f, d in zip(state.fisher, anchors_gap))
    assert history.history["wpl_penalty"][0] == pytest.approx(want, rel=1e-5)
