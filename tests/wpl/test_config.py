import math

import pytest

from wpl_keras.wpl.config import WPLConfig


def test_defaults_are_the_papers_and_json_round_trips():
    config = WPLConfig()
    assert (config.fisher_momentum, config.clip_norm, config.mode) == (0.9, 10.0, "proximal")
    other = WPLConfig(fisher_momentum=0.5, clip_norm=None, mode="gradient")
    assert WPLConfig.from_json(other.to_json()) == other


@pytest.mark.parametrize(
    "field, value",
    [
        ("fisher_momentum", 0.0),
        ("fisher_momentum", 1.5),
        ("fisher_momentum", -0.1),
        ("fisher_momentum", math.nan),
        ("fisher_momentum", True),
        ("fisher_momentum", "0.9"),
        ("clip_norm", 0.0),
        ("clip_norm", -1.0),
        ("clip_norm", math.inf),
        ("clip_norm", math.nan),
        ("clip_norm", "10"),
        ("mode", "prox"),
        ("mode", None),
    ],
)
def test_bad_values_name_the_field(field, value):
    with pytest.raises(ValueError, match=field if field != "mode" else "mode"):
        WPLConfig(**{field: value})


def test_unknown_json_field_is_refused():
    with pytest.raises(ValueError, match="strength"):
        WPLConfig.from_json({"strength": 60.0})
