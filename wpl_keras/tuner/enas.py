"""ENAS as a KerasTuner oracle, and a weight-sharing tuner that trains a supernet with WPL.

:class:`ENASOracle` is a :class:`~wpl_keras.tuner.controller_oracle.ControllerOracle` whose
controller is the ENAS LSTM (:class:`~wpl_keras.nas.controllers.enas.Controller`) trained by
REINFORCE with an EMA baseline and an entropy bonus (:class:`~wpl_keras.nas.controllers.reinforce.Reinforce`):
when a trial ends with score ``s``, ``R = reward(s)``, ``b ← decay·b + (1 − decay)·R`` and one
Adam step on ``−(log π(arch)·(R − b) + entropy_weight·H)``.

Two ways to use it:

1. with any build function / ``HyperModel`` and a standard ``keras_tuner.Tuner``: the oracle
   only proposes; the build function reads the architecture with
   :func:`~wpl_keras.tuner.controller_oracle.hyperparameters_to_architecture`;
2. with :class:`WeightSharingTuner`: every trial trains the trial's architecture on the shared
   weights of a :class:`~wpl_keras.nas.base.SharedWeightsTask` for ``batches_per_trial``
   batches (with the Weight Plasticity Loss as its ``schedule`` says, one schedule step per
   trial) and
   scores it on validation (metrics ``val_error`` and ``reward``); the best trials become
   standalone models through a ``build_standalone(arch)`` callable.

Example (mode 1):

>>> oracle = ENASOracle(space, objective="val_accuracy", max_trials=20)   # doctest: +SKIP
>>> tuner = keras_tuner.Tuner(oracle=oracle, hypermodel=build_fn, directory="runs")  # +SKIP
"""

from __future__ import annotations

import os
from typing import Callable, Dict, Optional

import keras
import keras_tuner
import tensorflow as tf

from wpl_keras.nas.base import Architecture, SearchSpace, SharedWeightsTask
from wpl_keras.nas.controllers.enas import Controller
from wpl_keras.nas.controllers.reinforce import Reinforce
from wpl_keras.tuner.controller_oracle import (
    ControllerAdapter,
    ControllerOracle,
    hyperparameters_to_architecture,
)
from wpl_keras.tuner.shared_weights import SharedWeightStore, shared_task_variables
from wpl_keras.utils.checkpoint import check_checkpoint_covers
from wpl_keras.utils.validation import check_number
from wpl_keras.wpl.schedule import ScheduleConfig, flush_at, strength_at, wpl_active_at

# A tuner's default schedule: WPL from the first trial at a constant α 60, never flushed.
DEFAULT_TRIAL_SCHEDULE = ScheduleConfig(wpl_start_epoch=0, strength=60.0, strength_decay=None,
                                        flush_every=0)


class ENASAdapter(ControllerAdapter):
    """ENAS controller + REINFORCE behind the :class:`ControllerAdapter` interface.

    Args:
        controller: the LSTM controller.
        reinforce: its REINFORCE trainer.
    """

    def __init__(self, controller: Controller, reinforce: Reinforce):
        self.controller = controller
        self.reinforce = reinforce
        self._checkpoint = tf.train.Checkpoint(**reinforce.checkpoint_items())

    def propose(self) -> Architecture:
        return self.controller.sample_architecture()

    def learn(self, arch, reward: float) -> Dict[str, float]:
        return self.reinforce.update(arch, reward)

    def save(self, path: str) -> None:
        self._checkpoint.write(path)

    def load(self, path: str) -> None:
        self._checkpoint.read(path).assert_existing_objects_matched()

    def state(self) -> dict:
        return {
            "reinforce_step": int(self.reinforce.step.numpy()),
            "baseline": float(self.reinforce.baseline.numpy()),
        }


class ENASOracle(ControllerOracle):
    """KerasTuner oracle driven by an ENAS controller trained with REINFORCE.

    Args:
        space: the search space; one ``Choice`` per decision named by ``decision_names``.
        objective, max_trials: as ``keras_tuner.Oracle``.
        units, temperature, tanh_constant: controller settings (ENAS RNN preset: 100, 5, 2.5).
        learning_rate, baseline_decay, entropy_weight: REINFORCE settings (ENAS RNN preset:
            3.5e-4, 0.95, 1e-4).
        entropy_mode, baseline_init: how the entropy enters the update and where the
            baseline starts (:class:`~wpl_keras.nas.controllers.reinforce.Reinforce`: ``"bonus"`` /
            ``"reward"`` (the WPL release) / ``"reward_sum"`` (ENAS TF); ``"zero"`` /
            ``"first_reward"``). A tuner has no epochs, so the baseline is never reset.
        controller_seed: seeds controller weights and sampling.
        **kwargs: :class:`ControllerOracle` options (``reward_fn``, ``repeats``,
            ``max_resamples``, ``trial_timeout``, ``seed``, ``max_retries_per_trial``, ...).
    """

    def __init__(
        self,
        space: SearchSpace,
        objective=None,
        max_trials: int = 10,
        *,
        units: int = 100,
        temperature: Optional[float] = None,
        tanh_constant: Optional[float] = None,
        learning_rate: float = 3.5e-4,
        baseline_decay: float = 0.95,
        entropy_weight: float = 1e-4,
        entropy_mode: str = "bonus",
        baseline_init: str = "zero",
        controller_seed: int = 0,
        **kwargs,
    ):
        controller = Controller(
            space.decision_sizes,
            units=units,
            temperature=temperature,
            tanh_constant=tanh_constant,
            seed=controller_seed,
        )
        reinforce = Reinforce(
            controller,
            learning_rate=learning_rate,
            baseline_decay=baseline_decay,
            entropy_weight=entropy_weight,
            entropy_mode=entropy_mode,
            baseline_init=baseline_init,
        )
        super().__init__(
            space, ENASAdapter(controller, reinforce), objective, max_trials, **kwargs
        )
        self.controller = controller
        self.reinforce = reinforce


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
