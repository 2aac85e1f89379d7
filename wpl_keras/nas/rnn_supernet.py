"""The ENAS recurrent supernet on PTB: every cell of :class:`RNNCellSpace` on shared weights.

Cell (ENAS, highway nodes). With ``x_t`` the embedded word and ``h_{t-1}`` the previous state::

    node 0:   z = x_t W_x + h_{t-1} W_h,        c = σ(z[:, :H]),  s_0 = h + c ⊙ (f_0(z[:, H:]) − h)
    node i:   p = s_{in(i)},  z = p W_{i,in(i)}, c = σ(z[:, :H]),  s_i = p + c ⊙ (f_i(z[:, H:]) − p)
    h_t = mean of the loose-end nodes s_j

``W_x ∈ R^{E×2H}`` (input matrix), ``W_h ∈ R^{H×2H}`` (hidden matrix) and one matrix
``W_{i,j} ∈ R^{H×2H}`` per (node, input) pair, stored as rows of one ``[N(N−1)/2, H, 2H]``
variable so a sampled architecture's matrices are a ``tf.gather`` (their gradient is a
``tf.IndexedSlices`` over those rows only). The decoder is tied to the embedding,
``logits = h_t Eᵀ + b``.

One traced graph serves every architecture: the architecture is an int32 tensor, activations
are selected by a table lookup (``f(a) = k₁ tanh(k₂ a) + k₃ + k₄ relu(a) + k₅ a`` covers tanh,
relu, identity and σ(a) = ½ + ½ tanh(a/2)), a node's input by a gather, and time is a
``tf.while_loop``. Speed: the input projection ``x W_x`` for all steps is one matmul before the
loop and the tied softmax one matmul after it; inside the loop the weight matrices receive no
gradient; instead the pre-activations ``z`` are offset by zero tensors whose gradients
``∂L/∂z_t`` come out of the backward loop, and ``∂L/∂W = Σ_t p_tᵀ ∂L/∂z_t`` is ONE matmul over all
``T·B`` rows per matrix (:func:`enas_cell_sequence`).

Dropouts (ENAS / WPL release): embedding (whole words), input (locked over time),
weight-drop (DropConnect on ``W_h`` and the node matrices, one mask per batch) and output
(locked). :class:`RNNSearchTask` trains it with SGD, gradient clipping and WPL over the node
matrices only.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Dict, Optional, Tuple

import keras
import numpy as np
import tensorflow as tf

from wpl_keras.data.ptb import PTBCorpus, batchify, num_windows
from wpl_keras.nas.base import Architecture, SharedWeightsTask
from wpl_keras.nas.rnn_space import ACTIVATIONS, RNNCellSpace
from wpl_keras.utils.checkpoint import VariableBundle
from wpl_keras.wpl.fisher import WPLState, read_rows
from wpl_keras.wpl.penalty import check_wpl_mode

# f(a) = k1 tanh(k2 a) + k3 + k4 relu(a) + k5 a, one row per activation of ACTIVATIONS.
_ACTIVATION_TABLE = np.array(
    [
        [1.0, 1.0, 0.0, 0.0, 0.0],  # tanh
        [0.0, 0.0, 0.0, 1.0, 0.0],  # relu
        [0.0, 0.0, 0.0, 0.0, 1.0],  # identity
        [0.5, 0.5, 0.5, 0.0, 0.0],  # sigmoid
    ],
    dtype=np.float32,
)
assert len(_ACTIVATION_TABLE) == len(ACTIVATIONS)


# --------------------------------------------------------------------------- config
WPL_SCOPES = ("cell", "all")


@dataclasses.dataclass(frozen=True)
class RNNSupernetConfig:
    """Settings of the RNN supernet and its search task (defaults: the WPL release's RNN search).

    Attributes:
        num_nodes: nodes per cell (12).
        vocab_size: vocabulary (10,000 for PTB).
        embedding_size, hidden_size: must be equal (tied decoder); 1000 in the reference.
        batch_size, bptt: training batch rows and BPTT window (64, 35).
        eval_batch_size: rows of the fixed validation batch and of reward minibatches.
        eval_bptt: steps of those validation windows.
        learning_rate: SGD step (20); ``lr · lr_decay^(epoch − lr_decay_start_epoch)`` after
            ``lr_decay_start_epoch`` (0.96 from epoch 15).
        grad_clip: global gradient-norm clip (0.25).
        l2: L2 weight ``λ`` on the weights a step uses (1e-7).
        weight_drop, output_dropout, embedding_dropout, input_dropout: 0.5 / 0.4 / 0.1 / 0.65.
        init_range: weights start uniform in ``[−init_range, init_range]``.
        hidden_max_norm: every step's hidden state rows (and so the carried state) are
            rescaled to at most this norm (ENAS: 25), which keeps ReLU/identity cells from
            exploding.
        wpl_strength, wpl_momentum, wpl_clip_norm: ``α`` (60), ``η`` (0.9) and the Fisher
            clip norm (10).
        wpl_scope: which shared weights WPL covers. ``"cell"`` (the reference): the rows of
            the node-to-node matrices the architecture uses. ``"all"``: those rows and every
            weight all architectures share (embedding = tied decoder, ``w_x``, ``w_h``,
            decoder bias), each with its own Fisher and anchor, updated from the same
            gradients and at the same moments.
        wpl_mode: how the Fisher term enters a step. ``"proximal"`` (default): after the SGD
            step on the clipped data gradient, the exact proximal step
            ``θ ← (θ + η α F θ*) / (1 + η α F)``, stable for every ``α``. ``"gradient"``:
            ``α F (θ − θ*)`` is added to the gradient before clipping (the penalty in the
            loss, as the reference code does); it diverges on weights with ``η α F > 2``.
        reward_constant: reward ``= reward_constant / valid_ppl`` (80).
        jit_compile: XLA-compile the traced train/eval steps.
    """

    num_nodes: int = 12
    vocab_size: int = 10000
    embedding_size: int = 1000
    hidden_size: int = 1000
    batch_size: int = 64
    bptt: int = 35
    eval_batch_size: int = 64
    eval_bptt: int = 35
    learning_rate: float = 20.0
    lr_decay: float = 0.96
    lr_decay_start_epoch: int = 15
    grad_clip: float = 0.25
    l2: float = 1e-7
    weight_drop: float = 0.5
    output_dropout: float = 0.4
    embedding_dropout: float = 0.1
    input_dropout: float = 0.65
    init_range: float = 0.04
    hidden_max_norm: float = 25.0
    wpl_strength: float = 60.0
    wpl_momentum: float = 0.9
    wpl_clip_norm: float = 10.0
    wpl_scope: str = "cell"
    wpl_mode: str = "proximal"
    reward_constant: float = 80.0
    jit_compile: bool = False

    def __post_init__(self):
        if self.embedding_size != self.hidden_size:
            raise ValueError(
                "RNNSupernetConfig: the decoder is tied to the embedding, so embedding_size "
                f"({self.embedding_size}) must equal hidden_size ({self.hidden_size})."
            )
        for name in ("num_nodes", "vocab_size", "hidden_size", "batch_size", "bptt",
                     "eval_batch_size", "eval_bptt"):
            if int(getattr(self, name)) <= 0:
                raise ValueError(f"RNNSupernetConfig.{name} must be positive.")
        if self.wpl_scope not in WPL_SCOPES:
            raise ValueError(
                f"RNNSupernetConfig.wpl_scope must be one of {WPL_SCOPES}, got "
                f"{self.wpl_scope!r}."
            )
        check_wpl_mode(self.wpl_mode, "RNNSupernetConfig.wpl_mode")
        if self.num_nodes < 2:
            raise ValueError("RNNSupernetConfig.num_nodes must be >= 2.")
        for name in ("weight_drop", "output_dropout", "embedding_dropout", "input_dropout"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"RNNSupernetConfig.{name} must be in [0, 1).")

    @classmethod
    def paper(cls, **overrides) -> "RNNSupernetConfig":
        """Reference sizes (WPL release): embedding = hidden = 1000, 12 nodes, batch 64,
        BPTT 35, vocabulary 10k."""
        return dataclasses.replace(cls(), **overrides)

    @classmethod
    def cpu_small(cls, **overrides) -> "RNNSupernetConfig":
        """Hidden 256 (otherwise the reference): about 1 s per step on 2 CPU cores, so a
        60-step search epoch takes a minute or two."""
        base = cls(embedding_size=256, hidden_size=256, eval_batch_size=32)
        return dataclasses.replace(base, **overrides)

    def to_json(self) -> dict:
        return dataclasses.asdict(self)


# --------------------------------------------------------------------------- pure pieces
def decode_architecture(arch: tf.Tensor, num_nodes: int):
    """Splits an architecture tensor into (activations [N], inputs [N−1], loose weights [N],
    matrix rows [N−1]).

    ``loose[j] = 1/L`` for the ``L`` nodes no later node reads, else 0;
    ``rows[i−1] = i (i − 1) / 2 + input_i`` (:func:`~wpl_keras.nas.rnn_space.pair_index`).
    """
    arch = tf.cast(tf.reshape(arch, [-1]), tf.int32)
    acts = tf.concat([arch[:1], arch[2::2]], axis=0)
    inputs = arch[1::2]
    used = tf.reduce_max(tf.one_hot(inputs, num_nodes, dtype=tf.float32), axis=0)
    loose = 1.0 - used
    loose = loose / tf.reduce_sum(loose)
    nodes = tf.range(1, num_nodes, dtype=tf.int32)
    rows = nodes * (nodes - 1) // 2 + inputs
    return acts, inputs, loose, rows


def activation_and_slope(a: tf.Tensor, coeffs: tf.Tensor, *, with_slope: bool = True):
    """``f(a) = k₁ tanh(k₂ a) + k₃ + k₄ relu(a) + k₅ a`` for the table row
    ``coeffs = (k₁..k₅)`` and, with ``with_slope``, ``f'(a) = k₁ k₂ (1 − tanh²(k₂ a)) +
    k₄ [a > 0] + k₅``.

    Returns:
        ``(f, f')``, or ``f`` alone without ``with_slope``.
    """
    th = tf.tanh(coeffs[1] * a)
    f = coeffs[0] * th + coeffs[2] + coeffs[3] * tf.nn.relu(a) + coeffs[4] * a
    if not with_slope:
        return f
    slope = (coeffs[0] * coeffs[1]) * (1.0 - th * th) + coeffs[4] + coeffs[3] * tf.cast(
        a > 0, a.dtype)
    return f, slope


def _forward_loop(xp, h0, w_h, w_nodes, acts, inputs, loose, num_nodes, record, max_norm):
    """The time loop of the cell.

    Node states of one step live in a ``TensorArray`` (a node reads its input with one
    dynamic read, O(1)), the weight matrices are loop invariants unstacked once before the
    loop. With ``record`` the loop also keeps, per node and step, what the hand-written
    backward loop needs: the node input ``p``, ``q = 1 − c`` and
    ``G = [(f − p) c (1 − c), c f']`` (so ``∂L/∂z = [∂L/∂s, ∂L/∂s] ⊙ G``), and each step's
    row scales of the norm clamp.

    With ``max_norm``, every step's ``h_t`` rows are rescaled to norm at most ``max_norm``
    (``h_t ← h_t · min(1, max_norm / ‖h_t‖)``, as the ENAS code does against exploding
    states); the scale is treated as a constant in the backward pass.

    Returns:
        ``(outputs [T, B, H], h_T, records, scales)``: ``records`` a list (per node) of
        ``(p [T, B, H], q, G)`` with ``q`` and ``G`` left as ``TensorArray`` s over time (the
        backward loop reads them step by step; stacking them would only copy), ``scales`` a
        ``TensorArray`` of ``[B, 1]`` (empty / None without ``record`` or ``max_norm``).
    """
    steps = xp.shape[0] if xp.shape[0] is not None else tf.shape(xp)[0]
    hidden = h0.shape[-1]
    dtype = xp.dtype
    table = tf.gather(tf.constant(_ACTIVATION_TABLE, dtype), acts)  # [N, 5]
    coeffs = tf.unstack(table, num=num_nodes)
    node_inputs = tf.unstack(inputs, num=num_nodes - 1)
    matrices = [w_h] + tf.unstack(w_nodes, num=num_nodes - 1)
    element = h0.shape

    def new_ta(size, shape):
        return tf.TensorArray(dtype, size=size, element_shape=shape, clear_after_read=False)

    out_ta = new_ta(steps, element)
    rec_tas = []
    clamp_rec = record and max_norm is not None
    scale_ta = new_ta(steps, tf.TensorShape(element[:-1]).concatenate([1])) if clamp_rec else ()
    if record:
        wide = tf.TensorShape(element[:-1]).concatenate([2 * hidden])
        rec_tas = [(new_ta(steps, element), new_ta(steps, element), new_ta(steps, wide))
                   for _ in range(num_nodes)]

    def body(t, h, out_ta, rec_tas, scale_ta):
        states = new_ta(num_nodes, element)
        stacked, rec_tas = [], list(rec_tas)
        for i in range(num_nodes):
            if i == 0:
                p = h
                z = xp[t] + tf.matmul(h, matrices[0])
            else:
                p = states.read(node_inputs[i - 1])
                z = tf.matmul(p, matrices[i])
            zc, za = tf.split(z, 2, axis=1)
            c = tf.sigmoid(zc)
            if record:
                f, slope = activation_and_slope(za, coeffs[i])
            else:
                f = activation_and_slope(za, coeffs[i], with_slope=False)
            d = f - p
            s = p + c * d
            if i < num_nodes - 1:  # the last node is nobody's input
                states = states.write(i, s)
            stacked.append(s)
            if record:
                q = 1.0 - c
                g = tf.concat([d * (c * q), c * slope], axis=1)
                p_ta, q_ta, g_ta = rec_tas[i]
                rec_tas[i] = (p_ta.write(t, p), q_ta.write(t, q), g_ta.write(t, g))
        h_new = tf.tensordot(loose, tf.stack(stacked), axes=1)
        if max_norm is not None:
            norms = tf.norm(h_new, axis=-1, keepdims=True)
            scale = tf.minimum(1.0, max_norm / tf.maximum(norms, 1e-12))
            h_new = h_new * scale
            if clamp_rec:
                scale_ta = scale_ta.write(t, scale)
        return t + 1, h_new, out_ta.write(t, h_new), tuple(rec_tas), scale_ta

    _, h_last, out_ta, rec_tas, scale_ta = tf.while_loop(
        lambda t, *_: t < steps,
        body,
        (tf.constant(0), h0, out_ta, tuple(rec_tas), scale_ta),
        maximum_iterations=steps,
    )
    records = [(p_ta.stack(), q_ta, g_ta) for p_ta, q_ta, g_ta in rec_tas]
    return out_ta.stack(), h_last, records, (scale_ta if clamp_rec else None)


def _backward_loop(d_outputs, d_h_last, matrices_t, inputs, loose, records, scales,
                   num_nodes):
    """Reverse time loop: from ``∂L/∂outputs`` and ``∂L/∂h_T`` to ``∂L/∂z`` of every node and
    step and ``∂L/∂h_0``.

    Per step, ``∂L/∂s_j`` starts at ``loose_j ∂L/∂h_t`` (times the step's clamp scale, if
    any); nodes run last to first:
    ``∂L/∂z_i = [∂L/∂s_i, ∂L/∂s_i] ⊙ G_i``, ``∂L/∂p_i = ∂L/∂s_i ⊙ q_i + ∂L/∂z_i W_iᵀ``, added
    to ``∂L/∂s`` of node ``i``'s input (node 0's goes to ``h_{t−1}``).

    Returns:
        ``(dz, d_h0)``: ``dz`` a list (per node) of ``[T, B, 2H]``.
    """
    steps = d_outputs.shape[0] if d_outputs.shape[0] is not None else tf.shape(d_outputs)[0]
    dtype = d_outputs.dtype
    element = d_outputs.shape[1:]
    wide = records[0][2].element_shape
    node_inputs = tf.unstack(inputs, num=num_nodes - 1)
    dz_tas = [tf.TensorArray(dtype, size=steps, element_shape=wide) for _ in range(num_nodes)]

    def body(k, dh_next, dz_tas):
        t = steps - 1 - k
        dh = d_outputs[t] + dh_next
        if scales is not None:
            dh = dh * scales.read(t)
        ds = tf.TensorArray(dtype, size=num_nodes, element_shape=element,
                            clear_after_read=False)
        ds = ds.unstack(loose[:, None, None] * dh[None])
        dz_tas = list(dz_tas)
        d_prev = None
        for i in reversed(range(num_nodes)):
            _, q_ta, g_ta = records[i]
            ds_i = ds.read(i)
            dz = tf.concat([ds_i, ds_i], axis=1) * g_ta.read(t)
            dp = ds_i * q_ta.read(t) + tf.matmul(dz, matrices_t[i])
            dz_tas[i] = dz_tas[i].write(t, dz)
            if i == 0:
                d_prev = dp
            else:
                j = node_inputs[i - 1]
                ds = ds.write(j, ds.read(j) + dp)
        return k + 1, d_prev, tuple(dz_tas)

    _, d_h0, dz_tas = tf.while_loop(
        lambda k, *_: k < steps,
        body,
        (tf.constant(0), d_h_last, tuple(dz_tas)),
        maximum_iterations=steps,
    )
    return [ta.stack() for ta in dz_tas], d_h0


def enas_cell_sequence_inference(xp, h0, w_h, w_nodes, arch, num_nodes, max_norm=None):
    """:func:`enas_cell_sequence` without its custom gradient (plain ops; for export)."""
    acts, inputs, loose, _ = decode_architecture(arch, num_nodes)
    outputs, h_last, _, _ = _forward_loop(xp, h0, w_h, w_nodes, acts, inputs, loose, num_nodes,
                                          record=False, max_norm=max_norm)
    return outputs, h_last


def enas_cell_sequence(
    xp: tf.Tensor,
    h0: tf.Tensor,
    w_h: tf.Tensor,
    w_nodes: tf.Tensor,
    arch: tf.Tensor,
    num_nodes: int,
    max_norm: Optional[float] = None,
) -> Tuple[tf.Tensor, tf.Tensor]:
    """Runs the ENAS cell of ``arch`` over time, with a hand-written backward pass.

    Args:
        xp: input projections ``x_t W_x``, ``[T, B, 2H]``.
        h0: initial state ``[B, H]``.
        w_h: hidden matrix ``[H, 2H]`` (already weight-dropped if training).
        w_nodes: the architecture's node matrices ``[N − 1, H, 2H]``, row ``i − 1`` for node
            ``i`` (already gathered and weight-dropped).
        arch: int32 architecture tensor.
        num_nodes: ``N``.
        max_norm: if set, each step's state rows are rescaled to at most this L2 norm
            (``h_t ← h_t · min(1, max_norm / ‖h_t‖)``, the scale a constant for gradients).

    Returns:
        ``(outputs [T, B, H], h_T [B, H])``. Gradients: a reverse time loop
        (:func:`_backward_loop`) gives ``∂L/∂z`` of every node and step; then
        ``∂L/∂xp = ∂L/∂z⁰``, ``∂L/∂W_h = Σ_t h_{t−1}ᵀ ∂L/∂z⁰_t`` and
        ``∂L/∂W_i = Σ_t p_{i,t}ᵀ ∂L/∂zⁱ_t``, one matmul over the ``T·B`` rows per matrix.
    """
    acts, inputs, loose, _ = decode_architecture(arch, num_nodes)

    @tf.custom_gradient
    def run(xp, h0, w_h, w_nodes):
        outputs, h_last, records, scales = _forward_loop(
            xp, h0, w_h, w_nodes, acts, inputs, loose, num_nodes, record=True,
            max_norm=max_norm,
        )

        def grad(d_outputs, d_h_last):
            if d_outputs is None:
                d_outputs = tf.zeros_like(outputs)
            if d_h_last is None:
                d_h_last = tf.zeros_like(h_last)
            matrices_t = [tf.transpose(w_h)] + tf.unstack(
                tf.transpose(w_nodes, [0, 2, 1]), num=num_nodes - 1)
            dz, d_h0 = _backward_loop(d_outputs, d_h_last, matrices_t, inputs, loose,
                                      records, scales, num_nodes)
            hidden, width = w_h.shape[0], w_h.shape[1]
            # One [H, T·B] x [T·B, 2H] matmul per matrix (as fast as one batched matmul here,
            # without stacking every node's inputs and ∂L/∂z first).
            d_w = [tf.matmul(tf.reshape(records[i][0], [-1, hidden]),
                             tf.reshape(dz[i], [-1, width]), transpose_a=True)
                   for i in range(num_nodes)]
            return dz[0], d_h0, d_w[0], tf.stack(d_w[1:])

        return (outputs, h_last), grad

    return run(xp, h0, w_h, w_nodes)


def _dropout_mask(shape, rate, seed_gen, dtype=tf.float32):
    keep = 1.0 - rate
    return tf.cast(keras.random.uniform(shape, seed=seed_gen) < keep, dtype) / keep


def apply_input_dropouts(x, tokens, w_h, w_nodes, cfg: "RNNSupernetConfig", seed_gen):
    """ENAS training-time dropouts on the inputs and recurrent weights.

    Embedding dropout drops whole words (``x ⊙ m[token]``, ``m ∈ {0, 1/keep}^V``); input dropout
    is one mask per batch row shared over time; weight-drop (DropConnect) masks ``W_h`` and the
    node matrices once per batch. Returns ``(x, w_h, w_nodes)``.
    """
    batch = tf.shape(tokens)[0]
    if cfg.embedding_dropout > 0:
        word_mask = _dropout_mask([cfg.vocab_size], cfg.embedding_dropout, seed_gen)
        x = x * tf.gather(word_mask, tf.transpose(tokens))[..., None]
    if cfg.input_dropout > 0:
        x = x * _dropout_mask([batch, cfg.embedding_size], cfg.input_dropout, seed_gen)[None]
    if cfg.weight_drop > 0:
        w_h = w_h * _dropout_mask(tf.shape(w_h), cfg.weight_drop, seed_gen)
        w_nodes = w_nodes * _dropout_mask(tf.shape(w_nodes), cfg.weight_drop, seed_gen)
    return x, w_h, w_nodes


# --------------------------------------------------------------------------- supernet
class RNNSupernet(keras.Model):
    """All shared weights of the ENAS RNN search and the forward pass of any cell.

    Weights: ``embedding [V, E]`` (tied decoder), ``w_x [E, 2H]``, ``w_h [H, 2H]``,
    ``w_nodes [N(N−1)/2, H, 2H]`` (one matrix per (node, input) pair) and ``decoder_bias [V]``.

    Args:
        config: sizes and dropout rates.
        seed: seed of the dropout masks (its state is a variable, saved with the model).
    """

    def __init__(self, config: RNNSupernetConfig, *, seed: int = 0, name: str = "rnn_supernet"):
        super().__init__(name=name)
        self.cfg = config
        self.space = RNNCellSpace(config.num_nodes)
        e, h, v = config.embedding_size, config.hidden_size, config.vocab_size
        init = keras.initializers.RandomUniform(-config.init_range, config.init_range, seed=seed)
        self.embedding = self.add_weight(shape=(v, e), initializer=init, name="embedding")
        self.w_x = self.add_weight(shape=(e, 2 * h), initializer=init, name="w_x")
        self.w_h = self.add_weight(shape=(h, 2 * h), initializer=init, name="w_h")
        self.w_nodes = self.add_weight(
            shape=(self.space.num_pairs, h, 2 * h), initializer=init, name="w_nodes"
        )
        self.decoder_bias = self.add_weight(shape=(v,), initializer="zeros", name="decoder_bias")
        self.seed_generator = keras.random.SeedGenerator(seed)
        self.built = True

    def wpl_rows(self, architecture) -> tf.Tensor:
        """Rows of ``w_nodes`` the architecture uses (the only weights WPL covers), int32
        ``[N − 1]``; row ``i − 1`` belongs to node ``i``."""
        return decode_architecture(tf.convert_to_tensor(architecture, tf.int32),
                                   self.cfg.num_nodes)[3]

    def initial_state(self, batch_size: int) -> tf.Tensor:
        return tf.zeros([batch_size, self.cfg.hidden_size], tf.float32)

    def call(self, tokens, architecture, state=None, training=False):
        """Next-word logits of the cell ``architecture``.

        Args:
            tokens: int ``[B, T]`` word ids.
            architecture: int32 tensor of the architecture's decisions.
            state: ``[B, H]`` hidden state carried from the previous window (zeros if None).
            training: apply the dropouts.

        Returns:
            ``(logits [B, T, V], new_state [B, H])``.
        """
        cfg = self.cfg
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
        if training:
            x, w_h, w_nodes = apply_input_dropouts(x, tokens, w_h, w_nodes, cfg,
                                                   self.seed_generator)
        steps = tf.shape(x)[0]
        xp = tf.reshape(
            tf.matmul(tf.reshape(x, [-1, cfg.embedding_size]), self.w_x),
            [steps, batch, 2 * cfg.hidden_size],
        )
        outputs, new_state = enas_cell_sequence(xp, state, w_h, w_nodes, arch, cfg.num_nodes,
                                                max_norm=cfg.hidden_max_norm)
        outputs = tf.transpose(outputs, [1, 0, 2])  # [B, T, H]
        if training and cfg.output_dropout > 0:
            outputs = outputs * _dropout_mask([batch, 1, cfg.hidden_size], cfg.output_dropout,
                                              self.seed_generator)
        logits = tf.matmul(tf.reshape(outputs, [-1, cfg.hidden_size]), embedding, transpose_b=True)
        logits = tf.reshape(logits + self.decoder_bias, [batch, steps, cfg.vocab_size])
        return logits, new_state


def clamp_rows(state: tf.Tensor, max_norm: float) -> tf.Tensor:
    """Rescales each row of ``state`` to L2 norm at most ``max_norm``."""
    norms = tf.norm(state, axis=-1, keepdims=True)
    return state * tf.minimum(1.0, max_norm / tf.maximum(norms, 1e-12))


def sequence_loss(logits: tf.Tensor, targets: tf.Tensor) -> tf.Tensor:
    """Mean next-word cross-entropy (nats per token)."""
    return tf.reduce_mean(
        tf.nn.sparse_softmax_cross_entropy_with_logits(tf.cast(targets, tf.int32), logits)
    )


# --------------------------------------------------------------------------- task
class RNNSearchTask(SharedWeightsTask):
    """ENAS RNN search on PTB through the :class:`SharedWeightsTask` contract.

    Training reads consecutive BPTT windows of the batchified training split and carries the
    hidden state across them (reset by :meth:`start_epoch`). Each step:
    ``g = ∇ CE`` over the used weights only, plus ``λ θ`` (L2 on used weights), clipped to
    global norm ``grad_clip`` and applied by SGD (sparse rows for the node matrices). With
    WPL, the Fisher term covers the architecture's node-matrix rows (and, with
    ``wpl_scope="all"``, the embedding, ``w_x``, ``w_h`` and decoder bias): by default as the
    proximal step ``θ ← (θ + η α F θ*) / (1 + η α F)`` after the SGD step; with
    ``wpl_mode="gradient"`` as ``α F (θ − θ*)`` added to ``g`` before clipping.

    Args:
        corpus: PTB ids.
        config: supernet/search settings.
        seed: initialisation and dropout seed.
    """

    def __init__(self, corpus: PTBCorpus, config: RNNSupernetConfig, *, seed: int = 0):
        if corpus.vocab_size != config.vocab_size:
            raise ValueError(
                f"corpus has {corpus.vocab_size} words but config.vocab_size is "
                f"{config.vocab_size}."
            )
        self.cfg = config
        self.seed = int(seed)
        self.space = RNNCellSpace(config.num_nodes)
        self.supernet = RNNSupernet(config, seed=seed)
        self.optimizer = keras.optimizers.SGD(learning_rate=float(config.learning_rate))
        self.optimizer.build(self.supernet.trainable_variables)
        net = self.supernet
        # WPL state index 0 is always the node matrices; "all" appends the dense shared weights
        # in the order of `_dense_vars` (indices 1..4).
        self._dense_vars = [net.embedding, net.w_x, net.w_h, net.decoder_bias]
        self._wpl_dense = config.wpl_scope == "all"
        self.wpl_state = WPLState(
            [net.w_nodes] + (self._dense_vars if self._wpl_dense else []),
            strength=config.wpl_strength,
            momentum=config.wpl_momentum,
            clip_norm=config.wpl_clip_norm,
            name="rnn_wpl_state",
        )
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
            tf.zeros([config.batch_size, config.hidden_size]), trainable=False, name="train_state"
        )
        self.reward_state = tf.Variable(
            tf.zeros([config.eval_batch_size, config.hidden_size]), trainable=False,
            name="reward_state",
        )
        self.epoch = tf.Variable(0, dtype=tf.int64, trainable=False, name="epoch")
        self.trace_count = 0
        jit = bool(config.jit_compile)
        self._train_step = tf.function(self._train_step_impl, jit_compile=jit)
        self._eval_step = tf.function(self._eval_step_impl, jit_compile=jit)
        self._snapshot = tf.function(self._snapshot_impl)

    # ------------------------------------------------------------ traced steps
    def _window(self, data, position, bptt):
        start = position * bptt
        x = tf.slice(data, [0, start], [-1, bptt])
        y = tf.slice(data, [0, start + 1], [-1, bptt])
        return x, y

    def _train_step_impl(self, arch, wpl_active, update_fisher):
        self.trace_count += 1  # Python side effect: runs once per trace
        cfg = self.cfg
        net = self.supernet
        x, y = self._window(self._train, self.train_position, cfg.bptt)
        self.train_position.assign((self.train_position + 1) % self._num_train_windows)
        rows = net.wpl_rows(arch)
        dense_vars = self._dense_vars
        with tf.GradientTape() as tape:
            logits, new_state = net(x, arch, tf.convert_to_tensor(self.train_state), training=True)
            loss = sequence_loss(logits, y)
        grads = tape.gradient(loss, dense_vars + [net.w_nodes])
        dense_grads, node_grad = grads[:-1], grads[-1]
        # The node gradient comes from one gather of `rows` (distinct rows): values align.
        data_node = tf.convert_to_tensor(node_grad.values)
        used = read_rows(net.w_nodes, rows)
        node_shape = tf.constant([int(d) for d in net.w_nodes.shape], tf.int32)

        dense_grads = [tf.convert_to_tensor(g) for g in dense_grads]
        dense_values = [tf.convert_to_tensor(v) for v in dense_vars]
        # WPL terms: (penalty, gradient of the node rows, gradients of the dense weights).
        covered = dense_values if self._wpl_dense else []

        gradient_mode = cfg.wpl_mode == "gradient"

        def wpl_terms():  # gradient mode: (penalty, node-row gradient, dense gradients)
            penalty, node_pen = self.wpl_state.penalty_and_gradient_rows(0, rows, values=used)
            dense_pen = []
            for k, value in enumerate(covered, start=1):
                p, g = self.wpl_state.penalty_and_gradient(k, values=value)
                penalty += p
                dense_pen.append(g)
            return penalty, node_pen, dense_pen

        def no_wpl():
            return (tf.constant(0.0), tf.zeros_like(data_node),
                    [tf.zeros_like(v) for v in covered])

        node_values = data_node + cfg.l2 * used
        # The raw data gradients feed the Fisher; the update adds L2 (and, in gradient mode,
        # the WPL gradients).
        data_dense = dense_grads
        dense_grads = [g + cfg.l2 * v for g, v in zip(dense_grads, dense_values)]
        if gradient_mode:
            penalty, node_pen, dense_pen = tf.cond(wpl_active, wpl_terms, no_wpl)
            node_values += node_pen
            for k, g in enumerate(dense_pen):
                dense_grads[k] = dense_grads[k] + g
        clipped, grad_norm = tf.clip_by_global_norm(dense_grads + [node_values], cfg.grad_clip)
        node_update = tf.IndexedSlices(clipped[-1], rows, node_shape)
        self.optimizer.apply_gradients(
            list(zip(clipped[:-1], dense_vars)) + [(node_update, net.w_nodes)]
        )
        if not gradient_mode:

            def pull():
                # The proximal step of the Fisher term after the data step; the penalty is
                # reported at the weights this step's loss saw (`used`, `covered`).
                lr = tf.convert_to_tensor(self.optimizer.learning_rate)
                penalty = self.wpl_state.apply_proximal(0, lr, rows=rows, penalty_at=used)
                for k, value in enumerate(covered, start=1):
                    penalty += self.wpl_state.apply_proximal(k, lr, penalty_at=value)
                return penalty

            penalty = tf.cond(wpl_active, pull, lambda: tf.constant(0.0))
        self.train_state.assign(clamp_rows(new_state, cfg.hidden_max_norm))

        def fisher():
            self.wpl_state.update_fisher(
                [tf.IndexedSlices(data_node, rows, node_shape)]
                + (data_dense if self._wpl_dense else [])
            )
            return tf.constant(True)

        tf.cond(tf.logical_and(wpl_active, update_fisher), fisher, lambda: tf.constant(False))
        return loss, penalty, grad_norm

    def _eval_step_impl(self, arch, x, y, state):
        logits, new_state = self.supernet(x, arch, state, training=False)
        return sequence_loss(logits, y), new_state

    def _snapshot_impl(self, arch):
        rows = {0: self.supernet.wpl_rows(arch)}
        if self._wpl_dense:
            rows.update({k: None for k in range(1, 1 + len(self._dense_vars))})
        self.wpl_state.snapshot_anchors(rows=rows)

    def _arch_tensor(self, arch) -> tf.Tensor:
        return tf.constant(self.space.validate(arch), tf.int32)

    # -------------------------------------------------------------- contract
    def train_architecture(
        self, arch: Architecture, num_batches: int, *, wpl_active: bool
    ) -> Dict[str, float]:
        """Trains ``arch`` on the next ``num_batches`` windows (see :class:`SharedWeightsTask`).

        With ``wpl_active`` the last step's data-loss gradient of the used node matrices
        updates their Fisher (``F ← (1 − η) F + η g²``, clipped to ``wpl_clip_norm``), then
        their anchors are set (``θ* ← θ``).

        Returns:
            ``loss`` (mean CE), ``penalty``, ``ppl`` (``exp(loss)``), ``grad_norm``.
        """
        if int(num_batches) <= 0:
            raise ValueError(f"num_batches must be positive, got {num_batches}.")
        a = self._arch_tensor(arch)
        active = tf.constant(bool(wpl_active))
        losses, penalties, norms = [], [], []
        for b in range(int(num_batches)):
            last = tf.constant(b == int(num_batches) - 1)
            loss, penalty, norm = self._train_step(a, active, last)
            losses.append(float(loss))
            penalties.append(float(penalty))
            norms.append(float(norm))
        if not all(math.isfinite(v) for v in losses):
            raise FloatingPointError(f"RNN supernet loss is not finite: {losses}.")
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
        self.reward_state.assign(clamp_rows(state, self.cfg.hidden_max_norm))
        return float(self.cfg.reward_constant / math.exp(min(float(loss), 50.0)))

    def learning_rate_at(self, epoch: int) -> float:
        """``lr · lr_decay^max(0, epoch − lr_decay_start_epoch)``."""
        cfg = self.cfg
        return cfg.learning_rate * cfg.lr_decay ** max(0, int(epoch) - cfg.lr_decay_start_epoch)

    def start_epoch(self, epoch: int) -> None:
        """Sets the epoch's learning rate and resets the carried hidden states."""
        self.epoch.assign(int(epoch))
        self.optimizer.learning_rate.assign(self.learning_rate_at(epoch))
        self.train_state.assign(tf.zeros_like(self.train_state))
        self.reward_state.assign(tf.zeros_like(self.reward_state))

    def checkpoint_items(self) -> Dict[str, object]:
        return {
            "supernet": VariableBundle(self.supernet, name="supernet"),
            "optimizer": VariableBundle(self.optimizer, name="optimizer"),
            "wpl_state": VariableBundle(self.wpl_state, name="wpl_state"),
            "train_position": self.train_position,
            "valid_position": self.valid_position,
            "train_state": self.train_state,
            "reward_state": self.reward_state,
            "epoch": self.epoch,
        }

    def config(self) -> dict:
        return {"task": "enas_rnn_ptb", "seed": self.seed, **self.cfg.to_json()}
