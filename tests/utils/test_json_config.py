import dataclasses

import pytest

from wpl_keras.utils.config import JsonConfig


@dataclasses.dataclass(frozen=True)
class Inner(JsonConfig):
    size: int = 1


@dataclasses.dataclass(frozen=True)
class Outer(JsonConfig):
    inner: Inner = Inner()
    rate: float = 0.5

    def __post_init__(self):
        self._coerce_nested()


def test_nested_config_round_trips_through_json():
    outer = Outer(Inner(3), 0.25)
    assert Outer.from_json(outer.to_json()) == outer
    assert Outer.from_json('{"inner": {"size": 4}}') == Outer(Inner(4))


def test_a_dict_in_place_of_a_nested_config_is_read_through_its_from_json():
    assert Outer(inner={"size": 7}).inner == Inner(7)
    with pytest.raises(ValueError, match=r"unknown Inner fields: \['width'\]"):
        Outer(inner={"width": 7})


@pytest.mark.parametrize("value", [3, "inner", [1], None])
def test_a_nested_field_of_another_type_names_the_field(value):
    with pytest.raises(TypeError, match="Outer.inner must be a Inner"):
        Outer(inner=value)


@pytest.mark.parametrize("obj", [[1, 2], None, 3, "[]"])
def test_from_json_refuses_what_is_not_an_object(obj):
    with pytest.raises(ValueError, match="needs a JSON object"):
        Outer.from_json(obj)


def test_unknown_fields_are_refused_at_every_level():
    with pytest.raises(ValueError, match=r"unknown Outer fields: \['typo'\]"):
        Outer.from_json({"typo": 1})
    with pytest.raises(ValueError, match=r"unknown Inner fields: \['typo'\]"):
        Outer.from_json({"inner": {"typo": 1}})
