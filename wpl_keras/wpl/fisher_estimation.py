"""The diagonal Fisher information of a trained Keras classifier, from its own predictions.

:func:`estimate_fisher` computes, at the model's current weights,

    ``F_i = (1/N) Σ_n (∂ log p(y_n | x_n; θ) / ∂θ_i)²``

with ``y_n`` the true label (empirical Fisher) or a label drawn from the model (true Fisher).

``log p(y | x)`` depends on how the model's output was produced, which is read from the layer
(or Keras operation) that produces it:

* no activation, ``linear`` or ``log_softmax``: logits, ``log p = log_softmax(z)``;
* a ``softmax`` (``Dense(activation="softmax")``, ``Activation("softmax")``, ``Softmax()``,
  ``keras.ops.softmax``, ``tf.nn.softmax`` as the activation callable): probabilities,
  ``log p = log(p)``;
* an output with ONE unit is a Bernoulli ``p(y = 1 | x)`` for labels in ``{0, 1}``: a logit
  ``z`` (no activation) gives ``log p = (log σ(−z), log σ(z))``; a ``sigmoid`` gives a
  probability ``q`` and ``log p = (log(1 − q), log q)``.

Anything else (a ``Lambda``, a custom callable, ``relu``, a subclassed model whose last
operation cannot be read, a sigmoid over several units) raises an error that asks for
``from_logits=`` instead of guessing.
"""

from __future__ import annotations

from typing import Iterable, List, Optional, Sequence

import keras
import numpy as np
import tensorflow as tf

from wpl_keras.utils.validation import check_number

_SOFTMAX = "softmax"
_SIGMOID = "sigmoid"
_LOGITS = "logits"
# The smallest normal float32: probabilities are clamped to it before the log.
_TINY = float(np.finfo(np.float32).tiny)
# Layers that pass their input through unchanged at inference; the head is read behind them.
_PASS_THROUGH = ("Dropout", "Identity", "ActivityRegularization", "GaussianNoise",
                 "GaussianDropout", "AlphaDropout", "SpatialDropout1D", "SpatialDropout2D")


def _activation_kind(fn) -> Optional[str]:
    """``"softmax"``, ``"sigmoid"``, ``"logits"`` (linear or log-softmax) or None (unknown)."""
    if fn is None:
        return _LOGITS
    known = {
        _SOFTMAX: (keras.activations.softmax, keras.ops.softmax, tf.nn.softmax),
        _SIGMOID: (keras.activations.sigmoid, keras.ops.sigmoid, tf.nn.sigmoid, tf.math.sigmoid),
        _LOGITS: (keras.activations.linear, keras.activations.log_softmax, keras.ops.log_softmax,
                  tf.nn.log_softmax),
    }
    for kind, functions in known.items():
        if any(fn is f for f in functions):
            return kind
    return None


def _output_operation(model):
    """The layer or Keras operation that produces the model's single output, or None when
    it cannot be read (a subclassed model)."""
    try:
        outputs = model.outputs
    except (AttributeError, ValueError):
        outputs = None
    if outputs is None:
        if isinstance(model, keras.Sequential) and model.layers:
            return model.layers[-1]
        return None
    if len(outputs) != 1:
        raise ValueError(
            f"estimate_fisher: model {model.name!r} has {len(outputs)} outputs; the Fisher of a "
            "classifier needs exactly one output of class scores."
        )
    history = getattr(outputs[0], "_keras_history", None)
    operation = getattr(history, "operation", None)
    while operation is not None and type(operation).__name__ in _PASS_THROUGH:
        inbound = getattr(operation, "input", None)
        operation = getattr(getattr(inbound, "_keras_history", None), "operation", None)
    return operation


def _head_kind(operation) -> Optional[str]:
    """How ``operation`` produces its output: ``"softmax"``, ``"sigmoid"``, ``"logits"`` or
    None (undecidable)."""
    name = type(operation).__name__
    if isinstance(operation, keras.layers.Softmax):
        return _SOFTMAX if operation.axis in (-1, [-1], (-1,)) else None
    if isinstance(operation, keras.layers.Lambda):
        return None
    if not isinstance(operation, keras.layers.Layer):
        # A Keras operation applied to a functional model's tensor (keras.ops.softmax(x)).
        if not type(operation).__module__.startswith("keras"):
            return None
        axis = getattr(operation, "axis", -1)
        if name in ("Softmax", "LogSoftmax") and axis not in (-1, (-1,), [-1]):
            return None
        return {"Softmax": _SOFTMAX, "LogSoftmax": _LOGITS, "Sigmoid": _SIGMOID}.get(name)
    if not hasattr(operation, "activation"):
        return None
    return _activation_kind(operation.activation)


def _read_head(model):
    """``(kind, operation)``: the head kind (None when undecidable) and the output operation."""
    operation = _output_operation(model)
    return (None if operation is None else _head_kind(operation)), operation


def _infer_from_logits(model) -> bool:
    """True when the model outputs logits, False for probabilities (softmax or sigmoid).

    Raises:
        ValueError: when the output layer does not tell (see the module docstring), or for a
            sigmoid over several units (independent binary outputs, not one class label).
    """
    kind, operation = _read_head(model)
    if kind is None:
        what = ("a subclassed model" if operation is None
                else f"its output layer {getattr(operation, 'name', operation)!r} "
                     f"({type(operation).__name__})")
        raise ValueError(
            f"estimate_fisher cannot tell whether model {model.name!r} outputs logits or "
            f"probabilities: {what} is not a known head (no activation, softmax, log_softmax "
            "or sigmoid). Pass from_logits=True (logits) or from_logits=False (probabilities) "
            "explicitly."
        )
    units = _output_units(model)
    if kind == _SIGMOID and units not in (None, 1):
        raise ValueError(
            f"estimate_fisher: model {model.name!r} ends in a sigmoid over {units} units "
            "(independent binary outputs); the Fisher here is that of one class label: a "
            "softmax over the classes, or a sigmoid over ONE unit for binary labels."
        )
    return kind == _LOGITS


def _check_from_logits(model, from_logits: bool) -> None:
    """Raises a ValueError when an explicit ``from_logits`` contradicts a readable head."""
    kind, operation = _read_head(model)
    if kind is not None and (kind == _LOGITS) != from_logits:
        raise ValueError(
            f"estimate_fisher: from_logits={from_logits} but model {model.name!r} ends in "
            f"{getattr(operation, 'name', operation)!r}, which outputs "
            f"{'logits' if kind == _LOGITS else 'probabilities (' + kind + ')'}; "
            f"pass from_logits={kind == _LOGITS} or leave it None."
        )


def _output_units(model) -> Optional[int]:
    try:
        shape = model.outputs[0].shape
    except (AttributeError, ValueError, IndexError, TypeError):
        return None
    return None if not shape or shape[-1] is None else int(shape[-1])


def _log_probabilities(out: tf.Tensor, from_logits: bool) -> tf.Tensor:
    """``[B, C]`` class log-probabilities from a ``[B, C]`` output (``C = 1``: Bernoulli)."""
    out = tf.cast(out, tf.float32)
    if out.shape[-1] == 1:
        if from_logits:
            return tf.concat([tf.math.log_sigmoid(-out), tf.math.log_sigmoid(out)], axis=-1)
        q = tf.clip_by_value(out, _TINY, 1.0)
        return tf.math.log(tf.concat([tf.maximum(1.0 - q, _TINY), q], axis=-1))
    if from_logits:
        return tf.nn.log_softmax(out)
    return tf.math.log(tf.maximum(out, _TINY))


def _is_batched(dataset: tf.data.Dataset, model=None) -> bool:
    """Whether the elements of ``dataset`` are batches, whatever their batch dimension.

    A static batch dimension (``batch(..., drop_remainder=True)``) looks like a feature
    dimension, so the rank of ``x`` is compared with the model's input rank; without a
    readable input, labels of rank 0 are single examples and labels of rank 2 (``[B, 1]``) or
    with an unknown leading dimension are batches.

    Raises:
        ValueError: for an element that is not ``(x, y)`` or whose batching cannot be told.
    """
    spec = dataset.element_spec
    if not (isinstance(spec, (tuple, list)) and len(spec) == 2):
        raise ValueError(
            f"estimate_fisher: dataset elements must be (x, y) pairs, got {spec}."
        )
    x_spec = tf.nest.flatten(spec[0])
    y_spec = spec[1]
    try:
        model_inputs = list(model.inputs) if model is not None else []
    except (AttributeError, ValueError):
        model_inputs = []
    if len(model_inputs) == 1 and len(x_spec) == 1 and x_spec[0].shape.rank is not None:
        rank, model_rank = x_spec[0].shape.rank, len(model_inputs[0].shape)
        if rank in (model_rank, model_rank - 1):
            return rank == model_rank
    y_shape = getattr(y_spec, "shape", tf.TensorShape(None))
    if y_shape.rank == 0:
        return False
    if y_shape.rank == 2 or (y_shape.rank == 1 and y_shape[0] is None):
        return True
    raise ValueError(
        f"estimate_fisher cannot tell whether the dataset is batched (x: {spec[0]}, y: {y_spec}) "
        "and the model's input rank does not say; pass an unbatched dataset (dataset.unbatch()) "
        "or arrays (x, y)."
    )


def _iterate_examples(data, num_samples: int, batch_size: int, model=None) -> tf.data.Dataset:
    """Batches of ``batch_size`` ``(x, y)`` totalling at most ``num_samples`` examples, from a
    dataset (batched or not) or a pair of arrays."""
    if isinstance(data, tf.data.Dataset):
        dataset = data.unbatch() if _is_batched(data, model) else data
    else:
        if not (isinstance(data, (tuple, list)) and len(data) == 2):
            raise TypeError(
                "estimate_fisher: data must be a tf.data.Dataset of (x, y) or a tuple (x, y), "
                f"got {type(data).__name__}."
            )
        num_x, num_y = len(tf.nest.flatten(data[0])[0]), len(data[1])
        if num_x != num_y:
            raise ValueError(f"estimate_fisher: x has {num_x} examples but y has {num_y}.")
        dataset = tf.data.Dataset.from_tensor_slices((data[0], data[1]))
    return dataset.take(num_samples).batch(batch_size)


def _check_labels(y, num_classes: int) -> tf.Tensor:
    """``y`` as int64 ``[B]`` class ids, after checking shape, integrality and range.

    Raises:
        ValueError: naming the range ``[0, num_classes)`` and the offending label.
    """
    values = np.asarray(y)
    if values.ndim == 2 and values.shape[1] == 1:
        values = values[:, 0]
    if values.ndim != 1:
        raise ValueError(
            f"estimate_fisher: labels must be integer class ids of shape [batch] or [batch, 1], "
            f"got shape {values.shape} (one-hot labels: pass argmax(y, axis=-1))."
        )
    if values.dtype == bool or not np.issubdtype(values.dtype, np.number):
        raise ValueError(f"estimate_fisher: labels must be integer class ids, got {values.dtype}.")
    if np.issubdtype(values.dtype, np.floating):
        bad = ~np.isfinite(values) | (values != np.round(values))
        if bad.any():
            raise ValueError(
                f"estimate_fisher: label {values[bad][0]} is not an integer class id in "
                f"[0, {num_classes})."
            )
    outside = (values < 0) | (values >= num_classes)
    if outside.any():
        raise ValueError(
            f"estimate_fisher: label {values[outside][0]} is outside the model's classes "
            f"[0, {num_classes})" + (" (one output unit: binary labels 0/1)."
                                     if num_classes == 2 else ".")
        )
    return tf.constant(values.astype(np.int64))


def _check_output(out: tf.Tensor, from_logits: bool, model) -> int:
    """Number of classes of a ``[B, C]`` model output; probabilities are checked to be ones.

    Raises:
        ValueError: for an output that is not ``[batch, classes]``, or probabilities that are
            outside ``[0, 1]`` or do not sum to 1 over the classes.
    """
    if out.shape.rank != 2:
        raise ValueError(
            f"estimate_fisher: model {model.name!r} outputs shape {tuple(out.shape)}; "
            "a classifier output must be [batch, classes] (or [batch, 1] for binary)."
        )
    values = np.asarray(tf.cast(out, tf.float32))
    finite = np.isfinite(values).all()
    if not from_logits and finite:
        in_range = ((values >= 0) & (values <= 1)).all()
        sums_to_one = values.shape[1] == 1 or np.allclose(values.sum(axis=1), 1.0, atol=1e-2)
        if not (in_range and sums_to_one):
            raise ValueError(
                f"estimate_fisher: from_logits=False but model {model.name!r} outputs values "
                f"that are not probabilities (range [{values.min():.3g}, {values.max():.3g}]); "
                "pass from_logits=True for logits."
            )
    return max(int(values.shape[1]), 2)


def _fisher_functions(model, variables: List, kind: str, from_logits: bool):
    """Traced ``(batch_sq_grads, batch_sampled_labels, one_sq_grad)``, cached on the model per
    variables/kind/head so that repeated estimates do not retrace the vectorised Jacobian."""
    cache = getattr(model, "_wpl_fisher_functions", None)
    if cache is None:
        cache = {}
        object.__setattr__(model, "_wpl_fisher_functions", cache)
    key = (kind, bool(from_logits), tuple(id(v) for v in variables))
    cached = cache.get(key)
    if cached is not None and all(a is b for a, b in zip(cached[0], variables)):
        return cached[1]

    def log_p(x):
        return _log_probabilities(model(x, training=False), from_logits)

    @tf.function(reduce_retracing=True)
    def batch_sq_grads(x, labels, labels_seed):
        with tf.GradientTape() as tape:
            logp = log_p(x)
            if kind == "true":
                labels = tf.random.stateless_categorical(
                    tf.stop_gradient(logp), 1, seed=labels_seed)[:, 0]
            ll = tf.gather(logp, labels, batch_dims=1)  # [B]
        jac = tape.jacobian(ll, variables, experimental_use_pfor=True)
        return [tf.reduce_sum(tf.square(j), axis=0) for j in jac]

    @tf.function(reduce_retracing=True)
    def batch_sampled_labels(x, labels_seed):
        # The same draw as batch_sq_grads makes for this batch, so both methods agree.
        return tf.random.stateless_categorical(log_p(x), 1, seed=labels_seed)[:, 0]

    @tf.function(reduce_retracing=True)
    def one_sq_grad(x, labels):
        with tf.GradientTape() as tape:
            ll = tf.reduce_sum(tf.gather(log_p(x), labels, batch_dims=1))
        return [tf.square(g) for g in tape.gradient(ll, variables)]

    functions = (batch_sq_grads, batch_sampled_labels, one_sq_grad)
    cache[key] = (tuple(variables), functions)
    return functions


def _sum_squared_gradients(model, batches, variables, kind, from_logits, method, seed):
    """``(Σ_n g_n², N)`` over the batches; labels are checked against the model's classes."""
    batch_sq_grads, batch_sampled_labels, one_sq_grad = _fisher_functions(
        model, variables, kind, from_logits)
    rng = tf.random.Generator.from_seed(0 if seed is None else seed)
    totals = [tf.zeros(v.shape, tf.float32) for v in variables]
    count, num_classes = 0, None
    for x, y in batches:
        n = int(tf.shape(tf.nest.flatten(x)[0])[0])
        if num_classes is None:
            first = tf.nest.map_structure(lambda t: t[:1], x)
            num_classes = _check_output(model(first, training=False), from_logits, model)
        labels = (tf.zeros([n], tf.int64) if kind == "true"
                  else _check_labels(y, num_classes))
        seed_pair = rng.make_seeds(1)[:, 0]
        if method == "vectorized":
            totals = [t + s for t, s in zip(totals, batch_sq_grads(x, labels, seed_pair))]
        else:
            if kind == "true":
                labels = batch_sampled_labels(x, seed_pair)
            for i in range(n):
                one = tf.nest.map_structure(lambda t: t[i: i + 1], x)
                totals = [t + s for t, s in zip(totals, one_sq_grad(one, labels[i: i + 1]))]
        count += n
    return totals, count


def estimate_fisher(
    model: keras.Model,
    data,
    variables: Optional[Sequence] = None,
    *,
    num_samples: int = 200,
    kind: str = "empirical",
    batch_size: int = 50,
    from_logits: Optional[bool] = None,
    seed: Optional[int] = None,
    method: str = "vectorized",
) -> List[tf.Tensor]:
    """Diagonal Fisher of a classifier at its current weights.

    ``F_i = (1/N) Σ_n (∂ log p(ŷ_n | x_n; θ) / ∂θ_i)²`` over ``N = num_samples`` examples, where
    ``ŷ_n`` is the true label (``kind="empirical"``) or a label sampled from the model's own
    predictive distribution (``kind="true"``). Per-example gradients are computed together for
    each batch with a vectorised Jacobian (``tf.GradientTape.jacobian`` with pfor), not a Python
    loop over examples; ``method="loop"`` is the per-example loop, kept as a reference.

    Args:
        model: a Keras classifier with one ``[batch, classes]`` output (logits or softmax
            probabilities), or ``[batch, 1]`` (a binary logit or sigmoid probability).
        data: ``tf.data.Dataset`` of ``(x, y)`` (batched, with any batch dimension, or not)
            or a tuple of arrays ``(x, y)``; ``y`` holds class ids in ``[0, classes)``.
        variables: the weights to compute the Fisher of (default: all trainable weights).
        num_samples: number of examples ``N`` (paper: 200 validation images).
        kind: ``"empirical"`` or ``"true"``.
        batch_size: examples per vectorised Jacobian (memory: batch × parameters floats).
        from_logits: whether the model outputs logits; read from the output layer when None
            (see the module docstring), which raises if the layer does not tell.
        seed: seed for the sampled labels of ``kind="true"``.
        method: ``"vectorized"`` (default) or ``"loop"``.

    Returns:
        One float32 tensor per variable, same shapes.

    Raises:
        ValueError: for an unknown ``kind``/``method``, no data, an undecidable output head,
            labels that are not class ids of the model, or a non-finite result; for a
            ``num_samples`` or ``batch_size`` below 1.
        TypeError: for a ``num_samples``, ``batch_size`` or ``seed`` that is not an integer.
    """
    if kind not in ("empirical", "true"):
        raise ValueError(f"kind must be 'empirical' or 'true', got {kind!r}.")
    if method not in ("vectorized", "loop"):
        raise ValueError(f"method must be 'vectorized' or 'loop', got {method!r}.")
    num_samples = check_number("estimate_fisher: num_samples", num_samples, minimum=1,
                               integer=True)
    batch_size = check_number("estimate_fisher: batch_size", batch_size, minimum=1,
                              integer=True)
    seed = check_number("estimate_fisher: seed", seed, integer=True, optional=True)
    variables = list(model.trainable_variables if variables is None else variables)
    if not variables:
        raise ValueError("estimate_fisher: no variables to estimate the Fisher of.")
    if from_logits is None:
        from_logits = _infer_from_logits(model)
    else:
        _check_from_logits(model, bool(from_logits))
    batches = _iterate_examples(data, int(num_samples), int(batch_size), model)
    totals, count = _sum_squared_gradients(
        model, batches, variables, kind, bool(from_logits), method, seed)
    if count == 0:
        raise ValueError("estimate_fisher: the data yielded no examples (empty dataset).")
    fisher = [t / float(count) for t in totals]
    for v, f in zip(variables, fisher):
        if not bool(tf.reduce_all(tf.math.is_finite(f))):
            raise ValueError(
                f"estimate_fisher: non-finite Fisher for {_label(v)}; the model outputs "
                "NaN/Inf on this data."
            )
    return fisher


def fisher_to_numpy(fisher: Iterable[tf.Tensor]) -> List[np.ndarray]:
    """Converts a list of Fisher tensors to NumPy arrays."""
    return [np.asarray(f) for f in fisher]


def _label(v) -> str:
    return getattr(v, "path", None) or getattr(v, "name", repr(v))
