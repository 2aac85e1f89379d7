"""The Weight Plasticity Loss penalty (paper §3.1, eq. 8): pure functions and a regularizer.

For a model trained after earlier models that share the weights ``θs`` with it,

    L(θ) = CE(θ) + (λ/2) Σ_i θ_i² + (α/2) Σ_i F_i (θs_i − θs*_i)²

where ``θs*`` are the shared weights at the end of the earlier training (the *anchors*) and
``F`` the diagonal Fisher information of the earlier models at ``θs*``. This module holds the
penalty as a pure function of tensors, the learning-rate bound under which a gradient step on
it is stable, the exact proximal step that is stable for any ``α``, and the Keras regularizer
that attaches the penalty to one weight.
"""

from __future__ import annotations

from typing import Optional, Sequence

import keras
import numpy as np
import tensorflow as tf

from wpl_keras.utils.validation import check_number

def wpl_penalty(
    params: Sequence[tf.Tensor],
    fisher: Sequence[tf.Tensor],
    anchors: Sequence[tf.Tensor],
    strength: float | tf.Tensor,
    l2: float | tf.Tensor = 0.0,
) -> tf.Tensor:
    """Weight Plasticity penalty over aligned lists of tensors.

    ``penalty = (strength / 2) * Σ_k Σ_i F_k,i (θ_k,i − θ*_k,i)²  +  (l2 / 2) * Σ_k Σ_i θ_k,i²``

    Args:
        params: current values ``θ`` of the penalised weights (or slices of them).
        fisher: diagonal Fisher ``F``, one tensor per entry of ``params``, same shapes.
        anchors: anchors ``θ*``, one tensor per entry of ``params``, same shapes.
        strength: ``α``, the weight of the Fisher term (python float or scalar tensor).
        l2: ``λ``, the weight of the optional L2 term of eq. 8 (0 disables it).

    Returns:
        A float32 scalar tensor.

    Raises:
        ValueError: if the three lists differ in length or a pair of shapes differs.
    """
    if not (len(params) == len(fisher) == len(anchors)):
        raise ValueError(
            "wpl_penalty needs one Fisher and one anchor tensor per parameter; got "
            f"{len(params)} params, {len(fisher)} Fisher tensors, {len(anchors)} anchors."
        )
    total = tf.constant(0.0, tf.float32)
    if not params:
        return total
    fisher_terms = []
    l2_terms = []
    for k, (theta, f, anchor) in enumerate(zip(params, fisher, anchors)):
        theta = tf.convert_to_tensor(theta)
        f = tf.convert_to_tensor(f)
        anchor = tf.convert_to_tensor(anchor)
        if theta.shape.is_fully_defined() and f.shape.is_fully_defined():
            if theta.shape != f.shape or theta.shape != anchor.shape:
                raise ValueError(
                    f"wpl_penalty: shape mismatch at entry {k}: param {theta.shape}, "
                    f"Fisher {f.shape}, anchor {anchor.shape}."
                )
        theta = tf.cast(theta, tf.float32)
        fisher_terms.append(
            tf.reduce_sum(tf.cast(f, tf.float32) * tf.square(theta - tf.cast(anchor, tf.float32)))
        )
        l2_terms.append(tf.reduce_sum(tf.square(theta)))
    strength = tf.cast(strength, tf.float32)
    # 0 · α = 0 also for α = ∞: a penalty at the anchors is 0, not NaN.
    total = tf.math.multiply_no_nan(0.5 * strength, tf.add_n(fisher_terms))
    if not (isinstance(l2, (int, float)) and l2 == 0.0):
        total = total + 0.5 * tf.cast(l2, tf.float32) * tf.add_n(l2_terms)
    return total


def wpl_penalty_and_gradient(
    theta: tf.Tensor,
    fisher: tf.Tensor,
    anchor: tf.Tensor,
    strength: float | tf.Tensor,
) -> tuple:
    """The Fisher term of one weight (or slice) and its gradient, in closed form.

    ``gradient = α F ⊙ (θ − θ*)`` and ``penalty = ½ Σ gradient ⊙ (θ − θ*)
    = (α/2) Σ F (θ − θ*)²``: one pass shared by both, no tape (a training step adds the
    gradient to the data gradient it already has).

    Same as :func:`wpl_keras.wpl.core.penalty_and_gradient` without coverage.

    Returns:
        ``(penalty, gradient)``: a float32 scalar and a tensor shaped like ``theta``.
    """
    from wpl_keras.wpl import core  # core imports this module: resolve at call time

    return core.penalty_and_gradient(theta, fisher, anchor, strength)


WPL_MODES = ("gradient", "proximal")


def check_wpl_mode(mode: str, owner: str = "mode") -> str:
    """Returns ``mode`` if it is a WPL update mode, else raises a ``ValueError`` naming
    ``owner``: ``"gradient"`` (``α F (θ − θ*)`` added to the gradient, the penalty in the
    loss) or ``"proximal"`` (:func:`proximal_pull` after the optimiser's step)."""
    if mode not in WPL_MODES:
        raise ValueError(f"{owner} must be one of {WPL_MODES}, got {mode!r}.")
    return mode


def max_stable_strength(
    learning_rate: float, max_fisher: float, momentum: float = 0.0
) -> float:
    """Largest ``α`` for which plain (heavy-ball) SGD on the penalty alone is stable.

    Along one coordinate the penalty is the quadratic ``(α F / 2) x²`` with curvature ``α F``.
    Gradient descent with step ``η`` and heavy-ball momentum ``β`` converges on it iff
    ``η α F < 2 (1 + β)``, so the bound is ``α_max = 2 (1 + β) / (η · max F)``.

    Args:
        learning_rate: the optimiser's step size ``η``.
        max_fisher: the largest Fisher value over the penalised weights.
        momentum: heavy-ball momentum ``β`` (0 for plain SGD).

    Returns:
        The bound, ``inf`` when ``max_fisher`` is 0.
    """
    lr = check_number("max_stable_strength: learning_rate", learning_rate, minimum=0,
                      exclusive_minimum=True)
    # A Fisher is a mean of squares: >= 0.
    max_f = check_number("max_stable_strength: max_fisher", max_fisher, minimum=0)
    beta = check_number("max_stable_strength: momentum", momentum, minimum=0, maximum=1,
                        exclusive_maximum=True)
    if max_f == 0:
        return float("inf")
    return 2.0 * (1.0 + beta) / (lr * max_f)


def proximal_pull(
    theta: tf.Tensor,
    fisher: tf.Tensor,
    anchor: tf.Tensor,
    strength: float | tf.Tensor,
    learning_rate: float | tf.Tensor,
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
    # 0 · ∞ is 0 here (no pull), while a NaN input still propagates to the result.
    scale = tf.where((alpha == 0) | (eta == 0), tf.zeros_like(alpha * eta), alpha * eta)
    k = tf.where((f == 0) | (scale == 0), tf.zeros_like(f), scale * f)
    w = 1.0 / (1.0 + k)
    u = tf.where(tf.math.is_inf(k), tf.ones_like(k), k * w)
    pulled = w * tf.cast(theta, compute) + u * as_compute(anchor, None)
    return tf.cast(tf.where(k == 0, tf.cast(theta, compute), pulled), theta.dtype)


@keras.saving.register_keras_serializable(package="wpl_keras")
class WeightPlasticity(keras.regularizers.Regularizer):
    """Keras regularizer for one weight: ``(α/2) Σ F (w − w*)² + (λ/2) Σ w²``.

    ``F`` and ``w*`` are non-trainable variables held by a :class:`~wpl_keras.wpl.fisher.WPLState`
    (created beside the weight, saved in checkpoints); ``α`` is that state's ``strength``
    variable, so schedules change it without retracing. Until it is bound to a state (as
    :func:`~wpl_keras.wpl.training.apply_wpl` does) the regularizer contributes only its L2
    term.

    Saving: a bound regularizer's config records its binding (position in the state, ``α``,
    ``η_F``, clip). Keras' ``load_model`` runs no code between re-creating a built-in model and
    loading its weights, so it cannot re-create the state: the loaded regularizer is
    *saved-bound* and raises an error naming the fix when it is evaluated unbound.
    :func:`~wpl_keras.wpl.saving.load_wpl_model` (or ``restore_wpl`` on the loaded model)
    re-creates the state and loads ``F``, ``θ*`` and ``α`` from the file.

    >>> import keras, numpy as np
    >>> from wpl_keras.wpl import WPLState, WeightPlasticity
    >>> layer = keras.layers.Dense(2); layer.build((None, 3))
    >>> state = WPLState([layer.kernel], strength=1.0)
    >>> reg = WeightPlasticity(l2=0.0).bind(state, layer.kernel)
    >>> float(reg(layer.kernel))  # anchors equal the weights at creation
    0.0

    Args:
        l2: ``λ`` of eq. 8 (0 disables the L2 term).
        binding: the binding recorded by :meth:`get_config` (for ``from_config``), or None.
    """

    def __init__(self, l2: float = 0.0, binding: Optional[dict] = None):
        self.l2 = check_number("WeightPlasticity: l2 (λ)", l2, minimum=0)
        self.binding = None if binding is None else dict(binding)
        self._state = None
        self._index: Optional[int] = None

    def bind(self, state, variable) -> "WeightPlasticity":
        """Connects the regularizer to ``state``'s Fisher and anchor of ``variable``."""
        self._state = state
        self._index = state.index_of(variable)
        return self

    @property
    def is_bound(self) -> bool:
        return self._state is not None

    def __call__(self, x):
        x = tf.convert_to_tensor(x)
        if self._state is None:
            if self.binding is not None:
                raise ValueError(
                    "WeightPlasticity: this regularizer was saved bound to a WPL state (Fisher "
                    "and anchors) that keras.models.load_model cannot re-create for a built-in "
                    "model; load it with wpl_keras.wpl.load_wpl_model(path), or call "
                    "wpl_keras.wpl.restore_wpl(model, path) after load_model."
                )
            if self.l2 == 0.0:
                return tf.constant(0.0, tf.float32)
            return 0.5 * self.l2 * tf.reduce_sum(tf.square(tf.cast(x, tf.float32)))
        state = self._state
        return wpl_penalty(
            [x],
            [state.fisher[self._index]],
            [state.anchors[self._index]],
            state.strength,
            self.l2,
        )

    def get_config(self):
        config = {"l2": self.l2}
        if self._state is not None:
            state = self._state
            config["binding"] = {
                "index": int(self._index),
                "strength": float(tf.convert_to_tensor(state.strength).numpy()),
                "fisher_momentum": float(state.fisher_momentum),
                "clip_norm": state.clip_norm,
                "fisher_normalization": state.fisher_normalization,
            }
        elif self.binding is not None:
            config["binding"] = dict(self.binding)
        return config


def numpy_wpl_penalty(params, fisher, anchors, strength, l2=0.0) -> float:
    """NumPy reference of :func:`wpl_penalty` (float64), for tests and checks."""
    total = 0.0
    for theta, f, anchor in zip(params, fisher, anchors):
        theta = np.asarray(theta, np.float64)
        total += 0.5 * strength * float(np.sum(np.asarray(f, np.float64) * (theta - anchor) ** 2))
        total += 0.5 * l2 * float(np.sum(theta**2))
    return total
