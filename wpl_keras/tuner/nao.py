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

Its whole state (controller weights, Adam state, shuffling stream, queue, scored set and the
random generator) goes into the oracle's side checkpoint, so ``overwrite=False`` resumes it.
:class:`NAOOracle` is the oracle; pair it with any Tuner, or with
:class:`~wpl_keras.tuner.weight_sharing.WeightSharingTuner` for weight sharing (use ``repeats="rerun"``).
"""

from __future__ import annotations

import json
from typing import Dict, List, Optional

import numpy as np
import tensorflow as tf

from wpl_keras.nas.base import Architecture, SearchSpace
from wpl_keras.nas.controllers.nao import NAOConfig, NAOController, normalize_scores
from wpl_keras.tuner.controller_oracle import ControllerAdapter, ControllerOracle
from wpl_keras.utils.validation import check_number


class NAOAdapter(ControllerAdapter):
    """The NAO controller behind :class:`ControllerAdapter` (see the module docstring).

    Args:
        space: the search space.
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
        space: SearchSpace,
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
        self.space = space
        self.controller = controller or NAOController(space.decision_sizes, config, seed=seed)
        if tuple(self.controller.decision_sizes) != tuple(space.decision_sizes):
            raise ValueError("the NAO controller's decision sizes do not match the space.")
        self.seed_archs, self.new_archs, self.top_k_seeds = seed_archs, new_archs, top_k_seeds
        self.rng = np.random.default_rng(seed)
        self.queue: List[Architecture] = []
        self.scored: Dict[Architecture, float] = {}
        self.rounds = 0
        self.last_fit: Dict[str, float] = {}
        self._state_var = tf.Variable("", dtype=tf.string, trainable=False, name="nao_adapter")
        self._checkpoint = tf.train.Checkpoint(
            adapter_state=self._state_var, **self.controller.checkpoint_items()
        )
        self._fill_random(self.seed_archs, exclude=set())

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
        if not self.queue:
            if len(self.scored) >= 2:
                self._controller_round()
            else:
                self._fill_random(1, exclude=set(self.scored))
                if not self.queue:
                    self.queue.append(self.space.sample(self.rng))
        return self.queue.pop(0)

    def learn(self, arch, reward: float) -> Dict[str, float]:
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
        self._state_var.assign(self._json_state())
        self._checkpoint.write(path)

    def load(self, path: str) -> None:
        self._checkpoint.read(path).assert_existing_objects_matched()
        obj = json.loads(self._state_var.numpy().decode())
        self.queue = [tuple(a) for a in obj["queue"]]
        self.scored = {tuple(a): float(r) for a, r in obj["scored"]}
        self.rounds = int(obj["rounds"])
        self.rng.bit_generator.state = obj["rng"]

    def state(self) -> dict:
        return {"nao_rounds": self.rounds, "nao_scored": len(self.scored),
                "nao_queue": len(self.queue)}


class NAOOracle(ControllerOracle):
    """KerasTuner oracle whose proposals come from NAO (encoder, predictor, decoder).

    Example:

    >>> oracle = NAOOracle(space, objective="val_accuracy", max_trials=30)  # doctest: +SKIP

    Args:
        space: the search space.
        objective, max_trials: as ``keras_tuner.Oracle``.
        nao_config: the controller's :class:`NAOConfig`.
        seed_archs, new_archs, top_k_seeds: see :class:`NAOAdapter`.
        seed: seeds the controller and the random proposals.
        **kwargs: :class:`ControllerOracle` options (``reward_fn``, ``repeats``, ...).
    """

    def __init__(
        self,
        space: SearchSpace,
        objective=None,
        max_trials: int = 10,
        *,
        nao_config: Optional[NAOConfig] = None,
        seed_archs: int = 10,
        new_archs: int = 5,
        top_k_seeds: int = 5,
        seed: int = 0,
        **kwargs,
    ):
        adapter = NAOAdapter(space, config=nao_config, seed_archs=seed_archs,
                             new_archs=new_archs, top_k_seeds=top_k_seeds, seed=seed)
        super().__init__(space, adapter, objective=objective, max_trials=max_trials,
                         seed=seed, **kwargs)

    @property
    def controller(self) -> NAOController:
        return self.adapter.controller
