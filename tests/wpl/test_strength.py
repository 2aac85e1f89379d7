"""choose_strength: the rule that picks α from validation measurements, on hand-computed grids."""

import dataclasses
import json

import numpy as np
import pytest

from wpl_keras.wpl.strength import StrengthChoice, choose_strength

ALPHAS = [1e2, 1e4, 1e6, 1e8]


def test_largest_reduction_within_tolerance():
    # B without WPL 0.95; costs -0.5, -0.9, -3.0, -12.0 points; 1e6 and 1e8 reduce more but
    # cost B more than 1 point, so 1e4 (reduction 0.8) wins over 1e2 (0.4).
    choice = choose_strength(ALPHAS, [0.4, 0.8, 0.95, 1.0], [0.945, 0.941, 0.92, 0.83], 0.95)
    assert choice.strength == 1e4 and choice.qualified
    assert choice.reduction == 0.8 and choice.b_accuracy == 0.941
    assert choice.b_cost == pytest.approx(-0.9)
    assert choice.tolerance == 1.0 and "largest reduction" in choice.reason


def test_wider_tolerance_admits_the_stronger_alpha():
    choice = choose_strength(ALPHAS, [0.4, 0.8, 0.95, 1.0], [0.945, 0.941, 0.92, 0.83], 0.95,
                             tolerance=3.5)
    assert choice.strength == 1e6 and choice.b_cost == pytest.approx(-3.0)


def test_cost_of_exactly_the_tolerance_qualifies():
    # 100 * (0.96 - 0.97) is -1.0000000000000009 in floats; it still counts as 1 point.
    choice = choose_strength([10.0, 20.0], [0.1, 0.9], [0.97, 0.96], 0.97, tolerance=1.0)
    assert choice.strength == 20.0 and choice.qualified


def test_b_better_with_wpl_always_qualifies():
    choice = choose_strength([1.0, 2.0], [0.2, 0.3], [0.99, 0.80], 0.90, tolerance=0.0)
    assert choice.strength == 1.0 and choice.b_cost == pytest.approx(9.0)


def test_equal_reductions_go_to_the_smaller_alpha_whatever_the_order():
    choice = choose_strength([1e8, 1e3, 1e5], [0.9, 0.9, 0.5], [0.95, 0.95, 0.95], 0.95)
    assert choice.strength == 1e3 and choice.reduction == 0.9


def test_none_qualifies_falls_back_to_smallest_b_cost():
    # every cost is beyond 1 point: -2, -1.5, -1.5, -5 (1e4 and 1e6 cost the same, the least)
    choice = choose_strength([1e2, 1e4, 1e6, 1e8], [0.1, 0.5, 0.7, 0.99],
                             [0.93, 0.935, 0.935, 0.90], 0.95)
    assert not choice.qualified
    assert choice.strength == 1e4  # smallest cost (-1.5), smaller α of the tie
    assert choice.b_cost == pytest.approx(-1.5) and choice.reduction == 0.5
    assert "no strength kept B within 1 points" in choice.reason
    assert "grid's smallest" not in choice.reason


def test_fallback_at_the_grids_smallest_alpha_suggests_a_smaller_one():
    # the loose MNIST cases: every alpha costs B more than the tolerance, the smallest least
    choice = choose_strength([1e3, 1e2, 1e4], [0.58, 0.61, 0.95], [0.88, 0.916, 0.85], 0.9326)
    assert not choice.qualified and choice.strength == 1e2
    assert "grid's smallest alpha" in choice.reason and "e.g. 10" in choice.reason


def test_result_is_frozen_and_serialisable():
    choice = choose_strength([5.0], [0.3], [0.5], 0.5)
    assert isinstance(choice, StrengthChoice)
    with pytest.raises(dataclasses.FrozenInstanceError):
        choice.strength = 1.0
    assert json.loads(json.dumps(choice.to_json()))["strength"] == 5.0


@pytest.mark.parametrize(
    "args, match",
    [
        (([], [], [], 0.9), "grid of strengths is empty"),
        (([1.0, 2.0], [0.5], [0.9, 0.9], 0.9), "2 strengths but 1 reductions"),
        (([1.0, 2.0], [0.5, 0.5], [0.9], 0.9), "and 1 B accuracies"),
        (([1.0, 2.0], [0.5, float("nan")], [0.9, 0.9], 0.9), r"reductions\[1\] must be a finite number, got NaN"),
        (([1.0], [0.5], [float("inf")], 0.9), r"b_accuracies\[0\] must be a finite number, got inf"),
        (([1.0], [0.5], [0.9], float("nan")), "b_accuracy_without must be a finite number, got NaN"),
        (([float("inf")], [0.5], [0.9], 0.9), r"strengths\[0\] must be a finite number > 0, got inf"),
        (([0.0, 1.0], [0.5, 0.5], [0.9, 0.9], 0.9), r"strengths\[0\] must be a finite number > 0, got 0.0"),
        (([-1.0], [0.5], [0.9], 0.9), "must be a finite number > 0"),
        (([1.0, np.float32(-2.0)], [0.5, 0.5], [0.9, 0.9], 0.9), r"strengths\[1\] must be"),
        (([3.0, 3.0], [0.5, 0.6], [0.9, 0.9], 0.9), "repeated strengths"),
        (([1.0], [0.5], [93.0], 0.9), r"fractions in \[0, 1\].*accuracy points"),
        (([1.0], [0.5], [0.9], 95.0), "b_accuracy_without are fractions"),
    ],
)
def test_bad_input_is_refused_clearly(args, match):
    with pytest.raises(ValueError, match=match):
        choose_strength(*args)


@pytest.mark.parametrize("tolerance, match", [(-1.0, ">= 0"), (float("nan"), "finite")])
def test_bad_tolerance_is_refused(tolerance, match):
    with pytest.raises(ValueError, match=match):
        choose_strength([1.0], [0.5], [0.9], 0.9, tolerance=tolerance)


@pytest.mark.parametrize("args, match", [
    (([1.0], ["0.5"], [0.9], 0.9), r"reductions\[0\]"),
    (([None], [0.5], [0.9], 0.9), r"strengths\[0\]"),
    (([1.0], [0.5], [0.9], "high"), "b_accuracy_without"),
    (([1.0], [0.5], [np.array([0.9, 0.8])], 0.9), r"b_accuracies\[0\]"),
])
def test_non_numbers_are_refused_with_a_type_error(args, match):
    with pytest.raises(TypeError, match=f"choose_strength: {match} must be a finite number"):
        choose_strength(*args)
    with pytest.raises(TypeError, match="tolerance"):
        choose_strength([1.0], [0.5], [0.9], 0.9, tolerance=True)


def test_numpy_measurements_give_python_floats():
    choice = choose_strength(np.array([1.0, 2.0], np.float32), np.array([0.5, 0.25]),
                             [np.float32(0.9), np.float64(0.9)], np.float32(0.5))
    assert choice.strength == 1.0 and type(choice.strength) is float
    assert json.loads(json.dumps(choice.to_json()))["strength"] == 1.0
