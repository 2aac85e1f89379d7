"""ENAS as a KerasTuner oracle.

:class:`ENASOracle` is a :class:`~wpl_keras.tuner.controller_oracle.ControllerOracle` whose
controller is the ENAS LSTM (:class:`~wpl_keras.nas.controllers.enas.Controller`) trained by
REINFORCE with an EMA baseline and an entropy bonus (:class:`~wpl_keras.nas.controllers.reinforce.Reinforce`):
when a trial ends with score ``s``, ``R = reward(s)``, ``b ← decay·b + (1 − decay)·R`` and one
Adam step on ``−(log π(arch)·(R − b) + entropy_weight·H)``.

Three ways to use it:

1. without a space, with any hypermodel and a standard ``keras_tuner.Tuner``, as
   ``RandomSearchOracle``: the controller's decisions are the hyperparameters the hypermodel
   declares (``hp.Choice``, ``hp.Int``, ``hp.Boolean``, ``hp.Float`` with a step or
   ``float_bins``, ``hp.Fixed``, inside ``conditional_scope`` too); inactive conditional
   hyperparameters are neither put into a trial nor learned from, and hyperparameters first
   declared in a later trial extend the controller
   (:mod:`wpl_keras.tuner.controller_oracle`, :mod:`wpl_keras.tuner.hyperparameter_decisions`);
2. with a :class:`~wpl_keras.nas.base.SearchSpace`, any build function / ``HyperModel`` and a
   standard ``keras_tuner.Tuner``: the oracle only proposes; the build function reads the
   architecture with :func:`~wpl_keras.tuner.controller_oracle.hyperparameters_to_architecture`;
3. with :class:`~wpl_keras.tuner.weight_sharing.WeightSharingTuner`: every trial trains the trial's architecture on the shared
   weights of a :class:`~wpl_keras.nas.base.SharedWeightsTask` for ``batches_per_trial``
   batches (with the Weight Plasticity Loss as its ``schedule`` says, one schedule step per
   trial) and
   scores it on validation (metrics ``val_error`` and ``reward``); the best trials become
   standalone models through a ``build_standalone(arch)`` callable.

With masks (mode 1, conditional hyperparameters) the update is
``−∇[Σ_k m_k log π(a_k | a_<k) · (R − b) + entropy_weight · Σ_k m_k H_k]``, ``m_k = 1`` for
the decisions active in the trial (:class:`~wpl_keras.nas.controllers.reinforce.Reinforce`).

Learning rate: the default ``3.5e-4`` is ENAS' RNN preset for thousands of controller steps;
a tuner of tens of trials moves its policy visibly only with a larger one (Adam steps are
about ``learning_rate`` per weight per trial; e.g. ``learning_rate=0.02``).

Example (mode 1):

>>> def build(hp):                                                          # doctest: +SKIP
...     model = keras.Sequential([keras.layers.Dense(hp.Choice("units", [16, 32])),
...                               keras.layers.Dense(10)])
...     model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
...     return model
>>> oracle = ENASOracle(objective=keras_tuner.Objective("val_accuracy", "max"),
...                     max_trials=20, learning_rate=0.02)                  # doctest: +SKIP
>>> tuner = keras_tuner.Tuner(oracle=oracle, hypermodel=build, directory="runs")  # +SKIP

Example (mode 2):

>>> oracle = ENASOracle(space, objective="val_accuracy", max_trials=20)   # doctest: +SKIP
>>> tuner = keras_tuner.Tuner(oracle=oracle, hypermodel=build_fn, directory="runs")  # +SKIP
"""

from __future__ import annotations

from typing import Callable, Dict, Mapping, Optional, Sequence, Tuple, Union

import keras_tuner
import tensorflow as tf

from wpl_keras.nas.base import Architecture, SearchSpace
from wpl_keras.nas.controllers.enas import Controller
from wpl_keras.nas.controllers.reinforce import Reinforce
from wpl_keras.tuner.controller_oracle import ControllerAdapter, ControllerOracle
from wpl_keras.tuner.hyperparameter_decisions import (
    DEFAULT_MAX_INT_VALUES,
    Decision,
    DecisionOptions,
)


class ENASAdapter(ControllerAdapter):
    """ENAS controller + REINFORCE behind the :class:`ControllerAdapter` interface.

    Args:
        controller: the LSTM controller (None: built by ``build`` at the first :meth:`grow`).
        reinforce: its REINFORCE trainer (None together with ``controller``).
        build: ``decision_sizes -> (Controller, Reinforce)``, used when there is no
            controller yet (an oracle without a space, before the hypermodel declared
            anything, or restoring a project).
    """

    def __init__(
        self,
        controller: Optional[Controller] = None,
        reinforce: Optional[Reinforce] = None,
        *,
        build: Optional[Callable[[Sequence[int]], Tuple[Controller, Reinforce]]] = None,
    ):
        if (controller is None) != (reinforce is None):
            raise ValueError("ENASAdapter needs both controller and reinforce, or neither.")
        if controller is None and build is None:
            raise ValueError("ENASAdapter without a controller needs build=.")
        self._build = build
        self._use(controller, reinforce)

    def _use(self, controller: Optional[Controller], reinforce: Optional[Reinforce]) -> None:
        self.controller = controller
        self.reinforce = reinforce
        self._checkpoint = (
            tf.train.Checkpoint(**reinforce.checkpoint_items()) if reinforce is not None
            else None
        )

    def _require(self) -> None:
        if self.controller is None:
            raise RuntimeError(
                "the ENAS controller has no decisions yet: the hypermodel has declared no "
                "hyperparameters (the tuner calls oracle.update_space after its first build)."
            )

    def grow(self, decisions: Sequence[Decision]) -> None:
        """Covers ``decisions``: builds the controller if there is none, keeps it when their
        sizes are its own, else grows it (:meth:`Controller.grown`, weights kept exactly) with
        :meth:`Reinforce.for_controller` (baselines kept, optimizer rebuilt). Sizes that do
        not extend the current ones (restoring a project over a used adapter) rebuild it.
        Conditions need nothing here: the oracle masks inactive decisions."""
        sizes = tuple(d.size for d in decisions)
        current = None if self.controller is None else tuple(self.controller.decision_sizes)
        if current == sizes:
            return
        if current is None or sizes[: len(current)] != current:
            self._use(*self._build(sizes))
            return
        grown = self.controller.grown(sizes)
        self._use(grown, self.reinforce.for_controller(grown))

    def propose(self) -> Architecture:
        self._require()
        return self.controller.sample_architecture()

    def learn(self, arch, reward: float, mask=None) -> Dict[str, float]:
        self._require()
        return self.reinforce.update(arch, reward, mask=mask)

    def save(self, path: str) -> None:
        self._require()
        self._checkpoint.write(path)

    def load(self, path: str) -> None:
        self._require()
        self._checkpoint.read(path).assert_existing_objects_matched()

    def state(self) -> dict:
        if self.reinforce is None:
            return {}
        return {
            "reinforce_step": int(self.reinforce.step.numpy()),
            "baseline": float(self.reinforce.baseline.numpy()),
        }


class ENASOracle(ControllerOracle):
    """KerasTuner oracle driven by an ENAS controller trained with REINFORCE.

    Args:
        space: the search space (one ``Choice`` per decision named by ``decision_names``),
            or None (default) to learn the hyperparameters the hypermodel declares.
        objective, max_trials: as ``keras_tuner.Oracle``.
        units, temperature, tanh_constant: controller settings (ENAS RNN preset: 100, 5, 2.5).
        learning_rate, baseline_decay, entropy_weight: REINFORCE settings (ENAS RNN preset:
            3.5e-4, 0.95, 1e-4; see the module docstring on the learning rate for tens of
            trials).
        entropy_mode, baseline_init: how the entropy enters the update and where the
            baseline starts (:class:`~wpl_keras.nas.controllers.reinforce.Reinforce`: ``"bonus"`` /
            ``"reward"`` (the WPL release) / ``"reward_sum"`` (ENAS TF); ``"zero"`` /
            ``"first_reward"``). A tuner has no epochs, so the baseline is never reset.
        controller_seed: seeds controller weights and sampling.
        float_bins: without a space, the number of values of a ``Float`` that has no step:
            one int for all, or ``{name: bins}`` (None: such a ``Float`` is an error).
        max_int_values: without a space, the most values an ``Int`` may have (default 100).
        hyperparameters, allow_new_entries, tune_new_entries: as ``keras_tuner.Oracle``,
            without a space.
        **kwargs: :class:`ControllerOracle` options (``reward_fn``, ``repeats``,
            ``max_resamples``, ``trial_timeout``, ``seed``, ``max_retries_per_trial``, ...).
    """

    def __init__(
        self,
        space: Optional[SearchSpace] = None,
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
        float_bins: Union[None, int, Mapping[str, int]] = None,
        max_int_values: int = DEFAULT_MAX_INT_VALUES,
        hyperparameters: Optional[keras_tuner.HyperParameters] = None,
        allow_new_entries: bool = True,
        tune_new_entries: bool = True,
        **kwargs,
    ):
        def build(decision_sizes):
            controller = Controller(
                decision_sizes,
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
            return controller, reinforce

        if space is not None and not isinstance(space, SearchSpace):
            raise TypeError(
                f"ENASOracle: space must be a wpl_keras SearchSpace or None, got "
                f"{type(space).__name__}; pass the objective by keyword (objective=...)."
            )
        if space is not None:
            adapter = ENASAdapter(*build(space.decision_sizes), build=build)
        else:
            build([1])  # checks every setting now rather than at the first build
            adapter = ENASAdapter(build=build)
        super().__init__(
            space, adapter, objective, max_trials,
            hyperparameters=hyperparameters,
            allow_new_entries=allow_new_entries,
            tune_new_entries=tune_new_entries,
            decision_options=DecisionOptions(float_bins=float_bins,
                                             max_int_values=max_int_values),
            **kwargs,
        )

    @property
    def controller(self) -> Optional[Controller]:
        """The LSTM controller (None without a space until the hypermodel declared a
        hyperparameter; replaced when it grows)."""
        return self.adapter.controller

    @property
    def reinforce(self) -> Optional[Reinforce]:
        """The controller's REINFORCE trainer (replaced with the controller when it grows)."""
        return self.adapter.reinforce
