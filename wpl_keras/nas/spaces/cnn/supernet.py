"""One-trace ENAS micro-CNN supernet: the Keras model whose weights every architecture shares.

:class:`CNNSupernet` is a subclassed Keras model whose call takes ``(images, arch)`` with
``arch`` an int32 tensor of :class:`~wpl_keras.nas.spaces.cnn.space.MicroCellSpace` decisions, so one
traced graph serves every architecture. Each node input is chosen with ``tf.switch_case`` and
each node operation with another ``tf.switch_case``: only the chosen operations execute. On one
replica the operation is :func:`~wpl_keras.nas.spaces.cnn.chosen_op.chosen_op`, whose gradient
is one more switch over hand-written backward kernels (differentiating through the switch made
the traced graph several times larger); its BatchNorms are fused kernels. It is one
``tf.function`` per input shapes that every node slot of those shapes calls (not inlined), so
the switches are traced and optimised once per cell shape, not once per slot.

The structure is ENAS's search child (``MicroChild._enas_layer`` and the ``fixed_arc is None``
path of ``MicroChild._model`` in melodyguan/enas ``src/cifar10/micro_child.py``):

* stem: 3×3 conv to ``stem_multiplier · filters`` channels → BN; the first cell gets the stem
  output as both inputs;
* ``num_stages`` stages of ``num_cells`` normal cells, with a reduction cell between stages
  (channels double). Before a reduction cell the previous output ``h`` is factorised-reduced
  (:func:`factorized_reduce`, no ReLU), and the reduction cell's inputs are
  ``(h, reduce(h))``; the next cell's inputs are ``(reduce(h), reduction cell output)``;
* a cell calibrates its inputs only on a shape mismatch (``_maybe_calibrate_size``): input 0
  is ReLU → factorised reduction when it is twice as large, else ReLU → 1×1 conv → BN when
  its width is not ``filters``; input 1 is ReLU → 1×1 conv → BN when its width is not
  ``filters``; otherwise an input is used as it is;
* node ``i``: ``h_i = op_x(h_{in_x}) + op_y(h_{in_y})``; a separable conv op is
  (ReLU → depthwise k×k → pointwise 1×1 → BN) twice, the pools are 3×3 stride 1, identity
  is the state itself. The separable convs' weights (both repetitions' depthwise and
  pointwise kernels and BN scales and offsets) are kept per (node, slot, input, op): node
  ``i``'s variables have shape ``[2 slots, i + 2 inputs, 2 repetitions, …]``;
* cell output: ReLU of the concatenation of the loose ends (the states no node takes, unused
  cell inputs included) → 1×1 conv → BN (:meth:`CNNSupernet._combine`);
* head: ReLU → global average pool → dropout → dense without bias.

BatchNorm (:func:`batch_norm`) is per-channel affine, ``γ (x − μ) / sqrt(σ² + 1e-5) + β``,
and always uses the statistics of the current batch, in training and in evaluation: ENAS's
search builds every BN of the child with ``is_training=True`` (its moving averages are never
read), and so rewards and ``err1`` depend on the evaluated batch, as they do in ENAS. Under a
``tf.distribute`` strategy with several replicas the statistics are synchronised: each BN
computes its moments from sums over the global batch (:func:`batch_moments`): ``(Σx, n)``
all-reduced with ``tf.distribute.get_replica_context().all_reduce`` gives a shift ``s`` (no
gradient), then ``Σ(x − s)`` and ``Σ(x − s)²`` all-reduced give ``μ`` and ``σ²``, so two
replicas compute what one device computes on the whole batch, up to the order of the sums.
The all-reduces cannot run inside a ``tf.switch_case`` branch (MirroredStrategy's merge call
must stay in the replica function's graph); with several replicas an op therefore runs as
stages: a switch computes the pre-BN tensor, its moments are all-reduced outside the switch,
and a second switch normalises (:meth:`CNNSupernet._op`). On one replica the whole op runs in
one switch branch and every BN is one ``FusedBatchNormV3`` kernel
(:func:`~wpl_keras.nas.spaces.cnn.chosen_op.fused_batch_norm`: the same formula; its moments are
computed in another order than :func:`batch_moments`, so the two agree to float32 rounding).

Per-op weights are the slices ``[slot, input]`` of each node's variables and the rows of the
cell's output-conv kernel ``[B + 2, C, C]`` (one ``C × C`` block per state);
:meth:`CNNSupernet.usage_masks` gives, in-graph from ``arch``, a 0/1 mask per variable that
selects the slices the architecture uses (1 for always-used weights), and
:meth:`CNNSupernet.slice_axes` the axes of one slice. The search task
(:class:`~wpl_keras.nas.spaces.cnn.task.CNNSearchTask`) restricts its optimizer step and its WPL
terms to those slices.
"""

from __future__ import annotations

import dataclasses
import math
from typing import List, Optional, Sequence, Tuple

import keras
import tensorflow as tf

from wpl_keras.nas.spaces.cnn.chosen_op import (BN_EPSILON, SEP_OPS, chosen_input, chosen_op,
                                                 chosen_stage, fused_batch_norm)
from wpl_keras.nas.spaces.cnn.space import OPS, MicroCellSpace
from wpl_keras.utils.config import JsonConfig
from wpl_keras.utils.validation import check_fields

_REPEATS = 2  # (ReLU → sep-conv → BN) repetitions of a separable conv op
_IDENTITY = OPS.index("identity")


# --------------------------------------------------------------------------- configs
@dataclasses.dataclass(frozen=True)
class SupernetConfig(JsonConfig):
    """Shape of the supernet (a JSON object through :class:`~wpl_keras.utils.config.JsonConfig`).

    Attributes:
        num_cells: ``N``, normal cells per stage (ENAS search: ``num_layers`` 6 = 2 per stage).
        filters: channels of the first stage (doubled at each reduction; must be even).
        num_stages: stages; ``num_stages − 1`` reduction cells.
        num_classes: classifier outputs.
        stem_multiplier: the stem conv has ``stem_multiplier · filters`` channels (ENAS 3).
        drop_path_keep: keep probability of each non-identity op's output in training
            (1.0 disables; ENAS's search child applies none).
        dropout: dropout rate before the classifier (training only).
    """

    num_cells: int = 2
    filters: int = 20
    num_stages: int = 3
    num_classes: int = 10
    stem_multiplier: int = 3
    drop_path_keep: float = 1.0
    dropout: float = 0.0

    def __post_init__(self):
        positive = dict(integer=True, minimum=1)
        check_fields(self, {
            "num_cells": positive, "num_stages": positive, "stem_multiplier": positive,
            "filters": dict(integer=True, minimum=2),
            "num_classes": dict(integer=True, minimum=2),
            "drop_path_keep": dict(minimum=0, maximum=1, exclusive_minimum=True),
            "dropout": dict(minimum=0, maximum=1, exclusive_maximum=True),
        })
        if self.filters % 2:
            raise ValueError(f"SupernetConfig.filters must be an even integer >= 2, got "
                             f"{self.filters}.")


# --------------------------------------------------------------------------- batch norm
def replicas_in_sync() -> int:
    """Replicas of the current replica context (1 outside one, e.g. in cross-replica code)."""
    context = tf.distribute.get_replica_context()
    return 1 if context is None else int(context.num_replicas_in_sync)


def _count(x: tf.Tensor) -> tf.Tensor:
    shape = tf.shape(x)
    return tf.cast(shape[0] * shape[1] * shape[2], tf.float32)


def sync_sums(sums: Sequence[tf.Tensor]) -> List[tf.Tensor]:
    """``sums`` all-reduced (SUM) over the replicas in sync; unchanged on one replica."""
    if replicas_in_sync() == 1:
        return list(sums)
    context = tf.distribute.get_replica_context()
    return list(context.all_reduce(tf.distribute.ReduceOp.SUM, list(sums)))


def batch_moments(x: tf.Tensor) -> Tuple[tf.Tensor, tf.Tensor]:
    """Per-channel mean and biased variance of ``x`` over the global batch (batch, height
    and width), from sums shifted by the batch mean:

    ``s = Σx / n`` (all-reduced, no gradient), ``d = x − s``, then with ``Σd`` and ``Σd²``
    all-reduced, ``μ = s + Σd / n`` and ``σ² = Σd² / n − (Σd / n)²``.

    The identity holds for any constant ``s``, so the gradient (through ``Σd`` and ``Σd²``
    only) is exact. With ``s`` at the mean the last term is tiny, so this does not cancel as
    ``Σx²/n − μ²`` does when a channel's variance is small against its squared mean (BN's
    ``1/σ`` would then magnify the rounding, and results would depend on the order of the
    sums, i.e. the number of replicas). The shift's all-reduce has no gradient, so the
    backward pass has one collective per BatchNorm."""
    # The shift's sums are taken of a gradient-free copy of x: the tape does not record
    # this all-reduce, so the backward pass has no collective for it.
    sum_x, count = sync_sums([tf.reduce_sum(tf.stop_gradient(x), axis=[0, 1, 2]), _count(x)])
    count = tf.maximum(count, 1.0)
    shift = sum_x / count
    d = x - shift
    sum_d, sum_d2 = sync_sums([tf.reduce_sum(d, axis=[0, 1, 2]),
                               tf.reduce_sum(tf.square(d), axis=[0, 1, 2])])
    mean_d = sum_d / count
    return shift + mean_d, tf.maximum(sum_d2 / count - tf.square(mean_d), 0.0)


def normalize(x, mean, var, scale, offset, eps: float = BN_EPSILON) -> tf.Tensor:
    """``scale (x − μ) / sqrt(σ² + eps) + offset``."""
    return (x - mean) * (scale * tf.math.rsqrt(var + eps)) + offset


def batch_norm(x: tf.Tensor, scale, offset) -> tf.Tensor:
    """BatchNorm on the statistics of the whole (global) batch,
    ``scale (x − μ) / sqrt(σ² + 1e-5) + offset`` with ``μ``, ``σ²`` the per-channel mean and
    biased variance over batch, height and width.

    On one replica this is one fused kernel (``FusedBatchNormV3`` in training mode, whose
    gradient is one kernel too); with several replicas it is :func:`normalize` with the
    moments of :func:`batch_moments` (all-reduced over the replicas), which must not run inside
    a ``tf.switch_case`` branch."""
    if replicas_in_sync() == 1:
        return fused_batch_norm(x, scale, offset)
    return normalize(x, *batch_moments(x), scale, offset)


# --------------------------------------------------------------------------- pure ops
def factorized_reduce(x: tf.Tensor, k1: tf.Tensor, k2: tf.Tensor) -> tf.Tensor:
    """Two stride-2 1×1 convs (the second on the input shifted by one pixel and zero-padded
    at the end), concatenated (before BN). Halves H and W without dropping pixels (ENAS
    ``_factorized_reduction``).

    A stride-2 1×1 conv reads the even pixels, so the shifted path is the 1×1 conv of the odd
    pixels ``x[:, 1::2, 1::2]``, with ENAS's zero pad as the last row (column) where H (W) is
    odd: the same products, without copying the whole shifted and padded input (and its
    gradient) that a stride-2 conv of it would read a quarter of."""
    a = tf.nn.conv2d(x, k1, 2, "VALID")
    odd = x[:, 1::2, 1::2, :]
    if not (a.shape[1:3].is_fully_defined() and a.shape[1:3] == odd.shape[1:3]):
        rows, cols = tf.shape(a)[1] - tf.shape(odd)[1], tf.shape(a)[2] - tf.shape(odd)[2]
        odd = tf.pad(odd, [[0, 0], [0, rows], [0, cols], [0, 0]])
    return tf.concat([a, tf.nn.conv2d(odd, k2, 1, "VALID")], axis=-1)


def drop_path(x: tf.Tensor, keep_prob: float, active: tf.Tensor) -> tf.Tensor:
    """Drops whole examples' paths where ``active``: ``x · floor(keep + U) / keep``,
    ``U ~ U[0, 1)`` per example; ``x`` where not ``active`` (a bool scalar)."""
    batch = tf.shape(x)[0]
    keep = tf.floor(keep_prob + tf.random.uniform([batch, 1, 1, 1], dtype=x.dtype)) / keep_prob
    return x * tf.where(active, keep, tf.ones_like(keep))


def he_normal(fan_in: int) -> keras.initializers.Initializer:
    """Keras' He normal for a slice with fan-in ``fan_in`` (receptive field × input
    channels, as Keras counts a conv kernel): truncated normal, stddev
    ``sqrt(2 / fan_in) / 0.8796`` (the truncation's correction), whatever the stacked shape."""
    return keras.initializers.TruncatedNormal(
        mean=0.0, stddev=math.sqrt(2.0 / fan_in) / 0.87962566103423978)


# --------------------------------------------------------------------------- weights
class _CellWeights(keras.layers.Layer):
    """Weights of one supernet cell.

    Args:
        num_nodes: ``B``.
        in_channels: widths of the two cell inputs.
        calibrate: per input, ``"none"``, ``"conv"`` (ReLU → 1×1 → BN) or ``"reduce"``
            (ReLU → factorised reduction → BN).
        channels: ``C``, the cell's width.
        pre_reduce: for a reduction cell, the width of the previous output that is
            factorised-reduced into input 1 (None for a normal cell).
    """

    def __init__(self, num_nodes: int, in_channels, calibrate, channels: int,
                 pre_reduce: Optional[int] = None, **kwargs):
        super().__init__(**kwargs)
        self.num_nodes, self.channels = num_nodes, channels
        self.calibrate_kinds = tuple(calibrate)
        c = channels
        self.pre_reduce = None
        if pre_reduce is not None:
            self.pre_reduce = self._reduce_weights("pre_reduce", pre_reduce)
        # Nested structures are built whole and then assigned: an attribute list filled by
        # appends after its assignment is not seen by tf.train.Checkpoint.
        calibration = []
        for k, (cin, kind) in enumerate(zip(in_channels, self.calibrate_kinds)):
            if kind == "reduce":
                calibration.append(self._reduce_weights(f"input{k}_reduce", cin))
            elif kind == "conv":
                calibration.append(
                    (self.add_weight(shape=(1, 1, cin, c), initializer=he_normal(cin),
                                     name=f"input{k}_conv1x1"),) + self._bn(f"input{k}_bn", ()))
            else:
                calibration.append(None)
        self.calibration = tuple(calibration)
        # op_variables[i][k] = (depthwise, pointwise, scale, offset) of the k-th op of SEP_OPS
        # at node i, each [2, i + 2, 2, …]; tuples, which tf.train.Checkpoint traverses.
        op_weights = []
        for i in range(num_nodes):
            lead = (2, i + 2, _REPEATS)
            node = {}
            for op, size in SEP_OPS.items():
                node[op] = (
                    self.add_weight(shape=lead + (size, size, c, 1),
                                    initializer=he_normal(size * size * c),
                                    name=f"node{i + 2}_{op}_depthwise"),
                    self.add_weight(shape=lead + (1, 1, c, c), initializer=he_normal(c),
                                    name=f"node{i + 2}_{op}_pointwise"),
                ) + self._bn(f"node{i + 2}_{op}_bn", lead)
            op_weights.append(tuple(node[op] for op in SEP_OPS))
        self.op_variables = tuple(op_weights)
        self.out_kernel = self.add_weight(shape=(num_nodes + 2, c, c), initializer=he_normal(c),
                                          name="out_conv1x1")
        self.out_bn = self._bn("out_bn", ())
        self.built = True

    def _bn(self, name: str, lead: tuple) -> tuple:
        c = self.channels
        return (self.add_weight(shape=lead + (c,), initializer="ones", name=f"{name}_scale"),
                self.add_weight(shape=lead + (c,), initializer="zeros", name=f"{name}_offset"))

    def _reduce_weights(self, name: str, cin: int) -> tuple:
        half = self.channels // 2
        return tuple(self.add_weight(shape=(1, 1, cin, half), initializer=he_normal(cin),
                                     name=f"{name}{j}") for j in range(2)) + self._bn(
            f"{name}_bn", ())

    @property
    def op_weights(self) -> List[dict]:
        """Per node, ``{op: (depthwise, pointwise, scale, offset)}`` for the separable ops."""
        return [dict(zip(SEP_OPS, node)) for node in self.op_variables]

    @property
    def stacked(self) -> List:
        """The per-(node, slot, input) op variables."""
        return [v for node in self.op_weights for weights in node.values() for v in weights]


def _reduce(x: tf.Tensor, weights: tuple) -> tf.Tensor:
    k1, k2, scale, offset = weights
    return batch_norm(factorized_reduce(x, k1, k2), scale, offset)


@keras.saving.register_keras_serializable(package="wpl_keras")
class CNNSupernet(keras.Model):
    """ENAS micro-CNN supernet: ``call((images, arch), training)`` → logits.

    ``arch`` is an int32 vector of ``space.num_decisions`` decisions (a tensor: one trace for
    every architecture). Only the chosen ops run (``tf.switch_case`` per node input and op).

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
        stem = config.filters * config.stem_multiplier
        self.stem_kernel = self.add_weight(shape=(3, 3, input_channels, stem),
                                           initializer=he_normal(9 * input_channels),
                                           name="stem_conv")
        self.stem_scale = self.add_weight(shape=(stem,), initializer="ones", name="stem_bn_scale")
        self.stem_offset = self.add_weight(shape=(stem,), initializer="zeros",
                                           name="stem_bn_offset")
        self.cell_weights, self.cell_types = [], []
        self._build_cells(config, stem)
        self.head_kernel = self.add_weight(
            shape=(self.final_channels, config.num_classes),
            initializer=he_normal(self.final_channels), name="head_kernel")
        self.built = True

    def _build_cells(self, config: SupernetConfig, stem: int) -> None:
        """Cells as ENAS stacks them; ``layers`` holds the (width, scale) of the two inputs."""
        layers = [(stem, 1), (stem, 1)]
        channels, scale = config.filters, 1
        for stage in range(config.num_stages):
            cells = [1] + [0] * config.num_cells if stage else [0] * config.num_cells
            for cell_type in cells:
                pre_reduce = None
                if cell_type:
                    channels, scale = channels * 2, scale * 2
                    pre_reduce = layers[1][0]
                    layers = [layers[1], (channels, scale)]
                calibrate = (
                    "reduce" if layers[0][1] < scale else
                    "conv" if layers[0][0] != channels else "none",
                    "conv" if layers[1][0] != channels else "none",
                )
                kind = "reduce" if cell_type else "normal"
                weights = _CellWeights(
                    self.space.num_nodes, (layers[0][0], layers[1][0]), calibrate, channels,
                    pre_reduce, name=f"cell{len(self.cell_weights)}_{kind}")
                self.cell_weights.append(weights)
                setattr(self, weights.name, weights)  # a plain attribute: tracked by checkpoints
                self.cell_types.append(cell_type)
                layers = [layers[1], (channels, scale)]
        self.final_channels = channels

    # ------------------------------------------------------------------ forward
    def _decisions(self, arch: tf.Tensor) -> tf.Tensor:
        """``arch`` → int32 ``[2 cells, B nodes, 2 slots, 2 (input, op)]``."""
        arch = tf.cast(tf.reshape(arch, [-1]), tf.int32)
        return tf.reshape(arch, [2, self.space.num_nodes, 2, 2])

    def loose_ends(self, decisions: tf.Tensor) -> tf.Tensor:
        """``[B + 2]`` float 0/1: state ``k`` (cell inputs 0, 1, nodes 2…B+1) is taken by no
        node of this cell's ``decisions`` ``[B, 2, 2]``."""
        taken = tf.reshape(decisions[:, :, 0], [-1])
        ids = tf.range(self.space.num_nodes + 2)
        used = tf.reduce_any(tf.equal(taken[None, :], ids[:, None]), axis=1)
        return tf.cast(tf.logical_not(used), tf.float32)

    def _op(self, x: tf.Tensor, op_idx: tf.Tensor, weights: dict, slot: int,
            in_idx: tf.Tensor) -> tf.Tensor:
        """The chosen op on ``x``. A separable conv uses its ``[slot, in_idx, r]`` slices.

        One replica: :func:`~wpl_keras.nas.spaces.cnn.chosen_op.chosen_op` on the
        ``[slot, in_idx]`` slices (taken outside its switch). Several replicas: per repetition
        ``r``, :func:`~wpl_keras.nas.spaces.cnn.chosen_op.chosen_stage` (the chosen op's
        pre-BN stage: a separable op's r-th sep-conv; otherwise the op itself at ``r = 0`` and
        identity after), its batch moments all-reduced outside any switch (collectives must
        not sit in a switch branch), then ``normalize`` with the chosen separable op's BN
        parameters where the op is separable (other ops pass through). Every piece has a
        written-out gradient or plain TensorFlow ops, so no switch is differentiated."""
        if replicas_in_sync() == 1:
            # One switch forward and one backward (chosen_op), on the [slot, in_idx] slices.
            return chosen_op(x, op_idx, {op: [v[slot, in_idx] for v in weights[op]]
                                         for op in SEP_OPS})
        sep_ids = [OPS.index(op) for op in SEP_OPS]
        is_sep = tf.reduce_any(tf.equal(op_idx, sep_ids))
        y = x
        for r in range(_REPEATS):
            stage = {op: [weights[op][0][slot, in_idx, r], weights[op][1][slot, in_idx, r]]
                     for op in SEP_OPS}
            z = chosen_stage(y, op_idx, r, stage)
            mean, var = batch_moments(z)
            # BN parameters of the chosen separable op (those of the last one when the op
            # is not separable: then the normalised tensor is not used and they get zero
            # gradients, as do the unchosen op's).
            scale, offset = None, None
            for op, op_id in zip(SEP_OPS, sep_ids):
                s, o = weights[op][2][slot, in_idx, r], weights[op][3][slot, in_idx, r]
                chosen = tf.equal(op_idx, op_id)
                scale = s if scale is None else tf.where(chosen, s, scale)
                offset = o if offset is None else tf.where(chosen, o, offset)
            y = tf.where(is_sep, normalize(z, mean, var, scale, offset), z)
        return y

    def _calibrate(self, weights: _CellWeights, inputs) -> List[tf.Tensor]:
        states = []
        for x, kind, w in zip(inputs, weights.calibrate_kinds, weights.calibration):
            if kind == "reduce":
                x = _reduce(tf.nn.relu(x), w)
            elif kind == "conv":
                x = batch_norm(tf.nn.conv2d(tf.nn.relu(x), w[0], 1, "SAME"), w[1], w[2])
            states.append(x)
        return states

    def _combine(self, weights: _CellWeights, decisions, states) -> tf.Tensor:
        """``BN(ReLU(concat(loose ends)) ⊛ W_loose)``, in one fixed shape.

        With ``l_k`` the loose-end flag of state ``k`` and ``W_k`` its ``C × C`` block of the
        output kernel, the 1×1 conv over the concatenation of the loose ends equals
        ``Σ_k ReLU(h_k) (l_k W_k)``: the 1×1 conv of the concatenation of every ``ReLU(h_k)``
        with the masked ``[(B + 2) C, C]`` kernel (the flags multiply the small kernel, not the
        states). The number of loose ends changes with the architecture, the shapes do not
        (one trace); the blocks of states that are not loose ends are zero, so those states
        and blocks get zero gradient from this conv."""
        loose = self.loose_ends(decisions)
        x = tf.concat([tf.nn.relu(s) for s in states], axis=-1)
        c = weights.channels
        kernel = tf.reshape(weights.out_kernel * loose[:, None, None],
                            [1, 1, (self.space.num_nodes + 2) * c, c])
        return batch_norm(tf.nn.conv2d(x, kernel, 1, "SAME"), *weights.out_bn)

    def _cell(self, weights: _CellWeights, decisions, inputs, training: bool) -> tf.Tensor:
        states = self._calibrate(weights, inputs)
        for i in range(self.space.num_nodes):
            node = None
            for slot in range(2):
                in_idx, op_idx = decisions[i, slot, 0], decisions[i, slot, 1]
                x = chosen_input(states, in_idx)
                y = self._op(x, op_idx, weights.op_weights[i], slot, in_idx)
                if training and self.config.drop_path_keep < 1.0:
                    y = drop_path(y, self.config.drop_path_keep, op_idx != _IDENTITY)
                node = y if node is None else node + y
            states.append(node)
        return self._combine(weights, decisions, states)

    def call(self, inputs, training=False):
        images, arch = inputs
        decisions = self._decisions(arch)
        x = tf.nn.conv2d(tf.cast(images, tf.float32), self.stem_kernel, 1, "SAME")
        x = batch_norm(x, self.stem_scale, self.stem_offset)
        layers = [x, x]
        for weights, cell_type in zip(self.cell_weights, self.cell_types):
            if cell_type:
                layers = [layers[1], _reduce(layers[1], weights.pre_reduce)]
            out = self._cell(weights, decisions[cell_type], layers, bool(training))
            layers = [layers[1], out]
        x = tf.reduce_mean(tf.nn.relu(layers[1]), axis=[1, 2])
        if training and self.config.dropout > 0:
            x = tf.nn.dropout(x, self.config.dropout)
        return tf.matmul(x, self.head_kernel)

    # ------------------------------------------------------------------ masks
    def usage_masks(self, arch: tf.Tensor) -> List[tf.Tensor]:
        """0/1 float masks aligned with ``trainable_variables``: which slices ``arch`` uses.

        Node ``i``'s op variables ``[2, i + 2, …]`` get ``m[s, j] = 1`` iff slot ``s`` of
        node ``i`` takes input ``j`` and runs that op; the output-conv kernel ``[B + 2, C, C]``
        gets ``m[k] = 1`` iff state ``k`` is a loose end (both broadcast over the trailing
        axes); every other weight (stem, calibration, reductions, BN of the output, head)
        gets the scalar 1.
        """
        decisions = self._decisions(arch)
        by_ref = {}
        for weights, cell_type in zip(self.cell_weights, self.cell_types):
            cell = decisions[cell_type]
            for i, node in enumerate(weights.op_weights):
                inputs = tf.one_hot(cell[i, :, 0], i + 2, dtype=tf.float32)  # [2, i + 2]
                for op, variables in node.items():
                    chosen = tf.cast(tf.equal(cell[i, :, 1], OPS.index(op)), tf.float32)
                    mask = chosen[:, None] * inputs
                    for v in variables:
                        by_ref[id(v)] = tf.reshape(mask, [2, i + 2] + [1] * (len(v.shape) - 2))
            by_ref[id(weights.out_kernel)] = tf.reshape(self.loose_ends(cell), [-1, 1, 1])
        one = tf.constant(1.0, tf.float32)
        return [by_ref.get(id(v), one) for v in self.trainable_variables]

    def slice_axes(self) -> List[Optional[List[int]]]:
        """Per entry of ``trainable_variables``, the axes that one op slice spans:
        ``[2, …, rank − 1]`` for a node's op variable ``[2, i + 2, …]`` (each
        ``[slot, input]`` slice is one op's weight), ``[1, 2]`` for the output-conv kernel
        (one state's block), None for a weight that is used as a whole."""
        stacked = {id(v) for weights in self.cell_weights for v in weights.stacked}
        out = {id(weights.out_kernel) for weights in self.cell_weights}
        return [list(range(2, len(v.shape))) if id(v) in stacked else
                [1, 2] if id(v) in out else None for v in self.trainable_variables]

    def get_config(self):
        raise NotImplementedError(
            "CNNSupernet is rebuilt from its space and SupernetConfig; save its weights with "
            "a checkpoint (CNNSearchTask.checkpoint_items())."
        )
