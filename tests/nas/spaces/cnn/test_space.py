"""Tests for the ENAS micro-cell search space."""

import json

import numpy as np
import pytest

from wpl_keras.nas.base import InvalidArchitectureError, InvalidSpaceError
from wpl_keras.nas.spaces.cnn.space import OPS, MicroCellSpace


def test_decision_sizes_and_names():
    space = MicroCellSpace(num_nodes=3)
    assert space.name == "enas_micro"
    cell = (2, 5, 2, 5, 3, 5, 3, 5, 4, 5, 4, 5)
    assert space.decision_sizes == cell + cell
    assert len(space.decision_names) == space.num_decisions == 24
    assert space.decision_names[0] == "normal_node2_x_input"
    assert space.decision_names[12 + 7] == "reduce_node3_y_op"
    assert space.decision_index(1, 1, 1, "op") == 19
    assert OPS == ("identity", "sep3x3", "sep5x5", "avg3x3", "max3x3")


def test_string_and_json_round_trip(seed):
    space = MicroCellSpace(num_nodes=5)
    rng = np.random.default_rng(seed)
    for _ in range(20):
        arch = space.sample(rng)
        assert space.validate(arch) == arch
        text = space.to_string(arch)
        assert text.startswith("normal: 2=") and "| reduce: 2=" in text
        assert space.from_string(text) == arch
        blob = json.dumps(space.to_json(arch))
        assert space.from_json(blob) == arch


def test_known_string():
    space = MicroCellSpace(num_nodes=2)
    arch = (0, 1, 1, 0, 2, 3, 0, 4, 1, 2, 1, 2, 0, 0, 2, 1)
    assert space.to_string(arch) == (
        "normal: 2=sep3x3(0)+identity(1) 3=avg3x3(2)+max3x3(0) | "
        "reduce: 2=sep5x5(1)+sep5x5(1) 3=identity(0)+sep3x3(2)"
    )
    normal, reduce = space.cells(arch)
    assert normal[1] == (2, 3, 0, 4)
    assert space.loose_ends(normal) == [3]
    assert space.loose_ends(reduce) == [3]
    assert space.loose_ends([(0, 0, 1, 0), (0, 0, 1, 0)]) == [2, 3]


@pytest.mark.parametrize(
    "arch, match",
    [
        ((0,) * 15, "expected 16 decisions"),
        ((2, 0) + (0,) * 14, "must be in \\[0, 2\\)"),
        ((0, 5) + (0,) * 14, "node2_x_op"),
        (("a",) * 16, r"decision 0 \(normal_node2_x_input\) must be an integer, got 'a'"),
    ],
)
def test_validate_rejects_bad_architectures(arch, match):
    with pytest.raises(InvalidArchitectureError, match=match):
        MicroCellSpace(num_nodes=2).validate(arch)


@pytest.mark.parametrize(
    "text, match",
    [
        ("normal: 2=sep3x3(0)+identity(1)", "normal: … \\| reduce"),
        ("normal: 2=conv(0)+identity(1) | reduce: 2=identity(0)+identity(1)", "unknown op"),
        ("normal: 2=identity(0)+identity(1) 3=x | reduce: 2=identity(0)+identity(1)",
         "cannot parse"),
        ("reduce: 2=identity(0)+identity(1) | normal: 2=identity(0)+identity(1)", "must start"),
        ("normal: 2=identity(5)+identity(1) | reduce: 2=identity(0)+identity(1)", "must be in"),
        ("normal: 3=identity(0)+identity(1) | reduce: 2=identity(0)+identity(1)", "out of order"),
    ],
)
def test_from_string_errors(text, match):
    space = MicroCellSpace(num_nodes=1) if "3=x" not in text else MicroCellSpace(num_nodes=2)
    with pytest.raises(InvalidArchitectureError, match=match):
        space.from_string(text)


def test_bad_constructor_and_json_space():
    with pytest.raises(ValueError, match="num_nodes"):
        MicroCellSpace(num_nodes=0)
    space = MicroCellSpace(num_nodes=1)
    with pytest.raises(InvalidArchitectureError, match="space"):
        space.from_json({"space": "enas_rnn", "decisions": [0, 0, 0, 0] * 2})


def test_sample_is_uniform_over_ops(seed):
    space = MicroCellSpace(num_nodes=4)
    rng = np.random.default_rng(seed)
    archs = np.array([space.sample(rng) for _ in range(500)])
    ops = archs[:, 1::2].reshape(-1)
    counts = np.bincount(ops, minlength=5) / ops.size
    assert np.all(np.abs(counts - 0.2) < 0.03)
    assert archs[:, 0].max() == 1 and archs[:, 12].max() == 4


def test_plot_writes_png(tmp_path):
    space = MicroCellSpace(num_nodes=3)
    path = space.plot(space.sample(np.random.default_rng(0)), str(tmp_path / "cell.png"))
    data = open(path, "rb").read()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 2000


@pytest.mark.parametrize("num_nodes", [1.5, 2.0, True, "3", np.float32(2.0), None, float("inf"),
                                       float("nan"), 0, -2, (2,)])
def test_constructor_rejects_malformed_num_nodes(num_nodes):
    with pytest.raises(InvalidSpaceError, match="MicroCellSpace num_nodes must be an integer"):
        MicroCellSpace(num_nodes=num_nodes)


def test_constructor_accepts_numpy_integers_and_builds_exactly_that_many_nodes():
    space = MicroCellSpace(num_nodes=np.uint8(2))
    assert space.num_nodes == 2 and space.num_decisions == 16


@pytest.mark.parametrize("text", [
    "normal: 02=identity(0)+identity(1) | reduce: 2=identity(0)+identity(1)",
    "normal: 2=identity(00)+identity(1) | reduce: 2=identity(0)+identity(1)",
    "normal: \u0662=identity(0)+identity(1) | reduce: 2=identity(0)+identity(1)",
    "normal: 2=identity(-1)+identity(1) | reduce: 2=identity(0)+identity(1)",
    "normal: 2=identity(0)+identity(99999999999999999999) | reduce: 2=identity(0)+identity(1)",
    "normal: 2=identity(0)+identity(1) | reduce: 2=identity(0)+identity(1) | extra",
    "normal: 2=identity(0)+identity(1) 3=identity(0)+identity(1) | "
    "reduce: 2=identity(0)+identity(1)",
    "normal: 2=Identity(0)+identity(1) | reduce: 2=identity(0)+identity(1)",
    "normal 2=identity(0)+identity(1) | reduce: 2=identity(0)+identity(1)",
])
def test_from_string_rejects_malformed_numbers_and_cells(text):
    with pytest.raises(InvalidArchitectureError):
        MicroCellSpace(num_nodes=1).from_string(text)


def test_validate_and_decision_index_reject_non_integers():
    space = MicroCellSpace(num_nodes=1)
    with pytest.raises(InvalidArchitectureError, match=r"node2_x_op\) must be an integer, got 1.7"):
        space.validate([0, 1.7, 0, 0, 0, 0, 0, 0])
    with pytest.raises(InvalidArchitectureError, match=r"reduce_node2_y_op\) is 5"):
        space.validate([0, 0, 0, 0, 0, 0, 0, 5])
    for args, message in (((2, 0, 0, "op"), r"cell is 2, must be in \[0, 2\)"),
                          ((0, 1, 0, "op"), r"node is 1, must be in \[0, 1\)"),
                          ((0, 0, 1.0, "op"), "slot must be an integer")):
        with pytest.raises(InvalidArchitectureError, match=message):
            space.decision_index(*args)
    assert space.decision_index(np.int64(1), 0, 1, "input") == 6
