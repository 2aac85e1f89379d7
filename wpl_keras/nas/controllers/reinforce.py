"""REINFORCE with an exponential-moving-average baseline, the ENAS controller update.

For an architecture ``a = (a_1 … a_D)`` with reward ``R``, per-decision log-probabilities
``ℓ_k = log π(a_k | a_<k)`` (``log π(a) = Σ_k ℓ_k``) and per-decision entropies ``H_k``
(``H = Σ_k H_k``), one update first moves the baselines (ENAS order: the advantage uses the
baseline *after* this step):

    ``b ← decay · b + (1 − decay) · R``             (the reward baseline, a scalar)
    ``c_k ← decay · c_k + (1 − decay) · H_k``       (entropy baselines; reward modes only)

then forms the advantage and the loss by ``entropy_mode``:

* ``"bonus"`` (default; an entropy regulariser):
  ``A = R − b``, ``loss = −(log π(a) · A + w · H)``.
* ``"reward"`` (the ENAS-PyTorch / WPL release RNN form, ``entropy_mode='reward'``): the
  entropy of each decision is added to the reward of that decision,
  ``R'_k = R + w · H_k``, the baseline is per decision,
  ``B_k ← decay · B_k + (1 − decay) · R'_k``, ``A_k = R'_k − B_k`` and
  ``loss = −Σ_k ℓ_k · A_k``. Because the EMA is linear,
  ``B_k = b + w · c_k``, so ``A_k = (R − b) + w · (H_k − c_k)``, which is how it is computed.
* ``"reward_sum"`` (the ENAS TensorFlow form, with ``"zero"`` and no reset there): the
  summed entropy is added to one scalar reward, ``R' = R + w · H``, ``A = R' − B = (R − b) + w · Σ_k (H_k − c_k)`` and
  ``loss = −log π(a) · A``.

In every mode ``A`` is a constant for the gradient, and so is the entropy inside a reward:
the reward modes have no ``∇H`` term. ``"bonus"``'s gradient is
``−A ∇log π(a) − w ∇H``.

Baseline start (``baseline_init``): ``"zero"`` (default, as ENAS TF) starts ``b = 0, c = 0``;
``"first_reward"`` (the release) sets ``b = R``, ``c_k = H_k`` at the first update instead of
the EMA step, so that update has ``A = 0``. With ``baseline_reset_each_epoch`` (the release
keeps the baseline local to each controller phase) :meth:`Reinforce.start_epoch` puts the
baselines back to their start at each new epoch.

With a mask ``m ∈ {0, 1}^D`` (decisions that were inactive for the sampled path, e.g. a
conditional hyperparameter whose parent took another value, have ``m_k = 0``) only the active
decisions enter: ``log π → Σ_k m_k ℓ_k`` and ``H → Σ_k m_k H_k``, so ``"bonus"`` descends

    ``−∇[Σ_k m_k ℓ_k · (R − b) + w · Σ_k m_k H_k]``

and the reward modes use ``loss = −Σ_k m_k ℓ_k · A_k`` with ``H_k → m_k H_k`` inside ``A``
and an entropy baseline ``c_k`` that moves only where ``m_k = 1``. The mask is a tensor input
of its own traced update (one trace for every architecture and mask); without a mask the
update is the unmasked one above, unchanged.

Each update is followed by one optimizer step (Adam by default) on the controller weights.
The update is a ``tf.function`` with the architecture as an int32 tensor and the reward as a
float32 scalar, so it is traced once for every architecture. The baselines, their
"initialised" flag and the last started epoch are variables in
:meth:`Reinforce.checkpoint_items`, so a resumed search continues identically.
"""

from __future__ import annotations

from typing import Dict, Optional, Sequence

import keras
import tensorflow as tf

from wpl_keras.nas.controllers.enas import Controller
from wpl_keras.utils.validation import check_number

ENTROPY_MODES = ("bonus", "reward", "reward_sum")
BASELINE_INITS = ("zero", "first_reward")


def reinforce_loss(
    log_prob: tf.Tensor, entropy: tf.Tensor, advantage: tf.Tensor, entropy_weight: float
) -> tf.Tensor:
    """``loss = −(log π(a) · stop_gradient(A) + entropy_weight · H)`` (``"bonus"`` mode)."""
    return -(log_prob * tf.stop_gradient(advantage) + entropy_weight * entropy)


def ema_baseline(baseline: tf.Tensor, reward: tf.Tensor, decay: float) -> tf.Tensor:
    """``b ← decay · b + (1 − decay) · R``."""
    return decay * baseline + (1.0 - decay) * reward


def entropy_reward_advantages(
    reward: tf.Tensor,
    baseline: tf.Tensor,
    entropies: tf.Tensor,
    entropy_baselines: tf.Tensor,
    entropy_weight: float,
    *,
    summed: bool,
) -> tf.Tensor:
    """Per-decision advantages ``[D]`` when the entropy is part of the reward.

    ``summed=False`` (``"reward"``): ``A_k = (R − b) + w · (H_k − c_k)``.
    ``summed=True`` (``"reward_sum"``): every ``A_k = (R − b) + w · Σ_j (H_j − c_j)``.
    """
    gap = entropies - entropy_baselines
    if summed:
        gap = tf.reduce_sum(gap) * tf.ones_like(gap)
    return (reward - baseline) + entropy_weight * gap


def decision_loss(log_probs: tf.Tensor, advantages: tf.Tensor) -> tf.Tensor:
    """``loss = −Σ_k ℓ_k · stop_gradient(A_k)``."""
    return -tf.reduce_sum(log_probs * tf.stop_gradient(advantages))


def _check_choice(value: str, field: str, choices: Sequence[str]) -> str:
    if value not in choices:
        raise ValueError(f"{field} must be one of {list(choices)}, got {value!r}.")
    return value


class Reinforce:
    """Trains a :class:`~wpl_keras.nas.controllers.enas.Controller` from scalar rewards.

    See the module docstring for the formulas of each mode.

    Args:
        controller: the controller to train.
        learning_rate: Adam learning rate (ENAS RNN: 3.5e-4; CNN: 3.5e-3) when ``optimizer``
            is None.
        baseline_decay: EMA decay of the baseline (ENAS RNN: 0.95; CNN: 0.99).
        entropy_weight: ``w``, the entropy's weight (ENAS: 1e-4).
        entropy_mode: ``"bonus"`` (default: ``−w·H`` in the loss), ``"reward"`` (the release
            RNN: ``w·H_k`` added to decision ``k``'s reward) or ``"reward_sum"`` (ENAS TF:
            ``w·H`` added to the reward).
        baseline_init: ``"zero"`` (default) or ``"first_reward"`` (the release: the first
            update sets the baseline to its reward).
        baseline_reset_each_epoch: :meth:`start_epoch` resets the baselines to their start
            (the release: True; default False).
        optimizer: a Keras optimizer to use instead of Adam.

    Raises:
        ValueError: for a decay outside [0, 1), a negative entropy weight, a non-positive
            learning rate or an unknown ``entropy_mode``/``baseline_init``.
    """

    def __init__(
        self,
        controller: Controller,
        *,
        learning_rate: float = 3.5e-4,
        baseline_decay: float = 0.95,
        entropy_weight: float = 1e-4,
        entropy_mode: str = "bonus",
        baseline_init: str = "zero",
        baseline_reset_each_epoch: bool = False,
        optimizer: Optional[keras.optimizers.Optimizer] = None,
    ):
        baseline_decay = check_number("Reinforce baseline_decay", baseline_decay, minimum=0,
                                      maximum=1, exclusive_maximum=True)
        entropy_weight = check_number("Reinforce entropy_weight", entropy_weight, minimum=0)
        if optimizer is None:
            learning_rate = check_number("Reinforce learning_rate", learning_rate, minimum=0,
                                         exclusive_minimum=True)
        if not isinstance(baseline_reset_each_epoch, bool):
            raise ValueError(
                f"baseline_reset_each_epoch must be a bool, got {baseline_reset_each_epoch!r}."
            )
        self.controller = controller
        self.baseline_decay = float(baseline_decay)
        self.entropy_weight = float(entropy_weight)
        self.entropy_mode = _check_choice(entropy_mode, "entropy_mode", ENTROPY_MODES)
        self.baseline_init = _check_choice(baseline_init, "baseline_init", BASELINE_INITS)
        self.baseline_reset_each_epoch = baseline_reset_each_epoch
        self.optimizer = optimizer or keras.optimizers.Adam(learning_rate=learning_rate)
        # Create the optimizer slots now, outside the traced update.
        self.optimizer.build(controller.trainable_variables)
        self.baseline = tf.Variable(0.0, trainable=False, name="reinforce_baseline")
        self.entropy_baseline = tf.Variable(
            tf.zeros([controller.num_decisions]), trainable=False,
            name="reinforce_entropy_baseline")
        self.baseline_initialized = tf.Variable(
            False, trainable=False, name="reinforce_baseline_initialized")
        self.baseline_epoch = tf.Variable(
            -1, dtype=tf.int64, trainable=False, name="reinforce_baseline_epoch")
        self.step = tf.Variable(0, dtype=tf.int64, trainable=False, name="reinforce_step")
        spec = [
            tf.TensorSpec([controller.num_decisions], tf.int32),
            tf.TensorSpec([], tf.float32),
        ]
        self._update_fn = tf.function(self._update, input_signature=spec)
        mask_spec = tf.TensorSpec([controller.num_decisions], tf.float32)
        self._masked_update_fn = tf.function(self._update, input_signature=spec + [mask_spec])

    def _move(self, variable: tf.Variable, value: tf.Tensor, mask=None) -> tf.Tensor:
        """EMA step of ``variable`` towards ``value`` (``value`` itself on a first update under
        ``baseline_init="first_reward"``), only where ``mask`` is 1 when one is given; returns
        the new value."""
        moved = ema_baseline(variable, value, self.baseline_decay)
        if self.baseline_init == "first_reward":
            moved = tf.where(self.baseline_initialized, moved, value)
        if mask is not None:
            moved = mask * moved + (1.0 - mask) * variable
        variable.assign(moved)
        return moved

    def _bonus_terms(self, arch: tf.Tensor, mask):
        if mask is None:
            return self.controller._log_prob_and_entropy(arch)
        return self.controller._masked_log_prob_and_entropy(arch, mask)

    def _update(self, arch: tf.Tensor, reward: tf.Tensor, mask=None) -> Dict[str, tf.Tensor]:
        variables = self.controller.trainable_variables
        w = self.entropy_weight
        with tf.GradientTape() as tape:
            if self.entropy_mode == "bonus":
                log_prob, entropy = self._bonus_terms(arch, mask)
                advantage = reward - self._move(self.baseline, reward)
                loss = reinforce_loss(log_prob, entropy, advantage, w)
            else:
                log_probs, entropies = self.controller._decision_log_probs_and_entropies(arch)
                entropies = tf.stop_gradient(entropies)
                baseline = self._move(self.baseline, reward)
                entropy_baseline = self._move(self.entropy_baseline, entropies, mask)
                if mask is not None:
                    log_probs, entropies = mask * log_probs, mask * entropies
                    entropy_baseline = mask * entropy_baseline
                advantages = entropy_reward_advantages(
                    reward, baseline, entropies, entropy_baseline, w,
                    summed=self.entropy_mode == "reward_sum")
                loss = decision_loss(log_probs, advantages)
                log_prob, entropy = tf.reduce_sum(log_probs), tf.reduce_sum(entropies)
                if mask is None:
                    advantage = tf.reduce_mean(advantages)
                else:
                    advantage = tf.reduce_sum(mask * advantages) / tf.maximum(
                        tf.reduce_sum(mask), 1.0)
        self.baseline_initialized.assign(True)
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

    def update(self, arch: Sequence[int], reward: float, mask=None) -> Dict[str, float]:
        """One REINFORCE step for ``arch`` with reward ``reward``.

        Args:
            arch: the sampled decisions ``a`` (``D`` ints).
            reward: ``R``.
            mask: optional ``m ∈ {0, 1}^D``; only decisions with ``m_k = 1`` are learned
                from (see the module docstring). None: every decision (the unmasked update).

        Returns:
            Floats ``loss``, ``reward``, ``baseline`` (``b`` after the EMA step),
            ``advantage`` (``A``; the mean of ``A_k`` over the (active) decisions in the
            reward modes), ``log_prob`` and ``entropy`` (``Σ_k m_k ℓ_k`` and ``Σ_k m_k H_k``,
            ``m = 1`` without a mask, both before the optimizer step).

        Raises:
            ValueError: for an invalid architecture or mask, or a non-finite reward.
            TypeError: for a reward that is not a number.
        """
        reward = check_number("Reinforce.update: reward", reward)
        arch = self.controller._check_arch(arch)
        reward = tf.constant(reward, tf.float32)
        if mask is None:
            out = self._update_fn(arch, reward)
        else:
            out = self._masked_update_fn(arch, reward, self.controller.check_mask(mask))
        return {k: float(v) for k, v in out.items()}

    def for_controller(self, controller: Controller) -> "Reinforce":
        """This trainer's settings and state for a controller grown from its own
        (:meth:`~wpl_keras.nas.controllers.enas.Controller.grown`).

        The baseline ``b``, its "initialised" flag, the last started epoch and the step count
        carry over; the entropy baselines ``c_k`` of the old decisions carry over and the new
        ones start at 0. The optimizer is rebuilt from its config, so its slots (Adam's
        moments and step count) start afresh over the grown controller's variables.

        Raises:
            ValueError: if ``controller`` has fewer decisions than the current one.
        """
        old = self.controller.num_decisions
        if controller.num_decisions < old:
            raise ValueError(
                f"Reinforce.for_controller: the controller has {controller.num_decisions} "
                f"decisions, fewer than the current {old}."
            )
        optimizer = type(self.optimizer).from_config(self.optimizer.get_config())
        grown = Reinforce(
            controller,
            baseline_decay=self.baseline_decay,
            entropy_weight=self.entropy_weight,
            entropy_mode=self.entropy_mode,
            baseline_init=self.baseline_init,
            baseline_reset_each_epoch=self.baseline_reset_each_epoch,
            optimizer=optimizer,
        )
        extra = tf.zeros([controller.num_decisions - old])
        grown.entropy_baseline.assign(tf.concat([self.entropy_baseline, extra], 0))
        for name in ("baseline", "baseline_initialized", "baseline_epoch", "step"):
            getattr(grown, name).assign(getattr(self, name))
        return grown

    def reset_baseline(self) -> None:
        """Puts the baselines back to their start: ``b = 0``, ``c = 0``, not initialised."""
        self.baseline.assign(0.0)
        self.entropy_baseline.assign(tf.zeros_like(self.entropy_baseline))
        self.baseline_initialized.assign(False)

    def start_epoch(self, epoch: int) -> bool:
        """Marks the start of epoch ``epoch``'s controller work; idempotent per epoch.

        The first call for a new ``epoch`` resets the baselines when
        ``baseline_reset_each_epoch`` is set; later calls with the same ``epoch`` (for example
        after resuming mid-epoch, as the last reset epoch is checkpointed) change nothing.

        Returns:
            Whether the baselines were reset.
        """
        epoch = int(epoch)
        if epoch == int(self.baseline_epoch.numpy()):
            return False
        self.baseline_epoch.assign(epoch)
        if self.baseline_reset_each_epoch:
            self.reset_baseline()
            return True
        return False

    def checkpoint_items(self) -> Dict[str, object]:
        """Trackables holding the whole state (controller incl. its sampler, optimizer,
        baselines and their flag, the last started epoch, step count), for
        ``tf.train.Checkpoint(**items)``."""
        return {
            "controller": self.controller,
            "controller_optimizer": self.optimizer,
            "reinforce_baseline": self.baseline,
            "reinforce_entropy_baseline": self.entropy_baseline,
            "reinforce_baseline_initialized": self.baseline_initialized,
            "reinforce_baseline_epoch": self.baseline_epoch,
            "reinforce_step": self.step,
        }

    @property
    def tracing_count(self) -> int:
        return self._update_fn.experimental_get_tracing_count()

    @property
    def masked_tracing_count(self) -> int:
        return self._masked_update_fn.experimental_get_tracing_count()

    def get_config(self) -> dict:
        return {
            "baseline_decay": self.baseline_decay,
            "entropy_weight": self.entropy_weight,
            "entropy_mode": self.entropy_mode,
            "baseline_init": self.baseline_init,
            "baseline_reset_each_epoch": self.baseline_reset_each_epoch,
            "optimizer": keras.optimizers.serialize(self.optimizer),
        }
