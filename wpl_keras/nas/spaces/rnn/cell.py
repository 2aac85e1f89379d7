"""The ENAS recurrent cell as pure TensorFlow functions: architecture decoding, the activation
table, the time loop and its hand-written backward loop.

Cell (ENAS, highway nodes). With ``x_t`` the embedded word and ``h_{t-1}`` the previous state::

    node 0:   z = x_t W_x + h_{t-1} W_h,        c = σ(z[:, :H]),  s_0 = h + c ⊙ (f_0(z[:, H:]) − h)
    node i:   p = s_{in(i)},  z = p W_{i,in(i)}, c = σ(z[:, :H]),  s_i = p + c ⊙ (f_i(z[:, H:]) − p)
    h_t = mean of the loose-end nodes s_j

With ``last_node`` (the ENAS code) the output is that mean and the carried state the last node,
``h_t = s_{N−1}``. Path dropping: node ``i ≥ 1`` reads ``p = m_i s_{in(i)}``, ``m_i ∈ {0,
1/keep}`` (``path_mask``). Output BatchNorm: :func:`batch_norm_rows`; the dropout masks:
:func:`draw_dropout_masks`, applied by :func:`apply_dropout_masks`, the caller and the cell.

One traced graph serves every architecture: the architecture is an int32 tensor, activations
are selected by a table lookup (``f(a) = k₁ tanh(k₂ a) + k₃ + k₄ relu(a) + k₅ a`` covers tanh,
relu, identity and σ(a) = ½ + ½ tanh(a/2)), a node's input by a gather, and time is a
``tf.while_loop``. Inside the loop the weight matrices receive no gradient; instead the
pre-activations ``z`` get their gradients ``∂L/∂z_t`` from a reverse time loop, and
``∂L/∂W = Σ_t p_tᵀ ∂L/∂z_t`` is ONE matmul over all ``T·B`` rows per matrix
(:func:`enas_cell_sequence`).

The Keras layer holding the shared weights is :class:`~wpl_keras.nas.spaces.rnn.supernet.RNNSupernet`;
the standalone model of one cell is :mod:`wpl_keras.nas.spaces.rnn.model`.
"""

from __future__ import annotations

from typing import Dict, Optional, Tuple

import keras
import numpy as np
import tensorflow as tf

from wpl_keras.nas.spaces.rnn.config import RNNModelConfig
from wpl_keras.nas.spaces.rnn.space import ACTIVATIONS


# f(a) = k1 tanh(k2 a) + k3 + k4 relu(a) + k5 a, one row per activation of ACTIVATIONS.
ACTIVATION_TABLE = np.array(
    [
        [1.0, 1.0, 0.0, 0.0, 0.0],  # tanh
        [0.0, 0.0, 0.0, 1.0, 0.0],  # relu
        [0.0, 0.0, 0.0, 0.0, 1.0],  # identity
        [0.5, 0.5, 0.5, 0.0, 0.0],  # sigmoid
    ],
    dtype=np.float32,
)
assert len(ACTIVATION_TABLE) == len(ACTIVATIONS)


def decode_architecture(arch: tf.Tensor, num_nodes: int):
    """Splits an architecture tensor into (activations [N], inputs [N−1], loose weights [N],
    matrix rows [N−1]).

    ``loose[j] = 1/L`` for the ``L`` nodes no later node reads, else 0;
    ``rows[i−1] = i (i − 1) / 2 + input_i`` (:func:`~wpl_keras.nas.spaces.rnn.space.pair_index`).
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


def _row_scale(h: tf.Tensor, max_norm: float) -> tf.Tensor:
    """``min(1, max_norm / ‖h_r‖)`` per row ``r`` of ``h`` (``[B, 1]``)."""
    norms = tf.norm(h, axis=-1, keepdims=True)
    return tf.minimum(1.0, max_norm / tf.maximum(norms, 1e-12))


def _node(p, z, coeffs, record):
    """One highway node on its input ``p`` and pre-activation ``z = [z_c, z_a]``:
    ``c = σ(z_c)``, ``s = p + c ⊙ (f(z_a) − p)``.

    Returns:
        ``(s, None)``, or with ``record`` ``(s, (q, G))`` with ``q = 1 − c`` and
        ``G = [(f − p) c (1 − c), c f']``, what the backward loop needs of this node and step.
    """
    zc, za = tf.split(z, 2, axis=1)
    c = tf.sigmoid(zc)
    if record:
        f, slope = activation_and_slope(za, coeffs)
    else:
        f = activation_and_slope(za, coeffs, with_slope=False)
    d = f - p
    s = p + c * d
    if not record:
        return s, None
    q = 1.0 - c
    return s, (q, tf.concat([d * (c * q), c * slope], axis=1))


def _forward_arrays(dtype, steps, element, hidden, num_nodes, record, clamp_rec):
    """The loop's ``TensorArray`` s over time: outputs, per node ``(p, q, G)`` (with
    ``record``) and the clamp scales (with ``clamp_rec``; ``()`` otherwise)."""

    def new_ta(shape):
        return tf.TensorArray(dtype, size=steps, element_shape=shape, clear_after_read=False)

    rows = tf.TensorShape(element[:-1])
    scale_ta = new_ta(rows.concatenate([1])) if clamp_rec else ()
    rec_tas = []
    if record:
        wide = rows.concatenate([2 * hidden])
        rec_tas = [(new_ta(element), new_ta(element), new_ta(wide)) for _ in range(num_nodes)]
    return new_ta(element), tuple(rec_tas), scale_ta


def _forward_loop(xp, h0, w_h, w_nodes, acts, inputs, loose, num_nodes, record, max_norm,
                  path_mask=None, last_node=False):
    """The time loop of the cell.

    Node states of one step live in a ``TensorArray`` (a node reads its input with one
    dynamic read, O(1)), the weight matrices are loop invariants unstacked once before the
    loop. With ``record`` the loop also keeps, per node and step, what the hand-written
    backward loop needs: the node input ``p``, ``q = 1 − c`` and
    ``G = [(f − p) c (1 − c), c f']`` (so ``∂L/∂z = [∂L/∂s, ∂L/∂s] ⊙ G``), and each step's
    row scales of the norm clamp.

    With ``max_norm``, every step's ``h_t`` rows are rescaled to norm at most ``max_norm``
    (``h_t ← h_t · min(1, max_norm / ‖h_t‖)``, as the ENAS code does against exploding
    states); the scale is treated as a constant in the backward pass. With ``path_mask``
    (``[N − 1]``), node ``i`` reads ``p = path_mask[i − 1] · s_{in(i)}`` (path dropping).
    With ``last_node``, the output is the loose-end mean (not clamped) and the carried state
    the last node's ``s_{N−1}`` (clamped).

    Returns:
        ``(outputs [T, B, H], h_T, records, scales)``: ``records`` a list (per node) of
        ``(p [T, B, H], q, G)`` with ``q`` and ``G`` left as ``TensorArray`` s over time (the
        backward loop reads them step by step; stacking them would only copy), ``scales`` a
        ``TensorArray`` of ``[B, 1]`` (empty / None without ``record`` or ``max_norm``).
    """
    steps = xp.shape[0] if xp.shape[0] is not None else tf.shape(xp)[0]
    dtype = xp.dtype
    table = tf.gather(tf.constant(ACTIVATION_TABLE, dtype), acts)  # [N, 5]
    coeffs = tf.unstack(table, num=num_nodes)
    node_inputs = tf.unstack(inputs, num=num_nodes - 1)
    path_scales = _path_scales(path_mask, num_nodes)
    matrices = [w_h] + tf.unstack(w_nodes, num=num_nodes - 1)
    element = h0.shape
    clamp_rec = record and max_norm is not None
    out_ta, rec_tas, scale_ta = _forward_arrays(dtype, steps, element, h0.shape[-1],
                                                num_nodes, record, clamp_rec)

    def body(t, h, out_ta, rec_tas, scale_ta):
        states = tf.TensorArray(dtype, size=num_nodes, element_shape=element,
                                clear_after_read=False)
        stacked, rec_tas = [], list(rec_tas)
        for i in range(num_nodes):
            if i == 0:
                p = h
                z = xp[t] + tf.matmul(h, matrices[0])
            else:
                p = states.read(node_inputs[i - 1])
                if path_scales is not None:
                    p = p * path_scales[i - 1]
                z = tf.matmul(p, matrices[i])
            s, kept = _node(p, z, coeffs[i], record)
            if i < num_nodes - 1:  # the last node is nobody's input
                states = states.write(i, s)
            stacked.append(s)
            if record:
                p_ta, q_ta, g_ta = rec_tas[i]
                rec_tas[i] = (p_ta.write(t, p), q_ta.write(t, kept[0]), g_ta.write(t, kept[1]))
        out = tf.tensordot(loose, tf.stack(stacked), axes=1)
        h_new = stacked[-1] if last_node else out
        if max_norm is not None:
            scale = _row_scale(h_new, max_norm)
            h_new = h_new * scale
            if clamp_rec:
                scale_ta = scale_ta.write(t, scale)
        out = out if last_node else h_new
        return t + 1, h_new, out_ta.write(t, out), tuple(rec_tas), scale_ta

    _, h_last, out_ta, rec_tas, scale_ta = tf.while_loop(
        lambda t, *_: t < steps,
        body,
        (tf.constant(0), h0, out_ta, rec_tas, scale_ta),
        maximum_iterations=steps,
    )
    records = [(p_ta.stack(), q_ta, g_ta) for p_ta, q_ta, g_ta in rec_tas]
    return out_ta.stack(), h_last, records, (scale_ta if clamp_rec else None)


def _path_scales(path_mask, num_nodes):
    """The path mask as a list of ``N − 1`` scalars (a constant for gradients), or None."""
    if path_mask is None:
        return None
    return tf.unstack(tf.stop_gradient(tf.reshape(path_mask, [num_nodes - 1])),
                      num=num_nodes - 1)


def _backward_loop(d_outputs, d_h_last, matrices_t, inputs, loose, records, scales,
                   num_nodes, path_mask=None, last_node=False):
    """Reverse time loop: from ``∂L/∂outputs`` and ``∂L/∂h_T`` to ``∂L/∂z`` of every node and
    step and ``∂L/∂h_0``.

    Per step, ``∂L/∂s_j`` starts at ``loose_j ∂L/∂h_t`` (times the step's clamp scale, if
    any); with ``last_node`` at ``loose_j ∂L/∂o_t``, plus ``∂L/∂h_t`` (times the scale) for
    the last node. Nodes run last to first:
    ``∂L/∂z_i = [∂L/∂s_i, ∂L/∂s_i] ⊙ G_i``, ``∂L/∂p_i = ∂L/∂s_i ⊙ q_i + ∂L/∂z_i W_iᵀ``, added
    to ``∂L/∂s`` of node ``i``'s input times its path mask ``m_i`` (if any; node 0's goes to
    ``h_{t−1}``).

    Returns:
        ``(dz, d_h0)``: ``dz`` a list (per node) of ``[T, B, 2H]``.
    """
    steps = d_outputs.shape[0] if d_outputs.shape[0] is not None else tf.shape(d_outputs)[0]
    dtype = d_outputs.dtype
    element = d_outputs.shape[1:]
    wide = records[0][2].element_shape
    node_inputs = tf.unstack(inputs, num=num_nodes - 1)
    path_scales = _path_scales(path_mask, num_nodes)
    dz_tas = [tf.TensorArray(dtype, size=steps, element_shape=wide) for _ in range(num_nodes)]

    def body(k, dh_next, dz_tas):
        t = steps - 1 - k
        dh = dh_next if last_node else d_outputs[t] + dh_next
        if scales is not None:
            dh = dh * scales.read(t)
        ds = tf.TensorArray(dtype, size=num_nodes, element_shape=element,
                            clear_after_read=False)
        if last_node:
            ds = ds.unstack(loose[:, None, None] * d_outputs[t][None])
            ds = ds.write(num_nodes - 1, ds.read(num_nodes - 1) + dh)
        else:
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
                if path_scales is not None:
                    dp = dp * path_scales[i - 1]
                ds = ds.write(j, ds.read(j) + dp)
        return k + 1, d_prev, tuple(dz_tas)

    _, d_h0, dz_tas = tf.while_loop(
        lambda k, *_: k < steps,
        body,
        (tf.constant(0), d_h_last, tuple(dz_tas)),
        maximum_iterations=steps,
    )
    return [ta.stack() for ta in dz_tas], d_h0


def enas_cell_sequence_inference(xp, h0, w_h, w_nodes, arch, num_nodes, max_norm=None,
                                 path_mask=None, last_node=False):
    """:func:`enas_cell_sequence` without its custom gradient (plain ops; for export and as
    the autodiff reference of the hand-written backward pass)."""
    acts, inputs, loose, _ = decode_architecture(arch, num_nodes)
    outputs, h_last, _, _ = _forward_loop(xp, h0, w_h, w_nodes, acts, inputs, loose, num_nodes,
                                          record=False, max_norm=max_norm, path_mask=path_mask,
                                          last_node=last_node)
    return outputs, h_last


def enas_cell_sequence(
    xp: tf.Tensor,
    h0: tf.Tensor,
    w_h: tf.Tensor,
    w_nodes: tf.Tensor,
    arch: tf.Tensor,
    num_nodes: int,
    max_norm: Optional[float] = None,
    path_mask: Optional[tf.Tensor] = None,
    last_node: bool = False,
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
        path_mask: if set, ``[N − 1]`` path-dropping scales ``m_i ∈ {0, 1/keep}``: node ``i``
            reads ``m_i s_{in(i)}`` at every step (a constant for gradients).
        last_node: carry the last node's state ``s_{N−1}`` (clamped) to the next step and
            output the loose-end mean (the ENAS code); False: both are the (clamped) mean.

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
            max_norm=max_norm, path_mask=path_mask, last_node=last_node,
        )

        def grad(d_outputs, d_h_last):
            if d_outputs is None:
                d_outputs = tf.zeros_like(outputs)
            if d_h_last is None:
                d_h_last = tf.zeros_like(h_last)
            matrices_t = [tf.transpose(w_h)] + tf.unstack(
                tf.transpose(w_nodes, [0, 2, 1]), num=num_nodes - 1)
            dz, d_h0 = _backward_loop(d_outputs, d_h_last, matrices_t, inputs, loose,
                                      records, scales, num_nodes, path_mask=path_mask,
                                      last_node=last_node)
            hidden, width = w_h.shape[0], w_h.shape[1]
            # One [H, T·B] x [T·B, 2H] matmul per matrix (as fast as one batched matmul here,
            # without stacking every node's inputs and ∂L/∂z first).
            d_w = [tf.matmul(tf.reshape(records[i][0], [-1, hidden]),
                             tf.reshape(dz[i], [-1, width]), transpose_a=True)
                   for i in range(num_nodes)]
            return dz[0], d_h0, d_w[0], tf.stack(d_w[1:])

        return (outputs, h_last), grad

    return run(xp, h0, w_h, w_nodes)


def clamp_rows(state: tf.Tensor, max_norm: float) -> tf.Tensor:
    """Rescales each row of ``state`` to L2 norm at most ``max_norm``:
    ``state · min(1, max_norm / ‖state_r‖)``."""
    return state * _row_scale(state, max_norm)


BATCH_NORM_EPSILON = 1e-5  # torch.nn.BatchNorm1d's default, the release's


def row_moments(x: tf.Tensor) -> Tuple[tf.Tensor, tf.Tensor]:
    """Mean and (biased) variance of ``x [T, B, H]`` over its batch rows, per step and unit:
    ``μ_t = Σ_b x_{t,b} / n``, ``σ²_t = Σ_b (x_{t,b} − μ_t)² / n`` (``[T, 1, H]`` each).

    In a replica context with several replicas (``tf.distribute``), ``n`` and both sums run
    over the rows of every replica (two SUM all-reduces, differentiable), so ``R`` replicas
    holding parts of a batch compute the moments of the whole batch (synchronised BN).
    """
    context = tf.distribute.get_replica_context()
    sync = context is not None and context.num_replicas_in_sync > 1
    count = tf.cast(tf.shape(x)[1], x.dtype)
    total = tf.reduce_sum(x, axis=1, keepdims=True)
    if sync:
        count, total = context.all_reduce(tf.distribute.ReduceOp.SUM, [count, total])
    mean = total / count
    squares = tf.reduce_sum(tf.square(x - mean), axis=1, keepdims=True)
    if sync:
        squares = context.all_reduce(tf.distribute.ReduceOp.SUM, squares)
    return mean, squares / count


def batch_norm_rows(x: tf.Tensor, gamma: tf.Tensor, beta: tf.Tensor, mean=None,
                    variance=None) -> tf.Tensor:
    """BatchNorm of the cell outputs ``x [T, B, H]``, each step normalised over the batch
    rows as ``torch.nn.BatchNorm1d`` does at every step of the release's cell:
    ``y = γ (x − μ_t) / sqrt(σ²_t + ε) + β``, ``ε = 1e-5``.

    ``mean`` / ``variance`` (broadcastable to ``x``, e.g. moving averages ``[H]``) replace the
    batch moments of :func:`row_moments` (synchronised across replicas) when given.
    """
    if mean is None or variance is None:
        mean, variance = row_moments(x)
    return gamma * (x - mean) * tf.math.rsqrt(variance + BATCH_NORM_EPSILON) + beta


def sequence_loss(logits: tf.Tensor, targets: tf.Tensor) -> tf.Tensor:
    """Mean next-word cross-entropy (nats per token)."""
    return tf.reduce_mean(
        tf.nn.sparse_softmax_cross_entropy_with_logits(tf.cast(targets, tf.int32), logits)
    )


# --------------------------------------------------------------------------- dropouts
def _dropout_mask(shape, rate, seed_gen, dtype=tf.float32):
    """Inverted-dropout mask: ``1/keep`` with probability ``keep = 1 − rate``, else 0."""
    keep = 1.0 - rate
    return tf.cast(keras.random.uniform(shape, seed=seed_gen) < keep, dtype) / keep


# Masks whose first axis is the batch row (a replica takes its rows of them); the others
# (the word mask, the weight-drop masks and the path mask) are shared by every row.
ROW_MASKS = ("input", "output")


def draw_dropout_masks(batch, cfg: RNNModelConfig, seed_gen, *, node_shape,
                       output: bool = True) -> Dict[str, tf.Tensor]:
    """The training-time dropout masks of one batch, drawn in a fixed order from ``seed_gen``.

    Every mask is inverted dropout, ``m ∈ {0, 1/keep}`` with ``keep = 1 − rate``. Only masks
    of positive rate are drawn, in this order: ``"word"`` ``[V]`` (embedding dropout, whole
    words), ``"input"`` ``[batch, E]`` (one per row, shared over time), ``"w_h"`` ``[H, 2H]``
    and, with ``weight_drop_scope="all"``, ``"w_nodes"`` ``node_shape`` (weight drop), then,
    with ``output``, ``"output"`` ``[batch, 1, H]`` (locked over time), then, with
    ``path_keep < 1``, ``"path"`` ``[N − 1]`` (node ``i``'s input scale ``m_i ∈ {0,
    1/path_keep}``, for the whole batch). A mask's values depend only on the generator's state
    and its shape, so masks drawn once for the global batch and split by rows
    (:data:`ROW_MASKS`) equal the masks of one device.

    Args:
        batch: rows of the (global) batch, an int or a scalar tensor.
        cfg: the model config (rates and sizes).
        seed_gen: the supernet's ``keras.random.SeedGenerator``.
        node_shape: shape of the node matrices the step reads (``[rows, H, 2H]``).
        output: also draw the output mask.

    Returns:
        ``{name: mask}`` for the masks drawn.
    """
    masks = {}
    h = cfg.hidden_size
    if cfg.embedding_dropout > 0:
        masks["word"] = _dropout_mask([cfg.vocab_size], cfg.embedding_dropout, seed_gen)
    if cfg.input_dropout > 0:
        masks["input"] = _dropout_mask([batch, cfg.embedding_size], cfg.input_dropout, seed_gen)
    if cfg.weight_drop > 0:
        masks["w_h"] = _dropout_mask([h, 2 * h], cfg.weight_drop, seed_gen)
        if cfg.weight_drop_scope == "all":
            masks["w_nodes"] = _dropout_mask(node_shape, cfg.weight_drop, seed_gen)
    if output and cfg.output_dropout > 0:
        masks["output"] = _dropout_mask([batch, 1, h], cfg.output_dropout, seed_gen)
    if cfg.path_keep < 1:
        masks["path"] = _dropout_mask([cfg.num_nodes - 1], 1.0 - cfg.path_keep, seed_gen)
    return masks


def slice_dropout_masks(masks: Dict[str, tf.Tensor], start, size) -> Dict[str, tf.Tensor]:
    """The masks of batch rows ``[start, start + size)``: the row masks (:data:`ROW_MASKS`)
    sliced on their first axis, the others whole."""
    return {
        name: (tf.slice(m, tf.concat([[start], tf.zeros([tf.rank(m) - 1], tf.int32)], 0),
                        tf.concat([[size], tf.fill([tf.rank(m) - 1], -1)], 0))
               if name in ROW_MASKS else m)
        for name, m in masks.items()
    }


def apply_dropout_masks(x, tokens, w_h, w_nodes, masks: Dict[str, tf.Tensor]):
    """``(x, w_h, w_nodes)`` with the input-side masks of :func:`draw_dropout_masks` applied:
    ``x ⊙ m_word[token] ⊙ m_input[row]`` (``x`` is ``[T, B, E]``), ``W_h ⊙ m_{w_h}``,
    ``W_nodes ⊙ m_{w_nodes}``; absent masks leave their tensor as it is (the output and path
    masks act later, on the cell's output and inside the cell)."""
    if "word" in masks:
        x = x * tf.gather(masks["word"], tf.transpose(tokens))[..., None]
    if "input" in masks:
        x = x * masks["input"][None]
    if "w_h" in masks:
        w_h = w_h * masks["w_h"]
    if "w_nodes" in masks:
        w_nodes = w_nodes * masks["w_nodes"]
    return x, w_h, w_nodes


def apply_input_dropouts(x, tokens, w_h, w_nodes, cfg: RNNModelConfig, seed_gen):
    """ENAS training-time dropouts on the inputs and recurrent weights, masks drawn here.

    Embedding dropout drops whole words (``x ⊙ m[token]``, ``m ∈ {0, 1/keep}^V``); input dropout
    is one mask per batch row shared over time; weight-drop (DropConnect) masks ``W_h`` (and,
    with ``weight_drop_scope="all"``, the node matrices) once per batch
    (:func:`draw_dropout_masks` without the output mask, then :func:`apply_dropout_masks`;
    a path mask, if drawn, is not applied here). Returns ``(x, w_h, w_nodes)``.
    """
    masks = draw_dropout_masks(tf.shape(tokens)[0], cfg, seed_gen, node_shape=tf.shape(w_nodes),
                               output=False)
    return apply_dropout_masks(x, tokens, w_h, w_nodes, masks)
