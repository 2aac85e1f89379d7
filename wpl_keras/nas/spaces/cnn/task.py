"""The ENAS micro-CNN search task: shared-weights training of :class:`CNNSupernet` with WPL.

:class:`CNNSearchTask` trains one sampled architecture at a time on the one-trace supernet of
:mod:`wpl_keras.nas.spaces.cnn.supernet`. Its training step is one
:class:`~wpl_keras.wpl.step.WPLStep` (the step ``WPLModel`` and the RNN task call too), with
the supernet's usage masks ``m`` as coverage, so the weights of ops an architecture does not
run get no update, no penalty, no Fisher change and no new anchor:

1. gradient mode: ``α m F (θ − θ*)`` added to the all-reduced data gradient;
2. the gradient is masked and clipped to a global norm; :class:`MaskedMomentumSGD` steps on
   it plus ``λ θ`` (weight decay, after the clip: ``WPLConfig.l2_placement`` None or
   ``"after_clip"``);
3. proximal mode: ``θ ← (θ + η α m F θ*) / (1 + η α m F)``;
4. on the last batch of an architecture, ``F ← F + m (clip((1 − η_F) F + η_F g²) − F)``, each
   op slice (a node's ``[slot, input]`` slice, a state's block of a cell's output conv)
   clipped on its own, with ``g`` the raw all-reduced data gradient
   (``WPLConfig.fisher_gradient="data"``, the default: the paper's
   ``F ← (1 − η) F + η (∂L/∂θ)²`` from the gradients back-propagation already computed) or
   the masked, clipped gradient of step 2 (``"total"``: the data gradient plus the WPL term
   in gradient mode; this task's Fisher before ``fisher_gradient`` existed);
5. after the architecture's batches, ``θ* ← θ* + m (θ − θ*)``
   (:meth:`~wpl_keras.wpl.WPLState.snapshot_anchors`).

The reported penalty is ``(α/2) Σ m F (θ − θ*)²`` at the weights the step's loss saw. ``α``
starts at 0: the search driver writes the schedule's ``α`` into ``wpl_state.strength`` and
owns the Fisher flush (:mod:`wpl_keras.nas.search.schedule`).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Dict, List, Optional, Sequence

import keras
import numpy as np
import tensorflow as tf

from wpl_keras.nas.base import Architecture, SharedWeightsTask
from wpl_keras.nas.spaces.cnn.model import FinalConfig
from wpl_keras.nas.spaces.cnn.space import MicroCellSpace
from wpl_keras.nas.spaces.cnn.supernet import CNNSupernet, SupernetConfig
from wpl_keras.utils.config import JsonConfig
from wpl_keras.utils.validation import check_fields, check_number
from wpl_keras.wpl.config import WPLConfig
from wpl_keras.wpl.fisher import WPLState
from wpl_keras.wpl.flat import grouped_layout
from wpl_keras.wpl.step import Covered, WPLStep


@dataclasses.dataclass(frozen=True)
class CNNOptimizerConfig(JsonConfig):
    """The masked SGD of the shared weights (:class:`MaskedMomentumSGD`).

    Attributes:
        lr_max, lr_min: ends of the cosine schedule
            ``lr = lr_min + (lr_max − lr_min)(1 + cos(π e/E))/2`` over ``E`` epochs.
        momentum: heavy-ball momentum ``μ`` (Nesterov when ``nesterov``).
        weight_decay: ``λ``, added as ``λ θ`` to the gradient of the used weights.
        grad_clip: global-norm clip of the gradient (None disables).
    """

    lr_max: float = 0.05
    lr_min: float = 0.0005
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 1e-4
    grad_clip: Optional[float] = 5.0

    def __post_init__(self):
        check_fields(self, {
            "lr_min": dict(minimum=0), "lr_max": dict(minimum=0),
            "momentum": dict(minimum=0, maximum=1, exclusive_maximum=True),
            "weight_decay": dict(minimum=0),
            "grad_clip": dict(minimum=0, exclusive_minimum=True, optional=True),
        })
        if self.lr_min > self.lr_max:
            raise ValueError(
                f"CNNOptimizerConfig needs 0 <= lr_min <= lr_max, got lr_min {self.lr_min}, "
                f"lr_max {self.lr_max}."
            )


@dataclasses.dataclass(frozen=True)
class CNNTaskConfig(JsonConfig):
    """The one config of the CIFAR-10 micro search task: the shared weights' training during the
    search, the data split, and the derived architecture's final training.

    The reference values (ENAS micro search / public WPL release) are in
    :mod:`wpl_keras.experiments.enas_cnn`'s ``paper`` preset. The search's model, optimizer, WPL
    step and final training are nested configs; a JSON object in their place
    (``experiment.json``, an override) is read through that config's ``from_json``, which
    rejects unknown fields.

    Attributes:
        num_nodes: ``B`` nodes per cell.
        supernet: the search supernet's shape
            (:class:`~wpl_keras.nas.spaces.cnn.supernet.SupernetConfig`).
        optimizer: the shared weights' masked SGD (:class:`CNNOptimizerConfig`).
        lr_epochs: ``E`` of its cosine schedule (None: the search's epochs, which
            :class:`CNNSearchTask` takes as ``epochs``), set at each
            :meth:`CNNSearchTask.start_epoch`.
        wpl: how the WPL step is formed (:class:`~wpl_keras.wpl.config.WPLConfig`: Fisher
            momentum ``η_F``, the clip of each updated Fisher slice, proximal or gradient
            mode). ``α`` and the Fisher flush belong to the search's schedule
            (:class:`~wpl_keras.wpl.schedule.ScheduleConfig`).
        batch_size: global training batch (split over replicas).
        eval_batch_size: batch of :meth:`CNNSearchTask.reward`.
        fixed_valid_size: size of the FIXED validation batch of ``validation_error``.
        augment: padded crop + flip on training batches.
        num_valid: train images held out for validation; train_size: search-train subset size
            (None: all the rest).
        strategy: ``tf.distribute`` strategy kind
            (:func:`wpl_keras.nas.search.distribute.make_strategy`).
        final: the derived architecture's training from scratch
            (:class:`~wpl_keras.nas.spaces.cnn.model.FinalConfig`; its length is the
            experiment's ``train_epochs``).
        final_train_size: train the final model on a subset (None: all 50,000).
    """

    num_nodes: int = 5
    supernet: SupernetConfig = SupernetConfig()
    optimizer: CNNOptimizerConfig = CNNOptimizerConfig()
    lr_epochs: Optional[int] = None
    wpl: WPLConfig = WPLConfig()
    batch_size: int = 32
    eval_batch_size: int = 100
    fixed_valid_size: int = 500
    augment: bool = True
    num_valid: int = 5000
    train_size: Optional[int] = None
    strategy: str = "auto"
    final: FinalConfig = FinalConfig()
    final_train_size: Optional[int] = None

    def __post_init__(self):
        self._coerce_nested()  # dicts from JSON or overrides become the nested configs
        count, optional_count = dict(integer=True, minimum=1), dict(integer=True, minimum=1,
                                                                    optional=True)
        check_fields(self, {
            "num_nodes": count, "lr_epochs": optional_count,
            "batch_size": count, "eval_batch_size": count, "fixed_valid_size": count,
            "num_valid": count, "train_size": optional_count,
            "final_train_size": optional_count,
        })


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
        """One masked step (call in cross-replica context with all-reduced gradients).

        Where :func:`~wpl_keras.wpl.flat.grouped_layout` groups the weights (the task's are
        float32, as its velocities), the step runs over the weights, gradients, masks and
        velocities laid end to end: the same formula, a few ops in all instead of the same
        ops per weight."""
        layout = grouped_layout(variables)
        if layout is None:
            for var, g, m, vel in zip(variables, gradients, masks, self.velocities):
                new_vel, delta = self._update(g, m, vel)
                vel.assign(new_vel)
                var.assign_sub(delta)
        else:
            mask = layout.flatten_coverage(coverage(masks))
            new_vel, delta = self._update(layout.flatten(gradients), 1.0 if mask is None else mask,
                                          layout.flatten(self.velocities))
            for var, vel, v, d in zip(variables, self.velocities, layout.unflatten(new_vel),
                                      layout.unflatten(delta)):
                vel.assign(v)
                var.assign_sub(d)
        self.iterations.assign_add(1)

    def _update(self, g, m, vel) -> tuple:
        """``(v', lr · m · step)`` of the class docstring's formula."""
        vel = tf.convert_to_tensor(vel)
        new_vel = m * (self.momentum * vel + g) + (1.0 - m) * vel
        step = g + self.momentum * new_vel if self.nesterov else new_vel
        return new_vel, self.learning_rate * m * step


def _none_to_zeros(grads, variables):
    return [tf.zeros_like(v) if g is None else tf.convert_to_tensor(g)
            for g, v in zip(grads, variables)]


def coverage(masks: Sequence[tf.Tensor]) -> List[Optional[tf.Tensor]]:
    """The usage masks as the WPL core's coverage: ``None`` (the whole weight) for an
    always-used weight's scalar mask, the ``[2, i + 2, 1, …]`` mask of a node's op weight and
    the ``[B + 2, 1, 1]`` mask of an output-conv kernel as they are.
    """
    return [None if m.shape.rank == 0 else m for m in masks]


class CNNSearchTask(SharedWeightsTask):
    """Trains and scores micro-CNN architectures on shared weights, with WPL.

    Every training loop runs under ``strategy`` (default: the current one, i.e. one device):
    per-replica losses are scaled by the global batch, gradients are all-reduced (summed),
    and the WPL terms, the masked SGD step, the Fisher update and the anchor snapshot run once
    on the all-reduced values (see the module docstring for the step). Evaluation
    (:meth:`validation_error` on the fixed batch, :meth:`reward` on the next validation
    minibatch, and so derive's scoring) splits the batch over the replicas like training and
    sums the correct counts and cross-entropies (:meth:`_eval_fn`); one trace serves every
    architecture and batch size (``eval_traces``). The supernet's BatchNorm uses the
    statistics of the evaluated batch, synchronised over the replicas, as ENAS's search does
    (:mod:`~wpl_keras.nas.spaces.cnn.supernet`): a score depends on the batch it is computed
    in, and not on the number of replicas.

    Args:
        space: a :class:`MicroCellSpace` (experiments build it with ``config.num_nodes``).
        config: :class:`CNNTaskConfig` (its data-split, strategy and final-training fields
            are read by :mod:`wpl_keras.experiments.enas_cnn`, not here).
        splits: arrays with ``x_train, y_train, x_valid, y_valid`` (uint8 images), e.g.
            :func:`wpl_keras.data.cifar10.search_splits`; the search never sees test data.
        epochs: the search's epochs: ``E`` of the cosine schedule when ``config.lr_epochs`` is
            None.
        strategy: a ``tf.distribute.Strategy``.
        seed: seeds weights and data order.
    """

    def __init__(self, space: MicroCellSpace, config: CNNTaskConfig, splits, *,
                 epochs: int = 150, strategy: Optional[tf.distribute.Strategy] = None,
                 seed: int = 0):
        from wpl_keras.data.cifar10_pipeline import make_dataset, normalize

        self.space = space
        self.cfg = config
        # E of the cosine schedule: the config's lr_epochs, else the search's epochs.
        self.lr_epochs = config.lr_epochs or check_number("CNNSearchTask: epochs", epochs,
                                                          integer=True, minimum=1)
        self.strategy = strategy or tf.distribute.get_strategy()
        self.seed = int(seed)
        n_valid = len(splits.x_valid)
        if n_valid < 1 or len(splits.x_train) < config.batch_size:
            raise ValueError(
                f"need at least one validation image and a full training batch "
                f"({config.batch_size}); got {len(splits.x_train)} train, {n_valid} valid."
            )
        if config.wpl.fisher_source != "train":
            raise NotImplementedError(
                f"CNNSearchTask: WPLConfig.fisher_source={config.wpl.fisher_source!r} is not "
                "supported by the micro-CNN task yet (the RNN task supports 'valid'); use "
                "fisher_source='train'."
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
            sgd = config.optimizer
            self.optimizer = MaskedMomentumSGD(self.variables, sgd.lr_max, sgd.momentum,
                                               sgd.nesterov)
            self.wpl_state = WPLState(self.variables, strength=0.0,
                                      fisher_momentum=config.wpl.fisher_momentum,
                                      clip_norm=config.wpl.clip_norm,
                                      fisher_normalization=config.wpl.fisher_normalization)
            self.step = tf.Variable(0, dtype=tf.int64, trainable=False, name="supernet_step")
        self._clip_axes = self.supernet.slice_axes()
        self.wpl_step = WPLStep(self.wpl_state, config.wpl, default_l2_placement="after_clip")
        def train_batches(start: int):
            """The endless training stream from global batch ``start`` (seeded, stateless:
            batch k is the same whenever it is drawn), distributed over the replicas."""
            data = make_dataset(splits.x_train, splits.y_train, config.batch_size,
                                training=config.augment, repeat=True, seed=self.seed,
                                drop_remainder=True, start_batch=start)
            return iter(self.strategy.experimental_distribute_dataset(data))

        self._train_batches = train_batches
        self._train_iter, self._train_position = train_batches(0), 0
        valid = make_dataset(splits.x_valid, splits.y_valid,
                             min(config.eval_batch_size, n_valid), training=False, repeat=True)
        self._valid_iter = iter(valid)
        fixed = min(config.fixed_valid_size, n_valid)
        self.fixed_images = normalize(splits.x_valid[:fixed])
        self.fixed_labels = tf.constant(splits.y_valid[:fixed], tf.int32)
        self.train_traces = 0
        self.eval_traces = 0
        self._train_step = tf.function(self._train_step_fn, autograph=False)
        shape = tuple(splits.x_train.shape[1:])
        self._eval = tf.function(
            self._eval_fn, autograph=False,
            input_signature=[
                tf.TensorSpec((None,) + shape, tf.float32),
                tf.TensorSpec((None,), tf.int32),
                tf.TensorSpec((space.num_decisions,), tf.int32),
            ],
        )
        self._snapshot = tf.function(self._snapshot_fn, autograph=False)

    # ------------------------------------------------------------------ traced bodies
    def _covered(self, masks) -> List[Covered]:
        """Every weight, covered with its usage mask (None for an always-used weight) and its
        Fisher clip axes."""
        return [Covered(position=k, index=k, mask=m, clip_axes=axes)
                for k, (m, axes) in enumerate(zip(coverage(masks), self._clip_axes))]

    def _penalty(self, masks) -> tf.Tensor:
        """``(α/2) Σ m F (θ − θ*)²`` at the current weights."""
        params = [tf.convert_to_tensor(v) for v in self.variables]
        return self.wpl_step.penalty(params, self._covered(masks))

    def _replica_step(self, images, labels, arch):
        """Data loss (over the global batch), correct count and data gradients of a replica."""
        with tf.GradientTape() as tape:
            logits = self.supernet((images, arch), training=True)
            ce = tf.nn.sparse_softmax_cross_entropy_with_logits(labels, logits)
            data_loss = tf.reduce_sum(ce) / float(self.cfg.batch_size)
        grads = _none_to_zeros(tape.gradient(data_loss, self.variables), self.variables)
        correct = tf.reduce_sum(
            tf.cast(tf.equal(tf.argmax(logits, -1, output_type=tf.int32), labels), tf.float32)
        )
        return data_loss, correct, grads

    def _train_step_fn(self, iterator, arch, wpl_active, update_fisher):
        """One step (module docstring); ``wpl_active`` and ``update_fisher``: bool tensors."""
        self.train_traces += 1  # Python side effect: runs once per trace.
        strategy, cfg = self.strategy, self.cfg
        images, labels = next(iterator)
        data_loss, correct, grads = strategy.run(self._replica_step, args=(images, labels, arch))
        sum_ = tf.distribute.ReduceOp.SUM
        data_loss = strategy.reduce(sum_, data_loss, axis=None)
        correct = strategy.reduce(sum_, correct, axis=None)
        grads = [strategy.reduce(sum_, g, axis=None) for g in grads]
        masks = self.supernet.usage_masks(arch)
        before = [tf.convert_to_tensor(v) for v in self.variables]  # the weights the loss saw
        sgd = cfg.optimizer
        step = self.wpl_step(
            before, grads, lambda step_grads: self.optimizer.apply(self.variables, step_grads,
                                                                   masks),
            covered=self._covered(masks),
            learning_rate=tf.convert_to_tensor(self.optimizer.learning_rate),
            l2=sgd.weight_decay, grad_clip=sgd.grad_clip, active=wpl_active,
            update_fisher=update_fisher)
        self.step.assign_add(1)
        return data_loss, step.penalty, correct / float(cfg.batch_size)

    def _proximal_pull(self, masks) -> None:
        """``θ ← (θ + η α m F θ*) / (1 + η α m F)`` on every weight with the usage masks ``m``
        (unused slices keep their values), outside a training step."""
        lr = tf.convert_to_tensor(self.optimizer.learning_rate)
        for c in self._covered(masks):
            self.wpl_state.apply_proximal(c.index, lr, mask=c.mask)

    def _snapshot_fn(self, arch):
        """``θ* ← θ* + m (θ − θ*)`` with the usage masks of ``arch``."""
        self.wpl_state.snapshot_anchors(masks=coverage(self.supernet.usage_masks(arch)))

    def _eval_fn(self, images, labels, arch):
        """``(accuracy, mean cross-entropy)`` over the batch: ``correct / n`` and
        ``Σ CE / n``, with ``correct`` and ``Σ CE`` summed over the replicas.

        The batch is split over the replicas as training splits its batch
        (:meth:`_replica_eval` through ``strategy.run``), and the supernet's BatchNorm
        all-reduces its moments over them (:func:`~wpl_keras.nas.spaces.cnn.supernet.batch_norm`),
        so each replica normalises its rows with the statistics of the whole evaluated batch:
        ``R`` replicas score what one device scores, up to the order of the sums. Every worker
        of a multi-worker strategy gets the same batch and the same score."""
        self.eval_traces += 1  # Python side effect: runs once per trace.
        strategy, total = self.strategy, tf.distribute.ReduceOp.SUM
        correct, ce = strategy.run(self._replica_eval, args=(images, labels, arch))
        correct = strategy.reduce(total, correct, axis=None)
        ce = strategy.reduce(total, ce, axis=None)
        n = tf.cast(tf.shape(images)[0], tf.float32)
        return correct / n, ce / n

    def _replica_eval(self, images, labels, arch):
        """``(correct, Σ CE)`` of this replica's rows of the ``n``-row batch: replica ``r`` of
        ``R`` (``replica_id_in_sync_group``) scores rows ``[⌊r n / R⌋, ⌊(r + 1) n / R⌋)``.

        A batch of fewer rows than replicas (``n < R``) is scored whole by every replica
        and its sums weighted ``1 / R``: BatchNorm's all-reduced sums are then ``R`` times
        the batch's (exactly, in floating point) and its moments the batch's own, while no
        replica runs on an empty batch (TensorFlow's ``Conv2D`` returns an empty batch with
        its input's channel count, so the replicas' BatchNorm all-reduces would not match)."""
        context = tf.distribute.get_replica_context()
        replicas = int(context.num_replicas_in_sync)
        n = tf.shape(images)[0]
        r = tf.cast(context.replica_id_in_sync_group, tf.int32)
        split = n >= replicas
        lo = tf.where(split, r * n // replicas, 0)
        hi = tf.where(split, (r + 1) * n // replicas, n)
        weight = tf.where(split, 1.0, 1.0 / replicas)
        images, labels = images[lo:hi], labels[lo:hi]
        logits = self.supernet((images, arch), training=False)
        pred = tf.argmax(logits, -1, output_type=tf.int32)
        correct = tf.reduce_sum(tf.cast(tf.equal(pred, labels), tf.float32))
        ce = tf.reduce_sum(tf.nn.sparse_softmax_cross_entropy_with_logits(labels, logits))
        return weight * correct, weight * ce

    # ------------------------------------------------------------------ contract
    def _arch(self, arch) -> tf.Tensor:
        return tf.constant(self.space.validate(arch), tf.int32)

    def train_architecture(self, arch: Architecture, num_batches: int, *,
                           wpl_active: bool) -> Dict[str, float]:
        """Trains ``arch`` for ``num_batches`` steps; with ``wpl_active`` the Fisher is updated
        on the last step and the anchors of the used slices are snapshot after it."""
        num_batches = check_number("CNNSearchTask.train_architecture: num_batches", num_batches,
                                   minimum=1, integer=True)
        a = self._arch(arch)
        on = tf.constant(bool(wpl_active))
        step = int(self.step.numpy())
        if step != self._train_position:  # restored from a checkpoint: continue the stream
            self._train_iter, self._train_position = self._train_batches(step), step
        losses, penalties, accs = [], [], []
        for b in range(num_batches):
            update = tf.constant(bool(wpl_active and b == num_batches - 1))
            loss, pen, acc = self._train_step(self._train_iter, a, on, update)
            self._train_position += 1
            losses.append(float(loss))
            penalties.append(float(pen))
            accs.append(float(acc))
        if wpl_active:
            self._snapshot(a)
        return {"loss": float(np.mean(losses)), "penalty": float(np.mean(penalties)),
                "accuracy": float(np.mean(accs))}

    def validation_error(self, arch: Architecture) -> float:
        """Error rate in percent of ``arch`` on the FIXED validation batch,
        ``100 (1 − correct / n)`` (:meth:`_eval_fn`)."""
        acc, _ = self._eval(self.fixed_images, self.fixed_labels, self._arch(arch))
        return 100.0 * (1.0 - float(acc))

    def reward(self, arch: Architecture) -> float:
        """Accuracy ``correct / n`` of ``arch`` on the next validation minibatch (in [0, 1]),
        scored as :meth:`_eval_fn`. The minibatch comes from one host iterator (the same
        sequence for every device count; it is checkpointed)."""
        images, labels = next(self._valid_iter)
        acc, _ = self._eval(images, labels, self._arch(arch))
        return float(acc)

    def learning_rate_at(self, epoch: int) -> float:
        """``lr_min + (lr_max − lr_min)(1 + cos(π min(epoch, E)/E))/2``, ``E = lr_epochs``."""
        sgd, total = self.cfg.optimizer, self.lr_epochs
        t = min(max(epoch, 0), total) / max(total, 1)
        return sgd.lr_min + 0.5 * (sgd.lr_max - sgd.lr_min) * (1.0 + math.cos(math.pi * t))

    def start_epoch(self, epoch: int) -> None:
        """Sets the cosine learning rate (the Fisher flush is the search driver's)."""
        self.optimizer.learning_rate.assign(self.learning_rate_at(epoch))

    def checkpoint_items(self) -> Dict[str, object]:
        return {"supernet": self.supernet, "optimizer": self.optimizer,
                "wpl_state": self.wpl_state, "step": self.step,
                "valid_iterator": self._valid_iter}

    def config(self) -> dict:
        return {"space": self.space.name, **dataclasses.asdict(self.cfg),
                "num_nodes": self.space.num_nodes, "lr_epochs": self.lr_epochs,
                "replicas": int(self.strategy.num_replicas_in_sync)}
