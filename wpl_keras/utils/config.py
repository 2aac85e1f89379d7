"""JSON round trips for the frozen dataclass configs."""

from __future__ import annotations

import dataclasses
import json


class JsonConfig:
    """Mixin for a flat frozen dataclass: ``to_json()`` → dict, ``from_json(dict | str)`` → config.

    ``from_json`` rejects unknown fields with an error naming them, so a typo in a saved config is
    not silently ignored.
    """

    def to_json(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, obj):
        if isinstance(obj, str):
            obj = json.loads(obj)
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(obj) - names
        if unknown:
            raise ValueError(f"unknown {cls.__name__} fields: {sorted(unknown)}.")
        return cls(**obj)
