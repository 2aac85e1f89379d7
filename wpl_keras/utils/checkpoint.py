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


def untracked_variables(checkpoint: tf.train.Checkpoint, objects) -> list:
    """Variables of ``objects`` that ``checkpoint`` would not save.

    A Keras 3 object keeps weights held in Python lists or dicts in its own tracker, which
    ``tf.train.Checkpoint`` does not traverse, so such weights are silently left out of a
    checkpoint and a restored run starts them from their initial values. This compares what
    each object reports in ``.variables`` with what the checkpoint's object graph reaches.

    Args:
        checkpoint: the checkpoint to inspect.
        objects: objects with a ``variables`` attribute (Keras layers, models, optimizers,
            ``tf.Module``), e.g. the values of the checkpoint's items; others are skipped.

    Returns:
        The unreachable variables, in the objects' order (empty when the checkpoint holds all).
    """
    reached = set()
    for trackable in tf.train.TrackableView(checkpoint).descendants():
        reached.add(id(trackable))
        value = getattr(trackable, "value", None)  # a Keras variable wraps a tf.Variable
        if isinstance(value, tf.Variable):
            reached.add(id(value))
    missing, seen = [], set()
    for obj in objects:
        variables = getattr(obj, "variables", None)
        if variables is None or isinstance(obj, tf.Variable) or callable(variables):
            continue
        for v in variables:
            inner = getattr(v, "value", None)
            if id(v) in seen:
                continue
            seen.add(id(v))
            if id(v) not in reached and not (isinstance(inner, tf.Variable)
                                             and id(inner) in reached):
                missing.append(v)
    return missing


def check_checkpoint_covers(checkpoint: tf.train.Checkpoint, objects) -> None:
    """Raises when ``checkpoint`` would leave out a variable of ``objects``.

    Raises:
        ValueError: naming the first unreachable variables (see :func:`untracked_variables`).
    """
    missing = untracked_variables(checkpoint, objects)
    if missing:
        names = ", ".join(getattr(v, "path", None) or v.name for v in missing[:5])
        more = ", ..." if len(missing) > 5 else ""
        raise ValueError(
            f"the checkpoint would not save {len(missing)} variable(s) ({names}{more}): a Keras object holds them in a Python list or dict, "
            f"which tf.train.Checkpoint does not traverse; assign them as attributes or tuples, "
            f"or wrap the object in wpl_keras.utils.checkpoint.VariableBundle.")
