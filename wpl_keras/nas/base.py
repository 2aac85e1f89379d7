"""The three contracts of a weight-sharing search: space, shared-weights task, controller.

A search is split as NASLib/NNI do it, without their inheritance chains:

* a :class:`SearchSpace` says what an architecture is: a tuple of ints, one per controller
  decision, with ``decision_sizes[k]`` choices for decision ``k``;
* a :class:`SharedWeightsTask` owns a supernet, its optimizer, its data streams and its
  :class:`~wpl_keras.wpl.WPLState`, and trains/evaluates one architecture at a time (the
  architecture reaches the traced step as an int32 tensor, so one graph serves them all);
* a controller (:mod:`wpl_keras.nas.controllers.enas`) proposes architectures and learns from rewards.

The search loop (:mod:`wpl_keras.nas.search.enas`) only talks to these interfaces, so the RNN
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


class InvalidSpaceError(ValueError):
    """A search space built with a malformed size or option (the message names the field)."""


def strict_int(value, field: str, *, error: type = InvalidArchitectureError) -> int:
    """``value`` as a Python int if it is an integer type, else ``error`` naming ``field``.

    Python ints and NumPy integer scalars are accepted; booleans, floats (also ``2.0``, NaN
    and infinities), strings and anything else are rejected, so that nothing is rounded,
    truncated or reinterpreted silently.
    """
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise error(f"{field} must be an integer, got {value!r} ({type(value).__name__}).")
    return int(value)


def check_size(value, field: str, minimum: int) -> int:
    """A constructor size (``num_nodes``, a decision's number of choices) as an int
    ``>= minimum``; raises :class:`InvalidSpaceError` naming ``field`` and the value."""
    size = strict_int(value, field, error=InvalidSpaceError)
    if size < minimum:
        raise InvalidSpaceError(f"{field} must be an integer >= {minimum}, got {size}.")
    return size


def check_sizes(values, field: str = "decision_sizes") -> Tuple[int, ...]:
    """A non-empty sequence of decision sizes, each an int ``>= 1``
    (raises :class:`InvalidSpaceError`)."""
    if isinstance(values, (str, bytes, dict, set, frozenset)) or not hasattr(values, "__len__"):
        raise InvalidSpaceError(f"{field} must be a sequence of ints, got {values!r}.")
    sizes = tuple(check_size(v, f"{field}[{k}]", 1) for k, v in enumerate(_as_list(values)))
    if not sizes:
        raise InvalidSpaceError(f"{field} must hold at least one decision, got {values!r}.")
    return sizes


def _as_list(values) -> list:
    """A 1-D sequence, NumPy array or eager tensor as a list of its elements (NumPy scalars
    keep their integer/float type); raises ``TypeError`` for anything of another rank."""
    if hasattr(values, "numpy") and callable(values.numpy):  # an eager tf.Tensor
        values = values.numpy()
    if isinstance(values, np.ndarray):
        if values.ndim != 1:
            raise TypeError(f"expected one dimension, got shape {values.shape}")
        return list(values)
    return list(values)


def check_architecture(
    arch,
    decision_sizes: Sequence[int],
    decision_names: Optional[Sequence[str]] = None,
    owner: str = "architecture",
) -> Architecture:
    """``arch`` as a tuple of Python ints with ``0 <= arch[k] < decision_sizes[k]``.

    Raises:
        InvalidArchitectureError: naming ``owner``, the decision and the value, for anything
            that is not a flat sequence of exactly ``len(decision_sizes)`` integers in range.
    """
    if isinstance(arch, (str, bytes, dict, set, frozenset)) or not (
        hasattr(arch, "__iter__") or hasattr(arch, "numpy")
    ):
        raise InvalidArchitectureError(
            f"{owner}: an architecture is a sequence of ints, got {arch!r}."
        )
    try:
        values = _as_list(arch)
    except TypeError as error:
        raise InvalidArchitectureError(
            f"{owner}: an architecture is a flat sequence of ints, got {arch!r} ({error})."
        ) from error
    if len(values) != len(decision_sizes):
        raise InvalidArchitectureError(
            f"{owner}: expected {len(decision_sizes)} decisions, got {len(values)}."
        )
    out = []
    for k, (value, size) in enumerate(zip(values, decision_sizes)):
        label = f"decision {k}" + (f" ({decision_names[k]})" if decision_names else "")
        if isinstance(value, (list, tuple, np.ndarray)):
            raise InvalidArchitectureError(
                f"{owner}: an architecture is a sequence of ints; {label} is {value!r}."
            )
        value = strict_int(value, f"{owner}: {label}")
        if not 0 <= value < size:
            raise InvalidArchitectureError(
                f"{owner}: {label} is {value}, must be in [0, {size})."
            )
        out.append(value)
    return tuple(out)


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
        """Returns ``arch`` as a tuple of ints or raises :class:`InvalidArchitectureError`
        (see :func:`check_architecture`: integers only, exact length, every decision in
        range)."""
        return check_architecture(arch, self.decision_sizes, self.decision_names, self.name)

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
        """Inverse of :meth:`to_json`, from the dict or its JSON text.

        ``{"decisions": [...]}`` is required; ``"space"`` (this space's name) and ``"string"``
        (which must describe the same architecture) are optional; other keys (an exported
        model's settings stored beside its architecture) are left to their readers.

        Raises:
            InvalidArchitectureError: for invalid JSON, a value that is not such an object,
                or decisions that are not an architecture of this space.
        """
        if isinstance(obj, (str, bytes)):
            try:
                obj = json.loads(obj)
            except ValueError as error:
                raise InvalidArchitectureError(
                    f"{self.name}: architecture JSON does not parse: {error}."
                ) from error
        if not isinstance(obj, dict):
            raise InvalidArchitectureError(
                f"{self.name}: an architecture in JSON is an object "
                f'{{"space": ..., "decisions": [...]}}, got {type(obj).__name__} {obj!r}.'
            )
        if "decisions" not in obj:
            raise InvalidArchitectureError(
                f"{self.name}: architecture JSON has no 'decisions' field: {obj!r}."
            )
        if obj.get("space") not in (None, self.name):
            raise InvalidArchitectureError(
                f"architecture is for space {obj.get('space')!r}, not {self.name!r}."
            )
        arch = self.validate(obj["decisions"])
        if "string" in obj and obj["string"] != self.to_string(arch):
            raise InvalidArchitectureError(
                f"{self.name}: architecture JSON 'string' {obj['string']!r} does not match its "
                f"decisions {list(arch)} ({self.to_string(arch)!r})."
            )
        return arch

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
