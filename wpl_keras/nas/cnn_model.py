"""A searched micro-CNN architecture as a standalone Keras model: final training and export.

:func:`build_final_model` turns one architecture of :class:`MicroCellSpace` into a functional
Keras model with ordinary layers (the ENAS final recipe: more cells and filters than the
search, an auxiliary head, drop-path), :func:`train_final` trains it under a
``tf.distribute`` strategy with cutout and a cosine learning rate and reports the test error,
and :func:`export_classifier` writes a SavedModel (serving signature: raw images in, class
probabilities out) with the cells as JSON and pictures.

Cells are the same as in the supernet (:mod:`wpl_keras.nas.cnn_supernet`): inputs calibrated
by a 1×1 conv or a factorised reduction, node ``h_i = op_x(h_{in_x}) + op_y(h_{in_y})``,
output = mean of the loose-end nodes; here normalisation is batch normalisation and separable
convs are ReLU → SeparableConv2D → BN, applied twice (the ENAS/NASNet final-model form).
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from typing import Dict, Optional, Sequence, Tuple

import keras
import numpy as np
import tensorflow as tf

from wpl_keras.nas.cnn_space import OPS, MicroCellSpace
from wpl_keras.utils.config import JsonConfig


@dataclasses.dataclass(frozen=True)
class FinalConfig(JsonConfig):
    """Final-training settings (the length in epochs is :func:`train_final`'s ``epochs``).

    Attributes:
        num_cells: normal cells per stage. filters: first-stage channels (even).
        num_stages: stages (reductions between them).
        aux_weight: weight of the auxiliary head's loss (0 disables the head); the head sits
            after the last reduction cell.
        drop_path_keep: keep probability of a node input at the last cell (linearly closer
            to 1 for earlier cells); 1 disables drop-path.
        cutout: cutout square size (0 disables). batch_size: training batch.
        lr_max, lr_min: cosine schedule over all steps. momentum: Nesterov momentum.
        weight_decay: L2 coefficient on conv/dense kernels. grad_clip: global-norm clip.
        num_classes: classes.
    """

    num_cells: int = 5
    filters: int = 36
    num_stages: int = 3
    aux_weight: float = 0.4
    drop_path_keep: float = 0.6
    cutout: int = 16
    batch_size: int = 144
    lr_max: float = 0.05
    lr_min: float = 0.0001
    momentum: float = 0.9
    weight_decay: float = 2e-4
    grad_clip: Optional[float] = 5.0
    num_classes: int = 10

    def __post_init__(self):
        if self.filters < 2 or self.filters % 2:
            raise ValueError(f"filters must be an even number >= 2, got {self.filters}.")
        if self.num_cells < 1 or self.num_stages < 1 or self.batch_size < 1:
            raise ValueError("num_cells, num_stages and batch_size must be >= 1.")
        if not 0.0 < self.drop_path_keep <= 1.0:
            raise ValueError(f"drop_path_keep must be in (0, 1], got {self.drop_path_keep}.")


@keras.saving.register_keras_serializable(package="wpl_keras")
class DropPath(keras.layers.Layer):
    """Training-only drop of whole examples' paths: ``x · floor(keep + U) / keep``."""

    def __init__(self, keep_prob: float, **kwargs):
        super().__init__(**kwargs)
        self.keep_prob = float(keep_prob)

    def call(self, x, training=None):
        if not training or self.keep_prob >= 1.0:
            return x
        batch = tf.shape(x)[0]
        keep = tf.floor(self.keep_prob + tf.random.uniform([batch, 1, 1, 1], dtype=x.dtype))
        return x * keep / self.keep_prob

    def get_config(self):
        return {**super().get_config(), "keep_prob": self.keep_prob}


@keras.saving.register_keras_serializable(package="wpl_keras")
class ShiftDown(keras.layers.Layer):
    """``x[:, 1:, 1:, :]`` padded back with zeros at the bottom/right (factorised reduction)."""

    def call(self, x):
        return tf.pad(x[:, 1:, 1:, :], [[0, 0], [0, 1], [0, 1], [0, 0]])


def _reg(config: FinalConfig):
    return keras.regularizers.L2(config.weight_decay) if config.weight_decay else None


def _bn(x, name):
    return keras.layers.BatchNormalization(momentum=0.9, epsilon=1e-5, name=name)(x)


def _conv1x1(x, filters, config, name):
    x = keras.layers.ReLU(name=f"{name}_relu")(x)
    x = keras.layers.Conv2D(filters, 1, use_bias=False, kernel_regularizer=_reg(config),
                            name=f"{name}_conv")(x)
    return _bn(x, f"{name}_bn")


def _factorized_reduce(x, filters, config, name):
    x = keras.layers.ReLU(name=f"{name}_relu")(x)
    a = keras.layers.Conv2D(filters // 2, 1, strides=2, use_bias=False,
                            kernel_regularizer=_reg(config), name=f"{name}_conv_a")(x)
    shifted = ShiftDown(name=f"{name}_shift")(x)
    b = keras.layers.Conv2D(filters // 2, 1, strides=2, use_bias=False,
                            kernel_regularizer=_reg(config), name=f"{name}_conv_b")(shifted)
    return _bn(keras.layers.Concatenate(name=f"{name}_concat")([a, b]), f"{name}_bn")


def _op(x, op: str, filters: int, config: FinalConfig, name: str):
    if op == "identity":
        return x
    if op == "avg3x3":
        return keras.layers.AveragePooling2D(3, 1, "same", name=name)(x)
    if op == "max3x3":
        return keras.layers.MaxPooling2D(3, 1, "same", name=name)(x)
    size = 3 if op == "sep3x3" else 5
    for rep in range(2):
        x = keras.layers.ReLU(name=f"{name}_relu{rep}")(x)
        x = keras.layers.SeparableConv2D(
            filters, size, padding="same", use_bias=False,
            depthwise_regularizer=_reg(config), pointwise_regularizer=_reg(config),
            name=f"{name}_sep{rep}",
        )(x)
        x = _bn(x, f"{name}_bn{rep}")
    return x


def _cell(space, cell, inputs, reduce_inputs, filters, keep, config, name):
    states = []
    for k, (x, reduce) in enumerate(zip(inputs, reduce_inputs)):
        if reduce:
            states.append(_factorized_reduce(x, filters, config, f"{name}_in{k}"))
        else:
            states.append(_conv1x1(x, filters, config, f"{name}_in{k}"))
    for i, (in_x, op_x, in_y, op_y) in enumerate(cell):
        parts = []
        for slot, (src, op) in enumerate(((in_x, op_x), (in_y, op_y))):
            y = _op(states[src], OPS[op], filters, config, f"{name}_n{i + 2}{'xy'[slot]}")
            if keep < 1.0:
                y = DropPath(keep, name=f"{name}_n{i + 2}{'xy'[slot]}_droppath")(y)
            parts.append(y)
        states.append(keras.layers.Add(name=f"{name}_n{i + 2}")(parts))
    loose = [states[n] for n in space.loose_ends(cell)]
    if len(loose) == 1:
        return loose[0]
    return keras.layers.Average(name=f"{name}_out")(loose)


def build_final_model(
    space: MicroCellSpace,
    arch: Sequence[int],
    config: FinalConfig = FinalConfig(),
    input_shape: Tuple[int, int, int] = (32, 32, 3),
) -> keras.Model:
    """A standalone Keras model of ``arch`` (normalised images in, logits out).

    Outputs ``[logits, aux_logits]`` when ``config.aux_weight > 0`` (the auxiliary head sits
    after the last reduction cell, or after the first cell with one stage), else ``logits``.
    Use :func:`classifier_of` for a single-output view.

    Raises:
        InvalidArchitectureError: if ``arch`` is not in ``space``.
    """
    normal, reduce = space.cells(arch)
    inputs = keras.Input(input_shape, name="images")
    stem = keras.layers.Conv2D(config.filters * 3, 3, padding="same", use_bias=False,
                               kernel_regularizer=_reg(config), name="stem_conv")(inputs)
    stem = _bn(stem, "stem_bn")
    plan = []
    for stage in range(config.num_stages):
        if stage > 0:
            plan.append((1, stage))
        plan += [(0, stage)] * config.num_cells
    total = len(plan)
    prev_prev, prev = (stem, 0), (stem, 0)
    aux_input = None
    for k, (cell_type, stage) in enumerate(plan):
        filters = config.filters * 2**stage
        keep = 1.0 - (1.0 - config.drop_path_keep) * (k + 1) / total
        reduce_inputs = [prev_prev[1] < stage, prev[1] < stage]
        out = _cell(space, reduce if cell_type else normal, (prev_prev[0], prev[0]),
                    reduce_inputs, filters, keep, config,
                    f"cell{k}_{'reduce' if cell_type else 'normal'}")
        prev_prev, prev = prev, (out, stage)
        if cell_type == 1 and stage == config.num_stages - 1:
            aux_input = out
    if aux_input is None:  # one stage: no reduction cell
        aux_input = prev[0]
    x = keras.layers.ReLU(name="head_relu")(prev[0])
    x = keras.layers.GlobalAveragePooling2D(name="head_pool")(x)
    logits = keras.layers.Dense(config.num_classes, kernel_regularizer=_reg(config),
                                name="logits")(x)
    if config.aux_weight <= 0:
        return keras.Model(inputs, logits, name="enas_micro_final")
    a = keras.layers.ReLU(name="aux_relu0")(aux_input)
    a = keras.layers.AveragePooling2D(5, 3, padding="same", name="aux_pool")(a)
    a = keras.layers.Conv2D(128, 1, use_bias=False, kernel_regularizer=_reg(config),
                            name="aux_conv")(a)
    a = keras.layers.ReLU(name="aux_relu1")(_bn(a, "aux_bn"))
    a = keras.layers.GlobalAveragePooling2D(name="aux_gap")(a)
    aux = keras.layers.Dense(config.num_classes, name="aux_logits")(a)
    return keras.Model(inputs, [logits, aux], name="enas_micro_final")


def classifier_of(model: keras.Model) -> keras.Model:
    """The main-logits view of a model from :func:`build_final_model` (shares weights)."""
    if len(model.outputs) == 1:
        return model
    return keras.Model(model.inputs, model.outputs[0], name=f"{model.name}_classifier")


def _loss_fn(config: FinalConfig, num_outputs: int):
    ce = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    if num_outputs == 1:
        return ce, None
    return [ce, ce], [1.0, config.aux_weight]


def train_final(
    space: MicroCellSpace,
    arch: Sequence[int],
    config: FinalConfig,
    arrays,
    *,
    epochs: int,
    strategy: Optional[tf.distribute.Strategy] = None,
    seed: int = 0,
    train_size: Optional[int] = None,
    verbose: int = 0,
) -> Tuple[keras.Model, Dict[str, float]]:
    """Trains ``arch`` from scratch on the train split and reports the test error.

    SGD with Nesterov momentum, cosine learning rate from ``lr_max`` to ``lr_min`` over all
    steps, cross-entropy ``+ aux_weight ·`` auxiliary cross-entropy, L2 on kernels, padded crop
    + flip + cutout; everything under ``strategy`` (default: the current one).

    Args:
        arrays: :class:`wpl_keras.data.cifar10.CIFAR10Arrays` (train and test).
        epochs: training length (>= 1).
        train_size: train on a random subset of this size (None: all).

    Returns:
        The trained model and ``{"test_error_percent", "test_accuracy", "train_loss",
        "seconds", "replicas", "lossy_jpeg"}``.
    """
    from wpl_keras.data.cifar10 import make_dataset, subsample

    if int(epochs) < 1:
        raise ValueError(f"train_final needs epochs >= 1, got {epochs}.")
    epochs = int(epochs)
    strategy = strategy or tf.distribute.get_strategy()
    keras.utils.set_random_seed(seed)
    x_train, y_train = subsample(arrays.x_train, arrays.y_train, train_size, seed)
    steps_per_epoch = max(len(x_train) // config.batch_size, 1)
    with strategy.scope():
        model = build_final_model(space, arch, config, tuple(arrays.x_train.shape[1:]))
        schedule = keras.optimizers.schedules.CosineDecay(
            config.lr_max, epochs * steps_per_epoch,
            alpha=config.lr_min / config.lr_max,
        )
        optimizer = keras.optimizers.SGD(schedule, momentum=config.momentum, nesterov=True,
                                         global_clipnorm=config.grad_clip)
        loss, weights = _loss_fn(config, len(model.outputs))
        model.compile(optimizer=optimizer, loss=loss, loss_weights=weights)
    train = make_dataset(x_train, y_train, config.batch_size, training=True,
                         cutout_size=config.cutout, seed=seed, drop_remainder=True)
    if len(model.outputs) == 2:
        train = train.map(lambda x, y: (x, (y, y)))
    start = time.time()
    history = model.fit(train, epochs=epochs, verbose=verbose, shuffle=False)
    seconds = time.time() - start
    accuracy = evaluate_accuracy(classifier_of(model), arrays.x_test, arrays.y_test)
    return model, {
        "test_error_percent": 100.0 * (1.0 - accuracy),
        "test_accuracy": accuracy,
        "train_loss": float(history.history["loss"][-1]),
        "seconds": seconds,
        "replicas": int(strategy.num_replicas_in_sync),
        "lossy_jpeg": bool(getattr(arrays, "lossy_jpeg", False)),
    }


def evaluate_accuracy(model: keras.Model, x: np.ndarray, y: np.ndarray,
                      batch_size: int = 500) -> float:
    """Top-1 accuracy of a logits (or probabilities) model on uint8 images ``x``."""
    from wpl_keras.data.cifar10 import make_dataset

    correct = 0
    for images, labels in make_dataset(x, y, batch_size, training=False):
        pred = tf.argmax(model(images, training=False), -1, output_type=tf.int32)
        correct += int(tf.reduce_sum(tf.cast(tf.equal(pred, labels), tf.int32)))
    return correct / len(x)


class _Serving(tf.Module):
    def __init__(self, model: keras.Model, input_shape):
        super().__init__()
        self.model = model
        from wpl_keras.data.cifar10 import MEAN, STD

        self.mean = tf.constant(MEAN)
        self.std = tf.constant(STD)
        self.serve = tf.function(
            self._serve,
            input_signature=[tf.TensorSpec((None,) + tuple(input_shape), tf.float32, "images")],
        )

    def _serve(self, images):
        x = (images / 255.0 - self.mean) / self.std
        logits = self.model(x, training=False)
        return {"probabilities": tf.nn.softmax(logits, axis=-1)}


def export_classifier(model: keras.Model, arch: Sequence[int], space: MicroCellSpace,
                      export_dir: str) -> Dict[str, str]:
    """Writes a SavedModel plus ``cells.json`` and ``cells.png`` to ``export_dir``.

    The ``serving_default`` signature takes ``images``: float32 ``[N, H, W, 3]`` raw pixel
    values in ``[0, 255]`` (normalised inside with the CIFAR-10 mean/std) and returns
    ``probabilities``: ``softmax(logits)`` ``[N, classes]``.

    Returns:
        Paths of the SavedModel folder, the JSON and the picture.
    """
    arch = space.validate(arch)
    classifier = classifier_of(model)
    os.makedirs(export_dir, exist_ok=True)
    saved = os.path.join(export_dir, "saved_model")
    module = _Serving(classifier, classifier.inputs[0].shape[1:])
    tf.saved_model.save(module, saved, signatures={"serving_default": module.serve})
    cells_json = os.path.join(export_dir, "cells.json")
    normal, reduce = space.cells(arch)
    with open(cells_json, "w", encoding="utf-8") as handle:
        json.dump({**space.to_json(arch), "num_nodes": space.num_nodes, "ops": list(OPS),
                   "normal": [list(n) for n in normal], "reduce": [list(n) for n in reduce]},
                  handle, indent=2)
    picture = space.plot(arch, os.path.join(export_dir, "cells.png"))
    return {"saved_model": saved, "cells_json": cells_json, "cells_png": picture}
