"""A KerasTuner ``Oracle`` driven by a learned architecture controller.

:class:`ControllerOracle` turns any controller that can ``propose()`` an architecture and
``learn(arch, reward)`` from its score into a KerasTuner oracle over a
:class:`~wpl_keras.nas.base.SearchSpace`:

* each decision ``k`` of the space is a ``Choice`` hyperparameter named
  ``space.decision_names[k]`` with values ``0 … decision_sizes[k] − 1``, so trials read well in
  ``results_summary()`` and :func:`hyperparameters_to_architecture` maps any trial back;
* a trial's values are the controller's proposal; when the trial ends, its score becomes a
  reward, ``R = reward_fn(score)`` (default ``R = score`` for a maximised objective and
  ``R = −score`` for a minimised one), and the controller learns from ``(arch, R)``;
* repeated proposals (``repeats``): with ``"cache"`` (default, right for models trained from
  scratch, whose score does not change), a proposal equal to a finished trial is NOT run
  again: the controller learns from the cached score and the oracle resamples, up to
  ``max_resamples`` times in a row, after which the search stops (the controller has
  converged onto architectures it already knows); a proposal equal to a trial still running is
  resampled the same way. With ``"rerun"`` (right for weight sharing, where the same
  architecture scores differently as the shared weights train) every proposal is a trial;
* state: ``get_state``/``set_state`` keep the JSON state of KerasTuner plus the relative path of
  a side file (a TensorFlow checkpoint under the project directory) with the controller's
  weights, optimizer and sampler, so ``overwrite=False`` resumes with the trained controller;
* workers that die (distributed tuning): with ``trial_timeout`` set, a trial whose tuner has
  not reported for ``trial_timeout`` seconds is taken back (retried while
  ``max_retries_per_trial`` allows, else marked ``FAILED``) and its tuner is forgotten, and idle
  workers wait (``IDLE``) for such trials instead of stopping, so the chief never waits forever
  for a dead worker. Set it above the longest trial: a standard Tuner reports only at the end.

A controller plugs in through :class:`ControllerAdapter` (ENAS: :mod:`wpl_keras.tuner.enas`).
"""

from __future__ import annotations

import abc
import math
import os
import time
from typing import Callable, Dict, Optional, Sequence

import keras_tuner
from keras_tuner.engine import trial as trial_module

from wpl_keras.nas.base import Architecture, InvalidArchitectureError, SearchSpace
from wpl_keras.utils.validation import check_number

TrialStatus = trial_module.TrialStatus

CONTROLLER_CHECKPOINT = os.path.join("controller", "checkpoint")


class ControllerAdapter(abc.ABC):
    """What :class:`ControllerOracle` needs from a controller (ENAS, NAO, ...)."""

    @abc.abstractmethod
    def propose(self) -> Architecture:
        """A new architecture to evaluate (a tuple of ints of the space)."""

    @abc.abstractmethod
    def learn(self, arch: Architecture, reward: float) -> Dict[str, float]:
        """Updates the controller from ``arch``'s reward (higher is better); returns logs."""

    @abc.abstractmethod
    def save(self, path: str) -> None:
        """Writes the controller's whole state to the checkpoint prefix ``path``."""

    @abc.abstractmethod
    def load(self, path: str) -> None:
        """Restores what :meth:`save` wrote at ``path``."""

    def state(self) -> dict:
        """Small JSON-serialisable facts stored in ``oracle.json`` (e.g. update count)."""
        return {}


def architecture_to_values(space: SearchSpace, arch: Sequence[int]) -> Dict[str, int]:
    """``{decision_names[k]: arch[k]}`` after validating ``arch`` against ``space``."""
    arch = space.validate(arch)
    return {name: int(value) for name, value in zip(space.decision_names, arch)}


def hyperparameters_to_architecture(space: SearchSpace, hp) -> Architecture:
    """The architecture held by a trial's ``HyperParameters`` (or a plain values dict).

    Raises:
        InvalidArchitectureError: if a decision is missing or out of range.
    """
    values = dict(hp) if isinstance(hp, dict) else hp.values
    missing = [name for name in space.decision_names if name not in values]
    if missing:
        raise InvalidArchitectureError(
            f"{space.name}: hyperparameters lack decisions {missing[:5]}"
            f"{' ...' if len(missing) > 5 else ''}."
        )
    return space.validate([values[name] for name in space.decision_names])


def space_hyperparameters(space: SearchSpace) -> keras_tuner.HyperParameters:
    """One unordered ``Choice`` per decision, named after ``space.decision_names``."""
    names = list(space.decision_names)
    if len(set(names)) != len(names):
        raise ValueError(f"{space.name}: decision names must be unique, got {names}.")
    hp = keras_tuner.HyperParameters()
    for name, size in zip(names, space.decision_sizes):
        hp.Choice(name, list(range(int(size))), ordered=False)
    return hp


class ControllerOracle(keras_tuner.Oracle):
    """KerasTuner oracle whose proposals come from a learned controller.

    Args:
        space: the search space.
        adapter: the controller (see :class:`ControllerAdapter`).
        objective: KerasTuner objective (name or ``keras_tuner.Objective``); single objective.
        max_trials: trial budget.
        reward_fn: maps a trial's score to the controller reward (default: ``score`` if the
            objective is maximised, ``−score`` if minimised).
        repeats: ``"cache"`` or ``"rerun"`` (see the module docstring).
        max_resamples: consecutive repeated proposals tolerated by ``"cache"`` before stopping.
        trial_timeout: seconds without a report after which a running trial is taken back
            (None: never; the KerasTuner behaviour).
        idle_wait: seconds an idle worker is held before asking again for a trial.
        seed, max_retries_per_trial, max_consecutive_failed_trials: as ``keras_tuner.Oracle``.
    """

    def __init__(
        self,
        space: SearchSpace,
        adapter: ControllerAdapter,
        objective=None,
        max_trials: int = 10,
        *,
        reward_fn: Optional[Callable[[float], float]] = None,
        repeats: str = "cache",
        max_resamples: int = 20,
        trial_timeout: Optional[float] = None,
        idle_wait: float = 0.5,
        seed: Optional[int] = None,
        max_retries_per_trial: int = 0,
        max_consecutive_failed_trials: int = 3,
    ):
        if repeats not in ("cache", "rerun"):
            raise ValueError(f"repeats must be 'cache' or 'rerun', got {repeats!r}.")
        count = dict(integer=True, minimum=0)
        max_trials = check_number("ControllerOracle max_trials", max_trials, integer=True,
                                  minimum=1, optional=True)
        max_resamples = check_number("ControllerOracle max_resamples", max_resamples, **count)
        trial_timeout = check_number("ControllerOracle trial_timeout (seconds)", trial_timeout,
                                     minimum=0, exclusive_minimum=True, optional=True)
        idle_wait = check_number("ControllerOracle idle_wait (seconds)", idle_wait, minimum=0)
        seed = check_number("ControllerOracle seed", seed, integer=True, optional=True)
        max_retries_per_trial = check_number("ControllerOracle max_retries_per_trial",
                                             max_retries_per_trial, **count)
        max_consecutive_failed_trials = check_number(
            "ControllerOracle max_consecutive_failed_trials", max_consecutive_failed_trials,
            integer=True, minimum=1)
        if isinstance(objective, (list, tuple)):
            raise ValueError("ControllerOracle needs a single objective (one reward).")
        if not isinstance(adapter, ControllerAdapter):
            raise TypeError(f"adapter must be a ControllerAdapter, got {type(adapter).__name__}.")
        super().__init__(
            objective=objective,
            max_trials=max_trials,
            hyperparameters=space_hyperparameters(space),
            allow_new_entries=True,
            tune_new_entries=False,
            seed=seed,
            max_retries_per_trial=max_retries_per_trial,
            max_consecutive_failed_trials=max_consecutive_failed_trials,
        )
        self.space = space
        self.adapter = adapter
        self.reward_fn = reward_fn
        self.repeats = repeats
        self.max_resamples = max_resamples
        self.trial_timeout = trial_timeout
        self.idle_wait = idle_wait
        self.num_controller_updates = 0
        self.num_cached_updates = 0
        self.num_reaped_trials = 0
        self.last_update: Dict[str, float] = {}
        self._last_seen: Dict[str, float] = {}

    # ------------------------------------------------------------ rewards
    def reward(self, score: float) -> float:
        """Controller reward of a score: ``reward_fn(score)`` or ``±score``."""
        if self.reward_fn is not None:
            return float(self.reward_fn(score))
        return float(score) if self.objective.direction == "max" else -float(score)

    def _learn(self, arch: Architecture, score: float) -> None:
        self.last_update = self.adapter.learn(arch, self.reward(score))
        self.num_controller_updates += 1

    def _cached_score(self, values_hash: str) -> Optional[float]:
        for trial_id, trial in self.trials.items():
            if (
                trial.status == TrialStatus.COMPLETED
                and self._id_to_hash[trial_id] == values_hash
                and trial.score is not None
                and math.isfinite(trial.score)
            ):
                return float(trial.score)
        return None

    # --------------------------------------------------------- KerasTuner
    def populate_space(self, trial_id):
        repeats = 0
        while True:
            arch = self.space.validate(self.adapter.propose())
            values = architecture_to_values(self.space, arch)
            values_hash = self._compute_values_hash(values)
            if self.repeats == "rerun" or values_hash not in self._tried_so_far:
                return {"status": TrialStatus.RUNNING, "values": values}
            cached = self._cached_score(values_hash)
            if cached is not None:
                self._learn(arch, cached)
                self.num_cached_updates += 1
            repeats += 1
            if repeats > self.max_resamples:
                print(
                    f"{type(self).__name__}: {repeats} proposals in a row were already tried; "
                    "the controller has converged, stopping the search."
                )
                return {"status": TrialStatus.STOPPED, "values": None}

    def score_trial(self, trial):
        super().score_trial(trial)
        if trial.score is not None and math.isfinite(trial.score):
            self._learn(hyperparameters_to_architecture(self.space, trial.hyperparameters),
                        trial.score)

    def create_trial(self, tuner_id):
        trial = self._create_trial(tuner_id)
        if trial.status == TrialStatus.IDLE:
            time.sleep(self.idle_wait)  # outside the oracle lock, before the worker asks again
        return trial

    @keras_tuner.synchronized
    def _create_trial(self, tuner_id):
        if self.trial_timeout is not None and tuner_id not in self.ongoing_trials:
            self._take_back_stale_trials()
            budget_spent = self.max_trials and len(self.trials) >= self.max_trials
            if budget_spent and not self._retry_queue and self.ongoing_trials:
                # Wait for running trials: one may die and come back for retry.
                return trial_module.Trial(
                    self.hyperparameters.copy(), trial_id="idle", status=TrialStatus.IDLE
                )
        trial = super().create_trial(tuner_id)
        if trial.status == TrialStatus.RUNNING:
            self._last_seen[trial.trial_id] = time.monotonic()
        return trial

    @keras_tuner.synchronized
    def update_trial(self, trial_id, metrics, step=0):
        self._last_seen[trial_id] = time.monotonic()
        return super().update_trial(trial_id, metrics, step=step)

    @keras_tuner.synchronized
    def end_trial(self, trial):
        self._last_seen.pop(trial.trial_id, None)
        super().end_trial(trial)

    def _take_back_stale_trials(self) -> None:
        """Ends trials not heard of for ``trial_timeout`` s: retry, or ``FAILED``."""
        now = time.monotonic()
        for tuner_id, trial in list(self.ongoing_trials.items()):
            seen = self._last_seen.setdefault(trial.trial_id, now)
            if now - seen <= self.trial_timeout:
                continue
            self.ongoing_trials.pop(tuner_id)
            self.tuner_ids.discard(tuner_id)
            self._last_seen.pop(trial.trial_id, None)
            trial.status = TrialStatus.INVALID
            trial.message = (
                f"tuner {tuner_id!r} sent no report for {self.trial_timeout:g} s; "
                "presumed dead, trial taken back."
            )
            print(f"{type(self).__name__}: trial {trial.trial_id}: {trial.message}")
            self._run_times[trial.trial_id] += 1
            if not self._retry(trial):
                self.end_order.append(trial.trial_id)
            self.num_reaped_trials += 1
            self._save_trial(trial)
            self.save()

    # -------------------------------------------------------------- state
    def _controller_path(self) -> Optional[str]:
        if getattr(self, "_directory", None) is None:
            return None
        return os.path.join(self._project_dir, CONTROLLER_CHECKPOINT)

    def get_state(self):
        state = super().get_state()
        path = self._controller_path()
        if path is not None:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            self.adapter.save(path)
        state["controller"] = {
            "checkpoint": CONTROLLER_CHECKPOINT if path is not None else None,
            "adapter": type(self.adapter).__name__,
            "num_updates": self.num_controller_updates,
            "num_cached_updates": self.num_cached_updates,
            "num_reaped_trials": self.num_reaped_trials,
            **self.adapter.state(),
        }
        state["space"] = self.space.name
        return state

    def set_state(self, state):
        super().set_state(state)
        if state.get("space", self.space.name) != self.space.name:
            raise ValueError(
                f"project was searched over space {state['space']!r}, not {self.space.name!r}."
            )
        info = state.get("controller") or {}
        self.num_controller_updates = int(info.get("num_updates", 0))
        self.num_cached_updates = int(info.get("num_cached_updates", 0))
        self.num_reaped_trials = int(info.get("num_reaped_trials", 0))
        if info.get("checkpoint"):
            self.adapter.load(os.path.join(self._project_dir, info["checkpoint"]))

    def best_architectures(self, num: int = 1):
        """Architectures of the ``num`` best trials."""
        return [
            hyperparameters_to_architecture(self.space, t.hyperparameters)
            for t in self.get_best_trials(num)
        ]
