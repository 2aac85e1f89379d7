"""Keras callbacks around the WPL state: flush, α schedule, anchors, logging, divergence.

The α schedule is the one schedule type of the package,
:class:`~wpl_keras.wpl.schedule.ScheduleConfig`, applied by :class:`StrengthScheduler` to
``model.fit``'s epochs exactly as the search driver applies it to a search's epochs.
"""

from __future__ import annotations

import math
from typing import Optional

import keras
import tensorflow as tf

from wpl_keras.utils.validation import check_number
from wpl_keras.wpl.fisher import WPLState
from wpl_keras.wpl.schedule import ScheduleConfig, flush_at, strength_at
from wpl_keras.wpl.training import WPLDivergenceError


class _StateCallback(keras.callbacks.Callback):
    def __init__(self, state: WPLState):
        super().__init__()
        if not isinstance(state, WPLState):
            raise TypeError(f"expected a WPLState, got {type(state).__name__}.")
        self.state = state


class FisherFlush(_StateCallback):
    """Resets the Fisher to zero at the start of every ``every``-th epoch (paper: 3)."""

    def __init__(self, state: WPLState, every: int = 3):
        super().__init__(state)
        self.every = check_number("FisherFlush: every", every, minimum=1, integer=True)

    def on_epoch_begin(self, epoch, logs=None):
        if epoch > 0 and epoch % self.every == 0:
            self.state.reset_fisher()


class StrengthScheduler(_StateCallback):
    """Applies a :class:`~wpl_keras.wpl.schedule.ScheduleConfig` to ``model.fit``'s epochs.

    At the start of epoch ``e``: the Fisher is reset iff ``flush_at(e, schedule)``, then
    ``state.strength ← strength_at(e, schedule)`` (0 before ``wpl_start_epoch``, else ``α0``
    decaying as the schedule says): the same functions, in the same order, as the search
    driver's epoch start. ``flush_every=0`` never flushes.

    Args:
        state: the WPL state whose ``strength`` variable holds ``α``.
        schedule: the schedule, e.g. ``ScheduleConfig(wpl_start_epoch=0, strength=10.0,
            strength_decay="linear", strength_decay_start=1, strength_decay_rate=2.0,
            flush_every=0)``.
    """

    def __init__(self, state: WPLState, schedule: ScheduleConfig):
        super().__init__(state)
        if not isinstance(schedule, ScheduleConfig):
            raise TypeError(
                "StrengthScheduler: schedule must be a wpl_keras.wpl.schedule.ScheduleConfig "
                f"(the one schedule type), got {type(schedule).__name__}; e.g. "
                "ScheduleConfig(wpl_start_epoch=0, strength=10.0, strength_decay=None, "
                "flush_every=0)."
            )
        self.schedule = schedule

    def on_epoch_begin(self, epoch, logs=None):
        if flush_at(epoch, self.schedule):
            self.state.reset_fisher()
        self.state.strength.assign(strength_at(epoch, self.schedule))


class SnapshotAnchors(_StateCallback):
    """``θ* ← θ`` when training ends (after training the earlier model of a sequence)."""

    def on_train_end(self, logs=None):
        self.state.snapshot_anchors()


class WPLMonitor(_StateCallback):
    """Writes ``wpl_strength``, ``wpl_penalty`` and ``wpl_fisher_norm`` into epoch logs.

    For plain Keras models trained through :func:`apply_wpl`'s regularizers (a
    :class:`~wpl_keras.wpl.WPLModel` logs these itself). Put it before ``TensorBoard`` or
    ``CSVLogger`` in the callback list so that they see the values.
    """

    def on_epoch_end(self, epoch, logs=None):
        if logs is None:
            return
        logs["wpl_strength"] = float(self.state.strength.numpy())
        logs["wpl_penalty"] = float(self.state.penalty().numpy())
        logs["wpl_fisher_norm"] = float(self.state.fisher_norm().numpy())


class DivergenceGuard(keras.callbacks.Callback):
    """Stops training with a :class:`WPLDivergenceError` on a NaN/Inf or exploding loss.

    The loss explodes when it exceeds ``factor`` times the smallest loss seen so far. The
    error names ``α`` and the learning rate and points to the stable proximal mode.

    Args:
        state: the WPL state (for ``α`` and ``max F`` in the message), or None.
        factor: ratio over the best loss that counts as exploding.
    """

    def __init__(self, state: Optional[WPLState] = None, factor: float = 1e3):
        super().__init__()
        self.state = state
        self.factor = check_number("DivergenceGuard: factor", factor, minimum=1,
                                   exclusive_minimum=True)
        self._best = math.inf

    def on_train_begin(self, logs=None):
        self._best = math.inf

    def on_train_batch_end(self, batch, logs=None):
        if not logs or "loss" not in logs:
            return
        loss = float(logs["loss"])
        exploded = math.isfinite(self._best) and self._best > 0 and loss > self.factor * self._best
        if not math.isfinite(loss) or exploded:
            lr = float(tf.convert_to_tensor(self.model.optimizer.learning_rate).numpy())
            self.model.stop_training = True
            raise WPLDivergenceError(self._message(batch, loss, lr))
        self._best = min(self._best, loss)

    def _message(self, batch: int, loss: float, lr: float) -> str:
        """What diverged, and the fix that fits: WPL's stability bound with a WPL state (α > 0),
        the data loss's step size without one."""
        head = f"Training diverged at batch {batch}: loss={loss:g} (best so far {self._best:g})"
        alpha = float(self.state.strength.numpy()) if self.state is not None else 0.0
        if alpha <= 0.0:
            return (f"{head} without a WPL penalty (learning rate={lr:g}): the data loss's own "
                    "steps diverged; lower the learning rate or the momentum, or clip gradients.")
        max_f = float(self.state.max_fisher().numpy())
        return (f"{head} with WPL alpha={alpha:g}, learning rate={lr:g}, max Fisher={max_f:g}. "
                "A gradient step on (alpha/2) F (theta - theta*)^2 is stable only while "
                "lr * alpha * max(F) < 2 (1 + momentum): lower alpha or the learning rate, or "
                "train with mode='proximal' (exact proximal step, stable for any alpha).")
