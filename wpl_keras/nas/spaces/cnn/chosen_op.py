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
"""

from __future__ import annotations

from typing import Dict, Sequence, Tuple

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


def _sep_forward(x, dw, pw, scale, offset) -> Tuple[tf.Tensor, tuple]:
    """``(ReLU → depthwise → pointwise → BN)`` per repetition ``r`` (the leading axis of the
    weights); returns the output and, per repetition, ``(a_r, d_r, p_r, reserve spaces 1–3)``."""
    saved = []
    y = x
    for r in range(int(dw.shape[0])):
        a = tf.nn.relu(y)
        d = tf.nn.depthwise_conv2d(a, dw[r], _ONE, "SAME")
        p = tf.nn.conv2d(d, pw[r], _ONE, "VALID")
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
        dd = tf.raw_ops.Conv2DBackpropInput(input_sizes=tf.shape(d), filter=pw[r],
                                            out_backprop=dp, strides=_ONE, padding="VALID")
        grads["pw"][r] = tf.raw_ops.Conv2DBackpropFilter(
            input=d, filter_sizes=tf.shape(pw[r]), out_backprop=dp, strides=_ONE,
            padding="VALID")
        da = tf.raw_ops.DepthwiseConv2dNativeBackpropInput(
            input_sizes=tf.shape(a), filter=dw[r], out_backprop=dd, strides=_ONE,
            padding="SAME")
        grads["dw"][r] = tf.raw_ops.DepthwiseConv2dNativeBackpropFilter(
            input=a, filter_sizes=tf.shape(dw[r]), out_backprop=dd, strides=_ONE,
            padding="SAME")
        grads["scale"][r], grads["offset"][r] = dscale, doffset
        g = tf.raw_ops.ReluGrad(gradients=da, features=a)
    return (g,) + tuple(tf.stack(grads[k]) for k in ("dw", "pw", "scale", "offset"))


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
    missing = [op for op in SEP_OPS if op not in weights]
    if missing:
        raise ValueError(f"chosen_op: weights needs an entry per separable op; add {missing}.")
    flat = [tf.convert_to_tensor(w) for op in SEP_OPS for w in weights[op]]
    n_saved = 6 * int(flat[0].shape[0])

    @tf.custom_gradient
    def run(x, *flat):
        by_op = {op: flat[4 * k:4 * k + 4] for k, op in enumerate(SEP_OPS)}
        empty = (tf.zeros([0, 0, 0, 0]),) * n_saved

        def forward(op):
            if op in SEP_OPS:
                return _sep_forward(x, *by_op[op])
            return (tf.identity(x) if op == "identity" else pool(x, op)), empty

        y, saved = tf.switch_case(op_idx, [lambda op=op: forward(op) for op in OPS])

        def grad(dy):
            zeros = [tf.zeros_like(w) for w in flat]

            def backward(op):
                if op in SEP_OPS:
                    k = list(SEP_OPS).index(op)
                    dw, pw, scale, _ = by_op[op]
                    dx, *dweights = _sep_backward(dy, saved, dw, pw, scale)
                    return [dx] + zeros[:4 * k] + dweights + zeros[4 * k + 4:]
                if op == "avg3x3":
                    dx = tf.raw_ops.AvgPoolGrad(orig_input_shape=tf.shape(x), grad=dy, **_POOL)
                elif op == "max3x3":
                    dx = tf.raw_ops.MaxPoolGrad(orig_input=x, orig_output=y, grad=dy, **_POOL)
                else:
                    dx = tf.identity(dy)
                return [dx] + zeros

            return tf.switch_case(op_idx, [lambda op=op: backward(op) for op in OPS])

        return y, grad

    return run(x, *flat)
