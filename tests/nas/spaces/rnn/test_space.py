import json

import numpy as np
import pytest

from wpl_keras.nas.base import InvalidArchitectureError, InvalidSpaceError
from wpl_keras.nas.spaces.rnn.space import RNNCellSpace, pair_index


def test_decisions_and_pairs():
    space = RNNCellSpace(num_nodes=12)
    assert space.name == "enas_rnn"
    assert space.num_decisions == 23
    assert space.decision_sizes[:5] == (4, 1, 4, 2, 4)
    assert space.decision_names[3] == "node2_input"
    assert space.num_pairs == 66
    pairs = [pair_index(1, 0), pair_index(2, 0), pair_index(2, 1), pair_index(11, 10)]
    assert pairs == [0, 1, 2, 65]
    with pytest.raises(ValueError):
        pair_index(2, 2)


def test_string_round_trip_and_reading():
    space = RNNCellSpace(num_nodes=4)
    arch = (1, 0, 0, 0, 3, 1, 2)
    text = space.to_string(arch)
    assert text == "n0=relu n1=tanh(n0) n2=sigmoid(n0) n3=identity(n1)"
    assert space.from_string(text) == arch
    assert space.inputs(arch) == (0, 0, 1)
    assert space.activation_ids(arch) == (1, 0, 3, 2)
    assert space.loose_ends(arch) == (2, 3)
    assert space.edge_rows(arch) == (0, 1, 4)
    assert space.from_json(json.dumps(space.to_json(arch))) == arch


def test_random_samples_are_valid_and_round_trip():
    space = RNNCellSpace()
    rng = np.random.default_rng(0)
    archs = {space.sample(rng) for _ in range(30)}
    assert len(archs) > 25
    for arch in archs:
        assert space.from_string(space.to_string(arch)) == arch


@pytest.mark.parametrize(
    "text, message",
    [
        ("n0=tanh n1=relu(n0)", "expected 3 nodes"),
        ("n0=tanh n1=relu(n0) n2=swish(n1)", "unknown activation 'swish'"),
        ("n0=tanh n1=relu(n1) n2=relu(n0)", "inputs must be earlier nodes"),
        ("n0=tanh n2=relu(n0) n1=relu(n0)", "listed in order"),
        ("n0=tanh(n0) n1=relu(n0) n2=relu(n0)", "takes no input node"),
        ("n0=tanh n1=relu n2=relu(n0)", "needs an input node"),
        ("n0=tanh n1=relu(n0) n2:relu", "cannot parse"),
    ],
)
def test_bad_strings_raise_clear_errors(text, message):
    with pytest.raises(InvalidArchitectureError, match=message):
        RNNCellSpace(num_nodes=3).from_string(text)


def test_validate_says_what_is_wrong():
    space = RNNCellSpace(num_nodes=3)
    with pytest.raises(InvalidArchitectureError, match=r"decision 3 \(node2_input\) is 2"):
        space.validate((0, 0, 0, 2, 0))
    with pytest.raises(InvalidArchitectureError, match="expected 5 decisions"):
        space.validate((0, 0))
    with pytest.raises(ValueError):
        RNNCellSpace(num_nodes=1)


def test_plot_writes_png(tmp_path):
    space = RNNCellSpace(num_nodes=5)
    path = space.plot(space.sample(np.random.default_rng(1)), str(tmp_path / "cell.png"))
    with open(path, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("num_nodes", [2.7, 2.0, 1.5, True, False, "3", np.float64(3.0), None,
                                       float("inf"), float("nan"), -1, 0, 1, [3]])
def test_constructor_rejects_malformed_num_nodes(num_nodes):
    with pytest.raises(InvalidSpaceError, match="RNNCellSpace num_nodes must be an integer"):
        RNNCellSpace(num_nodes=num_nodes)
    assert issubclass(InvalidSpaceError, ValueError)


def test_constructor_accepts_numpy_integers():
    space = RNNCellSpace(num_nodes=np.int64(3))
    assert space.num_nodes == 3 and type(space.num_nodes) is int
    assert space.decision_sizes == (4, 1, 4, 2, 4)


@pytest.mark.parametrize("text", [
    "n0=tanh n01=relu(n0) n2=relu(n0)",      # leading zero
    "n0=tanh n1=relu(n00) n2=relu(n0)",
    "n0=tanh n\u0661=relu(n0) n2=relu(n0)",  # Arabic-Indic digit one
    "n0=tanh n1=relu(n0) n2=relu(n99999999999999999999)",
    "n0=tanh n1=relu(n-1) n2=relu(n0)",
    "n0=TANH n1=relu(n0) n2=relu(n0)",
    "n0=tanh n1=relu(n0) n2=relu(n0) n3=relu(n0)",
    "n0=tanh, n1=relu(n0), n2=relu(n0)",
])
def test_from_string_rejects_malformed_numbers_and_tokens(text):
    with pytest.raises(InvalidArchitectureError):
        RNNCellSpace(num_nodes=3).from_string(text)


def test_validate_rejects_non_integer_decisions_without_truncating():
    space = RNNCellSpace(num_nodes=3)
    for bad, shown in ((1.7, "1.7"), (True, "True"), ("1", "'1'"), (float("inf"), "inf")):
        arch = [0, 0, bad, 0, 0]
        message = rf"decision 2 \(node1_activation\) must be an integer, got {shown}"
        with pytest.raises(InvalidArchitectureError, match=message):
            space.validate(arch)
    assert space.validate(np.array([0, 0, 1, 1, 3], np.int16)) == (0, 0, 1, 1, 3)


def test_pair_index_is_strict():
    for node, source in ((2.0, 1), (2, 0.5), (True, 0)):
        with pytest.raises(InvalidArchitectureError, match="must be an integer"):
            pair_index(node, source)
    with pytest.raises(InvalidArchitectureError, match="not allowed"):
        pair_index(1, -1)
    assert pair_index(np.int32(3), np.int64(2)) == 5
