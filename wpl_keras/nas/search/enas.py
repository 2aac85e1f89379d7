"""The ENAS search with the Weight Plasticity Loss (ENAS + WPL, paper §3.2).

ENAS supplies its phases to the search driver (:mod:`wpl_keras.nas.search.driver`) as
:class:`ENASStrategy`; each epoch ``e`` of :func:`run_search`:

1. ``SHARED``: ``shared_steps_per_epoch`` times, sample an architecture ``a`` from the
   controller, train its shared weights on the next ``batches_per_arch`` batches
   (``task.train_architecture``), then record ``err1(a) = task.validation_error(a)`` on the
   task's fixed validation batch.
2. ``CONTROLLER``: ``controller_steps`` REINFORCE updates, each on a freshly sampled
   architecture and its reward ``task.reward(a)``, preceded by ``reinforce.start_epoch(e)``
   (which resets the baseline at the epoch's first update when REINFORCE is set to); the
   epoch record gets ``mean_reward`` and the means of REINFORCE's statistics
   (``controller_*``).
3. ``EPOCH_END``: ``err2(a)`` for every architecture of step 1, and the forgetting metrics of
   :mod:`wpl_keras.nas.analysis.metrics` (mean / best-5 / max of ``err2 − err1``).

The driver applies the WPL schedule (:class:`~wpl_keras.wpl.schedule.ScheduleConfig`: off for the
first ``wpl_start_epoch`` epochs, then ``α(e)`` written into ``task.wpl_state.strength`` at
the start of each epoch and the Fisher reset every ``flush_every`` epochs), restores, defers
SIGINT/SIGTERM, commits each unit, checkpoints and writes the logs; see its docstring. The
checkpoint holds ``loop``, ``controller``, ``reinforce_*`` (REINFORCE's
``checkpoint_items()``) and ``task_*`` (the task's), so an interrupted then resumed run equals
an uninterrupted one.

Outputs in ``out_dir``: ``search_config.json``, ``task_config.json``, ``history.csv`` (one row
per epoch), ``history.json`` (per-epoch records with per-architecture err1/err2), TensorBoard
scalars under ``tb/`` and checkpoints under ``ckpt/``.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable, Dict, List, Optional

import numpy as np
import tensorflow as tf

from wpl_keras.nas.search.driver import (
    LoopState,
    SearchResult,
    SearchStrategy,
    checkpoint_items,
    mean_of_dicts,
    numeric_values,
    restore_checkpoint,
    run_driver,
)
from wpl_keras.nas.search.schedule import LoopConfig
from wpl_keras.utils.validation import check_fields


@dataclasses.dataclass(frozen=True)
class SearchConfig(LoopConfig):
    """Settings of the ENAS search: the loop and WPL schedule of
    :class:`~wpl_keras.nas.search.schedule.LoopConfig` (``epochs``, ``shared_steps_per_epoch``,
    ``batches_per_arch``, ``best_k``, ``checkpoint_every``, ``max_to_keep``, ``verbose``, and
    the :class:`~wpl_keras.wpl.schedule.ScheduleConfig` fields ``wpl``, ``wpl_start_epoch``,
    ``strength``, ``strength_decay``, ``strength_decay_start``, ``strength_decay_rate``,
    ``strength_floor``, ``flush_every``; defaults: the WPL release's RNN run) plus

    Args:
        controller_steps: REINFORCE updates per epoch.
    """

    controller_steps: int = 2000

    def __post_init__(self):
        super().__post_init__()
        check_fields(self, {"controller_steps": dict(integer=True, minimum=0)})


# ---------------------------------------------------------------------------------------------
# Checkpoint and the ENAS strategy.


def _strategy_items(controller, reinforce) -> Dict[str, Any]:
    items: Dict[str, Any] = {"controller": controller}
    items.update({f"reinforce_{k}": v for k, v in reinforce.checkpoint_items().items()})
    return items


def _checkpoint_items(task, controller, reinforce, loop: LoopState) -> Dict[str, Any]:
    """The ENAS search checkpoint's objects (``loop``, ``controller``, ``reinforce_*``,
    ``task_*``)."""
    return checkpoint_items(task, loop, _strategy_items(controller, reinforce))


def make_checkpoint_manager(
    task, controller, reinforce, directory: str, max_to_keep: int = 2
) -> "tuple[tf.train.CheckpointManager, LoopState]":
    """A ``CheckpointManager`` over the whole search state (task, controller, REINFORCE, loop),
    with the same keys as the one :func:`run_search` writes.

    Returns:
        ``(manager, loop_state)``.
    """
    loop = LoopState()
    ckpt = tf.train.Checkpoint(**_checkpoint_items(task, controller, reinforce, loop))
    return tf.train.CheckpointManager(ckpt, directory, max_to_keep=max_to_keep), loop


def restore_latest(task, controller, reinforce, out_dir: str) -> Dict[str, Any]:
    """Restores the latest search checkpoint under ``out_dir/ckpt`` into the given objects
    (on a worker of a multi-worker task other than the chief, from its private folder
    :func:`~wpl_keras.nas.search.distribute.worker_out_dir`, where :func:`run_search` wrote;
    see :func:`~wpl_keras.nas.search.driver.restore_checkpoint`).

    Returns:
        ``{"checkpoint": path, "epoch": completed epochs, "history": [...]}``.

    Raises:
        FileNotFoundError: if there is no checkpoint.
    """
    return restore_checkpoint(task, _strategy_items(controller, reinforce), out_dir)


class ENASStrategy(SearchStrategy):
    """ENAS's phases: the controller samples the architectures to train; each ``CONTROLLER``
    unit is one REINFORCE update on a fresh sample and its reward ``task.reward(a)``."""

    progress_keys = ("reward",)

    def __init__(self, task, controller, reinforce, config: SearchConfig):
        self.task, self.controller, self.reinforce, self.config = (
            task, controller, reinforce, config)

    def checkpoint_items(self) -> Dict[str, Any]:
        return _strategy_items(self.controller, self.reinforce)

    def config_json(self) -> Dict[str, Any]:
        return self.config.to_json()

    def next_architecture(self):
        return self.controller.sample_architecture()

    def controller_units(self, epoch: int) -> int:
        return self.config.controller_steps

    def controller_unit(self, epoch: int) -> Dict[str, Any]:
        """One REINFORCE update; the epoch's first one starts REINFORCE's epoch
        (``reinforce.start_epoch(epoch)``: resets the baseline when it is set to, once per
        epoch, also across a resume)."""
        self.reinforce.start_epoch(epoch)
        arch = tuple(int(a) for a in self.controller.sample_architecture())
        reward = float(self.task.reward(arch))
        stats = numeric_values(self.reinforce.update(arch, reward))
        return {"reward": reward, "stats": stats}

    def epoch_fields(self, entries: List[Dict[str, Any]]) -> Dict[str, Any]:
        """``mean_reward`` and ``controller_<key>``: the means over the epoch's updates."""
        rewards = [e["reward"] for e in entries]
        fields = {"mean_reward": float(np.mean(rewards)) if rewards else math.nan}
        fields.update(mean_of_dicts([e["stats"] for e in entries], "controller_"))
        return fields

    def summary(self, record: Dict[str, Any]) -> str:
        return f"mean reward {record['mean_reward']:.4g}"


def run_search(
    task,
    controller,
    reinforce,
    config: SearchConfig,
    out_dir: str,
    *,
    resume: bool = False,
    handle_signals: bool = True,
    on_epoch_end: Optional[Callable[[Dict[str, Any]], None]] = None,
) -> SearchResult:
    """Runs (or resumes) an ENAS search with WPL on ``task``; see the module docstring.

    Args:
        task: a :class:`~wpl_keras.nas.base.SharedWeightsTask` with a ``wpl_state``.
        controller: proposes architectures (``sample_architecture() -> tuple``).
        reinforce: trains the controller (``update(arch, reward) -> dict``,
            ``start_epoch(epoch)``, called before each controller update, and
            ``checkpoint_items() -> dict``; a :class:`~wpl_keras.nas.controllers.reinforce.Reinforce`).
        config: the loop's :class:`SearchConfig`.
        out_dir: where logs, TensorBoard scalars and checkpoints go (a worker of a
            multi-worker task other than the chief writes its private folder
            :func:`~wpl_keras.nas.search.distribute.worker_out_dir` instead; see
            :mod:`wpl_keras.nas.search.driver`).
        resume: restore the latest checkpoint in ``out_dir`` and continue from it. Without
            it, an existing checkpoint there is an error (no silent overwrite).
        handle_signals: defer SIGINT/SIGTERM to a clean save point (main thread only).
        on_epoch_end: called with each finished epoch's record.

    Returns:
        A :class:`SearchResult` with the per-epoch history.

    Raises:
        FileExistsError: ``out_dir`` holds a checkpoint and ``resume`` is False.
        SearchInterrupted: after saving, when SIGINT/SIGTERM arrived.
    """
    if not isinstance(config, SearchConfig):
        raise TypeError(f"config must be a SearchConfig, got {type(config).__name__}.")
    strategy = ENASStrategy(task, controller, reinforce, config)
    return run_driver(task, strategy, config, out_dir, resume=resume,
                      handle_signals=handle_signals, on_epoch_end=on_epoch_end)
