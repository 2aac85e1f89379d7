"""One-trace ENAS micro-CNN supernet: the Keras model whose weights every architecture shares.

:class:`CNNSupernet` is a subclassed Keras model whose call takes ``(images, arch)`` with
``arch`` an int32 tensor of :class:`~wpl_keras.nas.cnn_space.MicroCellSpace` decisions, so one
traced graph serves every architecture. Each node input is chosen with ``tf.switch_case`` and
each node operation with another ``tf.switch_case``: only the chosen operations execute.

Layout (ENAS micro): stem 3×3 conv → ``num_stages`` stages of ``num_cells`` normal cells with
a reduction cell between stages (channels double, resolution halves) → ReLU, global average
pool, dense classifier. A cell first calibrates its two inputs to its shape (1×1 conv, or a
factorised reduction when an input is twice as large), then computes node ``i`` as
``h_i = op_x(h_{in_x}) + op_y(h_{in_y})`` and outputs the mean of its loose-end nodes. A
reduction cell reduces both inputs first and runs its nodes at the reduced size (as ENAS).
Separable convs are ReLU → depthwise k×k → pointwise 1×1 → normalisation.

Normalisation is a non-affine per-example normalisation over (H, W, C),
``(x − mean) / sqrt(var + 1e-5)``: unlike batch normalisation it keeps no moving statistics
inside the switch branches, and the result does not depend on how a batch is split over
``tf.distribute`` replicas (so two replicas give the same loss as one device).

Per-op weights are stored stacked per cell, ``[B, 2, …]`` (node, input slot), one variable
per op kind and weight; :meth:`CNNSupernet.usage_masks` gives, in-graph from ``arch``, a 0/1
mask per variable that selects the slices the architecture uses (1 for always-used weights),
and :meth:`CNNSupernet.slice_axes` the axes of one slice. The search task
(:class:`~wpl_keras.nas.cnn_search.CNNSearchTask`) restricts its optimizer step and its WPL
terms to those slices.
"""

from __future__ import annotations

import dataclasses
from typing import List, Optional

import keras
import tensorflow as tf

from wpl_keras.nas.cnn_space import OPS, MicroCellSpace
from wpl_keras.utils.config import JsonConfig

_SEP_OPS = {"sep3x3": 3, "sep5x5": 5}


# --------------------------------------------------------------------------- configs
@dataclasses.dataclass(frozen=True)
class SupernetConfig(JsonConfig):
    """Shape of the supernet (a JSON object through :class:`~wpl_keras.utils.config.JsonConfig`).

    Attributes:
        num_cells: ``N``, normal cells per stage (ENAS search: 5).
        filters: channels of the first stage (doubled at each reduction; must be even).
        num_stages: stages; ``num_stages − 1`` reduction cells.
        num_classes: classifier outputs.
        drop_path_keep: keep probability of each node input in training (1.0 disables).
        dropout: dropout rate before the classifier (training only).
    """

    num_cells: int = 5
    filters: int = 20
    num_stages: int = 3
    num_classes: int = 10
    drop_path_keep: float = 1.0
    dropout: float = 0.0

    def __post_init__(self):
        if self.num_cells < 1 or self.num_stages < 1:
            raise ValueError("num_cells and num_stages must be >= 1.")
        if self.filters < 2 or self.filters % 2:
            raise ValueError(f"filters must be an even number >= 2, got {self.filters}.")
        if not 0.0 < self.drop_path_keep <= 1.0:
            raise ValueError(f"drop_path_keep must be in (0, 1], got {self.drop_path_keep}.")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}.")


# --------------------------------------------------------------------------- pure ops
def per_example_norm(x: tf.Tensor, eps: float = 1e-5) -> tf.Tensor:
    """``(x − mean) / sqrt(var + eps)`` with mean/var over (H, W, C) of each example."""
    mean, var = tf.nn.moments(x, axes=[1, 2, 3], keepdims=True)
    return (x - mean) * tf.math.rsqrt(var + eps)


def sep_conv(x: tf.Tensor, depthwise: tf.Tensor, pointwise: tf.Tensor) -> tf.Tensor:
    """ReLU → depthwise conv (SAME) → pointwise 1×1 conv → per-example normalisation."""
    x = tf.nn.depthwise_conv2d(tf.nn.relu(x), depthwise, [1, 1, 1, 1], "SAME")
    x = tf.nn.conv2d(x, pointwise, 1, "SAME")
    return per_example_norm(x)


def conv1x1(x: tf.Tensor, kernel: tf.Tensor) -> tf.Tensor:
    """ReLU → 1×1 conv → per-example normalisation."""
    return per_example_norm(tf.nn.conv2d(tf.nn.relu(x), kernel, 1, "SAME"))


def factorized_reduce(x: tf.Tensor, k1: tf.Tensor, k2: tf.Tensor) -> tf.Tensor:
    """ReLU → two stride-2 1×1 convs (the second on the input shifted by one pixel),
    concatenated → per-example normalisation. Halves H and W."""
    x = tf.nn.relu(x)
    a = tf.nn.conv2d(x, k1, 2, "VALID")
    shifted = tf.pad(x[:, 1:, 1:, :], [[0, 0], [0, 1], [0, 1], [0, 0]])
    b = tf.nn.conv2d(shifted, k2, 2, "VALID")
    return per_example_norm(tf.concat([a, b], axis=-1))


def pool(x: tf.Tensor, kind: str) -> tf.Tensor:
    """3×3 stride-1 SAME average (padding excluded from the mean) or max pooling."""
    if kind == "avg3x3":
        return tf.nn.avg_pool2d(x, 3, 1, "SAME")
    return tf.nn.max_pool2d(x, 3, 1, "SAME")


def drop_path(x: tf.Tensor, keep_prob: float) -> tf.Tensor:
    """Drops whole examples' paths: ``x · floor(keep + U) / keep``, ``U ~ U[0, 1)``."""
    batch = tf.shape(x)[0]
    keep = tf.floor(keep_prob + tf.random.uniform([batch, 1, 1, 1], dtype=x.dtype))
    return x * keep / keep_prob


# --------------------------------------------------------------------------- weights
class _CellWeights(keras.layers.Layer):
    """Weights of one supernet cell: input calibration and stacked per-op weights."""

    def __init__(self, cell_type: int, num_nodes: int, in_channels, reduce_inputs, channels,
                 **kwargs):
        super().__init__(**kwargs)
        self.cell_type = cell_type
        self.num_nodes = num_nodes
        self.reduce_inputs = tuple(bool(r) for r in reduce_inputs)
        self.channels = channels
        he = keras.initializers.HeNormal
        self.calibration = []
        for k, (cin, reduce) in enumerate(zip(in_channels, self.reduce_inputs)):
            if reduce:
                kernels = [
                    self.add_weight(shape=(1, 1, cin, channels // 2), initializer=he(),
                                    name=f"input{k}_reduce{j}")
                    for j in range(2)
                ]
            else:
                kernels = [self.add_weight(shape=(1, 1, cin, channels), initializer=he(),
                                           name=f"input{k}_conv1x1")]
            self.calibration.append(kernels)
            for j, kernel in enumerate(kernels):  # plain attributes: tracked by checkpoints
                setattr(self, f"input{k}_kernel{j}", kernel)
        self.op_weights = {}
        for op, size in _SEP_OPS.items():
            self.op_weights[op] = (
                self.add_weight(shape=(num_nodes, 2, size, size, channels, 1), initializer=he(),
                                name=f"{op}_depthwise"),
                self.add_weight(shape=(num_nodes, 2, 1, 1, channels, channels), initializer=he(),
                                name=f"{op}_pointwise"),
            )
            self.__setattr__(f"{op}_depthwise", self.op_weights[op][0])
            self.__setattr__(f"{op}_pointwise", self.op_weights[op][1])
        self.built = True

    def calibrate(self, k: int, x: tf.Tensor) -> tf.Tensor:
        kernels = self.calibration[k]
        if self.reduce_inputs[k]:
            return factorized_reduce(x, kernels[0], kernels[1])
        return conv1x1(x, kernels[0])


@keras.saving.register_keras_serializable(package="wpl_keras")
class CNNSupernet(keras.Model):
    """ENAS micro-CNN supernet: ``call((images, arch), training)`` → logits.

    ``arch`` is an int32 vector of ``space.num_decisions`` decisions (a tensor: one trace for
    every architecture). Only the chosen ops run (``tf.switch_case`` per node input).

    Args:
        space: the micro-cell space (gives ``B``).
        config: :class:`SupernetConfig`.
        input_channels: image channels.
    """

    def __init__(self, space: MicroCellSpace, config: SupernetConfig = SupernetConfig(),
                 input_channels: int = 3, **kwargs):
        kwargs.setdefault("name", "cnn_supernet")
        super().__init__(**kwargs)
        if not isinstance(space, MicroCellSpace):
            raise TypeError(f"CNNSupernet needs a MicroCellSpace, got {type(space).__name__}.")
        self.space = space
        self.config = config
        c = config.filters
        self.stem_kernel = self.add_weight(
            shape=(3, 3, input_channels, c), initializer=keras.initializers.HeNormal(),
            name="stem_conv",
        )
        # (channels, relative scale) of the two cell inputs as cells are stacked.
        prev_prev, prev = (c, 1), (c, 1)
        self.cell_weights = []
        self.cell_types = []
        scale, channels = 1, c
        for stage in range(config.num_stages):
            if stage > 0:
                scale, channels = scale * 2, channels * 2
                cells = [1] + [0] * config.num_cells
            else:
                cells = [0] * config.num_cells
            for cell_type in cells:
                reduce = [prev_prev[1] < scale, prev[1] < scale]
                weights = _CellWeights(
                    cell_type, space.num_nodes, (prev_prev[0], prev[0]), reduce, channels,
                    name=f"cell{len(self.cell_weights)}_{'reduce' if cell_type else 'normal'}",
                )
                self.cell_weights.append(weights)
                setattr(self, weights.name, weights)  # a plain attribute: tracked by checkpoints
                self.cell_types.append(cell_type)
                prev_prev, prev = prev, (channels, scale)
        self.final_channels = channels
        self.head_kernel = self.add_weight(
            shape=(channels, config.num_classes), initializer="glorot_uniform", name="head_kernel"
        )
        self.head_bias = self.add_weight(
            shape=(config.num_classes,), initializer="zeros", name="head_bias"
        )
        self.built = True

    # ------------------------------------------------------------------ forward
    def _decisions(self, arch: tf.Tensor) -> tf.Tensor:
        """``arch`` → int32 ``[2 cells, B nodes, 2 slots, 2 (input, op)]``."""
        arch = tf.cast(tf.reshape(arch, [-1]), tf.int32)
        return tf.reshape(arch, [2, self.space.num_nodes, 2, 2])

    def _cell(self, weights: _CellWeights, decisions, inputs, training: bool) -> tf.Tensor:
        states = [weights.calibrate(0, inputs[0]), weights.calibrate(1, inputs[1])]
        num_nodes = self.space.num_nodes
        for i in range(num_nodes):
            node = None
            for slot in range(2):
                in_idx = decisions[i, slot, 0]
                op_idx = decisions[i, slot, 1]
                x = tf.switch_case(
                    in_idx, [lambda s=s: s for s in states], name=f"node{i}_{slot}_input"
                )
                branches = []
                for op in OPS:
                    if op == "identity":
                        branches.append(lambda x=x: tf.identity(x))
                    elif op in _SEP_OPS:
                        dw, pw = weights.op_weights[op]
                        branches.append(
                            lambda x=x, dw=dw, pw=pw, i=i, slot=slot: sep_conv(
                                x, dw[i, slot], pw[i, slot]
                            )
                        )
                    else:
                        branches.append(lambda x=x, op=op: pool(x, op))
                y = tf.switch_case(op_idx, branches, name=f"node{i}_{slot}_op")
                if training and self.config.drop_path_keep < 1.0:
                    y = drop_path(y, self.config.drop_path_keep)
                node = y if node is None else node + y
            states.append(node)
        # Loose ends: nodes that no node takes as input.
        inputs_used = tf.reshape(decisions[:, :, 0], [-1])
        node_ids = tf.range(2, num_nodes + 2)
        used = tf.reduce_any(tf.equal(inputs_used[None, :], node_ids[:, None]), axis=1)
        loose = tf.cast(tf.logical_not(used), states[2].dtype)
        stacked = tf.stack(states[2:], axis=0)
        return tf.tensordot(loose, stacked, axes=1) / tf.reduce_sum(loose)

    def call(self, inputs, training=False):
        images, arch = inputs
        decisions = self._decisions(arch)
        x = per_example_norm(tf.nn.conv2d(tf.cast(images, tf.float32), self.stem_kernel, 1, "SAME"))
        prev_prev, prev = x, x
        for weights, cell_type in zip(self.cell_weights, self.cell_types):
            out = self._cell(weights, decisions[cell_type], (prev_prev, prev), bool(training))
            prev_prev, prev = prev, out
        x = tf.reduce_mean(tf.nn.relu(prev), axis=[1, 2])
        if training and self.config.dropout > 0:
            x = tf.nn.dropout(x, self.config.dropout)
        return tf.matmul(x, self.head_kernel) + self.head_bias

    # ------------------------------------------------------------------ masks
    def usage_masks(self, arch: tf.Tensor) -> List[tf.Tensor]:
        """0/1 float masks aligned with ``trainable_variables``: which slices ``arch`` uses.

        Stacked op weights ``[B, 2, …]`` get ``m[i, s] = 1`` iff node ``i``'s slot ``s`` runs
        that op (broadcast over the trailing axes); other weights (stem, calibration, head)
        get the scalar 1.
        """
        decisions = self._decisions(arch)
        by_ref = {}
        for weights, cell_type in zip(self.cell_weights, self.cell_types):
            ops = decisions[cell_type, :, :, 1]  # [B, 2]
            for op, variables in weights.op_weights.items():
                mask = tf.cast(tf.equal(ops, OPS.index(op)), tf.float32)
                for v in variables:
                    trailing = [1] * (len(v.shape) - 2)
                    by_ref[id(v)] = tf.reshape(mask, mask.shape.as_list() + trailing)
        one = tf.constant(1.0, tf.float32)
        return [by_ref.get(id(v), one) for v in self.trainable_variables]

    def slice_axes(self) -> List[Optional[List[int]]]:
        """Per entry of ``trainable_variables``, the axes that one op slice spans:
        ``[2, …, rank − 1]`` for a stacked op weight ``[B, 2, …]`` (each ``[node, slot]`` slice
        is one op's weight), None for a weight that is used as a whole."""
        stacked = {id(v) for weights in self.cell_weights
                   for variables in weights.op_weights.values() for v in variables}
        return [list(range(2, len(v.shape))) if id(v) in stacked else None
                for v in self.trainable_variables]

    def get_config(self):
        raise NotImplementedError(
            "CNNSupernet is rebuilt from its space and SupernetConfig; save its weights with "
            "a checkpoint (CNNSearchTask.checkpoint_items())."
        )
