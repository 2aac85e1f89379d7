"""Changing fields of frozen dataclass configs, nested configs included, by dotted path.

The one helper that sets a nested config field: ``replace_fields(task, {"model.hidden_size":
64})`` rebuilds ``task.model`` and then ``task`` with :func:`dataclasses.replace`, so every
config's own checks run on the new values. ``parse_assignments`` reads ``KEY=VALUE`` items of a
command line (VALUE is JSON) into the pairs ``replace_fields`` takes, ``nested_changes`` builds
them from per-config mappings, and ``find_field`` looks a field up by name through the nested
configs.
"""

from __future__ import annotations

import dataclasses
import json
from typing import (Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, TypeVar,
                    Union)

Config = TypeVar("Config")
Changes = Union[Mapping[str, Any], Iterable[Tuple[str, Any]]]


class _Nested(dict):
    """The changes to one nested config, collected from dotted keys (a plain ``dict`` value is
    a JSON object given for the whole nested config)."""


def replace_fields(config: Config, changes: Changes, *, where: str = "replace_fields") -> Config:
    """``config`` with ``changes`` applied; each config on the way is rebuilt once.

    A key is a field of ``config`` or a dotted path into its nested dataclass configs
    (``"model.hidden_size"``). The changes are collected first and each config is rebuilt with
    one :func:`dataclasses.replace`, so fields that the config checks together (``model.
    hidden_size`` and ``model.embedding_size``) may be given as separate keys. A later change of
    the same field wins. A dict for a nested config changes only the fields it gives, at every
    depth (``{"wpl": {"mode": "gradient"}}`` keeps the other ``wpl`` fields). An int for a
    float field becomes a float.

    Args:
        config: a (frozen) dataclass instance.
        changes: ``{key: value}``, or ``(key, value)`` pairs applied in order.
        where: the name the errors start with (e.g. the command-line flag).

    Raises:
        ValueError: naming ``where`` and the key, for an unknown field (with the nested configs
            that have a field of that name), a dotted key through a field already given as a
            whole, or a value the config refuses.
    """
    nested = _Nested()
    for key, value in (changes.items() if isinstance(changes, Mapping) else changes):
        *outer, name = [part.strip() for part in str(key).split(".")]
        level = nested
        for part in outer:
            level = level.setdefault(part, _Nested())
            if not isinstance(level, _Nested):
                raise ValueError(f"{where} {key!r}: {part!r} is also given as a whole; give "
                                 "either the whole config or dotted fields of it.")
        level[name] = value
    return _apply(config, nested, where)


def nested_changes(fields: Mapping[str, Any],
                   **nested: Optional[Mapping[str, Any]]) -> Dict[str, Any]:
    """The changes of :func:`replace_fields` from top-level ``fields`` and, per nested config
    ``name``, a mapping of its fields: ``nested_changes({"seed": 1}, search={"epochs": 3})`` is
    ``{"seed": 1, "search.epochs": 3}``. A ``None`` or empty mapping changes nothing; a
    dataclass config in place of the mapping replaces that nested config whole."""
    changes: Dict[str, Any] = dict(fields)
    for name, values in nested.items():
        if dataclasses.is_dataclass(values) and not isinstance(values, type):
            changes[name] = values
            continue
        for key, value in (values or {}).items():
            changes[f"{name}.{key}"] = value
    return changes


def parse_assignments(items: Sequence[str], *, flag: str) -> List[Tuple[str, Any]]:
    """``KEY=VALUE`` items, VALUE read as JSON, as ``(KEY, value)`` pairs in order.

    Raises:
        ValueError: naming ``flag`` and the item, for an item without ``=`` or a VALUE that is
            not JSON (a string must be quoted: ``'KEY="text"'``).
    """
    pairs = []
    for item in items:
        key, sep, text = item.partition("=")
        if not sep:
            raise ValueError(f"{flag} expects KEY=VALUE, got {item!r}.")
        try:
            pairs.append((key.strip(), json.loads(text)))
        except json.JSONDecodeError as err:
            raise ValueError(f"{flag} {item!r}: VALUE is not JSON ({err}); quote strings as "
                             "'\"text\"'.") from None
    return pairs


def find_field(config, names: Sequence[str]) -> Optional[Tuple[str, ...]]:
    """Path to the first field of ``config`` named one of ``names``: its own fields first, then
    (depth first, in field order) those of its nested dataclass configs; None if absent. The
    path joined with ``"."`` is a key of :func:`replace_fields`."""
    fields = dataclasses.fields(config)
    own = {f.name for f in fields}
    for name in names:
        if name in own:
            return (name,)
    for f in fields:
        value = getattr(config, f.name)
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            inner = find_field(value, names)
            if inner is not None:
                return (f.name,) + inner
    return None


def _apply(config, changes: _Nested, where: str):
    """``config`` with ``changes`` applied; a :class:`_Nested` value, or a dict for a nested
    config, rebuilds that nested config first (with only the fields it gives changed)."""
    if not dataclasses.is_dataclass(config) or isinstance(config, type):
        raise ValueError(f"{where}: {type(config).__name__} is not a dataclass config, so it has "
                         f"no fields {sorted(changes)}.")
    fields = {f.name for f in dataclasses.fields(config)}
    values = {}
    for name, value in changes.items():
        if name not in fields:
            raise ValueError(f"{where}: {type(config).__name__} has no field {name!r}"
                             f"{_did_you_mean(config, fields, name)}")
        current = getattr(config, name)
        if isinstance(value, _Nested) or (dataclasses.is_dataclass(current)
                                          and isinstance(value, dict)):
            value = _apply(current, _Nested(value), f"{where} {name}")
        elif isinstance(current, float) and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        values[name] = value
    return _replace(config, values, where)


def _did_you_mean(config, fields, name: str) -> str:
    """``"; did you mean model.name?"`` for the nested configs of ``config`` with a field
    ``name``; empty if none."""
    nested = [f"{f}.{name}" for f in sorted(fields)
              if dataclasses.is_dataclass(getattr(config, f))
              and name in {g.name for g in dataclasses.fields(getattr(config, f))}]
    return f"; did you mean {' or '.join(nested)}?" if nested else "."


def _replace(config, values: dict, where: str):
    """``dataclasses.replace(config, **values)``; a refused value raises a ValueError naming
    ``where``."""
    try:
        return dataclasses.replace(config, **values)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{where}: {err}") from None
