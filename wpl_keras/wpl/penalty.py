"""The Weight Plasticity Loss penalty (paper §3.1, eq. 8): pure functions and a regularizer.

For a model trained after earlier models that share the weights ``θs`` with it,

    L(θ) = CE(θ) + (λ/2) Σ_i θ_i² + (α/2) Σ_i F_i (θs_i − θs*_i)²

where ``θs*`` are the shared weights at the end of the earlier training (the *anchors*) and
``F`` the diagonal Fisher information of the earlier models at ``θs*``. This module holds the
learning-rate bound under which a gradient step on the penalty is stable and the Keras
regularizer that attaches the penalty to one weight; the penalty itself
(:func:`~wpl_keras.wpl.core.wpl_penalty`) and the exact proximal step that is stable for any
``α`` (:func:`~wpl_keras.wpl.core.proximal_pull`) are pure functions of
:mod:`wpl_keras.wpl.core`.
"""

from __future__ import annotations

from typing import Optional

import keras
import tensorflow as tf

from wpl_keras.utils.validation import check_number
from wpl_keras.wpl.core import wpl_penalty


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
        return wpl_penalty([x], [state.fisher[self._index]], [state.anchors[self._index]],
                           state.strength, l2=self.l2)

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
