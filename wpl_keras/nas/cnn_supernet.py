"""One-trace ENAS micro-CNN supernet and its shared-weights search task with WPL.

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
mask per variable that selects the slices the architecture uses (1 for always-used weights).
:class:`CNNSearchTask` multiplies the WPL penalty, the Fisher update, the anchor snapshot and the
optimizer update by these masks, so weights of ops that are not executed get no update, no
Fisher change and no penalty:

    ``penalty = (α/2) Σ_k Σ_i m_k,i F_k,i (θ_k,i − θ*_k,i)²``
    ``F ← m ((1 − η) F + η g²) + (1 − m) F``,   ``θ* ← m θ + (1 − m) θ*``
"""

from __future__ import annotations

import dataclasses
import math
from typing import Dict, List, Optional, Sequence

import keras
import numpy as np
import tensorflow as tf

from wpl_keras.nas.base import Architecture, SharedWeightsTask
from wpl_keras.nas.cnn_space import OPS, MicroCellSpace
from wpl_keras.wpl.fisher import WPLState, momentum_fisher
from wpl_keras.wpl.penalty import check_wpl_mode, wpl_penalty

_SEP_OPS = {"sep3x3": 3, "sep5x5": 5}


# --------------------------------------------------------------------------- configs
@dataclasses.dataclass(frozen=True)
class SupernetConfig:
    """Shape of the supernet.

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


@dataclasses.dataclass(frozen=True)
class CNNSearchConfig:
    """Training settings of the shared weights during the search.

    The reference values (ENAS micro search / public WPL release) are in
    :mod:`wpl_keras.experiments.enas_cnn`'s ``paper`` preset.

    Attributes:
        supernet: shape of the supernet.
        batch_size: global training batch (split over replicas).
        eval_batch_size: batch of :meth:`CNNSearchTask.reward`.
        fixed_valid_size: size of the FIXED validation batch of ``validation_error``.
        lr_max, lr_min, epochs: cosine schedule
            ``lr = lr_min + (lr_max − lr_min)(1 + cos(π e/E))/2``
            set at each :meth:`CNNSearchTask.start_epoch`.
        momentum: heavy-ball momentum (Nesterov when ``nesterov``) of the masked SGD.
        weight_decay: L2 coefficient added to the gradient of the used weights.
        grad_clip: global-norm clip of the gradient (None disables).
        wpl_strength: ``α``. fisher_momentum: ``η``. fisher_clip: L2 clip of each updated
            Fisher slice. fisher_flush_every: ``F ← 0`` every this many epochs in
            :meth:`CNNSearchTask.start_epoch` (0 never: the default, since the search loop's
            ``SearchConfig.flush_every`` flushes).
        augment: padded crop + flip on training batches.
        wpl_mode: ``"proximal"`` (default): after the masked SGD step on the data gradient,
            the used slices take the exact proximal step of the Fisher term,
            ``θ ← (θ + η α F θ*) / (1 + η α F)``, stable for every ``α``. ``"gradient"``: the
            penalty ``(α/2) Σ F (θ − θ*)²`` is in the loss (diverges once ``η α F > 2``).
    """

    supernet: SupernetConfig = SupernetConfig()
    batch_size: int = 32
    eval_batch_size: int = 100
    fixed_valid_size: int = 500
    lr_max: float = 0.05
    lr_min: float = 0.0005
    epochs: int = 150
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 1e-4
    grad_clip: Optional[float] = 5.0
    wpl_strength: float = 60.0
    fisher_momentum: float = 0.9
    fisher_clip: Optional[float] = 10.0
    fisher_flush_every: int = 0
    augment: bool = True
    wpl_mode: str = "proximal"

    def __post_init__(self):
        check_wpl_mode(self.wpl_mode, "CNNSearchConfig.wpl_mode")


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

    def get_config(self):
        raise NotImplementedError(
            "CNNSupernet is rebuilt from its space and SupernetConfig; save its weights with "
            "a checkpoint (CNNSearchTask.checkpoint_items())."
        )


# --------------------------------------------------------------------------- optimizer
class MaskedMomentumSGD(tf.Module):
    """SGD with (Nesterov) momentum whose update touches only masked-in slices.

    ``v ← m (μ v + g) + (1 − m) v``;  ``θ ← θ − lr · m · (g + μ v)`` (Nesterov) or
    ``θ ← θ − lr · m · v``. Weights of ops an architecture does not run keep their values
    and their momentum, unlike a plain optimizer whose momentum would keep moving them.
    """

    def __init__(self, variables: Sequence, learning_rate: float, momentum: float = 0.9,
                 nesterov: bool = True, name: str = "masked_sgd"):
        super().__init__(name=name)
        self.momentum = float(momentum)
        self.nesterov = bool(nesterov)
        self.learning_rate = tf.Variable(float(learning_rate), trainable=False, name="lr")
        self.iterations = tf.Variable(0, dtype=tf.int64, trainable=False, name="iterations")
        self.velocities = [
            tf.Variable(tf.zeros(v.shape, tf.float32), trainable=False, name=f"velocity_{k}")
            for k, v in enumerate(variables)
        ]

    def apply(self, variables, gradients, masks) -> None:
        """One masked step (call in cross-replica context with all-reduced gradients)."""
        lr = self.learning_rate
        for var, g, m, vel in zip(variables, gradients, masks, self.velocities):
            new_vel = m * (self.momentum * vel + g) + (1.0 - m) * vel
            vel.assign(new_vel)
            step = g + self.momentum * new_vel if self.nesterov else new_vel
            var.assign_sub(lr * m * step)
        self.iterations.assign_add(1)


# --------------------------------------------------------------------------- task
def _none_to_zeros(grads, variables):
    return [tf.zeros_like(v) if g is None else tf.convert_to_tensor(g)
            for g, v in zip(grads, variables)]


class CNNSearchTask(SharedWeightsTask):
    """Trains and scores micro-CNN architectures on shared weights, with WPL.

    Every training loop runs under ``strategy`` (default: the current one, i.e. one device):
    per-replica losses are scaled by the global batch, gradients are all-reduced (summed),
    and the masked SGD step, the Fisher update and the anchor snapshot run once on the
    all-reduced values.

    Args:
        space: a :class:`MicroCellSpace`.
        config: :class:`CNNSearchConfig`.
        splits: arrays with ``x_train, y_train, x_valid, y_valid`` (uint8 images), e.g.
            :func:`wpl_keras.data.cifar10.search_splits`; the search never sees test data.
        strategy: a ``tf.distribute.Strategy``.
        seed: seeds weights and data order.
    """

    def __init__(self, space: MicroCellSpace, config: CNNSearchConfig, splits, *,
                 strategy: Optional[tf.distribute.Strategy] = None, seed: int = 0):
        from wpl_keras.data.cifar10 import make_dataset, normalize

        self.space = space
        self.cfg = config
        self.strategy = strategy or tf.distribute.get_strategy()
        self.seed = int(seed)
        n_valid = len(splits.x_valid)
        if n_valid < 1 or len(splits.x_train) < config.batch_size:
            raise ValueError(
                f"need at least one validation image and a full training batch "
                f"({config.batch_size}); got {len(splits.x_train)} train, {n_valid} valid."
            )
        if config.batch_size % self.strategy.num_replicas_in_sync:
            raise ValueError(
                f"batch_size {config.batch_size} is not divisible by the "
                f"{self.strategy.num_replicas_in_sync} replicas."
            )
        keras.utils.set_random_seed(self.seed)
        with self.strategy.scope():
            self.supernet = CNNSupernet(space, config.supernet,
                                        input_channels=int(splits.x_train.shape[-1]))
            self.variables = list(self.supernet.trainable_variables)
            self.optimizer = MaskedMomentumSGD(self.variables, config.lr_max, config.momentum,
                                               config.nesterov)
            self.wpl_state = WPLState(self.variables, strength=config.wpl_strength,
                                      momentum=config.fisher_momentum,
                                      clip_norm=config.fisher_clip)
            self.step = tf.Variable(0, dtype=tf.int64, trainable=False, name="supernet_step")
        train = make_dataset(splits.x_train, splits.y_train, config.batch_size,
                             training=config.augment, repeat=True, seed=self.seed,
                             drop_remainder=True)
        valid = make_dataset(splits.x_valid, splits.y_valid,
                             min(config.eval_batch_size, n_valid), training=False, repeat=True)
        self._train_iter = iter(self.strategy.experimental_distribute_dataset(train))
        self._valid_iter = iter(valid)
        fixed = min(config.fixed_valid_size, n_valid)
        self.fixed_images = normalize(splits.x_valid[:fixed])
        self.fixed_labels = tf.constant(splits.y_valid[:fixed], tf.int32)
        self.train_traces = 0
        self.eval_traces = 0
        self._train_step = tf.function(self._train_step_fn)
        shape = tuple(splits.x_train.shape[1:])
        self._eval = tf.function(
            self._eval_fn,
            input_signature=[
                tf.TensorSpec((None,) + shape, tf.float32),
                tf.TensorSpec((None,), tf.int32),
                tf.TensorSpec((space.num_decisions,), tf.int32),
            ],
        )
        self._snapshot = tf.function(self._snapshot_fn)

    # ------------------------------------------------------------------ traced bodies
    def _penalty(self, masks) -> tf.Tensor:
        s = self.wpl_state
        return wpl_penalty(
            [tf.convert_to_tensor(v) for v in self.variables],
            [m * tf.convert_to_tensor(f) for m, f in zip(masks, s.fisher)],
            [tf.convert_to_tensor(a) for a in s.anchors],
            s.strength,
        )

    def _train_step_fn(self, iterator, arch, wpl_on, fisher_gate):
        self.train_traces += 1  # Python side effect: runs once per trace.
        strategy = self.strategy
        global_batch = float(self.cfg.batch_size)
        replicas = float(strategy.num_replicas_in_sync)

        proximal = self.cfg.wpl_mode == "proximal"

        def replica_fn(images, labels):
            masks = self.supernet.usage_masks(arch)
            with tf.GradientTape() as tape:
                logits = self.supernet((images, arch), training=True)
                ce = tf.nn.sparse_softmax_cross_entropy_with_logits(labels, logits)
                data_loss = tf.reduce_sum(ce) / global_batch
                if proximal:  # the Fisher term acts after the step (below), with its penalty
                    penalty = tf.constant(0.0)
                    loss = data_loss
                else:
                    penalty = wpl_on * self._penalty(masks)
                    loss = data_loss + penalty / replicas
            grads = _none_to_zeros(tape.gradient(loss, self.variables), self.variables)
            correct = tf.reduce_sum(
                tf.cast(tf.equal(tf.argmax(logits, -1, output_type=tf.int32), labels), tf.float32)
            )
            return data_loss, penalty, correct, grads

        images, labels = next(iterator)
        data_loss, penalty, correct, grads = strategy.run(replica_fn, args=(images, labels))
        sum_ = tf.distribute.ReduceOp.SUM
        data_loss = strategy.reduce(sum_, data_loss, axis=None)
        penalty = strategy.reduce(tf.distribute.ReduceOp.MEAN, penalty, axis=None)
        correct = strategy.reduce(sum_, correct, axis=None)
        grads = [strategy.reduce(sum_, g, axis=None) for g in grads]
        masks = self.supernet.usage_masks(arch)
        if self.cfg.grad_clip:
            grads, _ = tf.clip_by_global_norm(
                [m * g for m, g in zip(masks, grads)], self.cfg.grad_clip
            )
        before = None  # the weights this step's loss saw, read once for L2 and the penalty
        if proximal or self.cfg.weight_decay:
            before = [tf.convert_to_tensor(v) for v in self.variables]
        step_grads = grads
        if self.cfg.weight_decay:
            step_grads = [g + self.cfg.weight_decay * b for g, b in zip(grads, before)]
        self.optimizer.apply(self.variables, step_grads, masks)
        if proximal:  # with the Fisher of this step's penalty (updated below)
            penalty = tf.cond(wpl_on > 0, lambda: self._proximal_pull(masks, before),
                              lambda: tf.constant(0.0))
        # Fisher from the gradient of this update (no extra backward pass), masked.
        self._masked_fisher_update(grads, masks, fisher_gate)
        self.step.assign_add(1)
        return data_loss, penalty, correct / global_batch

    def _proximal_pull(self, masks, before=None) -> tf.Tensor:
        """``θ ← (θ + η α m F θ*) / (1 + η α m F)`` (:meth:`WPLState.apply_proximal` with the
        usage masks ``m``: unused slices keep their values). Returns the penalty at
        ``before`` (the weights this step's loss saw), or 0 without it."""
        lr = tf.convert_to_tensor(self.optimizer.learning_rate)
        penalty = tf.constant(0.0)
        for k, m in enumerate(masks):
            penalty += self.wpl_state.apply_proximal(
                k, lr, mask=m, penalty_at=None if before is None else before[k])
        return penalty

    def _masked_fisher_update(self, grads, masks, gate) -> None:
        s = self.wpl_state
        eta, clip = s.momentum, s.clip_norm
        for f, g, m in zip(s.fisher, grads, masks):
            old = tf.convert_to_tensor(f)
            new = momentum_fisher(old, g, eta)
            if clip is not None:
                new = _clip_slices(new, clip, m)
            keep = gate * m
            f.assign(keep * new + (1.0 - keep) * old)
        s.num_fisher_updates.assign_add(tf.cast(gate > 0, tf.int64))

    def _snapshot_fn(self, arch):
        masks = self.supernet.usage_masks(arch)
        for v, a, m in zip(self.variables, self.wpl_state.anchors, masks):
            a.assign(m * tf.convert_to_tensor(v) + (1.0 - m) * tf.convert_to_tensor(a))

    def _eval_fn(self, images, labels, arch):
        self.eval_traces += 1
        logits = self.supernet((images, arch), training=False)
        pred = tf.argmax(logits, -1, output_type=tf.int32)
        return tf.reduce_mean(tf.cast(tf.equal(pred, labels), tf.float32))

    # ------------------------------------------------------------------ contract
    def _arch(self, arch) -> tf.Tensor:
        return tf.constant(self.space.validate(arch), tf.int32)

    def train_architecture(self, arch: Architecture, num_batches: int, *,
                           wpl_active: bool) -> Dict[str, float]:
        if num_batches < 1:
            raise ValueError(f"num_batches must be >= 1, got {num_batches}.")
        a = self._arch(arch)
        on = tf.constant(1.0 if wpl_active else 0.0)
        losses, penalties, accs = [], [], []
        for b in range(num_batches):
            gate = tf.constant(1.0 if (wpl_active and b == num_batches - 1) else 0.0)
            loss, pen, acc = self._train_step(self._train_iter, a, on, gate)
            losses.append(float(loss))
            penalties.append(float(pen))
            accs.append(float(acc))
        if wpl_active:
            self._snapshot(a)
        return {"loss": float(np.mean(losses)), "penalty": float(np.mean(penalties)),
                "accuracy": float(np.mean(accs))}

    def validation_error(self, arch: Architecture) -> float:
        """Error rate in percent of ``arch`` on the FIXED validation batch."""
        acc = self._eval(self.fixed_images, self.fixed_labels, self._arch(arch))
        return 100.0 * (1.0 - float(acc))

    def reward(self, arch: Architecture) -> float:
        """Accuracy of ``arch`` on the next validation minibatch (in [0, 1])."""
        images, labels = next(self._valid_iter)
        return float(self._eval(images, labels, self._arch(arch)))

    def learning_rate_at(self, epoch: int) -> float:
        """``lr_min + (lr_max − lr_min)(1 + cos(π min(epoch, E)/E))/2``."""
        c = self.cfg
        t = min(max(epoch, 0), c.epochs) / max(c.epochs, 1)
        return c.lr_min + 0.5 * (c.lr_max - c.lr_min) * (1.0 + math.cos(math.pi * t))

    def start_epoch(self, epoch: int) -> None:
        """Sets the cosine learning rate; flushes the Fisher every ``fisher_flush_every``."""
        self.optimizer.learning_rate.assign(self.learning_rate_at(epoch))
        every = self.cfg.fisher_flush_every
        if every and epoch > 0 and epoch % every == 0:
            self.wpl_state.reset_fisher()

    def checkpoint_items(self) -> Dict[str, object]:
        items = {"supernet": self.supernet, "optimizer": self.optimizer,
                 "wpl_state": self.wpl_state, "step": self.step}
        if self.strategy.num_replicas_in_sync == 1:
            items["valid_iterator"] = self._valid_iter
        return items

    def config(self) -> dict:
        return {"space": self.space.name, "num_nodes": self.space.num_nodes,
                **dataclasses.asdict(self.cfg),
                "replicas": int(self.strategy.num_replicas_in_sync)}


def _clip_slices(values: tf.Tensor, clip: float, mask: tf.Tensor) -> tf.Tensor:
    """Clips ``values`` to L2 norm ``clip``: the whole tensor for an always-used weight
    (scalar mask), each ``[node, slot]`` slice for a stacked op weight."""
    if len(mask.shape) == 0:
        return tf.clip_by_norm(values, clip)
    axes = list(range(2, len(values.shape)))  # stacked [B, 2, ...] op weights
    norm = tf.sqrt(tf.reduce_sum(tf.square(values), axis=axes, keepdims=True))
    return values * tf.minimum(1.0, clip / tf.maximum(norm, 1e-12))
