"""The functional core of the Weight Plasticity Loss: pure functions of tensors, no variables.

One function per formula (notation: ``α`` is ``strength``, ``η_F`` is ``fisher_momentum``,
``η`` the learning rate, ``λ`` the L2 weight ``l2``, ``c`` the coverage):

* :func:`wpl_penalty`: ``P = (α/2) Σ c F (θ − θ*)² + (λ/2) Σ θ²`` and, on request, the
  closed-form gradient ``α c F (θ − θ*)`` of its Fisher term;
* :func:`proximal_pull`: ``θ ← (θ + η α c F θ*) / (1 + η α c F)``, the exact proximal step of
  the Fisher term after an optimiser's step, stable for every ``α``;
* :func:`fisher_update`: ``F ← F + u c (clip((1 − η_F) F + η_F g²) − F)`` (``u``: update
  flag); with a Fisher normalisation, :func:`normalized_fisher_update` keeps the raw EMA
  ``R`` of ``g²`` apart and writes ``F = N(R)`` per unit (:func:`normalize_fisher`);
* :func:`snapshot`: ``θ* ← θ* + c (θ − θ*)``.

How they compose into one training step (L2, the WPL term or the pull, the clip, the
optimiser's step, the Fisher update, gated on the step the optimiser really applied) is
:class:`wpl_keras.wpl.step.WPLStep`, the one step every trainer calls; the variables it reads
and writes are a :class:`wpl_keras.wpl.fisher.WPLState`.

Coverage ``c``: ``None`` (the whole weight) or a 0/1 float tensor that broadcasts against the
weight (a CNN supernet's usage mask of an op slice); entries with ``c = 0`` get no penalty, no
pull and keep their Fisher and anchor. Row slices (an RNN supernet's node rows) are passed as
the gathered blocks of rows (:func:`unique_rows` turns a ``tf.IndexedSlices`` gradient into
distinct rows and their summed values): the formulas are elementwise, so a block of rows is
computed exactly like the whole weight. Flags (``update``): a python bool (decided when
tracing), a bool tensor or a 0/1 float tensor (decided in the graph by multiplication).

Everything is computed in float32, except :func:`proximal_pull`, which works in the weights'
own dtype.
"""

from __future__ import annotations

from typing import Optional, Sequence, Union

import numpy as np
import tensorflow as tf

from wpl_keras.utils.validation import check_number
from wpl_keras.wpl.flat import FlatLayout

Flag = Union[bool, tf.Tensor]
MaybeTensor = Optional[tf.Tensor]


def wpl_penalty(
    params: Sequence[tf.Tensor],
    fisher: Sequence[tf.Tensor],
    anchors: Sequence[tf.Tensor],
    strength: Union[float, tf.Tensor],
    *,
    l2: Union[float, tf.Tensor] = 0.0,
    masks: Optional[Sequence[MaybeTensor]] = None,
    with_gradients: bool = False,
):
    """The Weight Plasticity penalty over aligned lists (weights, blocks of rows or slices):

        ``P = (α/2) Σ_k Σ_i c_k,i F_k,i (θ_k,i − θ*_k,i)²  +  (λ/2) Σ_k Σ_i θ_k,i²``

    (``c = 1`` where ``masks`` is None or an entry is None). ``0 · α`` is 0 also for
    ``α = ∞`` (a weight at its anchor or without Fisher adds 0, not NaN).

    Args:
        params: ``θ_k``; fisher: ``F_k``; anchors: ``θ*_k``, one per entry of ``params``.
        strength: ``α`` (python float or scalar tensor); l2: ``λ`` (0 disables it).
        masks: coverage ``c_k`` per weight (0/1 float tensors broadcast against it) or None.
        with_gradients: also return the closed-form gradient of the Fisher term,
            ``α c_k F_k ⊙ (θ_k − θ*_k)`` per weight (float32; without the ``λ θ`` term).

    Returns:
        ``P`` (float32 scalar), or ``(P, [gradients])`` with ``with_gradients``.

    Raises:
        ValueError: if the lists differ in length or a pair of static shapes differs.
    """
    n = len(params)
    masks = [None] * n if masks is None else list(masks)
    if not n == len(fisher) == len(anchors) == len(masks):
        raise ValueError(
            "wpl_penalty needs one Fisher tensor, anchor and mask per parameter; got "
            f"{n} params, {len(fisher)} Fisher tensors, {len(anchors)} anchors, "
            f"{len(masks)} masks."
        )
    alpha = tf.cast(strength, tf.float32)
    with_l2 = not (isinstance(l2, (int, float)) and l2 == 0)
    sums, l2_sums, grads = [], [], []
    for k, (theta, f, a, m) in enumerate(zip(params, fisher, anchors, masks)):
        theta, f, a = (tf.convert_to_tensor(t) for t in (theta, f, a))
        if theta.shape.is_fully_defined() and f.shape.is_fully_defined() and (
                theta.shape != f.shape or theta.shape != a.shape):
            raise ValueError(f"wpl_penalty: shape mismatch at entry {k}: param {theta.shape}, "
                             f"Fisher {f.shape}, anchor {a.shape}.")
        coverage = None if m is None else tf.cast(m, tf.float32)
        weighted, total = _fisher_term(theta, f, a, coverage)
        sums.append(total)
        grads.append(_times(alpha, weighted))
        if with_l2:
            l2_sums.append(tf.nn.l2_loss(tf.cast(theta, tf.float32)))  # ½ Σ θ²
    penalty = tf.constant(0.0, tf.float32)
    if sums:
        penalty = _times(0.5 * alpha, tf.add_n(sums))
        if with_l2:
            penalty = penalty + tf.cast(l2, tf.float32) * tf.add_n(l2_sums)
    return (penalty, grads) if with_gradients else penalty


def _times(alpha: tf.Tensor, value: tf.Tensor) -> tf.Tensor:
    """``α · value`` with ``0 · α = 0`` also for ``α = ∞`` (no NaN where a weight sits at its
    anchor or has no Fisher; where it does not, the result is ±∞, as the formula says)."""
    return tf.math.multiply_no_nan(alpha, value)


def _fisher_term(theta, fisher, anchor, coverage):
    """``(c F ⊙ (θ − θ*), Σ c F (θ − θ*)²)`` without ``α`` and ``½``."""
    diff = tf.cast(theta, tf.float32) - tf.cast(anchor, tf.float32)
    weighted = tf.cast(fisher, tf.float32) * diff
    if coverage is not None:
        weighted = coverage * weighted
    return weighted, tf.reduce_sum(weighted * diff)


WPL_MODES = ("gradient", "proximal")


def check_wpl_mode(mode: str, owner: str = "mode") -> str:
    """Returns ``mode`` if it is a WPL update mode, else raises a ``ValueError`` naming
    ``owner``: ``"gradient"`` (``α F (θ − θ*)`` added to the gradient, the penalty in the
    loss) or ``"proximal"`` (:func:`proximal_pull` after the optimiser's step)."""
    if mode not in WPL_MODES:
        raise ValueError(f"{owner} must be one of {WPL_MODES}, got {mode!r}.")
    return mode


def proximal_pull(
    theta: tf.Tensor,
    fisher: tf.Tensor,
    anchor: tf.Tensor,
    strength: Union[float, tf.Tensor],
    learning_rate: Union[float, tf.Tensor],
    *,
    coverage: MaybeTensor = None,
) -> tf.Tensor:
    """Exact proximal step of the Fisher term, stable for every ``α`` (``∞`` included).

    After an optimiser step that left ``θ̃``, the proximal operator of ``η (α/2) F (θ − θ*)²``
    is the closed form

        ``θ = (θ̃ + k θ*) / (1 + k) = w θ̃ + (1 − w) θ*``,  ``k = η α F``, ``w = 1 / (1 + k)``

    a convex combination of ``θ̃`` and ``θ*``: it never overshoots the anchor, whatever
    ``η α F`` is, whereas a gradient step on the same term diverges once ``η α F > 2``.
    It is evaluated as ``w θ̃ + u θ*`` with ``u = k / (1 + k)`` (``u = 1`` where ``k = ∞``),
    so that:

    * ``k = ∞`` (``α = ∞``, or ``η α F`` beyond the float range) gives ``θ*`` exactly where
      ``F > 0``;
    * ``k = 0`` (``F = 0``, ``α = 0`` or ``η = 0``) leaves ``θ̃`` unchanged exactly, also for
      ``α = ∞`` (``0 · ∞`` is taken as 0, not NaN); a NaN input still gives NaN;
    * float16 / bfloat16 weights are pulled in float32 and cast back (the result lies between
      ``θ̃`` and ``θ*``, so it cannot overflow); float64 weights are pulled in float64, and a
      Python or NumPy ``α`` / ``η`` is converted to float64 directly, never through float32.

    Args:
        theta: weights after the data-loss step, ``θ̃``.
        fisher: diagonal Fisher ``F`` (``>= 0``), same shape (cast to the compute dtype).
        anchor: anchors ``θ*``, same shape (cast to the compute dtype).
        strength: ``α >= 0`` (``inf`` allowed): a number or a scalar tensor/variable.
        learning_rate: ``η >= 0``: a number or a scalar tensor/variable.
        coverage: ``c``, 0/1 weights broadcast against ``F`` (None: 1): the pull uses
            ``c F``, so entries with ``c = 0`` keep ``θ̃`` exactly.

    Returns:
        The pulled weights, same shape and dtype as ``theta``.

    Raises:
        ValueError: if a number given for ``strength`` or ``learning_rate`` is negative or NaN
            (:func:`~wpl_keras.utils.validation.check_number`; a tensor is not checked).
    """
    theta = tf.convert_to_tensor(theta)
    compute = tf.float64 if theta.dtype == tf.float64 else tf.float32

    def as_compute(value, what):
        if isinstance(value, (int, float, np.number, np.ndarray)):
            if what:
                value = check_number(f"proximal_pull: {what}", value, minimum=0,
                                     allow_inf=True)
            return tf.constant(np.asarray(value, np.float64), compute)
        return tf.cast(value, compute)

    alpha = as_compute(strength, "strength")
    eta = as_compute(learning_rate, "learning_rate")
    f = as_compute(fisher, None)
    if coverage is not None:
        f = tf.cast(coverage, compute) * f
    # 0 · ∞ is 0 here (no pull), while a NaN input still propagates to the result.
    scale = tf.where((alpha == 0) | (eta == 0), tf.zeros_like(alpha * eta), alpha * eta)
    # k = s F, and 0 where F = 0 or s = 0 (two multiply_no_nan: no NaN from 0 · ∞).
    k = tf.math.multiply_no_nan(tf.math.multiply_no_nan(scale, f), tf.cast(scale != 0, compute))
    w = 1.0 / (1.0 + k)
    u = tf.where(tf.math.is_inf(k), tf.ones_like(k), k * w)
    pulled = w * tf.cast(theta, compute) + u * as_compute(anchor, None)
    return tf.cast(tf.where(k == 0, tf.cast(theta, compute), pulled), theta.dtype)


def clip_fisher(fisher: tf.Tensor, clip_norm: float, axes: Optional[Sequence[int]] = None):
    """``F · min(1, clip / ‖F‖)``, with ``‖F‖`` the L2 norm over ``axes`` (all axes when
    None: the whole tensor; e.g. ``axes=[2, 3]`` clips each ``[i, j]`` slice separately)."""
    if axes is None:
        return tf.clip_by_norm(fisher, clip_norm)
    norm = tf.sqrt(tf.reduce_sum(tf.square(fisher), axis=list(axes), keepdims=True))
    return fisher * tf.minimum(1.0, clip_norm / tf.maximum(norm, 1e-12))


def fisher_update(
    fisher: tf.Tensor,
    gradient: tf.Tensor,
    fisher_momentum: Union[float, tf.Tensor],
    *,
    clip_norm: Optional[float] = None,
    clip_axes: Optional[Sequence[int]] = None,
    coverage: MaybeTensor = None,
    update: Flag = True,
    layout: Optional[FlatLayout] = None,
) -> tf.Tensor:
    """``F' = c clip((1 − η_F) F + η_F g²) + (1 − c) F`` for one weight or block of rows
    (or for weights laid end to end: ``layout``, a :class:`~wpl_keras.wpl.flat.FlatLayout`
    of the flat ``fisher`` and ``gradient``, whose clip is per unit of the layout)
    (exactly the new value where ``c = 1`` and exactly the old one where ``c = 0``), the one
    Fisher update of the package (the EMA of paper §3.2, ``η_F = 0.9``).

    ``c = u · m``: the coverage ``m`` (None: 1) times the update flag ``u`` (python bool,
    bool tensor or 0/1 float; python ``False`` returns ``F`` unchanged). With ``c = 1``,
    ``F' = clip((1 − η_F) F + η_F g²)``, ``clip`` the L2 norm clip over ``clip_axes`` (all
    axes when None; no clip when ``clip_norm`` is None). ``gradient`` is all-reduced, with
    loss scaling undone. The mask enters as ``m new + (1 − m) F``, the flag as one select
    (:func:`_gate`), so a step that did not apply (``u = 0``) keeps ``F`` exactly whatever
    its gradient holds.
    """
    if update is False:
        return tf.cast(fisher, tf.float32)
    fisher = tf.cast(fisher, tf.float32)
    eta = fisher_momentum  # a python float stays a graph constant: 1 − η_F is folded here
    if not isinstance(eta, (int, float)):
        eta = tf.cast(eta, tf.float32)
    new = (1.0 - eta) * fisher + eta * tf.square(tf.cast(gradient, tf.float32))
    if clip_norm is not None:
        new = (clip_fisher(new, clip_norm, clip_axes) if layout is None
               else layout.clip(new, clip_norm))
    if coverage is not None:
        c = tf.cast(coverage, tf.float32)
        new = c * new + (1.0 - c) * fisher
    return _gate(update, new, fisher)


def _gate(update: Flag, new: tf.Tensor, old: tf.Tensor) -> tf.Tensor:
    """``u new + (1 − u) old`` for a 0/1 flag ``u``, as one select: exactly ``new`` where
    ``u = 1`` and exactly ``old`` where ``u = 0``, also when ``new`` holds inf or NaN (a
    skipped step's gradient). A python ``True`` returns ``new``."""
    if isinstance(update, bool):
        return new
    return tf.where(tf.cast(update, tf.bool), new, old)


FISHER_NORMALIZATIONS = ("none", "tensor_norm", "mean")


def check_fisher_normalization(value: str, owner: str = "fisher_normalization") -> str:
    """Returns ``value`` if it is one of :data:`FISHER_NORMALIZATIONS`, else raises a
    ``ValueError`` naming ``owner`` and the choices (see :func:`normalize_fisher`)."""
    if not isinstance(value, str) or value not in FISHER_NORMALIZATIONS:
        raise ValueError(
            f"{owner} must be one of {FISHER_NORMALIZATIONS}, got {value!r}: 'none' (the "
            "EMA of g², clipped), 'tensor_norm' (each unit scaled to L2 norm clip_norm), "
            "'mean' (each unit divided by its mean)."
        )
    return value


def normalize_fisher(
    raw: tf.Tensor,
    normalization: str,
    *,
    target_norm: Optional[float] = None,
    axes: Optional[Sequence[int]] = None,
) -> tf.Tensor:
    """The Fisher the penalty and the pull use, from the raw EMA ``R`` of ``g²``, per unit.

    A unit is the whole tensor (``axes`` None) or each slice spanning ``axes`` (e.g.
    ``axes=[1, 2]`` of a block of rows ``[r, H, 2H]``: each row):

    * ``"none"``: ``R``;
    * ``"tensor_norm"``: ``F = c R / ‖R‖`` (``c`` = ``target_norm``; ``F = 0`` where
      ``‖R‖ = 0``): every unit has L2 norm ``c``, whatever the scale of its gradients. With
      ``c = 10`` this is the per-tensor norm the WPL release's Fisher settles at (it stores
      ``α · clip_by_norm(F, 10)`` and feeds it back, so ``α F`` sits at norm ``10 α``);
    * ``"mean"``: ``F = R / mean(R)`` (``F = 0`` where the mean is 0): every unit has mean
      1, so ``α`` is the mean per-entry strength whatever the unit's size and gradient scale
      (``"tensor_norm"`` gives a large unit smaller entries, about ``c / √size``).

    ``R`` is divided by its largest entry over the unit first, so that ``‖R‖`` does not
    underflow in float32 for tiny gradients.
    """
    check_fisher_normalization(normalization)
    raw = tf.cast(raw, tf.float32)
    if normalization == "none":
        return raw
    axes = list(range(raw.shape.rank)) if axes is None else list(axes)
    scaled = tf.math.divide_no_nan(raw, tf.reduce_max(raw, axis=axes, keepdims=True))
    if normalization == "mean":
        return tf.math.divide_no_nan(scaled, tf.reduce_mean(scaled, axis=axes, keepdims=True))
    if target_norm is None:
        raise ValueError("normalize_fisher: 'tensor_norm' needs target_norm (the norm c of "
                         "each unit; WPLConfig.clip_norm).")
    norm = tf.sqrt(tf.reduce_sum(tf.square(scaled), axis=axes, keepdims=True))
    return tf.math.divide_no_nan(float(target_norm) * scaled, norm)


def normalized_fisher_update(
    raw: tf.Tensor,
    fisher: tf.Tensor,
    gradient: tf.Tensor,
    fisher_momentum: Union[float, tf.Tensor],
    *,
    normalization: str,
    target_norm: Optional[float] = None,
    axes: Optional[Sequence[int]] = None,
    coverage: MaybeTensor = None,
    update: Flag = True,
) -> tuple:
    """``(R', F')`` of one weight (or block of rows) under a Fisher normalisation:

        ``R' = c ((1 − η_F) R + η_F g²) + (1 − c) R``  (the plain EMA of ``g²``, no clip)
        ``F' = c N(R') + (1 − c) F``

    with ``N`` = :func:`normalize_fisher` per unit. ``R`` is updated from itself only: the
    normalised ``F`` (and ``α``) never feed back into it. A 0/1 coverage gives exactly the
    new values where ``c = 1`` and exactly the old ones where ``c = 0``.
    """
    if update is False:
        return tf.cast(raw, tf.float32), tf.cast(fisher, tf.float32)
    fisher = tf.cast(fisher, tf.float32)
    new_raw = fisher_update(raw, gradient, fisher_momentum, coverage=coverage, update=update)
    new = normalize_fisher(new_raw, normalization, target_norm=target_norm, axes=axes)
    if coverage is not None:
        c = tf.cast(coverage, tf.float32)
        new = c * new + (1.0 - c) * fisher
    return new_raw, _gate(update, new, fisher)


def snapshot(theta: tf.Tensor, anchor: tf.Tensor, mask: MaybeTensor = None) -> tf.Tensor:
    """``θ* ← c θ + (1 − c) θ*``: ``θ`` where covered, the old anchor elsewhere (step 5).

    Written so that a 0/1 coverage gives exactly ``θ`` (or exactly the old ``θ*``), with no
    rounding of ``θ* + (θ − θ*)``.
    """
    theta = tf.convert_to_tensor(theta)
    if mask is None:
        return theta
    anchor = tf.cast(anchor, theta.dtype)
    c = tf.cast(mask, theta.dtype)
    return c * theta + (1.0 - c) * anchor


def unique_rows(slices: tf.IndexedSlices) -> tuple:
    """Distinct rows of a row-slice gradient and their summed values: ``(rows, values)``.

    A row gathered several times in one step has one data gradient, the sum of its parts;
    the Fisher of that row is updated with the sum.
    """
    rows, position = tf.unique(tf.cast(slices.indices, tf.int32))
    values = tf.math.unsorted_segment_sum(slices.values, position, tf.shape(rows)[0])
    return rows, values


def global_norm_squared(tensors: Sequence[MaybeTensor]) -> tf.Tensor:
    """``Σ_k ‖T_k‖²`` over the non-None entries (float32)."""
    parts = [tf.nn.l2_loss(tf.cast(t, tf.float32)) for t in tensors if t is not None]
    return 2.0 * tf.add_n(parts) if parts else tf.constant(0.0, tf.float32)
