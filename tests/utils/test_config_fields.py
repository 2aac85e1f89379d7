"""replace_fields, parse_assignments and find_field: nested config fields set by dotted path."""

import dataclasses

import pytest

from wpl_keras.utils.config_fields import (
    find_field,
    nested_changes,
    parse_assignments,
    replace_fields,
)


@dataclasses.dataclass(frozen=True)
class Inner:
    width: int = 2
    rate: float = 0.5
    on: bool = False

    def __post_init__(self):
        if self.width % 2:
            raise ValueError(f"Inner.width must be even, got {self.width}.")


@dataclasses.dataclass(frozen=True)
class Outer:
    inner: Inner = Inner()
    other: Inner = Inner()
    steps: int = 1
    dropout: float = 0.0


def test_dotted_keys_rebuild_each_config_once_and_keep_the_rest():
    outer = Outer()
    new = replace_fields(outer, {"inner.width": 4, "inner.rate": 1, "steps": 3})
    assert new == Outer(inner=Inner(width=4, rate=1.0), steps=3)
    assert isinstance(new.inner.rate, float)  # an int for a float field becomes a float
    assert replace_fields(outer, {"inner.on": True}).inner.on is True
    assert replace_fields(outer, {}) is not outer and replace_fields(outer, {}) == outer
    # A dict for a nested config changes only the fields it gives.
    assert replace_fields(outer, {"other": {"width": 6}}).other == Inner(width=6)
    # Pairs apply in order: a later change of the same field wins.
    assert replace_fields(outer, [("steps", 2), ("steps", 5)]).steps == 5
    assert replace_fields(outer, [("inner.width", 4), ("inner", {"rate": 2.0})]).inner == (
        Inner(rate=2.0))


def test_errors_name_where_the_key_and_the_fix():
    outer = Outer()
    with pytest.raises(ValueError, match=r"--set: Outer has no field 'width'; did you mean "
                                         r"inner.width or other.width\?"):
        replace_fields(outer, {"width": 4}, where="--set")
    with pytest.raises(ValueError, match=r"--set inner: Inner has no field 'size'\."):
        replace_fields(outer, {"inner.size": 4}, where="--set")
    with pytest.raises(ValueError, match="--set inner: Inner.width must be even, got 3"):
        replace_fields(outer, {"inner.width": 3}, where="--set")
    with pytest.raises(ValueError, match="'inner' is also given as a whole"):
        replace_fields(outer, [("inner", {"width": 4}), ("inner.rate", 1.0)])
    with pytest.raises(ValueError, match=r"int is not a dataclass config.*\['x'\]"):
        replace_fields(outer, {"steps.x": 1})
    with pytest.raises(ValueError, match="Inner has no field 'depth'"):
        replace_fields(outer, {"other": {"depth": 1}})


def test_parse_assignments_reads_json_values_in_order():
    assert parse_assignments(['a.b=64', ' c = "x"', "d=true", 'e={"f": 1}'], flag="--t") == [
        ("a.b", 64), ("c", "x"), ("d", True), ("e", {"f": 1})]
    assert parse_assignments([], flag="--t") == []
    with pytest.raises(ValueError, match="--t expects KEY=VALUE, got 'width'"):
        parse_assignments(["width"], flag="--t")
    with pytest.raises(ValueError, match=r"--t 'mode=fast': VALUE is not JSON .*quote strings"):
        parse_assignments(["mode=fast"], flag="--t")


def test_find_field_looks_in_own_fields_first_then_nested_depth_first():
    outer = Outer()
    assert find_field(outer, ("dropout", "rate")) == ("dropout",)
    assert find_field(outer, ("rate",)) == ("inner", "rate")
    assert find_field(outer, ("missing",)) is None
    path = find_field(outer, ("on",))
    assert replace_fields(outer, {".".join(path): True}).inner.on is True


def test_task_config_of_a_preset_through_command_line_items():
    from wpl_keras.experiments import enas
    from wpl_keras.wpl.config import WPLConfig

    task = enas.get_preset("rnn", "cpu-small").task

    def task_set(items):
        return replace_fields(task, parse_assignments(items, flag="--task-set"),
                              where="--task-set")

    new = task_set(["model.hidden_size=64", "model.embedding_size=64",
                    "optimizer.learning_rate=5", 'wpl={"mode": "gradient"}',
                    'wpl_scope="cell"', "optimizer.grad_clip=0.5"])
    assert (new.model.hidden_size, new.model.embedding_size) == (64, 64)
    assert new.model.output_dropout == task.model.output_dropout
    assert new.optimizer.learning_rate == 5.0 and isinstance(new.optimizer.learning_rate, float)
    assert new.optimizer.grad_clip == 0.5 and new.optimizer.l2 == task.optimizer.l2
    assert new.wpl == WPLConfig(mode="gradient", fisher_momentum=task.wpl.fisher_momentum,
                                clip_norm=task.wpl.clip_norm)
    assert new.wpl_scope == "cell" and new.batch_size == task.batch_size
    assert task_set(['model={"output_dropout": 0.2}']).model == (
        dataclasses.replace(task.model, output_dropout=0.2))
    assert task_set([]) == task
    for item, message in (
        ("learning_rate=10", "has no field 'learning_rate'; did you mean optimizer.learning_rate"),
        ("model.hidden_size=65", "tied"),
        ("model.output_dropout=1.5", "output_dropout must be a finite number in"),
        ("model.nodes=3", "RNNModelConfig has no field 'nodes'"),
    ):
        with pytest.raises(ValueError, match=message):
            task_set([item])


def test_nested_changes_prefix_each_nested_mapping():
    changes = nested_changes({"steps": 3}, inner={"width": 4, "rate": 1}, other=None)
    assert changes == {"steps": 3, "inner.width": 4, "inner.rate": 1}
    assert nested_changes({}, inner={}) == {}
    new = replace_fields(Outer(), changes)
    assert new == Outer(inner=Inner(width=4, rate=1.0), steps=3)
    assert type(new.inner.rate) is float
    whole = nested_changes({}, inner=Inner(width=6), other={"on": True})
    assert replace_fields(Outer(), whole) == Outer(inner=Inner(width=6), other=Inner(on=True))

