"""NAO as a KerasTuner oracle (a :class:`~wpl_keras.tuner.controller_oracle.ControllerOracle`).

:class:`NAOAdapter` puts the NAO controller (:class:`~wpl_keras.nas.controllers.nao.NAOController`)
behind the ``propose()`` / ``learn(arch, reward)`` interface, in NAO's batch rhythm:

* it first proposes ``seed_archs`` distinct random architectures of the space;
* every finished trial adds ``(arch, reward)`` to its scored set (the latest reward of an
  architecture wins, as weight sharing re-scores architectures);
* when its queue runs empty it trains the controller on the scored set (rewards min-max
  normalised to ``[0, 1]``, higher is better), moves the embeddings of the ``top_k_seeds`` best
  by gradient ascent on the predicted score (``z' = z + η ∇f(z)``, ``η`` growing) and queues
  up to ``new_archs`` decoded architectures not scored yet; when ascent finds none it queues
  random unscored ones, so a proposal is always available.

Without a space (``NAOOracle(objective=..., max_trials=...)``) the decisions are the
hyperparameters the hypermodel declares (as for :class:`~wpl_keras.tuner.enas.ENASOracle`),
but only where NAO's token sequence maps cleanly onto them: one token per decision, the same
decisions in every architecture. So NAO refuses, with an error that says why:

* conditional hyperparameters (``conditional_scope``): NAO encodes, predicts from and decodes
  whole sequences; an inactive decision would be a token the model never used, scored as if
  it mattered, and the decoder has no notion of a token that is absent;
* a hyperparameter first declared after the search started (a later trial): the encoder,
  predictor and decoder are trained on sequences of one length and the scored set holds
  sequences of that length, so there is no sequence to extend them to. Hyperparameters
  declared before the first proposal (the tuner's first builds) are fine.

Its whole state (controller weights, Adam state, shuffling stream, queue, scored set and the
random generator) goes into the oracle's side checkpoint, so ``overwrite=False`` resumes it.
:class:`NAOOracle` is the oracle; pair it with any Tuner, or with
:class:`~wpl_keras.tuner.weight_sharing.WeightSharingTuner` for weight sharing (use ``repeats="rerun"``).
"""

from __future__ import annotations

import json
from typing import Dict, List, Mapping, Optional, Sequence, Union

import keras_tuner
import numpy as np
import tensorflow as tf

from wpl_keras.nas.base import Architecture, SearchSpace
from wpl_keras.nas.controllers.nao import NAOConfig, NAOController, normalize_scores
from wpl_keras.tuner.controller_oracle import ControllerAdapter, ControllerOracle
from wpl_keras.tuner.hyperparameter_decisions import (
    DEFAULT_MAX_INT_VALUES,
    Decision,
    DecisionOptions,
    DecisionSpace,
)
from wpl_keras.utils.validation import check_number


class NAOAdapter(ControllerAdapter):
    """The NAO controller behind :class:`ControllerAdapter` (see the module docstring).

    Args:
        space: the search space, or None to build it at the first :meth:`grow` from the
            hypermodel's decisions (see the module docstring).
        controller: a :class:`NAOController` over ``space.decision_sizes`` (built from
            ``config`` and ``seed`` when None).
        config: the controller's :class:`NAOConfig` when ``controller`` is None.
        seed_archs: random architectures proposed first (at least 2).
        new_archs: architectures generated per controller round.
        top_k_seeds: best scored architectures used as ascent seeds.
        seed: seeds the random proposals (and a built controller).
    """

    def __init__(
        self,
        space: Optional[SearchSpace],
        controller: Optional[NAOController] = None,
        *,
        config: Optional[NAOConfig] = None,
        seed_archs: int = 10,
        new_archs: int = 5,
        top_k_seeds: int = 5,
        seed: int = 0,
    ):
        seed_archs = check_number("NAOAdapter seed_archs", seed_archs, integer=True, minimum=2)
        new_archs = check_number("NAOAdapter new_archs", new_archs, integer=True, minimum=1)
        top_k_seeds = check_number("NAOAdapter top_k_seeds", top_k_seeds, integer=True,
                                   minimum=1)
        seed = check_number("NAOAdapter seed", seed, integer=True, minimum=0)
        if space is None and controller is not None:
            raise ValueError("NAOAdapter: a controller needs its space.")
        self.seed_archs, self.new_archs, self.top_k_seeds = seed_archs, new_archs, top_k_seeds
        self.config, self.seed = config, seed
        self.space = self.controller = None
        self._checkpoint = None
        self._started = False
        if space is not None:
            self._build(space, controller)

    def _build(self, space: SearchSpace, controller: Optional[NAOController]) -> None:
        self.space = space
        self.controller = controller or NAOController(space.decision_sizes, self.config,
                                                      seed=self.seed)
        if tuple(self.controller.decision_sizes) != tuple(space.decision_sizes):
            raise ValueError("the NAO controller's decision sizes do not match the space.")
        self.rng = np.random.default_rng(self.seed)
        self.queue: List[Architecture] = []
        self.scored: Dict[Architecture, float] = {}
        self.rounds = 0
        self.last_fit: Dict[str, float] = {}
        self._state_var = tf.Variable("", dtype=tf.string, trainable=False, name="nao_adapter")
        self._checkpoint = tf.train.Checkpoint(
            adapter_state=self._state_var, **self.controller.checkpoint_items()
        )
        self._fill_random(self.seed_archs, exclude=set())

    def grow(self, decisions: Sequence[Decision]) -> None:
        """Builds the controller over ``decisions`` (a hypermodel's, no space), while the
        search has not started; refuses conditional decisions and, once it has started, new
        ones (see the module docstring for why)."""
        conditional = [d.name for d in decisions if d.conditions]
        if conditional:
            raise ValueError(
                f"NAOOracle cannot search conditional hyperparameters {conditional}: NAO "
                "encodes, predicts from and decodes whole token sequences, one token per "
                "decision in every architecture, and an inactive decision has no token. "
                "Declare them unconditionally, or use ENASOracle, which masks inactive "
                "decisions."
            )
        sizes = tuple(d.size for d in decisions)
        if self.space is not None and tuple(self.space.decision_sizes) == sizes:
            return
        if self._started:
            new = [d.name for d in decisions[len(self.space.decision_sizes):]]
            raise ValueError(
                f"NAOOracle cannot add hyperparameters {new} after the search started: its "
                "encoder, predictor, decoder and scored architectures are sequences of a "
                "fixed length. Declare every hyperparameter in the hypermodel's first build, "
                "or use ENASOracle, whose controller grows."
            )
        self._build(DecisionSpace(decisions), None)

    def _require(self) -> None:
        if self.space is None:
            raise RuntimeError(
                "the NAO controller has no decisions yet: the hypermodel has declared no "
                "hyperparameters (the tuner calls oracle.update_space after its first build)."
            )

    def _fill_random(self, count: int, exclude) -> None:
        tries = 0
        while count > 0 and tries < 100 * max(count, 1):
            arch = self.space.sample(self.rng)
            tries += 1
            if arch not in exclude and arch not in self.queue:
                self.queue.append(arch)
                count -= 1

    def _controller_round(self) -> None:
        archs = list(self.scored)
        targets = normalize_scores([self.scored[a] for a in archs], lower_is_better=False)
        self.last_fit = self.controller.fit(archs, targets)
        order = np.argsort(-targets, kind="stable")[: self.top_k_seeds]
        seeds = [archs[int(i)] for i in order]
        new = self.controller.generate(seeds, self.new_archs, exclude=archs)
        self.queue.extend(new)
        if not self.queue:
            self._fill_random(self.new_archs, exclude=set(archs))
        if not self.queue:  # every architecture scored: re-propose the best
            self.queue.append(seeds[0])
        self.rounds += 1

    def propose(self) -> Architecture:
        self._require()
        self._started = True
        if not self.queue:
            if len(self.scored) >= 2:
                self._controller_round()
            else:
                self._fill_random(1, exclude=set(self.scored))
                if not self.queue:
                    self.queue.append(self.space.sample(self.rng))
        return self.queue.pop(0)

    def learn(self, arch, reward: float, mask=None) -> Dict[str, float]:
        self._require()
        if mask is not None and float(np.min(mask)) < 1.0:
            raise ValueError("NAO learns whole architectures; it cannot mask decisions out.")
        self._started = True
        arch = self.space.validate(arch)
        self.scored[arch] = float(reward)
        return {"num_scored": float(len(self.scored)), **self.last_fit}

    def _json_state(self) -> str:
        return json.dumps({
            "queue": [list(a) for a in self.queue],
            "scored": [[list(a), r] for a, r in self.scored.items()],
            "rounds": self.rounds,
            "rng": self.rng.bit_generator.state,
        })

    def save(self, path: str) -> None:
        self._require()
        self._state_var.assign(self._json_state())
        self._checkpoint.write(path)

    def load(self, path: str) -> None:
        self._require()
        self._started = True
        self._checkpoint.read(path).assert_existing_objects_matched()
        obj = json.loads(self._state_var.numpy().decode())
        self.queue = [tuple(a) for a in obj["queue"]]
        self.scored = {tuple(a): float(r) for a, r in obj["scored"]}
        self.rounds = int(obj["rounds"])
        self.rng.bit_generator.state = obj["rng"]

    def state(self) -> dict:
        if self.space is None:
            return {}
        return {"nao_rounds": self.rounds, "nao_scored": len(self.scored),
                "nao_queue": len(self.queue)}


class NAOOracle(ControllerOracle):
    """KerasTuner oracle whose proposals come from NAO (encoder, predictor, decoder).

    Example:

    >>> oracle = NAOOracle(space, objective="val_accuracy", max_trials=30)  # doctest: +SKIP
    >>> oracle = NAOOracle(objective="val_accuracy", max_trials=30)  # hypermodel's own  +SKIP

    Args:
        space: the search space, or None (default) for the hyperparameters the hypermodel
            declares: a fixed list, no conditionals (see the module docstring).
        objective, max_trials: as ``keras_tuner.Oracle``.
        nao_config: the controller's :class:`NAOConfig`.
        seed_archs, new_archs, top_k_seeds: see :class:`NAOAdapter`.
        seed: seeds the controller and the random proposals.
        float_bins, max_int_values, hyperparameters, allow_new_entries, tune_new_entries:
            without a space, as :class:`~wpl_keras.tuner.enas.ENASOracle`.
        **kwargs: :class:`ControllerOracle` options (``reward_fn``, ``repeats``, ...).
    """

    def __init__(
        self,
        space: Optional[SearchSpace] = None,
        objective=None,
        max_trials: int = 10,
        *,
        nao_config: Optional[NAOConfig] = None,
        seed_archs: int = 10,
        new_archs: int = 5,
        top_k_seeds: int = 5,
        seed: int = 0,
        float_bins: Union[None, int, Mapping[str, int]] = None,
        max_int_values: int = DEFAULT_MAX_INT_VALUES,
        hyperparameters: Optional[keras_tuner.HyperParameters] = None,
        allow_new_entries: bool = True,
        tune_new_entries: bool = True,
        **kwargs,
    ):
        if space is not None and not isinstance(space, SearchSpace):
            raise TypeError(
                f"NAOOracle: space must be a wpl_keras SearchSpace or None, got "
                f"{type(space).__name__}; pass the objective by keyword (objective=...)."
            )
        adapter = NAOAdapter(space, config=nao_config, seed_archs=seed_archs,
                             new_archs=new_archs, top_k_seeds=top_k_seeds, seed=seed)
        super().__init__(space, adapter, objective=objective, max_trials=max_trials,
                         seed=seed, hyperparameters=hyperparameters,
                         allow_new_entries=allow_new_entries,
                         tune_new_entries=tune_new_entries,
                         decision_options=DecisionOptions(float_bins=float_bins,
                                                          max_int_values=max_int_values),
                         **kwargs)

    @property
    def controller(self) -> Optional[NAOController]:
        return self.adapter.controller
