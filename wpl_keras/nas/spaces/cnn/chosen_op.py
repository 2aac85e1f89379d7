"""The operation a node slot of the micro-CNN supernet chooses, run on one device with one
``tf.switch_case`` forward and one backward.

:func:`chosen_op` runs ``OPS[op_idx]`` on ``x``: identity; a separable conv, i.e.
``(ReLU → depthwise k×k → pointwise 1×1 → BN)`` twice with BN on the batch's own moments
(:func:`fused_batch_norm`); or a 3×3 stride-1 average (padding excluded) or max pool. Only the
chosen op runs, forward and backward.

Its gradient is written out (``tf.custom_gradient``) instead of being differentiated through
the switch: TensorFlow's gradient of a ``switch_case`` rewrites every branch to also return
the intermediates that every other branch's gradient needs (wrapped as optionals), which
multiplied the traced graph and its optimisation time. Here the forward switch returns the
output and, for a separable op, the tensors its backward needs (per repetition ``r``: the
ReLU output ``a_r``, the depthwise output ``d_r``, the pre-BN tensor ``p_r`` and BN's reserve
spaces); the backward switch applies, for the chosen op, the same gradient kernels
TensorFlow's registered gradients use:

* BN: ``FusedBatchNormGradV3`` (gradients of ``p_r``, the scale and the offset);
* pointwise: ``Conv2DBackpropInput`` / ``Conv2DBackpropFilter``;
* depthwise: ``DepthwiseConv2dNativeBackpropInput`` / ``…BackpropFilter``;
* ReLU: ``ReluGrad`` on the ReLU output;
* pools: ``AvgPoolGrad`` / ``MaxPoolGrad``; identity passes the gradient through.

The weights of the ops the slot did not choose get zero gradients.

Each of :func:`chosen_op` and :func:`chosen_stage` runs as one ``tf.function`` traced once per
input shapes and kept a function call (not inlined) in the step that calls it: the node slots
of every cell of one shape share one traced, optimised and instantiated copy of the switches
(``benchmarks/README.md`` has what that changed in the step's graph and first-step time).
"""

from __future__ import annotations

from typing import Dict, List, Sequence, Tuple

import tensorflow as tf

from wpl_keras.nas.spaces.cnn.space import OPS

SEP_OPS = {"sep3x3": 3, "sep5x5": 5}
BN_EPSILON = 1e-5
_ONE = [1, 1, 1, 1]
_POOL = dict(ksize=[1, 3, 3, 1], strides=_ONE, padding="SAME", data_format="NHWC")


def _fused_batch_norm_outputs(x: tf.Tensor, scale, offset):
    empty = tf.constant([], tf.float32)
    return tf.raw_ops.FusedBatchNormV3(
        x=x, scale=scale, offset=offset, mean=empty, variance=empty, epsilon=BN_EPSILON,
        exponential_avg_factor=1.0, data_format="NHWC", is_training=True)


def fused_batch_norm(x: tf.Tensor, scale, offset) -> tf.Tensor:
    """``scale (x − μ) / sqrt(σ² + 1e-5) + offset`` with ``μ``, ``σ²`` the per-channel mean
    and biased variance of ``x`` over batch, height and width (NHWC), in one
    ``FusedBatchNormV3`` kernel in training mode (called directly: the Python wrapper raises
    ε to 1.001e-5). Differentiable (one ``FusedBatchNormGradV3``)."""
    return _fused_batch_norm_outputs(x, scale, offset)[0]


def pool(x: tf.Tensor, kind: str) -> tf.Tensor:
    """3×3 stride-1 SAME average (padding excluded from the mean) or max pooling."""
    if kind == "avg3x3":
        return tf.nn.avg_pool2d(x, 3, 1, "SAME")
    return tf.nn.max_pool2d(x, 3, 1, "SAME")


def _stage_forward(x, dw, pw) -> Tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """One repetition of a separable op before its BN: ``p = (ReLU → depthwise → pointwise)(x)``;
    returns ``(p, a, d)`` with ``a`` the ReLU output and ``d`` the depthwise output (what the
    backward needs)."""
    a = tf.nn.relu(x)
    d = tf.nn.depthwise_conv2d(a, dw, _ONE, "SAME")
    return tf.nn.conv2d(d, pw, _ONE, "VALID"), a, d


def _stage_backward(dp, a, d, dw, pw) -> Tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """Gradients of :func:`_stage_forward` given ``dp = ∂L/∂p``: ``(dx, ddw, dpw)``."""
    dd = tf.raw_ops.Conv2DBackpropInput(input_sizes=tf.shape(d), filter=pw, out_backprop=dp,
                                        strides=_ONE, padding="VALID")
    dpw = tf.raw_ops.Conv2DBackpropFilter(input=d, filter_sizes=tf.shape(pw), out_backprop=dp,
                                          strides=_ONE, padding="VALID")
    da = tf.raw_ops.DepthwiseConv2dNativeBackpropInput(
        input_sizes=tf.shape(a), filter=dw, out_backprop=dd, strides=_ONE, padding="SAME")
    ddw = tf.raw_ops.DepthwiseConv2dNativeBackpropFilter(
        input=a, filter_sizes=tf.shape(dw), out_backprop=dd, strides=_ONE, padding="SAME")
    return tf.raw_ops.ReluGrad(gradients=da, features=a), ddw, dpw


def _pool_backward(x, dy, kind: str) -> tf.Tensor:
    """``∂L/∂x`` of :func:`pool` given ``dy = ∂L/∂y``.

    The max pool's gradient recomputes its forward (``y``) beside ``MaxPoolGrad``: with
    oneDNN on (TensorFlow's default on x86), a ``MaxPoolGrad`` whose ``y`` comes from a
    ``MaxPool`` of the same graph runs oneDNN's kernel on that pool's workspace, while one fed
    the forward switch's ``y`` falls back to TensorFlow's generic kernel, several times
    slower than the two ops together (``benchmarks/README.md``)."""
    if kind == "avg3x3":
        return tf.raw_ops.AvgPoolGrad(orig_input_shape=tf.shape(x), grad=dy, **_POOL)
    y = tf.raw_ops.MaxPool(input=x, **_POOL)
    return tf.raw_ops.MaxPoolGrad(orig_input=x, orig_output=y, grad=dy, **_POOL)


def _sep_forward(x, dw, pw, scale, offset) -> Tuple[tf.Tensor, tuple]:
    """``(ReLU → depthwise → pointwise → BN)`` per repetition ``r`` (the leading axis of the
    weights); returns the output and, per repetition, ``(a_r, d_r, p_r, reserve spaces 1–3)``."""
    saved = []
    y = x
    for r in range(int(dw.shape[0])):
        p, a, d = _stage_forward(y, dw[r], pw[r])
        out = _fused_batch_norm_outputs(p, scale[r], offset[r])
        y = out[0]
        saved += [a, d, p, out[3], out[4], out[5]]
    return y, tuple(saved)


def _sep_backward(dy, saved, dw, pw, scale):
    """Gradients of :func:`_sep_forward`: ``(dx, ddw, dpw, dscale, doffset)``."""
    repeats = int(dw.shape[0])
    grads = {"dw": [None] * repeats, "pw": [None] * repeats, "scale": [None] * repeats,
             "offset": [None] * repeats}
    g = dy
    for r in reversed(range(repeats)):
        a, d, p, rs1, rs2, rs3 = saved[6 * r:6 * r + 6]
        dp, dscale, doffset, _, _ = tf.raw_ops.FusedBatchNormGradV3(
            y_backprop=g, x=p, scale=scale[r], reserve_space_1=rs1, reserve_space_2=rs2,
            reserve_space_3=rs3, epsilon=BN_EPSILON, data_format="NHWC", is_training=True)
        g, grads["dw"][r], grads["pw"][r] = _stage_backward(dp, a, d, dw[r], pw[r])
        grads["scale"][r], grads["offset"][r] = dscale, doffset
    return (g,) + tuple(tf.stack(grads[k]) for k in ("dw", "pw", "scale", "offset"))


def _flat_weights(name: str, weights: Dict[str, Sequence[tf.Tensor]],
                  per_op: int) -> List[tf.Tensor]:
    """``weights[op][:per_op]`` of every op of :data:`SEP_OPS`, in order, as tensors; a
    ``ValueError`` naming ``name`` when an op is missing."""
    missing = [op for op in SEP_OPS if op not in weights]
    if missing:
        raise ValueError(f"{name}: weights needs an entry per separable op; add {missing}.")
    return [tf.convert_to_tensor(w) for op in SEP_OPS for w in weights[op][:per_op]]


def _switched_op(x: tf.Tensor, op_idx: tf.Tensor, flat: Sequence[tf.Tensor], per_op: int,
                 n_saved: int, sep_forward, sep_backward, repetition: int = 0) -> tf.Tensor:
    """``OPS[op_idx]`` on ``x`` with one ``tf.switch_case`` forward and one backward: the
    body of :func:`chosen_op` and :func:`chosen_stage`.

    ``flat`` holds each separable op's ``per_op`` tensors (:func:`_flat_weights`);
    ``sep_forward(x, *w)`` returns its output and the ``n_saved`` tensors
    ``sep_backward(dy, saved, *w)`` needs to return ``(dx, *dw)``. A pool or identity is the
    op itself at ``repetition`` 0 and identity after. The unchosen separable op's weights get
    zero gradients."""

    def at_stage(op: str) -> str:
        return op if op in SEP_OPS or repetition == 0 else "identity"

    @tf.custom_gradient
    def run(x, *flat):
        by_op = {op: flat[per_op * k:per_op * (k + 1)] for k, op in enumerate(SEP_OPS)}
        empty = (tf.zeros([0, 0, 0, 0]),) * n_saved

        def forward(op):
            if op in SEP_OPS:
                return sep_forward(x, *by_op[op])
            return (tf.identity(x) if op == "identity" else pool(x, op)), empty

        y, saved = tf.switch_case(op_idx, [lambda op=op: forward(at_stage(op)) for op in OPS])

        def grad(dy):
            zeros = [tf.zeros_like(w) for w in flat]

            def backward(op):
                if op in SEP_OPS:
                    k = list(SEP_OPS).index(op)
                    dx, *dweights = sep_backward(dy, saved, *by_op[op])
                    return [dx] + zeros[:per_op * k] + dweights + zeros[per_op * (k + 1):]
                dx = tf.identity(dy) if op == "identity" else _pool_backward(x, dy, op)
                return [dx] + zeros

            return tf.switch_case(op_idx, [lambda op=op: backward(at_stage(op)) for op in OPS])

        return y, grad

    return run(x, *flat)


def chosen_op(x: tf.Tensor, op_idx: tf.Tensor,
              weights: Dict[str, Sequence[tf.Tensor]]) -> tf.Tensor:
    """``OPS[op_idx](x)`` with a hand-written gradient (module docstring).

    Args:
        x: ``[batch, H, W, C]`` input.
        op_idx: int32 scalar, an index into ``OPS``.
        weights: per separable op of :data:`SEP_OPS`, ``(depthwise [R, k, k, C, 1],
            pointwise [R, 1, 1, C, C], scale [R, C], offset [R, C])`` tensors, one slice per
            repetition ``r`` along the leading axis.
    """
    flat = _flat_weights("chosen_op", weights, 4)
    return _chosen_op_function(tf.convert_to_tensor(x), tf.convert_to_tensor(op_idx), *flat)


@tf.function(autograph=False, experimental_attributes={"_noinline": True})
def _chosen_op_function(x: tf.Tensor, op_idx: tf.Tensor, *flat: tf.Tensor) -> tf.Tensor:
    """:func:`chosen_op` as one ``tf.function``, traced once per input shapes: every node slot
    of the supernet's cells of one shape calls the same function, whose two switches and
    their branches are traced, optimised and instantiated once, not once per slot.
    ``_noinline`` keeps it a function call in the traced step (inlined, the step's graph
    grows by a copy per slot before graph optimisation, which then costs most of the first
    step's time); a call costs microseconds against the convolutions inside."""
    repeats = int(flat[0].shape[0])
    return _switched_op(
        x, op_idx, flat, per_op=4, n_saved=6 * repeats,
        sep_forward=_sep_forward,
        sep_backward=lambda dy, saved, dw, pw, scale, offset: _sep_backward(
            dy, saved, dw, pw, scale))


def chosen_stage(x: tf.Tensor, op_idx: tf.Tensor, repetition: int,
                 weights: Dict[str, Sequence[tf.Tensor]]) -> tf.Tensor:
    """Repetition ``repetition`` of ``OPS[op_idx]`` on ``x`` before its BatchNorm, with a
    hand-written gradient: the staged op of several replicas, whose BN moments are all-reduced
    outside any switch (:meth:`~wpl_keras.nas.spaces.cnn.supernet.CNNSupernet._op`).

    A separable op's stage is ``(ReLU → depthwise → pointwise)(x)``; a pool or identity is
    the op itself at repetition 0 and identity after. One ``tf.switch_case`` runs forward (it
    also returns the ReLU and depthwise outputs a separable stage's backward needs) and one
    backward (:func:`_stage_backward`, the pools' gradient kernels, or identity), as
    :func:`chosen_op` does; the unchosen separable op's weights get zero gradients.

    Args:
        x: ``[batch, H, W, C]`` input.
        op_idx: int32 scalar, an index into ``OPS``.
        repetition: which repetition (a Python int; it fixes the non-separable ops' stage).
        weights: per separable op of :data:`SEP_OPS`, ``(depthwise [k, k, C, 1],
            pointwise [1, 1, C, C])`` of this repetition.
    """
    flat = _flat_weights("chosen_stage", weights, 2)
    return _chosen_stage_function(tf.convert_to_tensor(x), tf.convert_to_tensor(op_idx),
                                  int(repetition), *flat)


def _stage_sep_forward(x, dw, pw):
    p, a, d = _stage_forward(x, dw, pw)
    return p, (a, d)


@tf.function(autograph=False, experimental_attributes={"_noinline": True})
def _chosen_stage_function(x: tf.Tensor, op_idx: tf.Tensor, repetition: int,
                           *flat: tf.Tensor) -> tf.Tensor:
    """:func:`chosen_stage` as one ``tf.function``, traced once per input shapes and
    repetition and called, not inlined (as :func:`_chosen_op_function`)."""
    return _switched_op(
        x, op_idx, flat, per_op=2, n_saved=2, sep_forward=_stage_sep_forward,
        sep_backward=lambda dy, saved, dw, pw: _stage_backward(dy, *saved, dw, pw),
        repetition=repetition)


def chosen_input(states: Sequence[tf.Tensor], index: tf.Tensor) -> tf.Tensor:
    """``states[index]`` (``index`` an int32 scalar tensor; the states of one shape), with a
    hand-written gradient: ``∂L/∂states[k] = ∂L/∂y`` for ``k = index`` and zeros for every
    other state, from one backward ``tf.switch_case`` (TensorFlow's gradient of the forward
    switch would rewrite its branches to return optional intermediates)."""
    states = [tf.convert_to_tensor(s) for s in states]

    @tf.custom_gradient
    def run(*states):
        y = tf.switch_case(index, [lambda s=s: tf.identity(s) for s in states])

        def grad(dy):
            zeros = tf.zeros_like(dy)
            return tf.switch_case(index, [
                lambda k=k: [tf.identity(dy) if j == k else zeros for j in range(len(states))]
                for k in range(len(states))])

        return y, grad

    return run(*states)
