"""The WPL schedule of a weight-sharing search, and the loop settings every search shares.

:class:`ScheduleConfig` is the schedule alone; :class:`LoopConfig` adds the loop's sizes,
checkpointing and verbosity, and is the base of :class:`~wpl_keras.nas.search.enas.SearchConfig`
(ENAS) and :class:`~wpl_keras.nas.search.nao.NAOSearchConfig` (NAO), which add their
controller's fields. The schedule as pure functions of the epoch:

* :func:`wpl_active_at`: ``e >= wpl_start_epoch`` (and ``wpl``);
* :func:`strength_at`: ``α(e)``, 0 while WPL is off, else
  :func:`~wpl_keras.wpl.strength_schedule` (constant ``α0``, or decaying linearly / by a
  factor per epoch from ``strength_decay_start``, never below ``strength_floor``);
* :func:`flush_at`: the Fisher is reset at the start of ``e`` iff WPL is on and
  ``e − wpl_start_epoch`` is a positive multiple of ``flush_every``.

The search driver (:mod:`wpl_keras.nas.search.driver`) is the one place that applies them.
"""

from __future__ import annotations

import dataclasses
from typing import Optional

from wpl_keras.utils.config import JsonConfig
from wpl_keras.utils.validation import check_fields
from wpl_keras.wpl import strength_schedule


# ---------------------------------------------------------------------------------------------
# Configs: the WPL schedule, and the loop settings every search shares.


@dataclasses.dataclass(frozen=True)
class ScheduleConfig(JsonConfig):
    """The WPL schedule over search epochs.

    Args:
        wpl: whether WPL is used at all.
        wpl_start_epoch: first epoch (0-based) with WPL on (paper: 5 RNN, 3 CNN).
        strength: ``α0`` (WPL release: 60).
        strength_decay: ``None``, ``"linear"`` or ``"exponential"`` (see
            :func:`~wpl_keras.wpl.strength_schedule`).
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


@dataclasses.dataclass(frozen=True)
class LoopConfig(ScheduleConfig):
    """The settings every search loop has: the WPL schedule (:class:`ScheduleConfig`) plus

    Args:
        epochs: search epochs.
        shared_steps_per_epoch: architectures trained per epoch (each one a "shared step";
            WPL release: 60, which with 7 batches each is about one PTB epoch).
        batches_per_arch: training batches per architecture (``B``; WPL release: 7).
        best_k: how many lowest-err1 architectures the "best-5" metric averages.
        checkpoint_every: also checkpoint every this many units of work (an architecture
            trained or a controller unit); 0 checkpoints only at epoch end and on signals.
        max_to_keep: checkpoints kept by the manager.
        verbose: 1 shows a progress bar and a summary line per epoch, 0 is silent.
    """

    epochs: int = 150
    shared_steps_per_epoch: int = 60
    batches_per_arch: int = 7
    best_k: int = 5
    checkpoint_every: int = 0
    max_to_keep: int = 2
    verbose: int = 1

    def __post_init__(self):
        super().__post_init__()
        positive = dict(integer=True, minimum=1)
        check_fields(self, {
            "epochs": positive, "shared_steps_per_epoch": positive,
            "batches_per_arch": positive, "best_k": positive, "max_to_keep": positive,
            "checkpoint_every": dict(integer=True, minimum=0),
            "verbose": dict(integer=True, minimum=0),
        })


# ---------------------------------------------------------------------------------------------
# The schedule, as pure functions of the epoch.


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
