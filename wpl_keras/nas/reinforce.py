"""REINFORCE with an exponential-moving-average baseline, the ENAS controller update.

For an architecture ``a`` with reward ``R`` (ENAS order: the baseline moves first, then the
advantage uses the updated baseline):

    ``b ← decay · b + (1 − decay) · R``
    ``A = R − b``
    ``loss = −(log π(a) · A + entropy_weight · H(π))``

followed by one optimizer step (Adam by default) on the controller weights. ``A`` is a
constant for the gradient, so ``∇loss = −A ∇log π(a) − entropy_weight ∇H``. The baseline starts
at 0, as in ENAS.

The update is a ``tf.function`` with the architecture as an int32 tensor and the reward as a
float32 scalar, so it is traced once for every architecture.
"""

from __future__ import annotations

from typing import Dict, Optional, Sequence

import keras
import numpy as np
import tensorflow as tf

from wpl_keras.nas.controller import Controller


def reinforce_loss(
    log_prob: tf.Tensor, entropy: tf.Tensor, advantage: tf.Tensor, entropy_weight: float
) -> tf.Tensor:
    """``loss = −(log π(a) · stop_gradient(A) + entropy_weight · H)``."""
    return -(log_prob * tf.stop_gradient(advantage) + entropy_weight * entropy)


def ema_baseline(baseline: tf.Tensor, reward: tf.Tensor, decay: float) -> tf.Tensor:
    """``b ← decay · b + (1 − decay) · R``."""
    return decay * baseline + (1.0 - decay) * reward


class Reinforce:
    """Trains a :class:`~wpl_keras.nas.controller.Controller` from scalar rewards.

    Args:
        controller: the controller to train.
        learning_rate: Adam learning rate (ENAS RNN: 3.5e-4; CNN: 3.5e-3) when ``optimizer``
            is None.
        baseline_decay: EMA decay of the baseline (ENAS RNN: 0.95; CNN: 0.99).
        entropy_weight: weight of the entropy bonus (ENAS: 1e-4).
        optimizer: a Keras optimizer to use instead of Adam.

    Raises:
        ValueError: for a decay outside [0, 1), a negative entropy weight or a non-positive
            learning rate.
    """

    def __init__(
        self,
        controller: Controller,
        *,
        learning_rate: float = 3.5e-4,
        baseline_decay: float = 0.95,
        entropy_weight: float = 1e-4,
        optimizer: Optional[keras.optimizers.Optimizer] = None,
    ):
        if not 0.0 <= baseline_decay < 1.0:
            raise ValueError(f"baseline_decay must be in [0, 1), got {baseline_decay}.")
        if entropy_weight < 0:
            raise ValueError(f"entropy_weight must be >= 0, got {entropy_weight}.")
        if optimizer is None and learning_rate <= 0:
            raise ValueError(f"learning_rate must be positive, got {learning_rate}.")
        self.controller = controller
        self.baseline_decay = float(baseline_decay)
        self.entropy_weight = float(entropy_weight)
        self.optimizer = optimizer or keras.optimizers.Adam(learning_rate=learning_rate)
        # Create the optimizer slots now, outside the traced update.
        self.optimizer.build(controller.trainable_variables)
        self.baseline = tf.Variable(0.0, trainable=False, name="reinforce_baseline")
        self.step = tf.Variable(0, dtype=tf.int64, trainable=False, name="reinforce_step")
        spec = [
            tf.TensorSpec([controller.num_decisions], tf.int32),
            tf.TensorSpec([], tf.float32),
        ]
        self._update_fn = tf.function(self._update, input_signature=spec)

    def _update(self, arch: tf.Tensor, reward: tf.Tensor) -> Dict[str, tf.Tensor]:
        self.baseline.assign(ema_baseline(self.baseline, reward, self.baseline_decay))
        advantage = reward - self.baseline
        variables = self.controller.trainable_variables
        with tf.GradientTape() as tape:
            log_prob, entropy = self.controller._log_prob_and_entropy(arch)
            loss = reinforce_loss(log_prob, entropy, advantage, self.entropy_weight)
        gradients = tape.gradient(loss, variables)
        self.optimizer.apply_gradients(zip(gradients, variables))
        self.step.assign_add(1)
        return {
            "loss": loss,
            "reward": reward,
            "baseline": tf.identity(self.baseline),
            "advantage": advantage,
            "log_prob": log_prob,
            "entropy": entropy,
        }

    def update(self, arch: Sequence[int], reward: float) -> Dict[str, float]:
        """One REINFORCE step for ``arch`` with reward ``reward``.

        Returns:
            Floats ``loss``, ``reward``, ``baseline`` (after the EMA step), ``advantage``,
            ``log_prob`` and ``entropy`` (both before the optimizer step).

        Raises:
            ValueError: for an invalid architecture or a non-finite reward.
        """
        reward = float(reward)
        if not np.isfinite(reward):
            raise ValueError(f"reward must be finite, got {reward}.")
        arch = self.controller._check_arch(arch)
        out = self._update_fn(arch, tf.constant(reward, tf.float32))
        return {k: float(v) for k, v in out.items()}

    def checkpoint_items(self) -> Dict[str, object]:
        """Trackables holding the whole state (controller incl. its sampler, optimizer,
        baseline, step count), for ``tf.train.Checkpoint(**items)``."""
        return {
            "controller": self.controller,
            "controller_optimizer": self.optimizer,
            "reinforce_baseline": self.baseline,
            "reinforce_step": self.step,
        }

    @property
    def tracing_count(self) -> int:
        return self._update_fn.experimental_get_tracing_count()

    def get_config(self) -> dict:
        return {
            "baseline_decay": self.baseline_decay,
            "entropy_weight": self.entropy_weight,
            "optimizer": keras.optimizers.serialize(self.optimizer),
        }
