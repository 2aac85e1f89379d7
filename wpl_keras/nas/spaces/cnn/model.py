"""A searched micro-CNN architecture as a standalone Keras model: final training and export.

:func:`build_final_model` turns one architecture of :class:`MicroCellSpace` into ENAS's
fixed-architecture child (``MicroChild._fixed_layer`` in melodyguan/enas) with ordinary Keras
layers, :func:`train_final` trains it as ENAS's final run does (auxiliary head, drop-path
ramped over depth and steps, cosine with restarts, cutout) under a ``tf.distribute`` strategy
and reports the test error, and :func:`export_classifier` writes a SavedModel (serving
signature: raw images in, class probabilities out) with the cells as JSON and pictures.

A cell: its two inputs calibrated to ``filters`` channels (:func:`_calibrate`), nodes
``h_i = op_x(h_{in_x}) + op_y(h_{in_y})`` with separable convs as (ReLU → SeparableConv2D →
BN) twice, output = concatenation of every state no node takes, unused cell inputs included.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Dict, Optional, Sequence, Tuple

import keras
import numpy as np
import tensorflow as tf

from wpl_keras.nas.spaces.cnn.space import OPS, MicroCellSpace
from wpl_keras.nas.spaces.cnn.drop_path import DropPath, DropPathSchedule, drop_path_progress
from wpl_keras.nas.resumable import ResumableTraining
from wpl_keras.utils.config import JsonConfig
from wpl_keras.utils.validation import check_fields, check_number
from wpl_keras.utils.serving import save_serving_module


_SCHEDULES = ("cosine_restarts", "cosine")


@dataclasses.dataclass(frozen=True)
class FinalConfig(JsonConfig):
    """Final-training settings (the length in epochs is :func:`train_final`'s ``epochs``).

    The defaults are ENAS's final CIFAR-10 run: ``scripts/cifar10_micro_final.sh`` of
    melodyguan/enas, read with ``src/cifar10/micro_child.py`` and ``src/utils.py``.

    Attributes:
        num_cells: normal cells per stage (ENAS ``num_layers`` 15: 3 stages of 5, 2 reductions).
        filters: first-stage channels, even (ENAS ``out_filters`` 36).
        num_stages: stages, a reduction cell between two (ENAS 3).
        aux_weight: weight of the auxiliary head's loss (ENAS 0.4; 0 removes the head).
        aux_trainable: whether the auxiliary head's own weights train. False is ENAS: its train
            op lists every variable except the head's, so the head keeps its initial weights,
            has no L2 and only sends gradients into the cells. True trains it (NASNet's form).
        drop_path_keep: the smallest drop-path keep probability, reached by the last cell at
            the end of training (ENAS ``drop_path_keep_prob`` 0.6; 1 disables drop-path).
        dropout_keep: keep probability of dropout on the pooled features before the classifier
            (ENAS ``keep_prob`` 0.8; 1 disables).
        cutout: cutout square size (ENAS 16; 0 disables). batch_size: training batch (ENAS 144).
        lr_schedule: ``"cosine_restarts"`` (ENAS ``lr_cosine``: :class:`CosineRestarts`) or
            ``"cosine"`` (one cosine from ``lr_max`` to ``lr_min`` over all steps).
        lr_max, lr_min: learning-rate range (ENAS 0.05 and 0.0001).
        lr_t0, lr_t_mul: first cycle's length in epochs and the factor of each next cycle's
            (ENAS 10 and 2: cycles of 10, 20, 40, … epochs; 630 epochs = six cycles).
        momentum: Nesterov momentum (ENAS 0.9).
        weight_decay: ``λ`` of the L2 term ``λ · Σ w²`` (ENAS ``l2_reg`` 2e-4).
        l2_on_bn: the L2 term also covers BatchNorm scales and offsets (ENAS: it sums over
            every trained variable); False: kernels only.
        kernel_initializer: Keras initializer of every kernel (ENAS ``he_normal``).
        grad_clip: global-norm clip; None clips nothing, ENAS's effective value: it asks for
            per-tensor clipping at 5 (``clip_mode="norm"``), but that branch of
            ``get_train_ops`` returns the unclipped gradients.
        num_classes: classes.
    """

    num_cells: int = 5
    filters: int = 36
    num_stages: int = 3
    aux_weight: float = 0.4
    aux_trainable: bool = False
    drop_path_keep: float = 0.6
    dropout_keep: float = 0.8
    cutout: int = 16
    batch_size: int = 144
    lr_schedule: str = "cosine_restarts"
    lr_max: float = 0.05
    lr_min: float = 0.0001
    lr_t0: int = 10
    lr_t_mul: int = 2
    momentum: float = 0.9
    weight_decay: float = 2e-4
    l2_on_bn: bool = True
    kernel_initializer: str = "he_normal"
    grad_clip: Optional[float] = None
    num_classes: int = 10

    def __post_init__(self):
        positive, probability = dict(integer=True, minimum=1), dict(
            minimum=0, maximum=1, exclusive_minimum=True)
        check_fields(self, {
            "num_cells": positive, "filters": dict(integer=True, minimum=2),
            "num_stages": positive, "batch_size": positive, "lr_t0": positive,
            "lr_t_mul": positive, "num_classes": dict(integer=True, minimum=2),
            "cutout": dict(integer=True, minimum=0), "aux_weight": dict(minimum=0),
            "drop_path_keep": probability, "dropout_keep": probability,
            "lr_max": dict(minimum=0, exclusive_minimum=True), "lr_min": dict(minimum=0),
            "momentum": dict(minimum=0, maximum=1, exclusive_maximum=True),
            "weight_decay": dict(minimum=0),
            "grad_clip": dict(minimum=0, exclusive_minimum=True, optional=True),
        })
        if self.filters % 2:
            raise ValueError(f"FinalConfig.filters must be an even integer >= 2, got "
                             f"{self.filters}.")
        if self.lr_schedule not in _SCHEDULES:
            raise ValueError(f"lr_schedule must be one of {_SCHEDULES}, got {self.lr_schedule!r}.")


@keras.saving.register_keras_serializable(package="wpl_keras")
class CosineRestarts(keras.optimizers.schedules.LearningRateSchedule):
    """Cosine learning rate with warm restarts, constant within an epoch (ENAS ``lr_cosine``).

    At step ``t`` the epoch is ``e = ⌊t / steps_per_epoch⌋``. Cycle ``i`` lasts
    ``T_i = t0 · t_mul^i`` epochs from epoch ``S_i = T_0 + … + T_{i−1}``; for
    ``S_i ≤ e < S_i + T_i``: ``lr = lr_min + ½ (lr_max − lr_min) (1 + cos(π (e − S_i) / T_i))``,
    so each cycle starts at ``lr_max``.
    """

    def __init__(self, lr_max: float, lr_min: float, t0: int, t_mul: int, steps_per_epoch: int):
        self.lr_max, self.lr_min, self.t0, self.t_mul = float(lr_max), float(lr_min), t0, t_mul
        self.steps_per_epoch = max(int(steps_per_epoch), 1)

    def __call__(self, step):
        epoch = tf.cast(tf.convert_to_tensor(step), tf.int64) // self.steps_per_epoch
        start, length = tf.while_loop(
            lambda s, n: epoch >= s + n, lambda s, n: (s + n, n * self.t_mul),
            (tf.constant(0, tf.int64), tf.constant(self.t0, tf.int64)),
        )
        frac = tf.cast(epoch - start, tf.float32) / tf.cast(length, tf.float32)
        return self.lr_min + 0.5 * (self.lr_max - self.lr_min) * (1.0 + tf.cos(np.pi * frac))

    def get_config(self):
        return {"lr_max": self.lr_max, "lr_min": self.lr_min, "t0": self.t0,
                "t_mul": self.t_mul, "steps_per_epoch": self.steps_per_epoch}


def learning_rate_schedule(config: FinalConfig, steps_per_epoch: int, epochs: int):
    """``config.lr_schedule``'s schedule: :class:`CosineRestarts`, or one cosine from
    ``lr_max`` to ``lr_min`` over ``epochs · steps_per_epoch`` steps."""
    if config.lr_schedule == "cosine":
        return keras.optimizers.schedules.CosineDecay(
            config.lr_max, max(epochs * steps_per_epoch, 1),
            alpha=config.lr_min / config.lr_max)
    return CosineRestarts(config.lr_max, config.lr_min, config.lr_t0, config.lr_t_mul,
                          steps_per_epoch)


@keras.saving.register_keras_serializable(package="wpl_keras")
class ShiftDown(keras.layers.Layer):
    """``x[:, 1:, 1:, :]`` padded back with zeros at the bottom/right (factorised reduction)."""

    def call(self, x):
        return tf.pad(x[:, 1:, 1:, :], [[0, 0], [0, 1], [0, 1], [0, 0]])


def _reg(config: FinalConfig):
    return keras.regularizers.L2(config.weight_decay) if config.weight_decay else None


def _conv(filters, size, config, name, strides=1):
    return keras.layers.Conv2D(filters, size, strides=strides, padding="same", use_bias=False,
                               kernel_initializer=config.kernel_initializer,
                               kernel_regularizer=_reg(config), name=name)


def _bn(x, config, name):
    reg = _reg(config) if config.l2_on_bn else None
    return keras.layers.BatchNormalization(momentum=0.9, epsilon=1e-3, beta_regularizer=reg,
                                           gamma_regularizer=reg, name=name)(x)


def _relu_conv_bn(x, filters, config, name):
    x = keras.layers.ReLU(name=f"{name}_relu")(x)
    return _bn(_conv(filters, 1, config, f"{name}_conv")(x), config, f"{name}_bn")


def _factorized_reduce(x, filters, config, name, relu):
    """Stride 2 without loss: [1×1 conv of x, 1×1 conv of x shifted by one pixel] → BN."""
    if relu:
        x = keras.layers.ReLU(name=f"{name}_relu")(x)
    a = _conv(filters // 2, 1, config, f"{name}_conv_a", strides=2)(x)
    shifted = ShiftDown(name=f"{name}_shift")(x)
    b = _conv(filters // 2, 1, config, f"{name}_conv_b", strides=2)(shifted)
    return _bn(keras.layers.Concatenate(name=f"{name}_concat")([a, b]), config, f"{name}_bn")


def _op(x, op: str, filters: int, stride: int, config: FinalConfig, name: str):
    if op == "identity":
        return x if stride == 1 else _factorized_reduce(x, filters, config, name, relu=False)
    if op in ("avg3x3", "max3x3"):
        pool = keras.layers.AveragePooling2D if op == "avg3x3" else keras.layers.MaxPooling2D
        return pool(3, stride, "same", name=name)(x)
    size = 3 if op == "sep3x3" else 5
    for rep in range(2):
        x = keras.layers.ReLU(name=f"{name}_relu{rep}")(x)
        x = keras.layers.SeparableConv2D(
            filters, size, strides=stride if rep == 0 else 1, padding="same", use_bias=False,
            depthwise_initializer=config.kernel_initializer,
            pointwise_initializer=config.kernel_initializer,
            depthwise_regularizer=_reg(config), pointwise_regularizer=_reg(config),
            name=f"{name}_sep{rep}",
        )(x)
        x = _bn(x, config, f"{name}_bn{rep}")
    return x


def _calibrate(inputs, filters, config, name):
    """ENAS's input calibration: the older input is factorised-reduced when its size is twice
    the newer one's, else 1×1-convolved when its width differs; the newer input is
    1×1-convolved when its width differs, then always once more (ENAS's ``layer_base``)."""
    x0, x1 = inputs
    if x0.shape[1] != x1.shape[1]:
        x0 = _factorized_reduce(x0, filters, config, f"{name}_in0", relu=True)
    elif x0.shape[-1] != filters:
        x0 = _relu_conv_bn(x0, filters, config, f"{name}_in0")
    if x1.shape[-1] != filters:
        x1 = _relu_conv_bn(x1, filters, config, f"{name}_in1")
    return [x0, _relu_conv_bn(x1, filters, config, f"{name}_base")]


def _combine(states, used, filters, config, name):
    """Concatenation of the states no node takes (cell inputs included); a larger one (an
    unused input of a reduction cell) is factorised-reduced first. As in ENAS's fixed child
    (``_fixed_combine``) no conv follows: the next cells' :func:`_calibrate` brings the
    ``k · filters`` channels back with ReLU → 1×1 conv → BN."""
    loose = [k for k, count in enumerate(used) if count == 0]
    size = min(states[k].shape[1] for k in loose)
    outs = [states[k] if states[k].shape[1] == size else
            _factorized_reduce(states[k], filters, config, f"{name}_out{k}", relu=False)
            for k in loose]
    if len(outs) == 1:
        return outs[0]
    return keras.layers.Concatenate(name=f"{name}_out")(outs)


def _cell(cell, inputs, filters, reduction, drop, config, name):
    """One cell in ENAS's fixed-architecture form. In a reduction cell the ops on the cell
    inputs have stride 2 (identity: a factorised reduction). ``drop``: ``(layer_ratio,
    progress)`` of the cell's :class:`DropPath` layers, placed after every op except
    identity, or None."""
    states = _calibrate(inputs, filters, config, name)
    used = [0] * (len(cell) + 2)
    for i, (in_x, op_x, in_y, op_y) in enumerate(cell):
        parts = []
        for slot, (src, op) in enumerate(((in_x, op_x), (in_y, op_y))):
            used[src] += 1
            node = f"{name}_n{i + 2}{'xy'[slot]}"
            stride = 2 if reduction and src < 2 else 1
            y = _op(states[src], OPS[op], filters, stride, config, node)
            if drop is not None and OPS[op] != "identity":
                y = DropPath(config.drop_path_keep, drop[0], drop[1],
                             name=f"{node}_droppath")(y)
            parts.append(y)
        states.append(keras.layers.Add(name=f"{name}_n{i + 2}")(parts))
    return _combine(states, used, filters, config, name)


def _aux_head(x, config: FinalConfig):
    """ENAS's auxiliary head: ReLU → 5×5 average pool, stride 3, valid (the window shrinks to
    the map on maps under 5×5) → 1×1 conv 128 → BN → ReLU → conv 768 with a kernel the size
    of the pooled map, same padding → BN → ReLU → global average → dense, no bias. Frozen
    (``aux_trainable`` False): kernels fixed at their initial values, BN without scale and
    offset (ENAS's untrained 1 and 0), still on batch statistics in training."""
    train = config.aux_trainable
    reg = _reg(config) if train else None
    bn_reg = reg if config.l2_on_bn else None
    x = keras.layers.ReLU(name="aux_relu")(x)
    window = min(5, x.shape[1], x.shape[2])
    x = keras.layers.AveragePooling2D(window, 3, "valid", name="aux_pool")(x)
    for width, kernel in ((128, 1), (768, x.shape[1])):
        x = keras.layers.Conv2D(width, kernel, padding="same", use_bias=False,
                                kernel_initializer=config.kernel_initializer,
                                kernel_regularizer=reg, trainable=train,
                                name=f"aux_conv{width}")(x)
        x = keras.layers.BatchNormalization(
            momentum=0.9, epsilon=1e-3, center=train, scale=train, beta_regularizer=bn_reg,
            gamma_regularizer=bn_reg, name=f"aux_bn{width}")(x)
        x = keras.layers.ReLU(name=f"aux_relu{width}")(x)
    x = keras.layers.GlobalAveragePooling2D(name="aux_gap")(x)
    return keras.layers.Dense(config.num_classes, use_bias=False, kernel_regularizer=reg,
                              kernel_initializer=config.kernel_initializer, trainable=train,
                              name="aux_logits")(x)


def _plan(config: FinalConfig):
    """Reduction flag of each cell: ``num_cells`` normal cells per stage, one reduction cell
    between stages; and the index of the cell feeding the auxiliary head (ENAS: the cell
    after the last reduction cell; with one stage the cell at ``⌊2L/3⌋``)."""
    plan = []
    for stage in range(config.num_stages):
        plan += [True] * (stage > 0) + [False] * config.num_cells
    reductions = [k for k, reduction in enumerate(plan) if reduction]
    return plan, (reductions[-1] + 1 if reductions else (2 * len(plan)) // 3)


def build_final_model(
    space: MicroCellSpace,
    arch: Sequence[int],
    config: FinalConfig = FinalConfig(),
    input_shape: Tuple[int, int, int] = (32, 32, 3),
) -> keras.Model:
    """A standalone Keras model of ``arch`` (normalised images in, logits out), ENAS's
    fixed-architecture child.

    Stem 3×3 conv to ``3 · filters`` → BN; cells (see :func:`_cell`), the width doubling at
    each reduction; ReLU → global average → dropout → dense without bias. Outputs
    ``[logits, aux_logits]`` when ``config.aux_weight > 0`` (see :func:`_aux_head`), else
    ``logits``; :func:`classifier_of` gives a single-output view. The drop-path progress
    starts at 0 (nothing dropped): train with :class:`DropPathSchedule`, as
    :func:`train_final` does.

    Raises:
        InvalidArchitectureError: if ``arch`` is not in ``space``.
    """
    normal, reduce = space.cells(arch)
    inputs = keras.Input(input_shape, name="images")
    stem = _conv(config.filters * 3, 3, config, "stem_conv")(inputs)
    prev_prev = prev = _bn(stem, config, "stem_bn")
    plan, aux_at = _plan(config)
    progress = None
    if config.drop_path_keep < 1.0:
        progress = keras.Variable(0.0, trainable=False, name="drop_path_progress")
    filters, aux_input = config.filters, None
    for k, reduction in enumerate(plan):
        filters *= 2 if reduction else 1
        drop = None if progress is None else ((k + 1) / len(plan), progress)
        out = _cell(reduce if reduction else normal, (prev_prev, prev), filters, reduction,
                    drop, config, f"cell{k}_{'reduce' if reduction else 'normal'}")
        prev_prev, prev = prev, out
        aux_input = out if k == aux_at else aux_input
    x = keras.layers.ReLU(name="head_relu")(prev)
    x = keras.layers.GlobalAveragePooling2D(name="head_pool")(x)
    if config.dropout_keep < 1.0:
        x = keras.layers.Dropout(1.0 - config.dropout_keep, name="head_dropout")(x)
    logits = keras.layers.Dense(config.num_classes, use_bias=False,
                                kernel_initializer=config.kernel_initializer,
                                kernel_regularizer=_reg(config), name="logits")(x)
    if config.aux_weight <= 0:
        return keras.Model(inputs, logits, name="enas_micro_final")
    return keras.Model(inputs, [logits, _aux_head(aux_input, config)], name="enas_micro_final")


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
    checkpoint: Optional[ResumableTraining] = None,
) -> Tuple[keras.Model, Dict[str, float]]:
    """Trains ``arch`` from scratch on the train split and reports the test error.

    SGD with Nesterov momentum on :func:`learning_rate_schedule`, cross-entropy
    ``+ aux_weight ·`` auxiliary cross-entropy ``+`` L2, drop-path ramped by
    :class:`DropPathSchedule` over all ``epochs · steps_per_epoch`` steps, padded crop + flip
    + cutout; everything under ``strategy`` (default: the current one). Batch ``s`` of epoch
    ``e`` is a pure function of ``(seed, e, s)``
    (:func:`~wpl_keras.data.cifar10_pipeline.epoch_batches`) and every random draw of the
    model comes from its seed generators, so a run restored from ``checkpoint`` (weights,
    SGD slots and step, generator states, the epoch's losses; see
    :class:`~wpl_keras.nas.resumable.ResumableTraining`) continues exactly as the
    uninterrupted run.

    Args:
        arrays: :class:`wpl_keras.data.cifar10.CIFAR10Arrays` (train and test).
        epochs: training length (>= 1).
        train_size: train on a random subset of this size (None: all).
        checkpoint: where the run checkpoints as it goes, and resumes from (None: nothing
            kept).

    Returns:
        The trained model and ``{"test_error_percent", "test_accuracy", "train_loss",
        "seconds", "replicas", "lossy_jpeg"}`` (``train_loss``: the last epoch's mean;
        ``seconds``: training time over every process of a resumed run).
    """
    from wpl_keras.data.cifar10 import subsample
    from wpl_keras.data.cifar10_pipeline import epoch_batches

    epochs = check_number("train_final: epochs", epochs, minimum=1, integer=True)
    check_number("train_final: train_size", train_size, minimum=1, integer=True, optional=True)
    strategy = strategy or tf.distribute.get_strategy()
    keras.utils.set_random_seed(seed)
    x_train, y_train = subsample(arrays.x_train, arrays.y_train, train_size, seed)
    steps_per_epoch = max(len(x_train) // config.batch_size, 1)
    model, optimizer = _compiled_model(space, arch, config, tuple(arrays.x_train.shape[1:]),
                                       strategy, learning_rate_schedule(
                                           config, steps_per_epoch, epochs))
    run = checkpoint or ResumableTraining()
    run.start(model=model, optimizer=optimizer)
    progress = drop_path_progress(model)
    callbacks = [run.keras_callback()] + ([] if progress is None else [
        DropPathSchedule(progress, epochs * steps_per_epoch)])
    with run:
        while run.epoch < epochs:
            if run.step < steps_per_epoch:  # else saved after its last batch
                train = epoch_batches(x_train, y_train, config.batch_size, epoch=run.epoch,
                                      start_step=run.step, cutout_size=config.cutout, seed=seed)
                if len(model.outputs) == 2:
                    train = train.map(lambda x, y: (x, (y, y)))
                model.fit(train, epochs=1, verbose=verbose, shuffle=False, callbacks=callbacks)
            run.epoch_done()
    accuracy = evaluate_accuracy(classifier_of(model), arrays.x_test, arrays.y_test)
    return model, {
        "test_error_percent": 100.0 * (1.0 - accuracy),
        "test_accuracy": accuracy,
        "train_loss": run.last_epoch_loss,
        "seconds": run.seconds,
        "replicas": int(strategy.num_replicas_in_sync),
        "lossy_jpeg": bool(getattr(arrays, "lossy_jpeg", False)),
    }


def _compiled_model(space, arch, config: FinalConfig, input_shape, strategy, learning_rate):
    """``(model, optimizer)``: :func:`build_final_model` compiled under ``strategy`` with SGD
    (Nesterov momentum, ``global_clipnorm`` ``grad_clip``), the optimizer built (its slots
    exist before a checkpoint is restored into them)."""
    with strategy.scope():
        model = build_final_model(space, arch, config, input_shape)
        optimizer = keras.optimizers.SGD(learning_rate, momentum=config.momentum,
                                         nesterov=True, global_clipnorm=config.grad_clip)
        loss, weights = _loss_fn(config, len(model.outputs))
        model.compile(optimizer=optimizer, loss=loss, loss_weights=weights)
        optimizer.build(model.trainable_variables)
    return model, optimizer


def evaluate_accuracy(model: keras.Model, x: np.ndarray, y: np.ndarray,
                      batch_size: int = 500) -> float:
    """Top-1 accuracy of a logits (or probabilities) model on uint8 images ``x``."""
    from wpl_keras.data.cifar10_pipeline import make_dataset

    correct = 0
    for images, labels in make_dataset(x, y, batch_size, training=False):
        pred = tf.argmax(model(images, training=False), -1, output_type=tf.int32)
        correct += int(tf.reduce_sum(tf.cast(tf.equal(pred, labels), tf.int32)))
    return correct / len(x)


class _Serving(tf.Module):
    """The serving function of a classifier, which it reaches through a closure (its Keras
    variables are not tracked; :func:`~wpl_keras.utils.serving.save_serving_module` tracks
    the ``tf.Variable`` objects the signature captures)."""

    def __init__(self, model: keras.Model, input_shape):
        super().__init__()
        from wpl_keras.data.cifar10_pipeline import MEAN, STD

        mean, std = tf.constant(MEAN), tf.constant(STD)

        @tf.function(input_signature=[
            tf.TensorSpec((None,) + tuple(input_shape), tf.float32, "images")])
        def serve(images):
            logits = model((images / 255.0 - mean) / std, training=False)
            return {"probabilities": tf.nn.softmax(logits, axis=-1)}

        self.serve = serve


def export_classifier(model: keras.Model, arch: Sequence[int], space: MicroCellSpace,
                      export_dir: str) -> Dict[str, str]:
    """Writes the SavedModel with ``cells.json`` and ``cells.png`` as the next version folder
    of ``export_dir`` (TensorFlow Serving's layout,
    :func:`~wpl_keras.utils.serving.save_serving_module`).

    The ``serving_default`` signature takes ``images``: float32 ``[N, H, W, 3]`` raw pixel
    values in ``[0, 255]`` (normalised inside with the CIFAR-10 mean/std) and returns
    ``probabilities``: ``softmax(logits)`` ``[N, classes]``. It serves through the
    session-based loader (TensorFlow Serving, ``saved_model_cli run``) as well as
    ``tf.saved_model.load``.

    Returns:
        Paths of the version folder (``"saved_model"``), the JSON and the picture in it.
    """
    arch = space.validate(arch)
    classifier = classifier_of(model)
    normal, reduce = space.cells(arch)

    def write_cells(folder: str) -> None:
        with open(os.path.join(folder, "cells.json"), "w", encoding="utf-8") as handle:
            json.dump({**space.to_json(arch), "num_nodes": space.num_nodes, "ops": list(OPS),
                       "normal": [list(n) for n in normal],
                       "reduce": [list(n) for n in reduce]}, handle, indent=2)
        space.plot(arch, os.path.join(folder, "cells.png"))

    module = _Serving(classifier, classifier.inputs[0].shape[1:])
    saved = save_serving_module(module, export_dir, {"serving_default": module.serve},
                                side_files=write_cells)
    return {"saved_model": saved, "cells_json": os.path.join(saved, "cells.json"),
            "cells_png": os.path.join(saved, "cells.png")}
