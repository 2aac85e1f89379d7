"""The `paper` presets against their table (``wpl_keras/experiments/paper_presets.json``).

Every row's value is the preset's actual value at its dotted path; every field of the preset
has a row or is listed as operational / unused; the α, learning-rate and flush schedules
replay the WPL release's arithmetic; README.md's table is the rendering of the file.

Regenerate the README table with ``PYTHONPATH=. python tests/experiments/test_paper_presets.py``
(prints the block between the README's ``paper-presets`` markers, markers included).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import sys
from typing import Any, Dict, Iterator, List, Tuple

import pytest

import wpl_keras.experiments
from wpl_keras.experiments import enas
from wpl_keras.experiments.nao import nao_preset
from wpl_keras.wpl.schedule import flush_at, strength_at, wpl_active_at

DATA_PATH = os.path.join(os.path.dirname(wpl_keras.experiments.__file__), "paper_presets.json")
README = os.path.join(os.path.dirname(__file__), "..", "..", "README.md")
BEGIN, END = "<!-- paper-presets:begin -->", "<!-- paper-presets:end -->"
GROUPS = ("task", "supernet", "optimizer", "WPL", "schedule", "controller", "derive",
          "final training", "run")
# Field names that may be left out of a table as purely operational (no effect on what is
# computed); anything else needs a row.
OPERATIONAL_NAMES = {"verbose", "checkpoint_every", "max_to_keep", "jit_compile", "strategy",
                     "preset"}
# The presets the table must hold.
REQUIRED_PRESETS = {"rnn", "nao", "cnn"}
# Each section's release schedule: (`--start_using_fisher` or the paper's n, flush interval).
# RNN and NAO: the release's RNN command (5, 2); CNN: the paper's n = 3 (the release's CNN
# command never turns WPL on) and the flush every 3 epochs of the paper and that command.
RELEASE_SCHEDULE = {"rnn": (5, 2), "nao": (5, 2), "cnn": (3, 3)}


def load_table() -> Dict[str, Any]:
    with open(DATA_PATH, encoding="utf-8") as f:
        return json.load(f)


def load_preset(load: Dict[str, str]):
    """The preset a section's ``load`` names: ``enas`` through ``enas.get_preset``, ``nao``
    through ``nao_preset``."""
    if load["kind"] == "enas":
        return enas.get_preset(load["space"], load["preset"])
    if load["kind"] == "nao":
        return nao_preset(load["space"], load["preset"])
    raise ValueError(f"unknown preset kind {load['kind']!r} in {DATA_PATH}; use enas or nao.")


def get_path(config, path: str):
    """The value at dotted ``path`` of nested dataclass ``config``."""
    value = config
    for name in path.split("."):
        if not dataclasses.is_dataclass(value) or name not in {
                f.name for f in dataclasses.fields(value)}:
            raise KeyError(f"{path!r}: no field {name!r} in {type(value).__name__}.")
        value = getattr(value, name)
    return value


def leaf_paths(config, prefix: str = "") -> Iterator[str]:
    """Dotted paths of every non-dataclass field of ``config``, depth first."""
    for field in dataclasses.fields(config):
        value = getattr(config, field.name)
        path = prefix + field.name
        if dataclasses.is_dataclass(value):
            yield from leaf_paths(value, path + ".")
        else:
            yield path


def rows_of(table: Dict[str, Any], key: str) -> List[Dict[str, Any]]:
    """The rows of section ``key``: its own plus, with ``inherit``, the rows of section
    ``from`` under the listed paths, each prefixed."""
    section = table["presets"][key]
    rows = list(section["rows"])
    inherit = section.get("inherit")
    if inherit:
        for row in table["presets"][inherit["from"]]["rows"]:
            if any(row["path"] == p or row["path"].startswith(p + ".")
                   for p in inherit["paths"]):
                rows.append(dict(row, path=inherit["prefix"] + row["path"]))
    return rows


def same(expected, actual) -> bool:
    """Equal values of the same kind (a bool is not an int; ints and floats compare as
    numbers, floats to 1e-12 relative)."""
    if isinstance(expected, bool) or isinstance(actual, bool):
        return type(expected) is type(actual) and expected == actual
    if isinstance(expected, (int, float)) and isinstance(actual, (int, float)):
        return math.isclose(expected, actual, rel_tol=1e-12, abs_tol=0.0)
    return type(expected) is type(actual) and expected == actual


def mismatches(config, rows) -> List[Tuple[str, Any, Any]]:
    """``(path, table value, preset value)`` for every row the preset disagrees with."""
    out = []
    for row in rows:
        actual = get_path(config, row["path"])
        if not same(row["value"], actual):
            out.append((row["path"], row["value"], actual))
    return out


def uncovered(config, section: Dict[str, Any], rows) -> List[str]:
    """Leaf paths of ``config`` without a row, not operational and not under an unused
    prefix."""
    covered = {row["path"] for row in rows} | set(section["operational"])
    prefixes = tuple(p + "." for p in section["unused"])
    return [p for p in leaf_paths(config)
            if p not in covered and p not in section["unused"] and not p.startswith(prefixes)]


# --------------------------------------------------------------------------- rendering
def _cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def render_section(table: Dict[str, Any], key: str) -> List[str]:
    """The README lines of one preset: its table (rows in ``GROUPS`` order), then what the
    table leaves out."""
    section = table["presets"][key]
    lines = [f"#### `{key}`: {section['title']}", ""]
    inherit = section.get("inherit")
    if inherit:
        paths = ", ".join(f"`{inherit['prefix']}{p}`" for p in inherit["paths"])
        lines += [f"{paths}: as the `{inherit['from']}` table.", ""]
    lines += ["| group | field | value | source | differs from both sources: why |",
              "|---|---|---|---|---|"]
    for row in sorted(section["rows"], key=lambda r: GROUPS.index(r["group"])):
        lines.append(f"| {row['group']} | `{row['path']}` | `{row['value']!r}` | "
                     f"{_cell(row['source'])} | {_cell(row.get('differs', ''))} |")
    lines.append("")
    for item in section.get("not_modelled", []):
        lines.append(f"- Not modelled: {item['what']} ({item['source']}): {item['reason']}.")
    left_out = {**section["operational"], **section["unused"]}
    if left_out:
        lines.append("- Not in the table: " + "; ".join(
            f"`{path}` ({why})" for path, why in left_out.items()) + ".")
    lines.append("")
    return lines


def render(table: Dict[str, Any]) -> str:
    """The block between the README's markers."""
    lines = [BEGIN, ""]
    for key in table["presets"]:
        lines += render_section(table, key)
    lines.append(END)
    return "\n".join(lines)


# --------------------------------------------------------------------------- tests
TABLE = load_table()
SECTIONS = sorted(TABLE["presets"])


def test_table_holds_the_required_presets_and_wellformed_rows():
    assert REQUIRED_PRESETS <= set(SECTIONS)
    for key in SECTIONS:
        section = TABLE["presets"][key]
        paths = [row["path"] for row in rows_of(TABLE, key)]
        assert len(paths) == len(set(paths)), f"{key}: a path has two rows"
        for row in section["rows"]:
            assert row["group"] in GROUPS, (key, row)
            assert row["source"].strip(), (key, row["path"])
            assert set(row) <= {"group", "path", "value", "source", "differs"}, row
            if "differs" in row:
                assert len(row["differs"].strip()) > 20, (key, row["path"])
        for path in section["operational"]:
            assert path.rsplit(".", 1)[-1] in OPERATIONAL_NAMES, (key, path)
        for item in section.get("not_modelled", []):
            assert item["what"] and item["source"] and item["reason"], item


@pytest.mark.parametrize("key", SECTIONS)
def test_every_row_is_the_presets_value(key):
    config = load_preset(TABLE["presets"][key]["load"])
    assert mismatches(config, rows_of(TABLE, key)) == []


@pytest.mark.parametrize("key", SECTIONS)
def test_every_field_of_the_preset_has_a_row(key):
    section = TABLE["presets"][key]
    config = load_preset(section["load"])
    assert uncovered(config, section, rows_of(TABLE, key)) == []
    for path in list(section["operational"]) + list(section["unused"]):
        get_path(config, path)  # names a real field


def test_checks_catch_a_changed_value_and_a_new_field():
    """The checks above can fail: a changed value is reported, and a field without a row
    (here: the optimizer left out of the rows) is listed."""
    section = TABLE["presets"]["rnn"]
    config = load_preset(section["load"])
    changed = dataclasses.replace(config, derive_samples=99, task=dataclasses.replace(
        config.task, wpl=dataclasses.replace(config.task.wpl, fisher_normalization="none")))
    found = {path for path, _, _ in mismatches(changed, rows_of(TABLE, "rnn"))}
    assert found == {"derive_samples", "task.wpl.fisher_normalization"}
    rows = [r for r in rows_of(TABLE, "rnn") if not r["path"].startswith("task.optimizer.")]
    assert sorted(uncovered(config, section, rows)) == sorted(
        f"task.optimizer.{f.name}" for f in dataclasses.fields(config.task.optimizer))
    assert not same(1, True) and not same("1", 1) and same(60, 60.0)


def _release_alpha(epoch: int, start: int = 5) -> float:
    """The release's α at ``epoch`` (models/wpl_module.py ``update_fisher`` with the run
    commands' flags): 0 before the WPL start ``start``, else
    ``max(60 − max(e − 15 + 1, 0) · 1, 0)`` from ``--alpha_decay_after`` 15."""
    if epoch < start:
        return 0.0
    alpha = 60.0
    if epoch >= 15:
        alpha = max(60.0 - max(epoch - 15 + 1, 0) * 1.0, 0.0)
    return alpha


@pytest.mark.parametrize("key", SECTIONS)
def test_schedule_replays_the_release(key):
    """α(e) equals the release's arithmetic for every epoch (59 at 15, 0 from 74); WPL is on
    from the section's start epoch; the Fisher is flushed every ``flush`` epochs counted from
    the WPL start (for RNN / NAO the documented difference from the release's even epochs)."""
    start, flush = RELEASE_SCHEDULE[key]
    config = load_preset(TABLE["presets"][key]["load"])
    search = config.search
    alphas = [strength_at(e, search) for e in range(search.epochs)]
    assert alphas == [_release_alpha(e, start) for e in range(search.epochs)]
    assert alphas[15] == 59.0 and alphas[73] == 1.0 and alphas[74] == 0.0
    assert [e for e in range(10) if wpl_active_at(e, search)] == list(range(start, 10))
    assert [e for e in range(search.epochs) if flush_at(e, search)] == list(
        range(start + flush, search.epochs, flush))


def test_rnn_learning_rate_replays_the_release():
    """Epoch e trains at the release's ``shared_lr``: 20 · 0.96^max(0, e − 15) (trainer.py
    lowers the rate after each epoch e >= 15 to 20 · 0.96^(e − 15 + 1) for the next)."""
    optimizer = load_preset(TABLE["presets"]["rnn"]["load"]).task.optimizer
    lr, expected = 20.0, []
    for epoch in range(150):
        expected.append(lr)
        if epoch >= 15:
            lr = 20.0 * 0.96 ** (epoch - 15 + 1)
    got = [optimizer.rate(e) for e in range(150)]
    assert all(math.isclose(a, b, rel_tol=1e-12) for a, b in zip(got, expected))


def test_readme_table_is_the_rendered_file():
    with open(README, encoding="utf-8") as f:
        text = f.read()
    assert text.count(BEGIN) == 1 and text.count(END) == 1, "README needs one marker pair"
    block = text[text.index(BEGIN): text.index(END) + len(END)]
    assert block == render(TABLE), (
        "README.md's paper-presets table differs from paper_presets.json; regenerate it with "
        "`PYTHONPATH=. python tests/experiments/test_paper_presets.py`.")


if __name__ == "__main__":
    sys.stdout.write(render(load_table()) + "\n")
