import json

import pytest

from wpl_keras.nas.base import InvalidArchitectureError
from wpl_keras.nas.search.derive import load_derived
from wpl_keras.nas.spaces.rnn.space import RNNCellSpace


def _write(tmp_path, obj, raw=None):
    path = tmp_path / "derived.json"
    path.write_text(raw if raw is not None else json.dumps(obj))
    return str(path)


def test_load_derived_reads_arch_or_decisions(tmp_path):
    space = RNNCellSpace(num_nodes=2)
    assert load_derived(_write(tmp_path, {"arch": [1, 0, 2]}), space) == (1, 0, 2)
    assert load_derived(_write(tmp_path, {"decisions": [1, 0, 2]})) == (1, 0, 2)


@pytest.mark.parametrize(
    "obj, raw",
    [
        ({"arch": [1, 0.7, 2]}, None),
        ({"arch": [1, True, 2]}, None),
        ({"arch": "102"}, None),
        ([1, 0, 2], None),
        ({}, None),
        (None, "{not json"),
        (None, "null"),
    ],
)
def test_load_derived_refuses_malformed_files(tmp_path, obj, raw):
    with pytest.raises(InvalidArchitectureError, match="derived.json"):
        load_derived(_write(tmp_path, obj, raw))


def test_load_derived_with_a_space_validates_the_range(tmp_path):
    with pytest.raises(InvalidArchitectureError):
        load_derived(_write(tmp_path, {"arch": [1, 5, 2]}), RNNCellSpace(num_nodes=2))
