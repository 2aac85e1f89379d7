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

Without a space (``space=None``) the oracle learns the hyperparameters the hypermodel
declares, as KerasTuner's own oracles do: the tuner's first builds (every conditional scope
activated) reach :meth:`ControllerOracle.update_space`, and every hyperparameter of the oracle's
``HyperParameters`` becomes one decision of the controller
(:func:`~wpl_keras.tuner.hyperparameter_decisions.decisions_from_hyperparameters`: ``Choice``,
``Boolean``, ``Fixed``, ``Int``, ``Float`` with a step or with ``float_bins``), in the order
they were declared:

* a trial's values are the values of the sampled indices of the *active* decisions only (a
  decision whose ``conditional_scope`` parents took other values gets no value, as in
  ``RandomSearchOracle``);
* the controller learns from the trial with the mask ``m_k = 1`` for the decisions that were
  active and sampled for it, ``m_k = 0`` otherwise (inactive, or declared after the trial was
  proposed), along the path it sampled (kept per trial in the oracle state);
* a hyperparameter first seen in a later trial (``update_space`` from ``end_trial``) is
  appended as a new decision: the adapter grows (:meth:`ControllerAdapter.grow`) and the
  decisions already learned keep their weights;
* the decision list is part of the JSON state, so ``overwrite=False`` grows the fresh
  controller to the saved size before its checkpoint is read.

A controller plugs in through :class:`ControllerAdapter` (ENAS: :mod:`wpl_keras.tuner.enas`).
"""

from __future__ import annotations

import abc
import math
import os
import time
from typing import Callable, Dict, Optional, Sequence, Tuple

import keras_tuner
import numpy as np
from keras_tuner.engine import trial as trial_module

from wpl_keras.nas.base import Architecture, InvalidArchitectureError, SearchSpace
from wpl_keras.tuner.hyperparameter_decisions import (
    Decision,
    DecisionOptions,
    active_mask,
    decisions_from_hyperparameters,
    indices_to_values,
    values_to_indices,
)
from wpl_keras.utils.validation import check_number

TrialStatus = trial_module.TrialStatus

CONTROLLER_CHECKPOINT = os.path.join("controller", "checkpoint")


class ControllerAdapter(abc.ABC):
    """What :class:`ControllerOracle` needs from a controller (ENAS, NAO, ...)."""

    @abc.abstractmethod
    def propose(self) -> Architecture:
        """A new architecture to evaluate (a tuple of ints of the space)."""

    @abc.abstractmethod
    def learn(self, arch: Architecture, reward: float, mask=None) -> Dict[str, float]:
        """Updates the controller from ``arch``'s reward (higher is better); returns logs.

        ``mask`` (``m ∈ {0, 1}^D`` or None for all ones): only decisions with ``m_k = 1`` are
        learned from."""

    def grow(self, decisions: Sequence[Decision]) -> None:
        """Makes the controller cover ``decisions`` (the current ones followed by new ones),
        keeping what it learned about the current ones. The first call, for a controller
        built without a space, creates it."""
        raise NotImplementedError(
            f"{type(self).__name__} works on a fixed SearchSpace only; it cannot learn the "
            "hyperparameters a hypermodel declares. Give its oracle a space."
        )

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


def _check_space_arguments(space, hyperparameters, decision_options) -> None:
    if space is not None and not isinstance(space, SearchSpace):
        raise TypeError(
            f"space must be a wpl_keras SearchSpace or None, got {type(space).__name__}; "
            "pass the objective by keyword (objective=...) when there is no space."
        )
    if space is not None and hyperparameters is not None:
        raise ValueError(
            "hyperparameters= is for an oracle without a space; a space's decisions are "
            "its hyperparameters."
        )
    if not isinstance(decision_options, DecisionOptions):
        raise TypeError(
            f"decision_options must be a DecisionOptions, got {type(decision_options).__name__}."
        )


class ControllerOracle(keras_tuner.Oracle):
    """KerasTuner oracle whose proposals come from a learned controller.

    Args:
        space: the search space, or None to learn the hypermodel's own hyperparameters (see
            the module docstring).
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
        hyperparameters, allow_new_entries, tune_new_entries: as ``keras_tuner.Oracle``;
            without a space only (with a space its decisions are the hyperparameters).
        decision_options: how ``Int``/``Float`` hyperparameters become decisions, without a
            space (:class:`~wpl_keras.tuner.hyperparameter_decisions.DecisionOptions`).
    """

    def __init__(
        self,
        space: Optional[SearchSpace],
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
        hyperparameters: Optional[keras_tuner.HyperParameters] = None,
        allow_new_entries: bool = True,
        tune_new_entries: bool = True,
        decision_options: DecisionOptions = DecisionOptions(),
    ):
        _check_space_arguments(space, hyperparameters, decision_options)
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
        if space is not None:
            hyperparameters, allow_new_entries, tune_new_entries = (
                space_hyperparameters(space), True, False)
        super().__init__(
            objective=objective,
            max_trials=max_trials,
            hyperparameters=hyperparameters,
            allow_new_entries=allow_new_entries,
            tune_new_entries=tune_new_entries,
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
        self.decision_options = decision_options
        self.decisions = ()
        # trial_id -> the full index path the controller sampled for it (no space only).
        self._sampled_paths: Dict[str, list] = {}
        if space is None:
            self._sync_decisions()

    # ------------------------------------------------------------ rewards
    def reward(self, score: float) -> float:
        """Controller reward of a score: ``reward_fn(score)`` or ``±score``."""
        if self.reward_fn is not None:
            return float(self.reward_fn(score))
        return float(score) if self.objective.direction == "max" else -float(score)

    def _learn(self, arch: Architecture, score: float, mask=None) -> None:
        if not len(arch) or (mask is not None and not np.any(mask)):
            return  # no decision the controller sampled for this trial: nothing to learn
        if mask is None:
            self.last_update = self.adapter.learn(arch, self.reward(score))
        else:
            self.last_update = self.adapter.learn(arch, self.reward(score), mask=mask)
        self.num_controller_updates += 1

    # --------------------------------------------------- hypermodel decisions
    def _sync_decisions(self) -> None:
        """Appends the decisions of hyperparameters new to ``self.hyperparameters`` and grows
        the controller to cover them."""
        decisions = decisions_from_hyperparameters(self.hyperparameters, self.decision_options)
        old = self.decisions
        if decisions == old:
            return
        if decisions[: len(old)] != old:
            raise RuntimeError(
                f"{type(self).__name__}: the hyperparameters changed order or definition "
                f"({[d.name for d in old]} -> {[d.name for d in decisions]}); only new ones "
                "may be appended."
            )
        self.adapter.grow(decisions)
        self.decisions = decisions

    def update_space(self, hyperparameters):
        """KerasTuner's ``update_space``; without a space the controller also grows to the new
        hyperparameters (see the module docstring)."""
        super().update_space(hyperparameters)
        if self.space is None:
            self._sync_decisions()

    def _propose(self) -> Tuple[Architecture, Optional[np.ndarray], dict]:
        """``(path, mask, values)`` of a new proposal (mask None for a space)."""
        if self.space is not None:
            arch = self.space.validate(self.adapter.propose())
            return arch, None, architecture_to_values(self.space, arch)
        if not self.decisions:
            return (), None, {}
        arch = tuple(int(a) for a in self.adapter.propose())
        return arch, active_mask(self.decisions, arch), indices_to_values(self.decisions, arch)

    def _trial_path(self, trial) -> Tuple[Architecture, Optional[np.ndarray]]:
        """The path and mask a finished trial is learned from (mask None for a space)."""
        if self.space is not None:
            return hyperparameters_to_architecture(self.space, trial.hyperparameters), None
        indices, mask = values_to_indices(self.decisions, trial.hyperparameters.values)
        sampled = self._sampled_paths.get(trial.trial_id)
        if sampled is None:
            return indices, mask
        n = len(sampled)
        path = tuple(sampled) + tuple(indices[n:])
        mask = np.concatenate([mask[:n], np.zeros(len(indices) - n, np.float32)])
        return path, mask

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
            arch, mask, values = self._propose()
            values_hash = self._compute_values_hash(values)
            if self.repeats == "rerun" or values_hash not in self._tried_so_far:
                if self.space is None:
                    self._sampled_paths[trial_id] = list(arch)
                return {"status": TrialStatus.RUNNING, "values": values}
            cached = self._cached_score(values_hash)
            if cached is not None and len(arch):
                self._learn(arch, cached, mask)
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
            arch, mask = self._trial_path(trial)
            self._learn(arch, trial.score, mask)

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
        if self.space is None and not self.decisions:
            path = None  # no hyperparameters yet: no controller to save
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
        state["space"] = self.space.name if self.space is not None else None
        if self.space is None:
            state["decisions"] = [d.describe() for d in self.decisions]
            state["sampled_paths"] = dict(self._sampled_paths)
        return state

    def _restore_decisions(self, state) -> None:
        """Recomputes the decisions from the restored hyperparameters, checks them against the
        saved ones and grows the controller to their number (before its checkpoint is read)."""
        saved = state.get("decisions", [])
        decisions = decisions_from_hyperparameters(self.hyperparameters, self.decision_options)
        described = [d.describe() for d in decisions[: len(saved)]]
        if described != saved:
            raise ValueError(
                f"{type(self).__name__}: the project's saved decisions "
                f"{[(d['name'], len(d['values'])) for d in saved]} differ from those of its "
                f"hyperparameters under this oracle's options "
                f"{[(d['name'], len(d['values'])) for d in described]}; resume with the "
                "float_bins / max_int_values the project was searched with."
            )
        self.decisions = ()
        if saved:
            self.adapter.grow(decisions[: len(saved)])
            self.decisions = decisions[: len(saved)]
        self._sampled_paths = {k: list(v) for k, v in state.get("sampled_paths", {}).items()}

    def set_state(self, state):
        super().set_state(state)
        mine = self.space.name if self.space is not None else None
        if "space" in state and state["space"] != mine:
            raise ValueError(f"project was searched over space {state['space']!r}, not {mine!r}.")
        if self.space is None:
            self._restore_decisions(state)
        info = state.get("controller") or {}
        self.num_controller_updates = int(info.get("num_updates", 0))
        self.num_cached_updates = int(info.get("num_cached_updates", 0))
        self.num_reaped_trials = int(info.get("num_reaped_trials", 0))
        if info.get("checkpoint"):
            self.adapter.load(os.path.join(self._project_dir, info["checkpoint"]))
        if self.space is None:
            self._sync_decisions()  # hyperparameters restored beyond the checkpoint, if any

    def best_architectures(self, num: int = 1):
        """Architectures of the ``num`` best trials (with a space only; without one, use
        ``get_best_trials`` or the tuner's ``get_best_hyperparameters``)."""
        if self.space is None:
            raise ValueError(
                "best_architectures needs a space; without one the best trials' values are "
                "their hyperparameters (oracle.get_best_trials(num))."
            )
        return [
            hyperparameters_to_architecture(self.space, t.hyperparameters)
            for t in self.get_best_trials(num)
        ]
