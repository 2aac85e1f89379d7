"""A hypermodel's KerasTuner hyperparameters as the finite decisions of a controller.

A controller (ENAS' LSTM) emits one index per decision. :func:`decisions_from_hyperparameters`
turns each entry of ``HyperParameters.space``, in its order, into a :class:`Decision`: a
name, a finite tuple of values ``v_0 … v_{n−1}`` and the KerasTuner conditions under which it
is active. An index ``a_k`` then means the value ``values[a_k]``. Kinds:

* ``Choice``: its values, in their order.
* ``Boolean``: ``(False, True)``.
* ``Fixed``: a 1-way decision ``(value,)`` (its head has one logit, so ``log π = 0`` and
  ``H = 0``; it costs one LSTM step and is never learned from).
* ``Int``: its grid. With a step (KerasTuner sets ``step = 1`` for a linear ``Int``):
  ``v_i = min + i·step`` (linear) or ``v_i = min·step^i`` (log) or
  ``v_i = max + min − min·step^i`` (reverse_log), up to ``max``, as KerasTuner enumerates
  it. A log/reverse_log ``Int`` without a step is every integer ``min … max``. A grid is
  *small* when it has at most ``max_int_values`` values (default 100); a larger one is
  refused with an error that names the fix (a larger step, or a larger ``max_int_values``).
* ``Float`` with a step: the same grid formulas as ``Int``.
* ``Float`` without a step: refused, unless ``float_bins`` gives it ``n ≥ 2`` bins; then
  ``v_i = prob_to_value(i / (n − 1))``, ``i = 0 … n − 1``: ``n`` values from ``min`` to
  ``max`` evenly spaced in the hyperparameter's own ``sampling`` (linear, log or
  reverse_log), ends included.

Activity follows KerasTuner's ``Oracle._random_values``: walking the decisions in order, decision
``k`` is active iff every condition of it holds for the values of the active decisions before
it (``Parent(name, values)``: ``values[name] ∈ values``); only active decisions put a value
into a trial (:func:`indices_to_values`) and only active ones are learned from
(:func:`values_to_indices` returns the mask ``m_k ∈ {0, 1}``).

:class:`DecisionSpace` views a fixed decision list as a :class:`~wpl_keras.nas.base.SearchSpace`
(for a controller that works on whole index sequences, as NAO does).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Dict, Mapping, Optional, Sequence, Tuple, Union

import keras_tuner
import numpy as np

from wpl_keras.nas.base import Architecture, InvalidArchitectureError, SearchSpace
from wpl_keras.utils.validation import check_number

DEFAULT_MAX_INT_VALUES = 100


@dataclasses.dataclass(frozen=True)
class Decision:
    """One controller decision: ``values[a]`` for index ``a``, active iff every condition holds.

    Attributes:
        name: the hyperparameter's name (the key of its value in a trial).
        values: the finite values, index ``i`` meaning ``values[i]``.
        conditions: KerasTuner conditions (``Parent``), each with ``is_active(values)``.
        kind: the hyperparameter's class name (``"Choice"``, ``"Int"``, ...).
    """

    name: str
    values: Tuple[object, ...]
    conditions: Tuple[object, ...] = ()
    kind: str = "Choice"

    @property
    def size(self) -> int:
        return len(self.values)

    def is_active(self, values: Mapping[str, object]) -> bool:
        """``∧_c c.is_active(values)`` (True without conditions)."""
        return all(condition.is_active(values) for condition in self.conditions)

    def index_of(self, value) -> Optional[int]:
        """Index of ``value`` in :attr:`values` (floats within ``1e-9`` relative), or None."""
        for i, v in enumerate(self.values):
            if _same_value(v, value):
                return i
        return None

    def describe(self) -> dict:
        """JSON-serialisable summary (name, kind, values, conditions) for oracle state."""
        return {
            "name": self.name,
            "kind": self.kind,
            "values": [_json_value(v) for v in self.values],
            "conditions": [c.get_config() for c in self.conditions],
        }


@dataclasses.dataclass(frozen=True)
class DecisionOptions:
    """How numerical hyperparameters become finite decisions.

    Attributes:
        float_bins: bins of a ``Float`` without a step: one int for every such ``Float``, or
            ``{name: bins}`` for some of them (None: such a ``Float`` is refused).
        max_int_values: the most values an ``Int`` grid may have ("small").
    """

    float_bins: Union[None, int, Mapping[str, int]] = None
    max_int_values: int = DEFAULT_MAX_INT_VALUES

    def __post_init__(self):
        check_number("DecisionOptions max_int_values", self.max_int_values, integer=True,
                     minimum=1)
        bins = self.float_bins
        if bins is None:
            return
        items = bins.items() if isinstance(bins, Mapping) else [("float_bins", bins)]
        for name, value in items:
            field = "float_bins" if name == "float_bins" else f"float_bins[{name!r}]"
            check_number(f"DecisionOptions {field}", value, integer=True, minimum=2)

    def bins_for(self, name: str) -> Optional[int]:
        if isinstance(self.float_bins, Mapping):
            return self.float_bins.get(name)
        return self.float_bins


def _same_value(a, b) -> bool:
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b or (isinstance(a, bool) and isinstance(b, bool) and a == b)
    if isinstance(a, float) or isinstance(b, float):
        try:
            return math.isclose(float(a), float(b), rel_tol=1e-9, abs_tol=1e-12)
        except (TypeError, ValueError):
            return False
    return a == b


def _json_value(value):
    if isinstance(value, (bool, str)) or value is None:
        return value
    if isinstance(value, (int, np.integer)):
        return int(value)
    return float(value)


def _grid(hp, max_values: Optional[int], bins: Optional[int]) -> Tuple[object, ...]:
    """The finite values of an ``Int``/``Float`` (see the module docstring)."""
    kind = type(hp).__name__
    if hp.step is not None:
        values = tuple(hp.values)  # KerasTuner's own enumeration of the stepped grid
    elif kind == "Int":
        values = tuple(range(int(hp.min_value), int(hp.max_value) + 1))
    elif bins is None:
        raise ValueError(
            f"Float hyperparameter {hp.name!r} has no step, so the controller has no finite "
            f"set of values to choose from. Give it a step, e.g. hp.Float({hp.name!r}, "
            f"{hp.min_value}, {hp.max_value}, step=...), or pass the oracle "
            f"float_bins={{{hp.name!r}: n}} (or float_bins=n for every such Float) to split "
            f"[{hp.min_value}, {hp.max_value}] into n values along its sampling "
            f"({hp.sampling!r})."
        )
    else:
        values = tuple(float(hp.prob_to_value(i / (bins - 1))) for i in range(bins))
    if kind == "Int":
        values = tuple(int(v) for v in values)
        if max_values is not None and len(values) > max_values:
            raise ValueError(
                f"Int hyperparameter {hp.name!r} has {len(values)} values (min_value "
                f"{hp.min_value}, max_value {hp.max_value}, step {hp.step}, sampling "
                f"{hp.sampling!r}); the controller learns one softmax over them and allows "
                f"at most max_int_values={max_values}. Give it a larger step, or pass the "
                f"oracle a larger max_int_values."
            )
    else:
        values = tuple(float(v) for v in values)
    if not values:
        raise ValueError(f"hyperparameter {hp.name!r} has no values in its range.")
    return values


def hyperparameter_values(hp, options: DecisionOptions = DecisionOptions()) -> Tuple[object, ...]:
    """The finite values of one KerasTuner hyperparameter (see the module docstring).

    Raises:
        ValueError: for a ``Float`` without a step and no bins, an ``Int`` grid larger than
            ``options.max_int_values``, or an empty grid.
        TypeError: for a hyperparameter kind this module does not know.
    """
    kind = type(hp).__name__
    if kind == "Choice":
        return tuple(hp.values)
    if kind == "Boolean":
        return (False, True)
    if kind == "Fixed":
        return (hp.value,)
    if kind == "Int":
        return _grid(hp, options.max_int_values, None)
    if kind == "Float":
        return _grid(hp, None, options.bins_for(hp.name))
    raise TypeError(
        f"hyperparameter {hp.name!r} is a {kind}; the controller knows Choice, Boolean, "
        "Fixed, Int and Float."
    )


def decisions_from_hyperparameters(
    hyperparameters: keras_tuner.HyperParameters, options: DecisionOptions = DecisionOptions()
) -> Tuple[Decision, ...]:
    """One :class:`Decision` per entry of ``hyperparameters.space``, in its order.

    Raises:
        ValueError / TypeError: as :func:`hyperparameter_values`.
    """
    return tuple(
        Decision(
            name=hp.name,
            values=hyperparameter_values(hp, options),
            conditions=tuple(hp.conditions),
            kind=type(hp).__name__,
        )
        for hp in hyperparameters.space
    )


def active_mask(decisions: Sequence[Decision], indices: Sequence[int]) -> np.ndarray:
    """``m_k = 1`` iff decision ``k`` is active along ``indices`` (float32 ``[D]``)."""
    active = _active_values(decisions, indices)[1]
    return np.array([1.0 if k in active else 0.0 for k in range(len(decisions))], np.float32)


def _active_values(decisions: Sequence[Decision], indices: Sequence[int]):
    if len(indices) != len(decisions):
        raise ValueError(f"got {len(indices)} indices for {len(decisions)} decisions.")
    values: Dict[str, object] = {}
    active = set()
    for k, (decision, index) in enumerate(zip(decisions, indices)):
        if not 0 <= int(index) < decision.size:
            raise ValueError(
                f"index {int(index)} of decision {decision.name!r} must be in "
                f"[0, {decision.size})."
            )
        if decision.is_active(values):
            values[decision.name] = decision.values[int(index)]
            active.add(k)
    return values, active


def indices_to_values(decisions: Sequence[Decision], indices: Sequence[int]) -> Dict[str, object]:
    """The trial values of ``indices``: ``{name_k: values_k[a_k]}`` for active ``k`` only.

    Raises:
        ValueError: for a wrong number of indices or an index out of range.
    """
    return _active_values(decisions, indices)[0]


def values_to_indices(
    decisions: Sequence[Decision], values: Mapping[str, object]
) -> Tuple[Tuple[int, ...], np.ndarray]:
    """Indices and mask of a trial's values: ``(a, m)``.

    Walking the decisions in order as :func:`indices_to_values` does, decision ``k`` gets
    ``m_k = 1`` and ``a_k = values_k.index(values[name_k])`` when it is active (its conditions
    hold for the values of the active decisions before it) and its value is one of its values; otherwise ``m_k = 0`` and ``a_k = 0`` (a placeholder that is never
    learned from: an inactive decision, a hyperparameter absent from ``values``, or a value
    off the grid such as a default the controller did not choose).
    """
    seen: Dict[str, object] = {}
    indices, mask = [], []
    for decision in decisions:
        index = None
        if decision.is_active(seen) and decision.name in values:
            seen[decision.name] = values[decision.name]
            index = decision.index_of(values[decision.name])
        indices.append(0 if index is None else index)
        mask.append(0.0 if index is None else 1.0)
    return tuple(indices), np.array(mask, np.float32)


class DecisionSpace(SearchSpace):
    """A fixed list of decisions as a :class:`~wpl_keras.nas.base.SearchSpace`: an
    architecture is one index per decision, ``to_string`` writes ``name=value`` pairs.

    Args:
        decisions: the decisions (at least one).
    """

    name = "hyperparameters"

    def __init__(self, decisions: Sequence[Decision]):
        self.decisions = tuple(decisions)
        if not self.decisions:
            raise ValueError("DecisionSpace needs at least one decision.")

    @property
    def decision_sizes(self) -> Tuple[int, ...]:
        return tuple(d.size for d in self.decisions)

    @property
    def decision_names(self) -> Tuple[str, ...]:
        return tuple(d.name for d in self.decisions)

    def to_string(self, arch: Sequence[int]) -> str:
        arch = self.validate(arch)
        return " ".join(f"{d.name}={d.values[a]!r}" for d, a in zip(self.decisions, arch))

    def from_string(self, text: str) -> Architecture:
        pairs = [token.split("=", 1) for token in text.split()]
        if any(len(pair) != 2 for pair in pairs) or [p[0] for p in pairs] != list(
                self.decision_names):
            raise InvalidArchitectureError(
                f"{self.name}: expected 'name=value' for {list(self.decision_names)}, "
                f"got {text!r}.")
        arch = []
        for decision, (_, value) in zip(self.decisions, pairs):
            found = [i for i, v in enumerate(decision.values) if repr(v) == value]
            if not found:
                raise InvalidArchitectureError(
                    f"{self.name}: {value} is not a value of {decision.name!r}.")
            arch.append(found[0])
        return self.validate(arch)
