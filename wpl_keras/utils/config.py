"""JSON round trips for the frozen dataclass configs."""

from __future__ import annotations

import dataclasses
import json
import typing


class JsonConfig:
    """Mixin for a frozen dataclass: ``to_json()`` → dict, ``from_json(dict | str)`` → config.

    A field whose type is itself a :class:`JsonConfig` dataclass (a config nested by concern,
    e.g. ``wpl: WPLConfig``) is written as a nested dict and read back through that class's
    ``from_json``. ``from_json`` rejects unknown fields with an error naming them, at every
    level, so a typo in a saved config is not silently ignored.
    """

    def to_json(self) -> dict:
        return dataclasses.asdict(self)

    def _coerce_nested(self) -> None:
        """For ``__post_init__``: each field whose type is a :class:`JsonConfig` and whose value
        is a dict (from JSON, or an override) becomes that config, read through its
        ``from_json`` (unknown fields refused); any other value of another type raises a
        ``TypeError`` naming the field."""
        owner = type(self).__name__
        for name, kind in typing.get_type_hints(type(self)).items():
            if not (isinstance(kind, type) and issubclass(kind, JsonConfig)):
                continue
            value = getattr(self, name)
            if isinstance(value, dict):
                value = kind.from_json(value)
                object.__setattr__(self, name, value)
            if not isinstance(value, kind):
                raise TypeError(
                    f"{owner}.{name} must be a {kind.__name__} or a JSON object of its fields, "
                    f"got {type(value).__name__}."
                )

    @classmethod
    def from_json(cls, obj):
        if isinstance(obj, str):
            obj = json.loads(obj)
        if not isinstance(obj, dict):
            raise ValueError(
                f"{cls.__name__}.from_json needs a JSON object, got {type(obj).__name__}."
            )
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(obj) - names
        if unknown:
            raise ValueError(f"unknown {cls.__name__} fields: {sorted(unknown)}.")
        hints = typing.get_type_hints(cls)
        values = {}
        for name, value in obj.items():
            kind = hints.get(name)
            nested = isinstance(kind, type) and issubclass(kind, JsonConfig)
            values[name] = kind.from_json(value) if nested and isinstance(value, dict) else value
        return cls(**values)
