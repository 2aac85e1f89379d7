"""The functional core of the Weight Plasticity Loss: pure functions of tensors, no variables.

Every trainer (``WPLModel``, a supernet task) runs one WPL step as the same sequence of pure
calls, in the spirit of Optax's ``update(grads, state, params)`` with a ``mask``:

1. :func:`wpl_gradients` before the optimiser's step: the penalty

       ``P = (α/2) Σ_k Σ_i c_k,i F_k,i (θ_k,i − θ*_k,i)²  +  (λ/2) Σ_k Σ_i θ_k,i²``

   and the gradients to apply, ``g_k + s (α c_k F_k (θ_k − θ*_k) + λ θ_k)`` in
   ``"gradient"`` mode (``s``: the factor the data gradient carries, e.g. ``1/replicas``)
   or ``g_k + s λ θ_k`` in ``"proximal"`` mode;
2. the optimiser's step (not part of the core);
3. :func:`wpl_pull` after it, in ``"proximal"`` mode: ``θ ← (θ + η α c F θ*) / (1 + η α c F)``
   (:func:`~wpl_keras.wpl.penalty.proximal_pull` with ``c F``), stable for every ``α``;
4. :func:`fisher_updates`: ``F ← F + u c (clip((1 − η_F) F + η_F g²) − F)`` (``u``: update
   flag), each updated tensor (or slice) clipped to an L2 norm; or, with a Fisher
   normalisation (:func:`normalized_fisher_updates`), the raw EMA ``R`` of ``g²`` is kept
   apart and ``F`` is ``R`` normalised per unit (:func:`normalize_fisher`: ``c R / ‖R‖`` or
   ``R / mean(R)``);
5. :func:`snapshot`, when a model's training ends: ``θ* ← θ* + c (θ − θ*)``.

All use the state at the START of the step: ``F`` and ``θ*`` are read once and the new ``F``
is returned, not used by the pull of the same step.

Notation: ``α`` is ``strength``, ``η_F`` is ``fisher_momentum``, ``η`` the learning rate,
``λ`` the L2 weight ``l2``.

Coverage ``c`` (which weights are covered) and the flags:

* ``masks``: one entry per weight, ``None`` (all of it) or a 0/1 float tensor that broadcasts
  against the weight (a CNN supernet's usage mask of an op slice). Entries with ``c = 0`` get
  no penalty, no pull and keep their Fisher and anchor.
* Row slices (an RNN supernet's node rows): the caller gathers the covered rows of ``θ``,
  ``F`` and ``θ*`` (:func:`unique_rows` turns a ``tf.IndexedSlices`` gradient into distinct
  rows and their summed values), passes the row blocks as dense tensors, and scatters the
  returned blocks back. The formulas are elementwise, so a block of rows is computed exactly
  like the whole weight; ``clip_axes`` says over which axes a Fisher slice is clipped.
* ``active`` (WPL on this step) and ``update`` (update the Fisher this step): a python bool
  (decided when tracing, no ops), a bool tensor or a 0/1 float tensor (decided in the graph
  by multiplication, no ``tf.cond``). ``active = 0`` gives ``P = 0`` (λ term aside), no extra
  gradient and no pull.

Everything is computed in float32, except :func:`wpl_pull`, which works in the weights' own
dtype (see :func:`~wpl_keras.wpl.penalty.proximal_pull`).

How a trainer uses it (``state`` a :class:`~wpl_keras.wpl.fisher.WPLState`, which reads and
writes the variables; ``state.read(k, rows)`` gives ``(θ, F, θ*)`` of weight ``k``):

* a supernet with row slices (node matrices): ``rows, g = unique_rows(node_grad)``; read
  ``state.read(0, rows)`` and the dense weights ``state.read(k)``; call :func:`wpl_gradients`
  with ``active=wpl_active`` (bool tensor), rebuild ``tf.IndexedSlices(g_out, rows)`` for the
  optimiser; after it, ``state.apply_proximal(0, lr, rows=rows, penalty_at=...)`` or
  :func:`wpl_pull` + scatter; ``state.update_fisher([...], update=update_fisher)`` takes the
  ``IndexedSlices`` as they are; ``state.snapshot_anchors(rows={0: rows, ...})``;
* a supernet with usage masks (op slices): pass ``masks=usage_masks`` and
  ``active=wpl_on`` (0/1 float) to :func:`wpl_gradients` / :func:`wpl_pull`, and
  ``state.update_fisher(grads, masks=usage_masks, update=fisher_gate, clip_axes=...)``
  (``clip_axes=[2, ...]`` clips each ``[node, slot]`` slice of a stacked op weight;
  ``None`` for a weight clipped as a whole); ``state.snapshot_anchors(masks=usage_masks)``.
"""

from __future__ import annotations

from typing import List, NamedTuple, Optional, Sequence, Union

import tensorflow as tf

from wpl_keras.wpl.penalty import check_wpl_mode, proximal_pull

Flag = Union[bool, tf.Tensor]
MaybeTensor = Optional[tf.Tensor]


class WPLGradients(NamedTuple):
    """Output of :func:`wpl_gradients`.

    Attributes:
        penalty: ``P`` (float32 scalar, unscaled by ``s``).
        gradients: the gradients to hand to the optimiser, aligned with the inputs.
    """

    penalty: tf.Tensor
    gradients: List[MaybeTensor]


def _flag(value: Flag):
    """A python bool stays python (decided when tracing); a tensor becomes a float32 0/1."""
    if isinstance(value, bool):
        return value
    return tf.cast(value, tf.float32)


def _coverage(mask: MaybeTensor, active) -> MaybeTensor:
    """``c = active · mask`` as a float32 tensor, or None when every entry is covered."""
    c = None if mask is None else tf.cast(mask, tf.float32)
    if isinstance(active, bool):
        return c
    return active if c is None else active * c


def penalty_and_gradient(
    theta: tf.Tensor,
    fisher: tf.Tensor,
    anchor: tf.Tensor,
    strength: Union[float, tf.Tensor],
    *,
    coverage: MaybeTensor = None,
) -> tuple:
    """Fisher term of one weight (or block of rows) and its gradient, in closed form.

    ``gradient = α c F ⊙ (θ − θ*)`` and ``penalty = ½ Σ gradient ⊙ (θ − θ*)``
    ``= (α/2) Σ c F (θ − θ*)²`` (``c = 1`` when ``coverage`` is None).

    Returns:
        ``(penalty, gradient)``: a float32 scalar and a float32 tensor shaped like ``theta``.
    """
    weighted, total = _fisher_term(theta, fisher, anchor, coverage)
    alpha = tf.cast(strength, tf.float32)
    return _times(0.5 * alpha, total), _times(alpha, weighted)


def _times(alpha: tf.Tensor, value: tf.Tensor) -> tf.Tensor:
    """``α · value`` with ``0 · α = 0`` also for ``α = ∞`` (no NaN where a weight sits at its
    anchor or has no Fisher; where it does not, the result is ±∞, as the formula says)."""
    return tf.math.multiply_no_nan(alpha, value)


def _fisher_term(theta, fisher, anchor, coverage):
    """``(c F ⊙ (θ − θ*), Σ c F (θ − θ*)²)`` without ``α`` and ``½`` (multiplied in once by
    the caller over all weights)."""
    diff = tf.cast(theta, tf.float32) - tf.cast(anchor, tf.float32)
    weighted = tf.cast(fisher, tf.float32) * diff
    if coverage is not None:
        weighted = coverage * weighted
    return weighted, tf.reduce_sum(weighted * diff)


def wpl_gradients(
    params: Sequence[tf.Tensor],
    gradients: Sequence[MaybeTensor],
    fisher: Sequence[tf.Tensor],
    anchors: Sequence[tf.Tensor],
    *,
    strength: Union[float, tf.Tensor],
    mode: str,
    masks: Optional[Sequence[MaybeTensor]] = None,
    active: Flag = True,
    l2: float = 0.0,
    scale: Optional[tf.Tensor] = None,
) -> WPLGradients:
    """The penalty ``P`` and the gradients to apply (step 1 of the module docstring).

    ``gradient mode``: ``g_k + s (α c_k F_k (θ_k − θ*_k) + λ θ_k)``; ``proximal mode``:
    ``g_k + s λ θ_k`` (the Fisher term acts in :func:`wpl_pull`). ``P`` counts the Fisher
    term in both modes (it is the term the step minimises).

    Args:
        params: ``θ_k`` as read for this step (dense weights or blocks of rows).
        gradients: the data gradients ``g_k`` (dense, aligned with ``params``); a ``None``
            entry is taken as 0 where a term is added, and stays None otherwise.
        fisher, anchors: ``F_k`` and ``θ*_k``, aligned with ``params``.
        strength: ``α``.
        mode: ``"gradient"`` or ``"proximal"``.
        masks: coverage per weight (see the module docstring), or None for full coverage.
        active: WPL on this step (python bool, bool tensor or 0/1 float tensor).
        l2: ``λ``.
        scale: ``s``, the factor the data gradients carry (loss scale, ``1/replicas``);
            None for 1.

    Returns:
        :class:`WPLGradients`.
    """
    check_wpl_mode(mode)
    active = _flag(active)
    masks = [None] * len(params) if masks is None else list(masks)
    if not len(params) == len(gradients) == len(fisher) == len(anchors) == len(masks):
        raise ValueError(
            "wpl_gradients needs one gradient, Fisher, anchor and mask per weight; got "
            f"{len(params)} weights, {len(gradients)} gradients, {len(fisher)} Fisher tensors, "
            f"{len(anchors)} anchors, {len(masks)} masks."
        )
    alpha = tf.cast(strength, tf.float32)
    fisher_sums, l2_sums, out = [], [], []
    for theta, g, f, a, m in zip(params, gradients, fisher, anchors, masks):
        theta = tf.cast(theta, tf.float32)
        extra = None
        if active is not False:
            weighted, total = _fisher_term(theta, f, a, _coverage(m, active))
            fisher_sums.append(total)
            if mode == "gradient":
                extra = _times(alpha, weighted)
        if l2:
            l2_sums.append(tf.nn.l2_loss(theta))  # ½ Σ θ²
            extra = l2 * theta if extra is None else extra + l2 * theta
        if extra is not None:
            if scale is not None:
                extra = extra * scale
            if g is None:
                g = tf.cast(extra, theta.dtype)
            else:
                g = tf.convert_to_tensor(g)
                g = g + tf.cast(extra, g.dtype)
        out.append(g)
    penalty = tf.constant(0.0, tf.float32)
    if fisher_sums:
        penalty = _times(0.5 * alpha, tf.add_n(fisher_sums))
    if l2_sums:
        penalty = penalty + l2 * tf.add_n(l2_sums)
    return WPLGradients(penalty, out)


def wpl_pull(
    params: Sequence[tf.Tensor],
    fisher: Sequence[tf.Tensor],
    anchors: Sequence[tf.Tensor],
    *,
    strength: Union[float, tf.Tensor],
    learning_rate: Union[float, tf.Tensor],
    masks: Optional[Sequence[MaybeTensor]] = None,
    active: Flag = True,
) -> List[tf.Tensor]:
    """Proximal step of the Fisher term after the optimiser's step (step 3).

    ``θ ← (θ + η α c F θ*) / (1 + η α c F)``: ``θ`` unchanged where ``c F = 0``, held at
    ``θ*`` as ``α → ∞`` where ``c F > 0``.

    Args:
        params: the weights after the optimiser's step.
        fisher, anchors: ``F`` and ``θ*`` of the step (read before it).
        strength: ``α``; learning_rate: the step's ``η``.
        masks, active: coverage (see the module docstring).

    Returns:
        The pulled weights, in each weight's dtype.
    """
    active = _flag(active)
    masks = [None] * len(params) if masks is None else list(masks)
    out = []
    for theta, f, a, m in zip(params, fisher, anchors, masks):
        theta = tf.convert_to_tensor(theta)
        c = _coverage(m, active)
        if active is False:
            out.append(theta)
            continue
        f = tf.convert_to_tensor(f)
        if c is not None:
            f = tf.cast(c, f.dtype) * f
        out.append(proximal_pull(theta, tf.cast(f, theta.dtype), tf.cast(a, theta.dtype),
                                 strength, learning_rate))
    return out


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
) -> tf.Tensor:
    """``F' = c clip((1 − η_F) F + η_F g²) + (1 − c) F`` for one weight or block of rows
    (exactly the new value where ``c = 1`` and exactly the old one where ``c = 0``).

    ``c = 1`` when ``coverage`` is None (then ``F' = clip((1 − η_F) F + η_F g²)``).
    ``gradient`` is the data gradient only (all-reduced, loss scaling undone).
    """
    fisher = tf.cast(fisher, tf.float32)
    eta = fisher_momentum  # a python float stays a graph constant: 1 − η_F is folded here
    if not isinstance(eta, (int, float)):
        eta = tf.cast(eta, tf.float32)
    new = (1.0 - eta) * fisher + eta * tf.square(tf.cast(gradient, tf.float32))
    if clip_norm is not None:
        new = clip_fisher(new, clip_norm, clip_axes)
    if coverage is None:
        return new
    return coverage * new + (1.0 - coverage) * fisher


def fisher_updates(
    fisher: Sequence[tf.Tensor],
    gradients: Sequence[MaybeTensor],
    *,
    fisher_momentum: Union[float, tf.Tensor],
    clip_norm: Optional[float] = None,
    clip_axes: Optional[Sequence[Optional[Sequence[int]]]] = None,
    masks: Optional[Sequence[MaybeTensor]] = None,
    update: Flag = True,
) -> List[MaybeTensor]:
    """:func:`fisher_update` over aligned lists (step 4); ``None`` where the gradient is None
    or the update is off (python ``False``): that Fisher is unchanged and need not be written.
    """
    update = _flag(update)
    n = len(fisher)
    masks = [None] * n if masks is None else list(masks)
    clip_axes = [None] * n if clip_axes is None else list(clip_axes)
    out = []
    for f, g, m, axes in zip(fisher, gradients, masks, clip_axes):
        if g is None or update is False:
            out.append(None)
            continue
        out.append(fisher_update(f, g, fisher_momentum, clip_norm=clip_norm, clip_axes=axes,
                                 coverage=_coverage(m, update)))
    return out


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
) -> tuple:
    """``(R', F')`` of one weight (or block of rows) under a Fisher normalisation:

        ``R' = c ((1 − η_F) R + η_F g²) + (1 − c) R``  (the plain EMA of ``g²``, no clip)
        ``F' = c N(R') + (1 − c) F``

    with ``N`` = :func:`normalize_fisher` per unit. ``R`` is updated from itself only: the
    normalised ``F`` (and ``α``) never feed back into it. A 0/1 coverage gives exactly the
    new values where ``c = 1`` and exactly the old ones where ``c = 0``.
    """
    new_raw = fisher_update(raw, gradient, fisher_momentum, coverage=coverage)
    new = normalize_fisher(new_raw, normalization, target_norm=target_norm, axes=axes)
    if coverage is None:
        return new_raw, new
    return new_raw, coverage * new + (1.0 - coverage) * tf.cast(fisher, tf.float32)


def normalized_fisher_updates(
    raw: Sequence[tf.Tensor],
    fisher: Sequence[tf.Tensor],
    gradients: Sequence[MaybeTensor],
    *,
    fisher_momentum: Union[float, tf.Tensor],
    normalization: str,
    target_norm: Optional[float] = None,
    axes: Optional[Sequence[Optional[Sequence[int]]]] = None,
    masks: Optional[Sequence[MaybeTensor]] = None,
    update: Flag = True,
) -> List[Optional[tuple]]:
    """:func:`normalized_fisher_update` over aligned lists (step 4 with a normalisation):
    ``(R', F')`` per weight, ``None`` where the gradient is None or the update is off
    (python ``False``): that weight's ``R`` and ``F`` are unchanged."""
    update = _flag(update)
    n = len(fisher)
    masks = [None] * n if masks is None else list(masks)
    axes = [None] * n if axes is None else list(axes)
    out = []
    for r, f, g, m, ax in zip(raw, fisher, gradients, masks, axes):
        if g is None or update is False:
            out.append(None)
            continue
        out.append(normalized_fisher_update(
            r, f, g, fisher_momentum, normalization=normalization, target_norm=target_norm,
            axes=ax, coverage=_coverage(m, update)))
    return out


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
