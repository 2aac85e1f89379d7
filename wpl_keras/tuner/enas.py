"""ENAS as a KerasTuner oracle.

:class:`ENASOracle` is a :class:`~wpl_keras.tuner.controller_oracle.ControllerOracle` whose
controller is the ENAS LSTM (:class:`~wpl_keras.nas.controllers.enas.Controller`) trained by
REINFORCE with an EMA baseline and an entropy bonus (:class:`~wpl_keras.nas.controllers.reinforce.Reinforce`):
when a trial ends with score ``s``, ``R = reward(s)``, ``b ← decay·b + (1 − decay)·R`` and one
Adam step on ``−(log π(arch)·(R − b) + entropy_weight·H)``.

Two ways to use it:

1. with any build function / ``HyperModel`` and a standard ``keras_tuner.Tuner``: the oracle
   only proposes; the build function reads the architecture with
   :func:`~wpl_keras.tuner.controller_oracle.hyperparameters_to_architecture`;
2. with :class:`~wpl_keras.tuner.weight_sharing.WeightSharingTuner`: every trial trains the trial's architecture on the shared
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

from typing import Dict, Optional

import tensorflow as tf

from wpl_keras.nas.base import Architecture, SearchSpace
from wpl_keras.nas.controllers.enas import Controller
from wpl_keras.nas.controllers.reinforce import Reinforce
from wpl_keras.tuner.controller_oracle import ControllerAdapter, ControllerOracle


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
