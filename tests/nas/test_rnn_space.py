import json

import numpy as np
import pytest

from wpl_keras.nas.base import InvalidArchitectureError
from wpl_keras.nas.rnn_space import RNNCellSpace, pair_index


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
