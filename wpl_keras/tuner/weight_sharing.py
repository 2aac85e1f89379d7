"""A KerasTuner tuner whose trials all train one set of shared weights, with WPL between trials.

:class:`WeightSharingTuner` runs each trial on the shared weights of a
:class:`~wpl_keras.nas.base.SharedWeightsTask` (this project's RNN and CNN supernets); any oracle
over the task's space proposes the architectures (:class:`~wpl_keras.tuner.enas.ENASOracle`,
:class:`~wpl_keras.tuner.nao.NAOOracle`, ``keras_tuner.oracles.RandomSearchOracle``).
"""

from __future__ import annotations

import os
from typing import Callable, Dict, Optional

import keras
import keras_tuner
import tensorflow as tf

from wpl_keras.nas.base import Architecture, SharedWeightsTask
from wpl_keras.tuner.controller_oracle import hyperparameters_to_architecture
from wpl_keras.tuner.shared_weights import SharedWeightStore, shared_task_variables
from wpl_keras.utils.checkpoint import check_checkpoint_covers
from wpl_keras.utils.validation import check_number
from wpl_keras.wpl.schedule import ScheduleConfig, flush_at, strength_at, wpl_active_at

# A tuner's default schedule: WPL from the first trial at a constant α 60, never flushed.
DEFAULT_TRIAL_SCHEDULE = ScheduleConfig(wpl_start_epoch=0, strength=60.0, strength_decay=None,
                                        flush_every=0)


class WeightSharingTuner(keras_tuner.engine.base_tuner.BaseTuner):
    """A tuner whose trials all train one shared supernet (a :class:`SharedWeightsTask`).

    ``run_trial`` for architecture ``a`` (read from the trial's hyperparameters):
    ``task.train_architecture(a, batches_per_trial, wpl_active=wpl_active_at(t, schedule))``
    where ``t`` is the number of trials run before it; first the Fisher is reset iff
    ``flush_at(t, schedule)`` and ``task.wpl_state.strength`` (the one variable of ``α``) is set
    to ``strength_at(t, schedule)``: the same schedule type and functions as a search
    (:class:`~wpl_keras.wpl.schedule.ScheduleConfig`), with trials for epochs. Then ``val_error = task.validation_error(a)`` (fixed validation batch) and
    ``reward = task.reward(a)``; it returns those and the training logs (``loss``,
    ``penalty``, ``wpl_strength``, ...), so the oracle's objective can be ``Objective("reward", "max")`` or
    ``Objective("val_error", "min")``. ``save()`` also writes the task's checkpoint (supernet,
    optimizer, WPL state) under the project directory; ``reload()`` reads it back.

    In distributed tuning the controller lives in the chief's oracle. Without
    ``shared_weights`` each worker trains its own copy of the task. With a
    :class:`~wpl_keras.tuner.shared_weights.SharedWeightStore` the workers train ONE supernet
    held on a parameter server: before its first trial a worker attaches
    ``shared_task_variables(task)`` (weights, optimizer slots, Fisher, anchors), every trial
    pulls them (``θ ← θ_ps``), trains, and pushes its change (``θ_ps += θ − θ_pulled``); the
    WPL schedule then counts the trials of all workers (the shared counter at the pull).

    Args:
        oracle: usually an :class:`ENASOracle` (any Oracle over ``task.space`` works).
        task: the shared-weights task.
        batches_per_trial: training batches per trial (paper RNN preset: 7).
        schedule: the WPL schedule over trials (``wpl_start_epoch``: trials of plain
            training before WPL turns on; ``strength``: ``α0``; decay and flush per trial).
            Default: WPL from the first trial, ``α = 60`` constant, no flush. The tasks
            start at ``α = 0``: a search's ``α`` belongs to its schedule.
        build_standalone: ``arch -> keras.Model`` for :meth:`load_model` / ``get_best_models``.
        shared_weights: a store that shares the task's state with the other workers (None:
            this process's task alone, as on one machine).
        **kwargs: ``directory``, ``project_name``, ``overwrite`` of ``BaseTuner``.
    """

    def __init__(
        self,
        oracle: keras_tuner.Oracle,
        task: SharedWeightsTask,
        *,
        batches_per_trial: int = 7,
        schedule: ScheduleConfig = DEFAULT_TRIAL_SCHEDULE,
        build_standalone: Optional[Callable[[Architecture], keras.Model]] = None,
        shared_weights: Optional[SharedWeightStore] = None,
        **kwargs,
    ):
        self.task = task
        if not isinstance(schedule, ScheduleConfig):
            raise TypeError(
                "WeightSharingTuner: schedule must be a wpl_keras.wpl.schedule.ScheduleConfig "
                f"(trials for epochs), got {type(schedule).__name__}; e.g. "
                "ScheduleConfig(wpl_start_epoch=2, strength=60.0, strength_decay=None, "
                "flush_every=0)."
            )
        self.schedule = schedule
        self.space = task.space
        self.batches_per_trial = check_number("WeightSharingTuner batches_per_trial", batches_per_trial,
                                              integer=True, minimum=1)
        self.build_standalone = build_standalone
        self.shared_weights = shared_weights
        self.trials_run = 0
        task_items = task.checkpoint_items()
        self._task_items = tuple(task_items.values())
        self._task_checkpoint = tf.train.Checkpoint(**task_items)
        super().__init__(oracle, hypermodel=None, **kwargs)

    def run_trial(self, trial, *args, **kwargs) -> Dict[str, float]:
        arch = hyperparameters_to_architecture(self.space, trial.hyperparameters)
        before = self._pull_shared()
        wpl_active = wpl_active_at(before, self.schedule)
        state = getattr(self.task, "wpl_state", None)
        if state is not None:
            if flush_at(before, self.schedule):
                state.reset_fisher()
            state.strength.assign(strength_at(before, self.schedule))
        logs = self.task.train_architecture(arch, self.batches_per_trial, wpl_active=wpl_active)
        if self.shared_weights is not None:
            self.shared_weights.push()
        self.trials_run += 1
        metrics = {k: float(v) for k, v in (logs or {}).items()}
        metrics["val_error"] = float(self.task.validation_error(arch))
        metrics["reward"] = float(self.task.reward(arch))
        metrics["wpl_active"] = float(wpl_active)
        metrics["wpl_strength"] = 0.0 if state is None else float(state.strength.numpy())
        return metrics

    def _pull_shared(self) -> int:
        """Trials run before this one: this worker's, or all workers' when weights are shared
        (then the shared state is pulled into the task first, attaching it on first use)."""
        store = self.shared_weights
        if store is None:
            return self.trials_run
        if not store.attached:
            store.attach(shared_task_variables(self.task))
        return store.pull().trials

    def load_model(self, trial) -> keras.Model:
        """A standalone model of the trial's architecture, from ``build_standalone``."""
        if self.build_standalone is None:
            raise ValueError(
                "WeightSharingTuner needs build_standalone(arch) -> keras.Model to return "
                "models; use get_best_hyperparameters() + hyperparameters_to_architecture()."
            )
        arch = hyperparameters_to_architecture(self.space, trial.hyperparameters)
        return self.build_standalone(arch)

    def save_model(self, trial_id, model, step=0):  # the supernet is saved by save()
        pass

    def get_best_architectures(self, num: int = 1):
        """Architectures of the ``num`` best trials."""
        return [
            hyperparameters_to_architecture(self.space, hp)
            for hp in self.get_best_hyperparameters(num)
        ]

    def get_state(self):
        state = super().get_state()
        state["trials_run"] = self.trials_run
        return state

    def set_state(self, state):
        super().set_state(state)
        self.trials_run = int(state.get("trials_run", 0))

    def _task_path(self) -> str:
        return os.path.join(self.project_dir, "supernet", "checkpoint")

    def save(self):
        super().save()
        check_checkpoint_covers(self._task_checkpoint, self._task_items)
        self._task_checkpoint.write(self._task_path())

    def reload(self):
        super().reload()
        if tf.io.gfile.exists(self._task_path() + ".index"):
            self._task_checkpoint.read(self._task_path()).assert_existing_objects_matched()
