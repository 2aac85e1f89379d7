"""The ENAS recurrent supernet on PTB: the Keras model that holds every cell of
:class:`RNNCellSpace` on shared weights, and its dropouts (settings in
:mod:`wpl_keras.nas.spaces.rnn.config`).

``W_x ∈ R^{E×2H}`` (input matrix), ``W_h ∈ R^{H×2H}`` (hidden matrix) and one matrix
``W_{i,j} ∈ R^{H×2H}`` per (node, input) pair, stored as rows of one ``[N(N−1)/2, H, 2H]``
variable so a sampled architecture's matrices are a ``tf.gather`` (their gradient is a
``tf.IndexedSlices`` over those rows only). The decoder is tied to the embedding,
``logits = h_t Eᵀ + b``. The input projection ``x W_x`` for all steps is one matmul before the
cell's time loop and the tied softmax one matmul after it; the cell itself (equations, one
trace for every architecture, the hand-written backward loop) is :mod:`wpl_keras.nas.spaces.rnn.cell`.

Dropouts (ENAS / WPL release): embedding (whole words), input (locked over time),
weight-drop (DropConnect, one mask per batch, on ``W_h`` — the release's ``w_hc``/``w_hh`` —
and, with ``weight_drop_scope="all"``, on the node matrices too) and output (locked); and,
optionally, random path dropping (whole node inputs, one mask per batch). Their masks are
drawn in one fixed order (:func:`draw_dropout_masks`) and applied separately, so a step under
``tf.distribute`` draws them once for the global batch and each replica applies its rows of
them. Optionally the cell output is batch-normalised (``output_batch_norm``, as the release's
search supernet: ``output = BN(mean of loose ends)``), on batch statistics synchronised
across replicas, in training and in evaluation alike.

The search task that trains it, :class:`~wpl_keras.nas.spaces.rnn.task.RNNSearchTask`, is in
:mod:`wpl_keras.nas.spaces.rnn.task`.
"""

from __future__ import annotations

from typing import Dict, Optional

import keras
import tensorflow as tf

from wpl_keras.nas.spaces.rnn.cell import (
    apply_dropout_masks,
    batch_norm_rows,
    decode_architecture,
    draw_dropout_masks,
    enas_cell_sequence,
)
from wpl_keras.nas.spaces.rnn.config import RNNModelConfig, RNNSupernetConfig
from wpl_keras.nas.spaces.rnn.space import RNNCellSpace
from wpl_keras.wpl.fisher import read_rows


def add_batch_norm_weights(layer: keras.layers.Layer, cfg: RNNModelConfig, seed: int):
    """``(γ, β)``, two ``[H]`` weights of ``layer`` for the output BatchNorm: uniform in
    ``[−init_range, init_range]`` (``batch_norm_init="uniform"``; seeds ``seed + 1`` and
    ``seed + 2``, so they differ from each other and from the matrices) or ``γ = 1``,
    ``β = 0`` (``"unit"``)."""
    inits = ("ones", "zeros")
    if cfg.batch_norm_init == "uniform":
        inits = tuple(keras.initializers.RandomUniform(-cfg.init_range, cfg.init_range,
                                                       seed=seed + k) for k in (1, 2))
    return tuple(layer.add_weight(shape=(cfg.hidden_size,), initializer=init, name=name)
                 for init, name in zip(inits, ("bn_gamma", "bn_beta")))


# --------------------------------------------------------------------------- supernet
class RNNSupernet(keras.Model):
    """All shared weights of the ENAS RNN search and the forward pass of any cell.

    Weights: ``embedding [V, E]`` (tied decoder), ``w_x [E, 2H]``, ``w_h [H, 2H]``,
    ``w_nodes [N(N−1)/2, H, 2H]`` (one matrix per (node, input) pair), ``decoder_bias [V]``
    and, with ``output_batch_norm``, ``bn_gamma [H]`` and ``bn_beta [H]``.

    Args:
        config: the search task's config; the supernet reads its ``model`` (sizes, dropout
            rates, initialisation, hidden-state norm).
        seed: seed of the dropout masks (its state is a variable, saved with the model).
    """

    def __init__(self, config: RNNSupernetConfig, *, seed: int = 0, name: str = "rnn_supernet"):
        super().__init__(name=name)
        self.cfg = config
        model = config.model
        self.space = RNNCellSpace(model.num_nodes)
        e, h, v = model.embedding_size, model.hidden_size, model.vocab_size
        init = keras.initializers.RandomUniform(-model.init_range, model.init_range, seed=seed)
        self.embedding = self.add_weight(shape=(v, e), initializer=init, name="embedding")
        self.w_x = self.add_weight(shape=(e, 2 * h), initializer=init, name="w_x")
        self.w_h = self.add_weight(shape=(h, 2 * h), initializer=init, name="w_h")
        self.w_nodes = self.add_weight(
            shape=(self.space.num_pairs, h, 2 * h), initializer=init, name="w_nodes"
        )
        self.decoder_bias = self.add_weight(shape=(v,), initializer="zeros", name="decoder_bias")
        self.bn_gamma = self.bn_beta = None
        if model.output_batch_norm:
            self.bn_gamma, self.bn_beta = add_batch_norm_weights(self, model, seed)
        self.seed_generator = keras.random.SeedGenerator(seed)
        self.built = True

    def dense_weights(self) -> list:
        """The weights every architecture uses, in a fixed order: ``embedding``, ``w_x``,
        ``w_h``, ``decoder_bias``, then (with output BatchNorm) ``bn_gamma``, ``bn_beta``."""
        extra = [self.bn_gamma, self.bn_beta] if self.bn_gamma is not None else []
        return [self.embedding, self.w_x, self.w_h, self.decoder_bias] + extra

    def wpl_rows(self, architecture) -> tf.Tensor:
        """Rows of ``w_nodes`` the architecture uses (the node rows a step reads, trains and
        covers with WPL), int32 ``[N − 1]``; row ``i − 1`` belongs to node ``i``."""
        return decode_architecture(tf.convert_to_tensor(architecture, tf.int32),
                                   self.cfg.model.num_nodes)[3]

    def initial_state(self, batch_size: int) -> tf.Tensor:
        return tf.zeros([batch_size, self.cfg.model.hidden_size], tf.float32)

    def dropout_masks(self, batch) -> Dict[str, tf.Tensor]:
        """The training dropout masks of a ``batch``-row step (:func:`draw_dropout_masks`
        from this supernet's seed generator, the node mask for the ``N − 1`` rows an
        architecture reads, the path mask if ``path_keep < 1``). Under ``tf.distribute``,
        draw them in cross-replica context for the global batch and give each replica its
        rows (:func:`slice_dropout_masks`)."""
        h = self.cfg.model.hidden_size
        node_shape = [self.cfg.model.num_nodes - 1, h, 2 * h]
        return draw_dropout_masks(batch, self.cfg.model, self.seed_generator,
                                  node_shape=node_shape)

    def call(self, tokens, architecture, state=None, training=False,
             dropout_masks: Optional[Dict[str, tf.Tensor]] = None):
        """Next-word logits of the cell ``architecture``.

        Args:
            tokens: int ``[B, T]`` word ids.
            architecture: int32 tensor of the architecture's decisions.
            state: ``[B, H]`` hidden state carried from the previous window (zeros if None).
            training: apply the dropouts.
            dropout_masks: with ``training``, the masks to apply (:meth:`dropout_masks` for
                these ``B`` rows); None draws them here.

        With output BatchNorm, the cell outputs are normalised on the batch's statistics
        (over every replica's rows under ``tf.distribute``), in training and evaluation,
        before the output dropout.

        Returns:
            ``(logits [B, T, V], new_state [B, H])``.
        """
        cfg = self.cfg.model
        tokens = tf.cast(tokens, tf.int32)
        batch = tf.shape(tokens)[0]
        if state is None:
            state = tf.zeros([batch, cfg.hidden_size], tf.float32)
        arch = tf.cast(tf.reshape(architecture, [-1]), tf.int32)
        rows = self.wpl_rows(arch)
        embedding = tf.convert_to_tensor(self.embedding)
        w_h = tf.convert_to_tensor(self.w_h)
        w_nodes = read_rows(self.w_nodes, rows)
        x = tf.gather(embedding, tf.transpose(tokens))  # [T, B, E]
        masks = {}
        if training:
            masks = self.dropout_masks(batch) if dropout_masks is None else dropout_masks
            x, w_h, w_nodes = apply_dropout_masks(x, tokens, w_h, w_nodes, masks)
        steps = tf.shape(x)[0]
        xp = tf.reshape(
            tf.matmul(tf.reshape(x, [-1, cfg.embedding_size]), self.w_x),
            [steps, batch, 2 * cfg.hidden_size],
        )
        outputs, new_state = enas_cell_sequence(xp, state, w_h, w_nodes, arch, cfg.num_nodes,
                                                max_norm=cfg.hidden_max_norm,
                                                path_mask=masks.get("path"),
                                                last_node=cfg.recurrent_state == "last_node")
        if self.bn_gamma is not None:
            outputs = batch_norm_rows(outputs, self.bn_gamma, self.bn_beta)
        outputs = tf.transpose(outputs, [1, 0, 2])  # [B, T, H]
        if "output" in masks:
            outputs = outputs * masks["output"]
        logits = tf.matmul(tf.reshape(outputs, [-1, cfg.hidden_size]), embedding, transpose_b=True)
        logits = tf.reshape(logits + self.decoder_bias, [batch, steps, cfg.vocab_size])
        return logits, new_state
