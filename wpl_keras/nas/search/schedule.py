"""The loop settings every weight-sharing search shares.

:class:`LoopConfig` is the WPL schedule (:class:`~wpl_keras.wpl.schedule.ScheduleConfig`, the one
schedule type, with its pure functions ``wpl_active_at``, ``strength_at`` and ``flush_at``)
plus the loop's sizes, checkpointing and verbosity; it is the base of
:class:`~wpl_keras.nas.search.enas.SearchConfig` (ENAS) and
:class:`~wpl_keras.nas.search.nao.NAOSearchConfig` (NAO), which add their controller's fields.
The search driver (:mod:`wpl_keras.nas.search.driver`) is the one place a search applies the
schedule.
"""

from __future__ import annotations

import dataclasses

from wpl_keras.utils.validation import check_fields
from wpl_keras.wpl.schedule import ScheduleConfig


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
