"""The three contracts of a weight-sharing search: space, shared-weights task, controller.

A search is split as NASLib/NNI do it, without their inheritance chains:

* a :class:`SearchSpace` says what an architecture is: a tuple of ints, one per controller
  decision, with ``decision_sizes[k]`` choices for decision ``k``;
* a :class:`SharedWeightsTask` owns a supernet, its optimizer, its data streams and its
  :class:`~wpl_keras.wpl.WPLState`, and trains/evaluates one architecture at a time (the
  architecture reaches the traced step as an int32 tensor, so one graph serves them all);
* a controller (:mod:`wpl_keras.nas.controller`) proposes architectures and learns from rewards.

The search loop (:mod:`wpl_keras.nas.search`) only talks to these interfaces, so the RNN
(PTB) and micro-CNN (CIFAR-10) spaces plug into the same loop, and ENAS or NAO controllers into
the same loop and KerasTuner oracle.
"""

from __future__ import annotations

import abc
import json
from typing import Dict, Optional, Sequence, Tuple

import numpy as np

Architecture = Tuple[int, ...]


class InvalidArchitectureError(ValueError):
    """An architecture that is not a member of its search space (the message says why)."""


class SearchSpace(abc.ABC):
    """A discrete search space: an architecture is ``decision_sizes``-bounded ints.

    Subclasses define ``name``, ``decision_sizes``, ``decision_names``, ``to_string``,
    ``from_string`` and ``plot``; validation, sampling and JSON come from here.
    """

    name: str = "space"

    @property
    @abc.abstractmethod
    def decision_sizes(self) -> Tuple[int, ...]:
        """Number of choices of each decision, in the order a controller emits them."""

    @property
    @abc.abstractmethod
    def decision_names(self) -> Tuple[str, ...]:
        """A readable name per decision (e.g. ``"node3_input"``), used by KerasTuner trials."""

    @property
    def num_decisions(self) -> int:
        return len(self.decision_sizes)

    def validate(self, arch: Sequence[int]) -> Architecture:
        """Returns ``arch`` as a tuple of ints or raises :class:`InvalidArchitectureError`."""
        try:
            values = tuple(int(a) for a in np.asarray(arch).reshape(-1))
        except (TypeError, ValueError) as error:
            raise InvalidArchitectureError(
                f"{self.name}: an architecture is a sequence of ints, got {arch!r}."
            ) from error
        if len(values) != self.num_decisions:
            raise InvalidArchitectureError(
                f"{self.name}: expected {self.num_decisions} decisions, got {len(values)}."
            )
        for k, (value, size) in enumerate(zip(values, self.decision_sizes)):
            if not 0 <= value < size:
                raise InvalidArchitectureError(
                    f"{self.name}: decision {k} ({self.decision_names[k]}) is {value}, "
                    f"must be in [0, {size})."
                )
        return values

    def sample(self, rng: np.random.Generator) -> Architecture:
        """A uniformly random architecture."""
        return tuple(int(rng.integers(0, size)) for size in self.decision_sizes)

    @abc.abstractmethod
    def to_string(self, arch: Sequence[int]) -> str:
        """A readable, parseable description of ``arch``."""

    @abc.abstractmethod
    def from_string(self, text: str) -> Architecture:
        """Inverse of :meth:`to_string`; raises :class:`InvalidArchitectureError`."""

    def to_json(self, arch: Sequence[int]) -> dict:
        arch = self.validate(arch)
        return {"space": self.name, "decisions": list(arch), "string": self.to_string(arch)}

    def from_json(self, obj) -> Architecture:
        if isinstance(obj, str):
            obj = json.loads(obj)
        if obj.get("space") not in (None, self.name):
            raise InvalidArchitectureError(
                f"architecture is for space {obj.get('space')!r}, not {self.name!r}."
            )
        return self.validate(obj["decisions"])

    def plot(self, arch: Sequence[int], path: str) -> str:  # pragma: no cover - optional
        """Draws ``arch`` to a PNG at ``path``; returns the path."""
        raise NotImplementedError


class SharedWeightsTask(abc.ABC):
    """Trains and scores architectures of one space on shared weights (a supernet).

    Implementations hold: ``space``, ``supernet`` (a Keras model), ``optimizer``,
    ``wpl_state`` (a :class:`~wpl_keras.wpl.WPLState` over the WPL-eligible supernet weights),
    and their data streams. Every method takes a plain :data:`Architecture`; implementations
    convert it to an int32 tensor before calling their traced functions, so no call retraces.
    """

    space: SearchSpace

    @abc.abstractmethod
    def train_architecture(
        self, arch: Architecture, num_batches: int, *, wpl_active: bool
    ) -> Dict[str, float]:
        """Trains ``arch``'s shared weights on the next ``num_batches`` training batches.

        With ``wpl_active``: every step adds ``(α/2) Σ F (θ − θ*)²`` over the weights ``arch``
        uses; the last step's gradient updates their Fisher, ``F ← (1 − η)F + η g²`` (no extra
        backward pass), and afterwards their anchors are set, ``θ* ← θ``. Only ``arch``'s
        weights get gradients, Fisher updates and penalty terms.

        Returns:
            Mean ``loss`` (data loss), ``penalty`` and any task metrics over the batches.
        """

    @abc.abstractmethod
    def validation_error(self, arch: Architecture) -> float:
        """Error of ``arch`` on the FIXED validation batch (err1/err2 of the forgetting metrics):
        perplexity for language models, error rate in percent for classifiers."""

    @abc.abstractmethod
    def reward(self, arch: Architecture) -> float:
        """Controller reward of ``arch`` on the next validation minibatch (higher is better)."""

    def start_epoch(self, epoch: int) -> None:
        """Hook at the start of each search epoch (e.g. reset recurrent state)."""

    @abc.abstractmethod
    def checkpoint_items(self) -> Dict[str, object]:
        """Trackables that hold the task's whole state (supernet, optimizer, WPL state,
        data positions), for ``tf.train.Checkpoint``."""

    def config(self) -> Optional[dict]:
        """JSON-serialisable settings, saved next to results."""
        return None
