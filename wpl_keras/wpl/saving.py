"""Loading a plain Keras model protected by :func:`~wpl_keras.wpl.training.apply_wpl`.

A :class:`~wpl_keras.wpl.training.WPLTrainingMixin` model (``WPLModel``, ``WPLSequential``)
restores its WPL state inside ``keras.models.load_model``. A built-in ``Functional`` or
``Sequential`` model cannot: Keras runs no code of ours between re-creating it and loading its
weights. Its :class:`~wpl_keras.wpl.penalty.WeightPlasticity` regularizers come back
*saved-bound* (they record their position in the state, ``α``, ``η_F`` and the clip, and
raise an error naming :func:`load_wpl_model` when evaluated unbound); :func:`restore_wpl`
re-creates the state from them and loads the Fisher, anchors and ``α`` from the file.
"""

from __future__ import annotations

from typing import Optional

import keras

from wpl_keras.wpl.fisher import WPLState
from wpl_keras.wpl.penalty import WeightPlasticity
from wpl_keras.wpl.training import WPLTrainingMixin, apply_wpl


def restore_wpl(model: keras.Model, path: Optional[str] = None) -> Optional[WPLState]:
    """Re-creates the WPL state of a plain model loaded by ``keras.models.load_model``.

    The model's saved-bound :class:`WeightPlasticity` regularizers name their position in the
    state, ``α``, ``η_F``, the clip and (when recorded; ``"none"`` otherwise) the Fisher
    normalisation; :func:`apply_wpl` re-creates the state over those weights and, with
    ``path`` (the ``.keras`` file), ``model.load_weights(path)`` loads its Fisher (and raw
    EMA), anchors and ``α``.

    Returns:
        The state, or None when the model has no saved-bound regularizer.
    """
    bound = []
    for v in model.weights:
        reg = getattr(v, "regularizer", None)
        if isinstance(reg, WeightPlasticity) and reg.binding is not None and not reg.is_bound:
            bound.append((int(reg.binding["index"]), v, reg))
    if not bound:
        return None
    bound.sort(key=lambda item: item[0])
    if [k for k, _, _ in bound] != list(range(len(bound))):
        raise ValueError(
            f"restore_wpl: the saved regularizers of model {model.name!r} name state positions "
            f"{[k for k, _, _ in bound]}, not 0..{len(bound) - 1}; the file is incomplete."
        )
    first = bound[0][2]
    state = apply_wpl(model, [v for _, v, _ in bound], strength=first.binding["strength"],
                      l2=first.l2, fisher_momentum=first.binding["fisher_momentum"],
                      clip_norm=first.binding["clip_norm"],
                      fisher_normalization=first.binding.get("fisher_normalization", "none"))
    if path is not None:
        model.load_weights(path)
    return state


def load_wpl_model(path: str, **kwargs) -> keras.Model:
    """``keras.models.load_model(path, **kwargs)`` with the WPL state of a plain model that
    :func:`apply_wpl` protected restored (:func:`restore_wpl`); a :class:`WPLTrainingMixin`
    model restores its state in ``load_model`` itself."""
    model = keras.models.load_model(path, **kwargs)
    if not isinstance(model, WPLTrainingMixin):
        restore_wpl(model, path)
    return model
