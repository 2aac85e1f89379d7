"""The ENAS RNN search task on PTB: :class:`RNNSearchTask` trains the shared weights of
:class:`~wpl_keras.nas.spaces.rnn.supernet.RNNSupernet` one architecture at a time, with SGD,
gradient clipping and the Weight Plasticity Loss over the weights ``wpl_scope`` names.

A training step is one :class:`~wpl_keras.wpl.step.WPLStep` (L2, the WPL term or the
proximal pull, the clip, SGD, the Fisher update), the step ``WPLModel`` and the micro-CNN task
call too; the task only says which weights a step covers (the architecture's node-matrix rows
as row slices, and with ``wpl_scope="all"`` the dense shared weights) and when
(``wpl_active``, ``update_fisher``).

Under a ``tf.distribute`` strategy each replica runs the forward and backward pass of its
rows of the batch; the WPL step runs once on the all-reduced gradient, so ``R`` replicas
compute what one device computes (up to float rounding; see :class:`RNNSearchTask`).
"""

from __future__ import annotations

import functools
import math
from typing import Dict, List, Optional, Tuple

import keras
import numpy as np
import tensorflow as tf

from wpl_keras.data.ptb import PTBCorpus, batchify, num_windows
from wpl_keras.nas.base import Architecture, SharedWeightsTask
from wpl_keras.nas.spaces.rnn.cell import clamp_rows, draw_dropout_masks, sequence_loss
from wpl_keras.nas.spaces.rnn.space import RNNCellSpace
from wpl_keras.nas.spaces.rnn.cell import slice_dropout_masks
from wpl_keras.nas.spaces.rnn.config import RNNSupernetConfig
from wpl_keras.nas.spaces.rnn.supernet import RNNSupernet
from wpl_keras.utils.checkpoint import VariableBundle
from wpl_keras.utils.validation import check_number
from wpl_keras.wpl.fisher import WPLState, read_rows
from wpl_keras.wpl.step import Covered, WPLStep

#: ``fisher_seed_generator`` is seeded ``seed + FISHER_SEED_OFFSET`` (the supernet's: ``seed``).
FISHER_SEED_OFFSET = 1000003


class RNNSearchTask(SharedWeightsTask):
    """ENAS RNN search on PTB through the :class:`SharedWeightsTask` contract.

    Training reads consecutive BPTT windows of the batchified training split and carries the
    hidden state across them (reset by :meth:`start_epoch`). Each step:
    one :class:`~wpl_keras.wpl.step.WPLStep` with ``config.wpl`` (defaults: L2 before the WPL
    term, the raw data gradient in the Fisher): ``g = ∇ CE`` over the used weights only, plus
    ``λ θ`` (L2 on used weights), clipped to global norm ``grad_clip`` and applied by SGD
    (sparse rows for the node matrices). With
    WPL, the Fisher term covers the architecture's node-matrix rows (and, with
    ``wpl_scope="all"``, the embedding, ``w_x``, ``w_h``, decoder bias and, with output
    BatchNorm, its ``γ`` and ``β``): with
    ``wpl.mode="proximal"`` as the proximal step ``θ ← (θ + η α F θ*) / (1 + η α F)`` after
    the SGD step (:func:`~wpl_keras.wpl.core.proximal_pull`); with ``wpl.mode="gradient"`` as
    ``α F (θ − θ*)`` added to ``g`` before clipping. The WPL work runs only in steps with WPL on
    (``tf.cond``), so a step without it costs what a plain ENAS step costs.

    ``α`` is the variable ``wpl_state.strength``: 0 until the search driver (or the caller)
    writes the schedule's value.

    The Fisher's gradient (``wpl.fisher_source``): ``"train"``, the data gradient of an
    architecture's last training step; ``"valid"``, that of one more forward and backward
    pass after it (no optimizer step) on the next *Fisher window*: windows ``1, …, n − 1`` of
    the validation split at ``eval_batch_size`` rows and ``eval_bptt`` steps, cycling (window
    0 is the fixed batch of :meth:`validation_error`, so the batch forgetting is measured on
    never enters the Fisher), with their own position (``fisher_position``) and carried state
    (``fisher_state``, reset by :meth:`start_epoch`), and the training dropouts, as the WPL
    release's ``shared_valid_fisher`` pass (its model in training mode), drawn from the
    task's own ``fisher_seed_generator`` (seed ``seed + 1000003``) so the training steps draw
    the same masks whatever the source. It is its own traced step under the strategy
    (``fisher_trace_count``: 1 for every architecture, 0 with ``"train"``).

    Every traced step runs under ``strategy`` (one code path for one device and many): the
    weights, the optimizer, the WPL state and the carried states are created in its scope.
    Replica ``r`` of ``R`` (global ``replica_id_in_sync_group``) takes the batch rows
    ``[r b, (r + 1) b)``, ``b = batch / R``, of the window, of the carried hidden state (a
    full ``[batch, H]`` variable, the same on every replica) and of the row-wise dropout masks;
    the masks are drawn once per step, in cross-replica context, for the global batch (so
    ``R`` replicas draw what one device draws). A replica's loss is the mean cross-entropy of
    its rows times ``b / batch``, so the SUM over replicas is the global mean; the loss, the
    dense gradients and the node-row gradient values are all-reduced with SUM, the new hidden
    state rows are gathered (``strategy.gather``) and assigned whole, and L2, the WPL term,
    the clip, SGD, the proximal pull and the Fisher update run once in cross-replica context
    on the reduced values. The output BatchNorm (if on) normalises over the global batch: its
    row sums are all-reduced inside the replica function (synchronised BN, in training and
    evaluation), and the path mask, like the weight-drop masks, is shared by every row.
    Evaluation (:meth:`validation_error`, :meth:`reward`) splits its rows the same way. A
    checkpoint holds the full state, so a search resumes under another device count with
    everything carried over (each replica re-slices the hidden state).
    ``trace_count`` and ``eval_trace_count`` count the traces of the train and eval steps:
    1 each for every architecture, under any strategy.

    Args:
        corpus: PTB ids.
        config: supernet/search settings.
        seed: initialisation and dropout seed.
        strategy: the ``tf.distribute.Strategy`` (None: the current one, one device without
            a scope); ``config.strategy`` names the kind an experiment builds.

    Raises:
        ValueError: if ``batch_size`` or ``eval_batch_size`` is not divisible by the number
            of replicas, or ``jit_compile`` is asked for with several replicas.
    """

    def __init__(self, corpus: PTBCorpus, config: RNNSupernetConfig, *, seed: int = 0,
                 strategy: Optional[tf.distribute.Strategy] = None):
        if corpus.vocab_size != config.model.vocab_size:
            raise ValueError(
                f"corpus has {corpus.vocab_size} words but config.model.vocab_size is "
                f"{config.model.vocab_size}."
            )
        self.cfg = config
        self.seed = int(seed)
        self.strategy = strategy or tf.distribute.get_strategy()
        _check_replicas(config, self.strategy.num_replicas_in_sync)
        self.space = RNNCellSpace(config.model.num_nodes)
        with self.strategy.scope():
            self._build_state(corpus, config, seed)
        self.trace_count = 0
        self.eval_trace_count = 0
        self.fisher_trace_count = 0
        jit = bool(config.jit_compile)
        self._train_step = tf.function(self._train_step_impl, jit_compile=jit, autograph=False)
        self._valid_fisher_step = tf.function(self._valid_fisher_step_impl, jit_compile=jit,
                                                autograph=False)
        self._eval_step = tf.function(self._eval_step_impl, jit_compile=jit, autograph=False)
        self._snapshot = tf.function(self._snapshot_impl, autograph=False)

    def _build_state(self, corpus: PTBCorpus, config: RNNSupernetConfig, seed: int) -> None:
        """The supernet, its SGD optimizer, the WPL state, the data and the counters and
        carried states (called in the strategy's scope)."""
        self.supernet = RNNSupernet(config, seed=seed)
        self.optimizer = keras.optimizers.SGD(learning_rate=float(config.optimizer.learning_rate))
        self.optimizer.build(self.supernet.trainable_variables)
        net = self.supernet
        # The weights of a step, in the order the task lists them: the dense shared weights
        # (RNNSupernet.dense_weights: embedding, w_x, w_h, decoder_bias and, with output
        # BatchNorm, its gamma and beta), then the architecture's node-matrix rows.
        self._dense_vars = net.dense_weights()
        self._node_index = len(self._dense_vars)
        # WPL state index k protects the step's weight _covered[k]: index 0 the node matrices;
        # "all" appends the dense shared weights (indices 1, 2, ...).
        dense_covered = list(range(self._node_index)) if config.wpl_scope == "all" else []
        self._covered = [self._node_index] + dense_covered
        self.wpl_state = WPLState(
            [net.w_nodes] + [self._dense_vars[i] for i in dense_covered],
            strength=0.0,
            fisher_momentum=config.wpl.fisher_momentum,
            clip_norm=config.wpl.clip_norm,
            fisher_normalization=config.wpl.fisher_normalization,
            name="rnn_wpl_state",
        )
        self.wpl_step = WPLStep(self.wpl_state, config.wpl)
        # The Fisher validation pass's dropout masks: a generator apart from the training's.
        self.fisher_seed_generator = keras.random.SeedGenerator(seed + FISHER_SEED_OFFSET)
        self._init_data(corpus, config)

    def _init_data(self, corpus: PTBCorpus, config: RNNSupernetConfig) -> None:
        """The batchified splits, the window positions and the carried hidden states."""
        train = batchify(corpus.train, config.batch_size)
        valid = batchify(corpus.valid, config.eval_batch_size)
        if num_windows(train, config.bptt) < 1 or num_windows(valid, config.eval_bptt) < 2:
            raise ValueError("corpus too small for the configured batch sizes and BPTT windows.")
        self._train = tf.constant(train)
        self._valid = tf.constant(valid)
        self._num_train_windows = num_windows(train, config.bptt)
        self._num_valid_windows = num_windows(valid, config.eval_bptt)
        self.train_position = tf.Variable(0, dtype=tf.int32, trainable=False, name="train_position")
        self.valid_position = tf.Variable(1, dtype=tf.int32, trainable=False, name="valid_position")
        self.train_state = tf.Variable(
            tf.zeros([config.batch_size, config.model.hidden_size]), trainable=False,
            name="train_state"
        )
        self.reward_state = tf.Variable(
            tf.zeros([config.eval_batch_size, config.model.hidden_size]), trainable=False,
            name="reward_state",
        )
        # The Fisher validation windows (fisher_source="valid") and their carried state.
        self.fisher_position = tf.Variable(1, dtype=tf.int32, trainable=False,
                                           name="fisher_position")
        self.fisher_state = tf.Variable(
            tf.zeros([config.eval_batch_size, config.model.hidden_size]), trainable=False,
            name="fisher_state",
        )
        self.epoch = tf.Variable(0, dtype=tf.int64, trainable=False, name="epoch")

    # ------------------------------------------------------------ traced steps
    def _window(self, data, position, bptt):
        """``(x, y)`` of window ``position`` of the batchified ``data`` (``[B, L]``), as
        :func:`~wpl_keras.data.ptb.bptt_window`: columns gathered at ``position · T + [0, T)``.
        A gather, not a slice: XLA (``jit_compile``) needs a slice's begin as a compile-time
        constant, which made the position (a variable) a constant of the compiled step and
        compiled the step again for every window."""
        columns = position * bptt + tf.range(bptt)
        return tf.gather(data, columns, axis=1), tf.gather(data, columns + 1, axis=1)

    def _replica_rows(self, batch: int) -> Tuple[tf.Tensor, int]:
        """``(start, size)`` of this replica's rows of a ``batch``-row batch: replica ``r``
        (global id in sync group) of ``R`` takes ``[r b, (r + 1) b)``, ``b = batch / R``."""
        size = batch // self.strategy.num_replicas_in_sync
        replica = tf.distribute.get_replica_context().replica_id_in_sync_group
        return tf.cast(replica, tf.int32) * size, size

    @staticmethod
    def _rows(tensor, start, size) -> tf.Tensor:
        """Rows ``[start, start + size)`` of a 2-D tensor."""
        return tf.slice(tensor, tf.stack([start, 0]), [size, -1])

    @staticmethod
    def _replica_loss(logits, targets, size: int, batch: int) -> tf.Tensor:
        """Mean cross-entropy of the replica's ``size`` rows times ``size / batch``: summed
        over the replicas, the mean over the global batch."""
        loss = sequence_loss(logits, targets)
        return loss if size == batch else loss * (size / batch)

    def _train_step_impl(self, arch, wpl_active, update_fisher):
        """One SGD step of ``arch`` on the next training window: the task's
        :class:`~wpl_keras.wpl.step.WPLStep` over the step's weights (the dense shared
        weights and the architecture's node rows), ``g_k = ∂CE/∂θ_k + λ θ_k``, in gradient
        mode plus ``α F (θ − θ*)`` on the covered ones, clipped to global norm ``grad_clip``
        and applied; in proximal mode then pulled. With ``wpl_active`` and ``update_fisher``
        the raw data gradients update the covered Fisher.

        Returns:
            ``(loss, penalty, grad_norm)``: the penalty at the weights the loss saw (0 without
            WPL), the gradient norm before clipping.
        """
        self.trace_count += 1  # Python side effect: runs once per trace
        cfg = self.cfg
        x, y = self._window(self._train, self.train_position, cfg.bptt)
        self.train_position.assign((self.train_position + 1) % self._num_train_windows)
        rows = self.supernet.wpl_rows(arch)
        masks = self.supernet.dropout_masks(cfg.batch_size)  # once, for the global batch
        loss, new_state, data = self._data_gradients(x, y, arch, masks, self.train_state,
                                                     cfg.batch_size)
        params = [tf.convert_to_tensor(v) for v in self._dense_vars]
        params.append(read_rows(self.supernet.w_nodes, rows))
        step = self.wpl_step(
            params, data, lambda grads: self._apply(grads, rows),
            covered=self._covered_weights(rows),
            learning_rate=tf.convert_to_tensor(self.optimizer.learning_rate),
            l2=cfg.optimizer.l2, grad_clip=cfg.optimizer.grad_clip, active=wpl_active,
            update_fisher=tf.logical_and(wpl_active, update_fisher))
        self.train_state.assign(clamp_rows(new_state, cfg.model.hidden_max_norm))
        return loss, step.penalty, step.grad_norm

    def _covered_weights(self, rows) -> List[Covered]:
        """The step's weights WPL covers: the node matrices' ``rows`` (state index 0) and, with
        ``wpl_scope="all"``, the dense shared weights (state indices 1, 2, ...)."""
        return [Covered(position=i, index=k, rows=rows if k == 0 else None)
                for k, i in enumerate(self._covered)]

    def _data_gradients(self, x, y, arch, masks, state, batch: int):
        """``(loss, new_state, data gradients)`` of the mean cross-entropy of ``arch`` on the
        ``batch``-row window ``x -> y`` from the carried ``state`` (``[batch, H]``), with the
        training dropout ``masks``: each replica's rows (:meth:`_replica_gradients` through
        ``strategy.run``), the loss and the gradients summed over replicas, the new
        hidden-state rows gathered in replica order (``[batch, H]``). Gradients in the task's
        order (dense weights, then the node rows), all dense tensors."""
        strategy, total = self.strategy, tf.distribute.ReduceOp.SUM
        loss, new_state, data = strategy.run(
            functools.partial(self._replica_gradients, batch=batch),
            args=(x, y, arch, masks, tf.convert_to_tensor(state)))
        loss = strategy.reduce(total, loss, axis=None)
        data = [strategy.reduce(total, g, axis=None) for g in data]
        return loss, strategy.gather(new_state, axis=0), data

    def _replica_gradients(self, x, y, arch, masks, state, *, batch: int):
        """One replica's ``(loss, new_state, data gradients)`` on its rows of the
        ``batch``-row window, of the carried hidden state and of the row-wise dropout
        masks."""
        net = self.supernet
        start, size = self._replica_rows(batch)
        state = self._rows(state, start, size)
        with tf.GradientTape() as tape:
            logits, new_state = net(self._rows(x, start, size), arch, state, training=True,
                                    dropout_masks=slice_dropout_masks(masks, start, size))
            loss = self._replica_loss(logits, self._rows(y, start, size), size, batch)
        grads = tape.gradient(loss, self._dense_vars + [net.w_nodes])
        # The node gradient comes from one gather of the distinct rows: its values align
        # with them, on every replica alike.
        data = [tf.convert_to_tensor(g) for g in grads[:-1] + [grads[-1].values]]
        return loss, new_state, data

    def _valid_fisher_step_impl(self, arch):
        """``fisher_source="valid"`` (see the class): ``F ← clip((1 − η_F) F + η_F g²)`` with
        ``g = ∂CE/∂θ`` of the covered weights on Fisher window ``fisher_position`` from
        ``fisher_state``, with dropout masks from ``fisher_seed_generator``; no optimizer step,
        no L2. Moves to the next window and carries the clamped state; returns the mean CE."""
        self.fisher_trace_count += 1  # Python side effect: runs once per trace
        cfg = self.cfg
        x, y = self._window(self._valid, self.fisher_position, cfg.eval_bptt)
        nxt = self.fisher_position + 1
        self.fisher_position.assign(tf.where(nxt >= self._num_valid_windows, 1, nxt))
        model = cfg.model
        node_shape = [model.num_nodes - 1, model.hidden_size, 2 * model.hidden_size]
        masks = draw_dropout_masks(cfg.eval_batch_size, model, self.fisher_seed_generator,
                                   node_shape=node_shape)  # once, for the global batch
        loss, new_state, data = self._data_gradients(x, y, arch, masks, self.fisher_state,
                                                     cfg.eval_batch_size)
        self.fisher_state.assign(clamp_rows(new_state, model.hidden_max_norm))
        self.wpl_step.update_fisher(data, self._covered_weights(self.supernet.wpl_rows(arch)))
        return loss

    def _apply(self, grads: List[tf.Tensor], rows) -> None:
        """SGD on the dense weights and, as sparse rows, on the architecture's node rows."""
        node_update = self._node_slices(grads[self._node_index], rows)
        self.optimizer.apply_gradients(
            list(zip(grads[:self._node_index], self._dense_vars))
            + [(node_update, self.supernet.w_nodes)]
        )

    def _node_slices(self, values, rows) -> tf.IndexedSlices:
        """``values`` of the node rows ``rows`` as a row-slice gradient of ``w_nodes``."""
        shape = tf.constant([int(d) for d in self.supernet.w_nodes.shape], tf.int32)
        return tf.IndexedSlices(values, rows, shape)

    def _eval_step_impl(self, arch, x, y, state):
        """``(mean CE, new state)`` of ``arch`` on ``x -> y`` from ``state`` (no dropout):
        each replica its rows, the loss summed and the state rows gathered."""
        self.eval_trace_count += 1  # Python side effect: runs once per trace
        strategy = self.strategy
        loss, new_state = strategy.run(self._replica_eval, args=(arch, x, y, state))
        loss = strategy.reduce(tf.distribute.ReduceOp.SUM, loss, axis=None)
        return loss, strategy.gather(new_state, axis=0)

    def _replica_eval(self, arch, x, y, state):
        batch = self.cfg.eval_batch_size
        start, size = self._replica_rows(batch)
        logits, new_state = self.supernet(self._rows(x, start, size), arch,
                                          self._rows(state, start, size), training=False)
        return self._replica_loss(logits, self._rows(y, start, size), size, batch), new_state

    def _snapshot_impl(self, arch):
        """``θ* ← θ`` on the covered weights (:meth:`WPLState.snapshot_anchors`)."""
        rows = {0: self.supernet.wpl_rows(arch)}
        rows.update({k: None for k in range(1, len(self._covered))})
        self.wpl_state.snapshot_anchors(rows=rows)

    def _arch_tensor(self, arch) -> tf.Tensor:
        return tf.constant(self.space.validate(arch), tf.int32)

    # -------------------------------------------------------------- contract
    def train_architecture(
        self, arch: Architecture, num_batches: int, *, wpl_active: bool
    ) -> Dict[str, float]:
        """Trains ``arch`` on the next ``num_batches`` windows (see :class:`SharedWeightsTask`).

        With ``wpl_active`` the covered weights' Fisher is updated once
        (``F ← (1 − η_F) F + η_F g²``, clipped to ``wpl.clip_norm``), ``g`` the data-loss
        gradient of the last training step (``wpl.fisher_source="train"``) or of one extra
        pass on the next Fisher validation window after it (``"valid"``, see the class),
        then their anchors are set (``θ* ← θ``).

        Returns:
            ``loss`` (mean CE), ``penalty``, ``ppl`` (``exp(loss)``), ``grad_norm``.
        """
        num_batches = check_number("RNNSearchTask.train_architecture: num_batches", num_batches,
                                   minimum=1, integer=True)
        a = self._arch_tensor(arch)
        active = tf.constant(bool(wpl_active))
        from_train = self.cfg.wpl.fisher_source == "train"
        losses, penalties, norms = [], [], []
        for b in range(int(num_batches)):
            last = tf.constant(from_train and b == int(num_batches) - 1)
            loss, penalty, norm = self._train_step(a, active, last)
            losses.append(float(loss))
            penalties.append(float(penalty))
            norms.append(float(norm))
        if not all(math.isfinite(v) for v in losses):
            raise FloatingPointError(f"RNN supernet loss is not finite: {losses}.")
        if wpl_active and not from_train:
            self._valid_fisher_step(a)
        if wpl_active:
            self._snapshot(a)
        loss = float(np.mean(losses))
        return {
            "loss": loss,
            "penalty": float(np.mean(penalties)),
            "ppl": float(math.exp(min(loss, 50.0))),
            "grad_norm": float(np.mean(norms)),
        }

    def validation_error(self, arch: Architecture) -> float:
        """Perplexity on the FIXED validation batch (first window of the validation split,
        zero initial state, no dropout)."""
        x, y = self._window(self._valid, tf.constant(0), self.cfg.eval_bptt)
        state = self.supernet.initial_state(self.cfg.eval_batch_size)
        loss, _ = self._eval_step(self._arch_tensor(arch), x, y, state)
        return float(math.exp(min(float(loss), 50.0)))

    def reward(self, arch: Architecture) -> float:
        """``reward_constant / ppl`` on the next validation window (windows 1, 2, ... cycling;
        window 0 is the fixed batch), carrying the validation hidden state."""
        x, y = self._window(self._valid, self.valid_position, self.cfg.eval_bptt)
        nxt = self.valid_position + 1
        self.valid_position.assign(tf.where(nxt >= self._num_valid_windows, 1, nxt))
        loss, state = self._eval_step(
            self._arch_tensor(arch), x, y, tf.convert_to_tensor(self.reward_state)
        )
        self.reward_state.assign(clamp_rows(state, self.cfg.model.hidden_max_norm))
        return float(self.cfg.reward_constant / math.exp(min(float(loss), 50.0)))

    def learning_rate_at(self, epoch: int) -> float:
        """``lr₀ · d^max(0, epoch − s)`` of ``config.optimizer``
        (:meth:`~wpl_keras.nas.spaces.rnn.config.RNNOptimizerConfig.rate`)."""
        return self.cfg.optimizer.rate(epoch)

    def start_epoch(self, epoch: int) -> None:
        """Sets the epoch's learning rate and resets the carried hidden states (training,
        reward and Fisher validation)."""
        self.epoch.assign(int(epoch))
        self.optimizer.learning_rate.assign(self.learning_rate_at(epoch))
        for state in (self.train_state, self.reward_state, self.fisher_state):
            state.assign(tf.zeros_like(state))

    def checkpoint_items(self) -> Dict[str, object]:
        return {
            "supernet": VariableBundle(self.supernet, name="supernet"),
            "optimizer": VariableBundle(self.optimizer, name="optimizer"),
            "wpl_state": VariableBundle(self.wpl_state, name="wpl_state"),
            "train_position": self.train_position,
            "valid_position": self.valid_position,
            "train_state": self.train_state,
            "reward_state": self.reward_state,
            "fisher_position": self.fisher_position,
            "fisher_state": self.fisher_state,
            "fisher_seed_generator": VariableBundle([self.fisher_seed_generator.state],
                                                    name="fisher_seed_generator"),
            "epoch": self.epoch,
        }

    def config(self) -> dict:
        return {"task": "enas_rnn_ptb", "seed": self.seed, **self.cfg.to_json(),
                "replicas": int(self.strategy.num_replicas_in_sync)}


def _check_replicas(config: RNNSupernetConfig, replicas: int) -> None:
    """Raise unless the batch sizes split evenly over ``replicas`` (and no XLA with several)."""
    for name in ("batch_size", "eval_batch_size"):
        value = getattr(config, name)
        if value % replicas:
            raise ValueError(
                f"RNNSupernetConfig.{name} {value} is not divisible by the {replicas} replicas "
                f"of the strategy; set {name} to a multiple of {replicas} (e.g. "
                f"{max(replicas, value - value % replicas)}) or run on fewer devices."
            )
    if config.jit_compile and replicas > 1:
        raise ValueError(
            f"RNNSupernetConfig.jit_compile is not supported with {replicas} replicas (a step "
            "under a strategy with several replicas is not XLA-compiled); set "
            "jit_compile=False or run on one device."
        )
