"""Drop-path for a fixed-architecture CNN: whole per-example paths dropped in training, with the
keep probability ramped over depth and training steps (ENAS's final training).

:class:`DropPath` is the layer, :class:`DropPathSchedule` the callback that advances the shared
progress variable each step, :func:`drop_path_progress` finds that variable in a model.
"""

from __future__ import annotations

import keras
import tensorflow as tf


@keras.saving.register_keras_serializable(package="wpl_keras")
class DropPath(keras.layers.Layer):
    """Training-only drop of a whole example's path, ramped over depth and training steps.

    In training ``y = x · ⌊p + U⌋ / p`` with ``U ~ Uniform[0, 1)`` per example and
    ``p = 1 − layer_ratio · progress · (1 − keep_prob)``, where ``layer_ratio = (l + 1) / L``
    for cell ``l`` (0-based) of ``L`` and ``progress = min(1, (t + 1) / T)`` at step ``t``
    (0-based) of ``T`` — ENAS's ``MicroChild._apply_drop_path``. ``progress`` is one scalar
    variable shared by a model's DropPath layers and set by :class:`DropPathSchedule`; a layer
    made without one holds its own, at 1. At inference ``y = x``. ``U`` comes from the layer's
    ``keras.random.SeedGenerator`` (``seed``; None draws one from Keras' global seed), whose
    state is a variable of the model, so a checkpointed training resumes the same draws.
    """

    def __init__(self, keep_prob: float, layer_ratio: float = 1.0, progress=None,
                 seed=None, **kwargs):
        super().__init__(**kwargs)
        self.keep_prob = float(keep_prob)
        self.layer_ratio = float(layer_ratio)
        if progress is None:
            progress = keras.Variable(1.0, trainable=False, name="drop_path_progress")
        self.progress = progress
        self.seed_generator = keras.random.SeedGenerator(seed)

    def current_keep(self) -> tf.Tensor:
        """``p = 1 − layer_ratio · progress · (1 − keep_prob)`` at the current progress."""
        progress = tf.convert_to_tensor(self.progress)
        return 1.0 - self.layer_ratio * progress * (1.0 - self.keep_prob)

    def call(self, x, training=None):
        if not training or self.keep_prob >= 1.0:
            return x
        keep = tf.cast(self.current_keep(), x.dtype)
        noise = keras.random.uniform((tf.shape(x)[0], 1, 1, 1), dtype=x.dtype,
                                     seed=self.seed_generator)
        return x * tf.floor(keep + noise) / keep

    def get_config(self):
        return {**super().get_config(), "keep_prob": self.keep_prob,
                "layer_ratio": self.layer_ratio}


class DropPathSchedule(keras.callbacks.Callback):
    """Before training step ``t`` (the optimizer's count), sets the drop-path progress to
    ``min(1, (t + 1) / T)``.

    Args:
        progress: the variable shared by the model's :class:`DropPath` layers
            (:func:`drop_path_progress`).
        total_steps: ``T``, the steps of the whole training.
    """

    def __init__(self, progress, total_steps: int):
        super().__init__()
        self.progress = progress
        self.total_steps = max(int(total_steps), 1)
        self._step = 0

    def on_train_begin(self, logs=None):
        self._step = int(keras.ops.convert_to_numpy(self.model.optimizer.iterations))

    def on_train_batch_begin(self, batch, logs=None):
        self.progress.assign(min(1.0, (self._step + 1) / self.total_steps))
        self._step += 1


def drop_path_progress(model: keras.Model):
    """The progress variable of ``model``'s :class:`DropPath` layers (None without any)."""
    for layer in model.layers:
        if isinstance(layer, DropPath):
            return layer.progress
    return None
