"""compare_runs on hand-computed values, and equality_values on a stand-in task."""

import numpy as np
import pytest

from wpl_keras.experiments.device_equality import (
    EQUAL_ATOL,
    EQUAL_RTOL,
    compare_runs,
    equality_values,
)


def test_compare_runs_takes_each_value_as_a_whole():
    one = {"loss": [1.0, 2.0], "weights": [np.array([3.0, 4.0]), np.zeros(2)]}
    same = compare_runs(one, {k: list(v) for k, v in one.items()})
    assert same == {"equal": 1, "max_rel_diff": {"loss": 0.0, "weights": 0.0},
                    "rtol": EQUAL_RTOL, "atol": EQUAL_ATOL}
    # ‖(3, 4.004) − (3, 4)‖ = 0.004 against max norm 5.0032: relative 8.0e-4 <= 1e-3.
    close = compare_runs(one, {"loss": [1.0, 2.0],
                               "weights": [np.array([3.0, 4.004]), np.zeros(2)]})
    assert close["equal"] == 1
    assert close["max_rel_diff"]["weights"] == pytest.approx(0.004 / np.hypot(3.0, 4.004))
    # 2.0 against 2.01: relative 0.01 / 2.01 > 1e-3.
    far = compare_runs(one, {"loss": [1.0, 2.01], "weights": one["weights"]})
    assert far["equal"] == 0 and far["max_rel_diff"]["loss"] == pytest.approx(0.01 / 2.01)
    assert compare_runs(one, {"loss": [1.0, 2.01], "weights": one["weights"]},
                        rtol=0.01)["equal"] == 1
    # Both zero: relative difference 0; a tiny absolute difference passes by atol.
    assert compare_runs({"p": [0.0]}, {"p": [5e-7]}) == {
        "equal": 1, "max_rel_diff": {"p": 1.0}, "rtol": EQUAL_RTOL, "atol": EQUAL_ATOL}
    assert compare_runs({"p": [0.0]}, {"p": [0.0]})["max_rel_diff"] == {"p": 0.0}


def test_compare_runs_refuses_runs_of_other_shapes():
    with pytest.raises(ValueError, match=r"different values: \['a'\] against \['b'\]"):
        compare_runs({"a": [1.0]}, {"b": [1.0]})
    with pytest.raises(ValueError):  # zip(strict=True): another number of values
        compare_runs({"a": [1.0, 2.0]}, {"a": [1.0]})


class _Value:
    def __init__(self, value):
        self.value = np.asarray(value, np.float32)

    def numpy(self):
        return self.value


class _StandIn:
    """A task that records what equality_values asks of it."""

    def __init__(self):
        self.trained, self.variables = [], [_Value([1.0, 2.0]), _Value(3.0)]
        self.wpl_state = type("State", (), {"fisher": [_Value([0.5])],
                                            "anchors": [_Value([0.25])]})()

    def train_architecture(self, arch, batches, wpl_active):
        self.trained.append((tuple(arch), batches, wpl_active))
        return {"loss": float(sum(arch)), "penalty": 0.1 * len(self.trained)}

    def validation_error(self, arch):
        return 100.0 + arch[0]

    def reward(self, arch):
        return 1.0 / (1 + arch[0])


def test_equality_values_trains_in_turn_with_wpl_after_the_first_then_scores():
    task = _StandIn()
    values = equality_values(task, [(1, 2), (3, 4), (0, 0)],
                             extra={"state": lambda: [np.ones(2)]})
    assert task.trained == [((1, 2), 2, False), ((3, 4), 2, True), ((0, 0), 2, True)]
    assert values["loss"] == [3.0, 7.0, 0.0]
    assert values["penalty"] == pytest.approx([0.1, 0.2, 0.3])
    assert values["err1"] == [101.0, 103.0, 100.0] and values["reward"][1] == 0.25
    assert [w.tolist() for w in values["weights"]] == [[1.0, 2.0], 3.0]
    assert values["fisher"][0].tolist() == [0.5] and values["anchors"][0].tolist() == [0.25]
    assert values["state"][0].tolist() == [1.0, 1.0]
    chosen = equality_values(_StandIn(), [(1, 2)], variables=[_Value(7.0)])
    assert [w.tolist() for w in chosen["weights"]] == [7.0]
    assert compare_runs(values, equality_values(_StandIn(), [(1, 2), (3, 4), (0, 0)],
                                                extra={"state": lambda: [np.ones(2)]}))[
        "equal"] == 1
