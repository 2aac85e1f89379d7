"""Checkpointing Keras 3 objects with ``tf.train.Checkpoint``.

Keras 3 keeps sub-layers and weights created in Python lists inside its own tracking containers,
which ``tf.train.Checkpoint`` does not traverse: a subclassed model holding ``self.cells = [...]``
would be saved without those weights. :class:`VariableBundle` names every variable of a Keras
layer, model or optimizer explicitly (by position), so a checkpoint holds all of them and
restores them into an identically built object.
"""

from __future__ import annotations

import tensorflow as tf


class VariableBundle(tf.Module):
    """All variables of one Keras object, tracked by position (``"v00000"``, ...).

    Args:
        obj: a Keras layer/model (``.variables``), an optimizer (built), or any object with a
            ``variables`` attribute or a list of variables.
        name: module name.
    """

    def __init__(self, obj, name: str = "bundle"):
        super().__init__(name=name)
        variables = obj if isinstance(obj, (list, tuple)) else obj.variables
        # Keyed by position only: Keras paths carry instance counters ("dense_3") that differ
        # between the saving and the restoring process.
        self.tracked = {f"v{k:05d}": v for k, v in enumerate(variables)}


def checkpoint_for(**objects) -> tf.train.Checkpoint:
    """A ``tf.train.Checkpoint`` whose every Keras object is wrapped in a :class:`VariableBundle`.

    ``tf.Variable`` values and other trackables are passed through unchanged.
    """
    items = {}
    for key, obj in objects.items():
        if hasattr(obj, "variables") and not isinstance(obj, (tf.Variable, tf.Module)):
            items[key] = VariableBundle(obj, name=key)
        else:
            items[key] = obj
    return tf.train.Checkpoint(**items)
