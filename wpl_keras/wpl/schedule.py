"""The one WPL schedule type: ``α``, WPL on/off and the Fisher flush as pure functions of an epoch.

:class:`ScheduleConfig` is the schedule. The search driver
(:mod:`wpl_keras.nas.search.driver`, epochs of a search), the weight-sharing tuner
(:class:`~wpl_keras.tuner.weight_sharing.WeightSharingTuner`, one "epoch" per trial) and ``model.fit``
(:class:`~wpl_keras.wpl.callbacks.StrengthScheduler`, Keras epochs) all apply it through the
same three functions, writing ``α`` into the one variable that holds it,
``WPLState.strength``:

* :func:`wpl_active_at`: ``e >= wpl_start_epoch`` (and ``wpl``);
* :func:`strength_at`: ``α(e)``, 0 while WPL is off, else :func:`strength_schedule`::

      α(e) = α0                                      for e < start
      α(e) = max(floor, α0 − rate · (e − start + 1))  linear decay
      α(e) = max(floor, α0 · rate^(e − start + 1))    exponential decay

* :func:`flush_at`: the Fisher is reset at the start of ``e`` iff WPL is on and
  ``e − wpl_start_epoch`` is a positive multiple of ``flush_every``.
"""

from __future__ import annotations

import dataclasses
from typing import Optional

from wpl_keras.utils.config import JsonConfig
from wpl_keras.utils.validation import check_fields, check_number


def strength_schedule(
    epoch: int,
    *,
    initial: float,
    decay: Optional[str] = None,
    start_epoch: int = 0,
    rate: float = 0.0,
    floor: float = 0.0,
) -> float:
    """``α`` at ``epoch``: constant, then linear or exponential decay after ``start_epoch``.

    Args:
        epoch: 0-based epoch.
        initial: ``α0``.
        decay: ``None`` (constant), ``"linear"`` (``α0 − rate·(e − start + 1)``) or
            ``"exponential"`` (``α0 · rate^(e − start + 1)``, ``0 < rate <= 1``).
        start_epoch: first epoch whose ``α`` decays.
        rate: decay per epoch (amount for linear, factor for exponential).
        floor: ``α`` never goes below this.
    """
    epoch = check_number("strength_schedule: epoch", epoch, minimum=0, integer=True)
    initial = check_number("strength_schedule: initial", initial, minimum=0, allow_inf=True)
    start_epoch = check_number("strength_schedule: start_epoch", start_epoch, minimum=0,
                               integer=True)
    floor = check_number("strength_schedule: floor", floor, minimum=0)
    exponential = decay == "exponential"
    rate = check_number("strength_schedule: rate", rate, minimum=0,
                        exclusive_minimum=exponential, maximum=1 if exponential else None)
    if decay is None or epoch < start_epoch:
        return initial
    steps = epoch - start_epoch + 1
    if decay == "linear":
        value = initial - rate * steps
    elif exponential:
        value = initial * rate**steps
    else:
        raise ValueError(f"decay must be None, 'linear' or 'exponential', got {decay!r}.")
    return float(max(floor, value))



@dataclasses.dataclass(frozen=True)
class ScheduleConfig(JsonConfig):
    """The WPL schedule over epochs (a search's epochs, a tuner's trials or ``model.fit``'s).

    Args:
        wpl: whether WPL is used at all.
        wpl_start_epoch: first epoch (0-based) with WPL on (paper: 5 RNN, 3 CNN).
        strength: ``α0`` (WPL release: 60).
        strength_decay: ``None``, ``"linear"`` or ``"exponential"`` (see
            :func:`strength_schedule`).
        strength_decay_start: first epoch whose ``α`` decays (WPL release RNN: 15).
        strength_decay_rate: amount (linear) or factor (exponential) per epoch (RNN: 1).
        strength_floor: ``α`` never goes below this.
        flush_every: reset the Fisher every this many epochs after WPL turned on (WPL release
            RNN: 2; paper: 3). 0 never flushes.
    """

    wpl: bool = True
    wpl_start_epoch: int = 5
    strength: float = 60.0
    strength_decay: Optional[str] = "linear"
    strength_decay_start: int = 15
    strength_decay_rate: float = 1.0
    strength_floor: float = 0.0
    flush_every: int = 2

    def __post_init__(self):
        name = type(self).__name__
        if self.strength_decay not in (None, "linear", "exponential"):
            raise ValueError(
                f"{name}.strength_decay must be None, 'linear' or 'exponential', "
                f"got {self.strength_decay!r}."
            )
        exponential = self.strength_decay == "exponential"
        count = dict(integer=True, minimum=0)
        check_fields(self, {
            "wpl_start_epoch": count, "flush_every": count, "strength_decay_start": count,
            "strength": dict(minimum=0), "strength_floor": dict(minimum=0),
            # an amount per epoch (linear) or a factor in (0, 1] (exponential)
            "strength_decay_rate": dict(minimum=0, exclusive_minimum=exponential,
                                        maximum=1 if exponential else None),
        })

    def schedule(self) -> "ScheduleConfig":
        """The schedule fields alone, as a plain :class:`ScheduleConfig`."""
        names = [f.name for f in dataclasses.fields(ScheduleConfig)]
        return ScheduleConfig(**{n: getattr(self, n) for n in names})


def wpl_active_at(epoch: int, config: ScheduleConfig) -> bool:
    """WPL is on at ``epoch`` iff ``config.wpl`` and ``epoch >= wpl_start_epoch``."""
    return bool(config.wpl) and epoch >= config.wpl_start_epoch


def strength_at(epoch: int, config: ScheduleConfig) -> float:
    """``α(epoch)``: 0 while WPL is off, else :func:`strength_schedule` of the config."""
    if not wpl_active_at(epoch, config):
        return 0.0
    return strength_schedule(
        epoch,
        initial=config.strength,
        decay=config.strength_decay,
        start_epoch=config.strength_decay_start,
        rate=config.strength_decay_rate,
        floor=config.strength_floor,
    )


def flush_at(epoch: int, config: ScheduleConfig) -> bool:
    """The Fisher is reset at the start of ``epoch`` iff WPL is on and ``epoch`` is a positive
    multiple of ``flush_every`` epochs after ``wpl_start_epoch``."""
    if not wpl_active_at(epoch, config) or config.flush_every == 0:
        return False
    since = epoch - config.wpl_start_epoch
    return since > 0 and since % config.flush_every == 0
