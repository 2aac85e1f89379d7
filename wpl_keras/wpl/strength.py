"""Choosing the WPL strength ``α`` from validation measurements (a pure rule, no TensorFlow).

The rule trades forgetting against the cost to the model trained with WPL (model B of the
two-model experiment): among the strengths that leave B's validation accuracy within a tolerance
of B's accuracy without WPL, take the one that removes the most forgetting.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

from wpl_keras.utils.validation import check_number

# Slack on the tolerance test, in accuracy points, so that a cost of exactly ``tolerance``
# computed from fractions (e.g. 100 * (0.97 - 0.96) = 1.0000000000000009) qualifies.
_ROUNDING_POINTS = 1e-9


@dataclasses.dataclass(frozen=True)
class StrengthChoice:
    """The strength :func:`choose_strength` picked, and why.

    Attributes:
        strength: the chosen ``α``.
        reduction: the forgetting reduction measured at ``strength`` (fraction).
        b_accuracy: B's accuracy with WPL at ``strength`` (fraction).
        b_accuracy_without: B's accuracy without WPL (fraction).
        b_cost: ``100 * (b_accuracy - b_accuracy_without)``, accuracy points (negative: B
            lost accuracy with WPL).
        tolerance: the tolerance the rule used, accuracy points.
        qualified: True if ``strength`` met the tolerance; False if no strength did and the
            rule fell back to the one with the smallest cost to B.
        reason: one sentence saying which branch of the rule picked ``strength``.
    """

    strength: float
    reduction: float
    b_accuracy: float
    b_accuracy_without: float
    b_cost: float
    tolerance: float
    qualified: bool
    reason: str

    def to_json(self) -> dict:
        """The fields as a JSON-serialisable dict."""
        return dataclasses.asdict(self)


def _finite_floats(name: str, values: Sequence[float], **bounds) -> list:
    """Each value as a finite Python float within ``bounds``
    (:func:`~wpl_keras.utils.validation.check_number`), the error naming its index."""
    return [check_number(f"choose_strength: {name}[{i}]", v, **bounds)
            for i, v in enumerate(values)]


def _check_accuracy(name: str, value: float) -> None:
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"choose_strength: {name} are fractions in [0, 1], got {value} "
                         "(accuracy points? divide by 100).")


def choose_strength(
    strengths: Sequence[float],
    reductions: Sequence[float],
    b_accuracies: Sequence[float],
    b_accuracy_without: float,
    tolerance: float = 1.0,
) -> StrengthChoice:
    """Picks ``α`` from a grid of validation measurements.

    Rule: a strength *qualifies* when B's validation accuracy with WPL is at most ``tolerance``
    accuracy points below B's validation accuracy without WPL, i.e.
    ``100 * (b_accuracy_without − b_accuracy) <= tolerance`` (higher accuracy with WPL always
    qualifies). Among the qualifying strengths the one with the largest forgetting reduction is
    chosen; equal reductions go to the smaller ``α``. If none qualifies, the strength with the
    smallest cost to B (highest ``b_accuracy``) is chosen, again the smaller ``α`` on ties, and
    the result says so (``qualified=False``); when that fallback is the grid's smallest ``α``,
    the reason suggests extending the grid below it.

    All measurements should come from validation data, so that the test set stays untouched by
    the choice.

    Args:
        strengths: the grid of ``α``, each finite and > 0, no repeats (any order).
        reductions: forgetting reduction ``(d_without − d_with) / d_without`` at each strength.
        b_accuracies: B's validation accuracy with WPL at each strength, fractions in [0, 1].
        b_accuracy_without: B's validation accuracy without WPL, a fraction in [0, 1].
        tolerance: the accuracy B may lose, in accuracy points (1.0 = one percentage point),
            finite and >= 0.

    Returns:
        A :class:`StrengthChoice`.

    Raises:
        ValueError: for an empty grid, lists of different lengths, a non-finite value, an
            ``α`` <= 0 or repeated, an accuracy outside [0, 1], or a bad ``tolerance``.
        TypeError: for a measurement or ``tolerance`` that is not a number.
    """
    n = len(strengths)
    if n == 0:
        raise ValueError("choose_strength: the grid of strengths is empty.")
    if len(reductions) != n or len(b_accuracies) != n:
        raise ValueError(
            f"choose_strength: {n} strengths but {len(reductions)} reductions and "
            f"{len(b_accuracies)} B accuracies; give one of each per strength."
        )
    alphas = _finite_floats("strengths", strengths, minimum=0, exclusive_minimum=True)
    reds = _finite_floats("reductions", reductions)
    accs = _finite_floats("b_accuracies", b_accuracies)
    without = check_number("choose_strength: b_accuracy_without", b_accuracy_without)
    tolerance = check_number("choose_strength: tolerance (accuracy points)", tolerance,
                             minimum=0)
    if len(set(alphas)) != n:
        raise ValueError(f"choose_strength: repeated strengths in {alphas}.")
    for acc in accs:
        _check_accuracy("b_accuracies", acc)
    _check_accuracy("b_accuracy_without", without)

    costs = [100.0 * (acc - without) for acc in accs]
    qualifying = [i for i in range(n) if -costs[i] <= tolerance + _ROUNDING_POINTS]
    if qualifying:
        best = min(qualifying, key=lambda i: (-reds[i], alphas[i]))
        reason = (f"largest reduction among the {len(qualifying)} of {n} strengths whose B "
                  f"accuracy is within {tolerance:g} points of B without WPL")
    else:
        best = min(range(n), key=lambda i: (-costs[i], alphas[i]))
        reason = (f"no strength kept B within {tolerance:g} points of B without WPL; chose "
                  "the one with the smallest cost to B")
        if alphas[best] == min(alphas):
            reason += (f"; that is the grid's smallest alpha, so the grid may need smaller "
                       f"ones (e.g. {alphas[best] / 10:g})")
    return StrengthChoice(
        strength=alphas[best], reduction=reds[best], b_accuracy=accs[best],
        b_accuracy_without=without, b_cost=costs[best], tolerance=tolerance,
        qualified=bool(qualifying), reason=reason,
    )
