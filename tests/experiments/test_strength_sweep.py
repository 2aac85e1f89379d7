"""The two-model strength sweep (wpl_keras.experiments.strength_sweep: the sweep, its table and
choice, several cases and their report, as benchmarks/alpha_sweep.py runs them; the recorded
choices wpl-two-models runs by default; --strength auto's runner), at tiny sizes."""

import dataclasses
import os
import re
import json
import math

import numpy as np
import pytest

from wpl_keras.data.mnist import MnistSplits, load_mnist
from wpl_keras.experiments import strength_sweep as ss
from wpl_keras.experiments import two_models as tm
from wpl_keras.wpl.strength import choose_strength
from wpl_keras.wpl.training import WPLDivergenceError
from tests.experiments.mnist_files import write_mnist

TINY_ARGS = ["--iterations", "20", "--eval-every", "10", "--hidden-units", "16",
             "--a-max-epochs", "4", "--fisher-samples", "20", "--validation-size", "60"]
# The settings of TINY_ARGS for the library's sweep (benchmarks/alpha_sweep.py's options).
TINY_SWEEP = dict(iterations=20, eval_every=10, hidden_units=16, a_max_epochs=4,
                  fisher_samples=20, validation_size=60, seeds=(0,), a_steps_per_epoch=20,
                  loose_learning_rate=0.1, loose_levels=(0.3,))


def _tiny_cases(data_dir, strict, alphas, progress=None, **changes):
    """``run_cases`` on the idx files at TINY_SWEEP (with ``changes``): ``(cases, config,
    data text)``."""
    config = tm.TwoModelsConfig(**{**TINY_SWEEP, **changes})
    data = load_mnist(str(data_dir), validation_size=config.validation_size, seed=0,
                      verify=False)
    cases = ss.run_cases(data, config, ss.case_levels(strict, config.loose_levels), alphas,
                         1.0, progress=progress)
    return cases, config, f"MNIST ({data.source})"


def _keys(obj):
    """Every dict key in a JSON-like object, recursively."""
    if isinstance(obj, dict):
        return [k for k, v in obj.items() for k in [k, *_keys(v)]]
    if isinstance(obj, list):
        return [k for v in obj for k in _keys(v)]
    return []


def _synthetic(seed=0, n=128, classes=10, side=6):
    rng = np.random.default_rng(seed)
    prototypes = rng.normal(0, 1, (classes, side, side)).astype(np.float32)

    def draw(count):
        y = rng.integers(0, classes, count).astype(np.int32)
        return (prototypes[y] + 0.8 * rng.normal(0, 1, (count, side, side))).astype(np.float32), y

    return MnistSplits(*draw(2 * n), *draw(n // 2), *draw(n // 2), source="synthetic")


TINY = dict(hidden_units=8, batch_size=16, a_max_epochs=2, a_steps_per_epoch=10, a_patience=1,
            iterations=20, eval_every=10, fisher_samples=20, seeds=(0,), b_learning_rate=0.5)


# --------------------------------------------------------------------------- two_models hook
@pytest.mark.slow
def test_run_case_validation_adds_validation_values_and_changes_nothing_else():
    data = _synthetic()
    config = tm.TwoModelsConfig(**TINY)
    trained = tm.train_a(data, config, 0)
    plain = tm.run_case(data, config, 0, trained_a=trained)
    val = tm.run_case(data, config, 0, trained_a=trained, validation=True)
    added = {"a_baseline_val", "a_final_without_val", "a_final_with_val", "b_final_without_val",
             "b_final_with_val", "forgetting_reduction_val"}
    assert set(val) - set(plain) == added and not set(plain) - set(val)
    for key in ("a_baseline", "a_final_without", "a_final_with", "b_final_without",
                "b_final_with", "forgetting_reduction"):
        assert val[key] == pytest.approx(plain[key], abs=1e-6), key
    d_without = val["a_baseline_val"] - val["a_final_without_val"]
    d_with = val["a_baseline_val"] - val["a_final_with_val"]
    if d_without > 0:
        assert val["forgetting_reduction_val"] == pytest.approx((d_without - d_with) / d_without)
    else:
        assert math.isnan(val["forgetting_reduction_val"])
    assert 0.0 <= val["b_final_with_val"] <= 1.0


@pytest.mark.slow
def test_run_case_reusing_b_without_wpl_equals_a_full_run():
    data = _synthetic()
    config = tm.TwoModelsConfig(**TINY)
    trained = tm.train_a(data, config, 0)
    first = tm.run_case(data, config, 0, trained_a=trained, validation=True)
    stronger = dataclasses.replace(config, strength=config.strength * 10)
    full = tm.run_case(data, stronger, 0, trained_a=trained, validation=True)
    reused = tm.run_case(data, stronger, 0, trained_a=trained, validation=True,
                         without_from=first)
    for key in ("a_final_without", "b_final_without", "a_final_with", "b_final_with",
                "forgetting_reduction", "a_final_without_val", "b_final_without_val",
                "b_final_with_val", "forgetting_reduction_val"):
        assert reused[key] == pytest.approx(full[key], abs=1e-6, nan_ok=True), key
    assert reused["runs"]["without"] is first["runs"]["without"]
    with pytest.raises(ValueError, match="seed 0, level None, but the case is seed 1"):
        tm.run_case(data, stronger, 1, validation=True, without_from=first)
    plain = tm.run_case(data, config, 0, trained_a=trained)
    with pytest.raises(ValueError, match="validation=True"):
        tm.run_case(data, stronger, 0, trained_a=trained, validation=True, without_from=plain)


def test_sweep_trains_a_once_per_seed_and_leaves_diverged_runs_out(monkeypatch):
    trained, calls = [], []

    def fake_train_a(data, config, seed, level=None):
        trained.append((seed, level))
        return ("A", seed, level)

    def fake_run_case(data, config, seed, level=None, trained_a=None, validation=False,
                      without_from=None):
        calls.append((seed, config.strength, trained_a, validation,
                      None if without_from is None else without_from["strength"]))
        if (seed, config.strength) == (1, 1e4):
            raise WPLDivergenceError("Training diverged at batch 3")
        return {"strength": config.strength, "forgetting_reduction": 0.5, "forgetting_reduction_val": 0.4 + seed / 10,
                "b_final_without": 0.9, "b_final_with": 0.9 - config.strength / 1e6,
                "b_final_without_val": 0.8, "b_final_with_val": 0.8, "seconds": 0.0}

    monkeypatch.setattr(ss, "train_a", fake_train_a)
    monkeypatch.setattr(ss, "run_case", fake_run_case)
    config = tm.TwoModelsConfig(seeds=(0, 1))
    sweep = ss.sweep_strengths(None, config, 0.44, [1e2, 1e4])
    assert trained == [(0, 0.44), (1, 0.44)]
    assert [c[:3] for c in calls] == [(0, 1e2, ("A", 0, 0.44)), (0, 1e4, ("A", 0, 0.44)),
                                      (1, 1e2, ("A", 1, 0.44)), (1, 1e4, ("A", 1, 0.44))]
    assert all(c[3] for c in calls)
    # B without WPL is trained at the first strength of each seed and reused after it
    assert [c[4] for c in calls] == [None, 1e2, None, 1e2]
    assert sweep["diverged"] == [{"seed": 1, "strength": 1e4,
                                  "error": "Training diverged at batch 3"}]
    table = ss.strength_table(sweep)
    assert [row["seeds_done"] for row in table] == [2, 1]
    assert table[0]["reduction_val"] == pytest.approx(0.45)
    assert table[1]["b_cost"] == pytest.approx(-1.0)  # 100 * (0.89 - 0.9)
    assert table[1]["b_cost_val"] == 0.0


def test_choose_case_strength_on_a_table():
    def row(alpha, red, acc, done=1):
        return {"strength": alpha, "seeds_done": done, "reduction_val": red,
                "b_accuracy_val": acc, "b_accuracy_without_val": 0.9}

    table = [row(1e2, 0.3, 0.9), row(1e4, 0.7, 0.895), row(1e6, 0.9, 0.85),
             row(1e8, float("nan"), float("nan"), done=0)]
    choice = ss.choose_case_strength(table, tolerance=1.0)
    assert choice["strength"] == 1e4 and choice["left_out"] == [1e8] and choice["error"] is None
    assert choice["choice"]["qualified"] is True
    table[1]["reduction_val"] = float("nan")
    bad = ss.choose_case_strength(table)
    assert bad["strength"] is None and "reductions[1] must be a finite number" in bad["error"]


# --------------------------------------------------------------------------- several cases
def test_case_levels_and_chosen_entry_take_the_test_values_at_the_chosen_strength():
    assert ss.case_levels(True, [0.5, 1]) == [None, 0.5, 1.0]
    assert ss.case_levels(False, []) == []
    table = [{"strength": 1e2, "reduction": 0.2, "b_cost": 0.5, "reduction_val": 0.3,
              "b_cost_val": 0.1},
             {"strength": 1e8, "reduction": 0.9, "b_cost": -9.0, "reduction_val": 0.95,
              "b_cost_val": -8.0}]
    choice = {"strength": 1e2, "error": None,
              "choice": {"qualified": True, "reason": "largest reduction among ..."}}
    entry = ss.chosen_entry(table, choice)
    assert entry == {"strength": 1e2, "reduction": 0.2, "b_cost": 0.5, "reduction_val": 0.3,
                     "b_cost_val": 0.1, "qualified": True, "reason": "largest reduction among ..."}
    none = ss.chosen_entry(table, {"strength": None, "choice": None, "error": "no forgetting"})
    assert none["strength"] is None and math.isnan(none["reduction"])
    assert none["reason"] == "no forgetting"


@pytest.mark.slow
def test_tiny_sweep_on_idx_files(tmp_path, monkeypatch):
    write_mnist(str(tmp_path / "data"))
    trained, messages = [], []
    real_train_a = tm.train_a

    def counting_train_a(data, config, seed, level=None):
        trained.append((seed, level))
        return real_train_a(data, config, seed, level)

    monkeypatch.setattr(ss, "train_a", counting_train_a)
    cases, config, data_text = _tiny_cases(tmp_path / "data", True, [1e2, 1e8],
                                           progress=messages.append)
    report = ss.write_sweep_report(cases, config, str(tmp_path / "out"), tolerance=1.0,
                                   data_text=data_text, seconds=1.0)
    assert json.loads(json.dumps(report, allow_nan=False)) == report  # strict JSON
    assert trained == [(0, None), (0, 0.3)]  # A once per seed and case, shared by both alphas
    assert any(m.startswith("strict: chosen strength") for m in messages)
    assert report["strengths"] == [1e2, 1e8] and report["seeds"] == [0]
    assert report["benchmark"] == "strength_sweep (two models)"
    assert [os.path.basename(p) for p in report["outputs"].values()] == [
        "strength_sweep.json", "strength_sweep.png"]
    assert not [k for k in _keys(report) if "alpha" in k]  # one name for α: strength
    assert set(report["cases"]) == set(report["chosen"]) == {"strict", "loose_0.3"}
    for name, case in report["cases"].items():
        rows = case["strengths"]
        assert set(rows) == {"100", "1e+08"} and case["diverged"] == []
        for row in rows.values():
            assert {"reduction", "b_cost", "reduction_val", "b_accuracy_val",
                    "b_accuracy_without_val", "b_cost_val", "seeds_done"} <= set(row)
        chosen = report["chosen"][name]
        # the chosen alpha is what the rule picks from the validation columns
        ordered = [rows["100"], rows["1e+08"]]
        rule = choose_strength([r["strength"] for r in ordered],
                               [r["reduction_val"] for r in ordered],
                               [r["b_accuracy_val"] for r in ordered],
                               np.mean([r["b_accuracy_without_val"] for r in ordered]), 1.0)
        assert chosen["strength"] == rule.strength and chosen["qualified"] == rule.qualified
        at = rows[f"{chosen['strength']:g}"]
        assert (chosen["reduction"], chosen["b_cost"]) == (at["reduction"], at["b_cost"])
    saved = json.loads(open(report["outputs"]["json"]).read())
    assert saved["report"]["cases"] == report["cases"]
    runs = saved["sweeps"]["strict"]["seeds"]
    low, high = runs["100"][0], runs["1e+08"][0]
    assert low["a_baseline"] == high["a_baseline"]  # both alphas start from the same A
    assert low["b_final_without"] == pytest.approx(high["b_final_without"], abs=1e-6)
    assert report["cases"]["strict"]["strengths"]["1e+08"]["b_cost"] == pytest.approx(
        100 * (high["b_final_with"] - high["b_final_without"]))
    assert open(report["outputs"]["figure"], "rb").read(8) == b"\x89PNG\r\n\x1a\n"


def test_merge_sweeps_keeps_the_first_run_of_a_strength_and_reads_nulls_as_nan():
    case = {"forgetting_reduction": None, "b_final_with": 0.9}
    first = {"level": 0.44, "strengths": [1e2, 1e8], "seeds": {"100": [{"run": 1}], "1e+08": []},
             "diverged": [{"seed": 0, "strength": 1e8, "error": "x"}]}
    second = {"level": 0.44, "strengths": [1.0, 1e2], "seeds": {"1": [case], "100": [{"run": 2}]},
              "diverged": [{"seed": 1, "strength": 1e2, "error": "y"}]}
    merged = ss.merge_sweeps([first, second])
    assert merged["strengths"] == [1.0, 1e2, 1e8]
    assert merged["seeds"]["100"] == [{"run": 1}]
    assert math.isnan(merged["seeds"]["1"][0]["forgetting_reduction"])
    assert merged["diverged"] == [{"seed": 0, "strength": 1e8, "error": "x"}]
    with pytest.raises(ValueError, match="different cases"):
        ss.merge_sweeps([first, {**second, "level": None}])
    with pytest.raises(ValueError, match="at least one"):
        ss.merge_sweeps([])


@pytest.mark.slow
def test_merge_of_two_tiny_runs_applies_the_rule_to_the_union_grid(tmp_path):
    write_mnist(str(tmp_path / "data"))

    def run(name, alphas, **changes):
        cases, config, text = _tiny_cases(tmp_path / "data", False, alphas, **changes)
        return ss.write_sweep_report(cases, config, str(tmp_path / name), tolerance=1.0,
                                     data_text=text, seconds=1.0)

    def merge(paths, name="merged"):
        cases, config, text = ss.cases_from_files(paths, 1.0)
        return ss.write_sweep_report(cases, config, str(tmp_path / name), tolerance=1.0,
                                     data_text=text, seconds=0.0, merged_from=paths)

    high = run("high", [1e2, 1e8])
    low = run("low", [1, 1e2])
    merged = merge([high["outputs"]["json"], low["outputs"]["json"]])
    rows = merged["cases"]["loose_0.3"]["strengths"]
    assert merged["strengths"] == [1.0, 1e2, 1e8] and set(rows) == {"1", "100", "1e+08"}
    assert rows["1e+08"] == high["cases"]["loose_0.3"]["strengths"]["1e+08"]
    assert rows["1"] == low["cases"]["loose_0.3"]["strengths"]["1"]
    ordered = [rows["1"], rows["100"], rows["1e+08"]]
    rule = choose_strength([r["strength"] for r in ordered],
                           [r["reduction_val"] for r in ordered],
                           [r["b_accuracy_val"] for r in ordered],
                           np.mean([r["b_accuracy_without_val"] for r in ordered]), 1.0)
    assert merged["chosen"]["loose_0.3"]["strength"] == rule.strength
    assert merged["merged_from"] == [high["outputs"]["json"], low["outputs"]["json"]]
    assert merged["data"] == high["data"]
    other = run("o", [10], seeds=(1,))
    with pytest.raises(ValueError, match="other settings"):
        ss.cases_from_files([high["outputs"]["json"], other["outputs"]["json"]], 1.0)
    with pytest.raises(ValueError, match="cannot read"):
        ss.cases_from_files([str(tmp_path / "missing.json")], 1.0)
    with pytest.raises(ValueError, match="at least one"):
        ss.cases_from_files([], 1.0)


# --------------------------------------------------------------------------- recorded choices
README = os.path.join(os.path.dirname(__file__), "..", "..", "benchmarks", "README.md")


def test_recorded_strengths_are_the_sweeps_chosen_line_in_benchmarks_readme():
    recorded = ss.load_recorded_strengths()
    text = open(README).read()
    quoted = {}  # the run printed the key "alpha" that is now "strength"
    for name, body in re.findall(r'`"(strict|loose_[0-9.]+)": (\{"alpha": [^`]*\})`', text):
        quoted[name] = json.loads(body)
        quoted[name]["strength"] = quoted[name].pop("alpha")
    assert set(quoted) == set(recorded["cases"]) == {"strict", "loose_0.56", "loose_0.44",
                                                     "loose_0.36"}
    for name, case in recorded["cases"].items():
        for key in ("strength", "reduction", "b_cost", "qualified"):
            assert case[key] == quoted[name][key], (name, key)
        assert case["level"] == (None if name == "strict" else float(name[len("loose_"):]))
        assert case["strength"] in case["strengths_swept"]
    assert recorded["tolerance"] == 1.0 and recorded["produced_by"]["date"] in text
    for command in recorded["produced_by"]["commands"]:
        assert command.split(" --out")[0] in " ".join(text.replace("\\\n", " ").split())
    # the sweep ran the two-model defaults (benchmarks/alpha_sweep.py's defaults)
    assert recorded["config"] == {k: v for k, v in tm.to_jsonable(
        tm.TwoModelsConfig().to_json()).items() if k != "strength"}


def test_recorded_case_strengths_per_case_with_their_source():
    config = tm.TwoModelsConfig()
    chosen = ss.recorded_case_strengths(config, ss.case_levels(True, config.loose_levels))
    recorded = ss.load_recorded_strengths()["cases"]
    assert list(chosen) == ["strict", "loose_0.56", "loose_0.44", "loose_0.36"]
    for name, value in chosen.items():
        assert value.strength == recorded[name]["strength"]
        assert value.source == ("validation choice, wpl_keras/experiments/"
                                "two_models_strengths.json (2026-11-29)")
    # settings that change nothing trained keep the plain source; others are named
    quiet = ss.recorded_case_strengths(
        dataclasses.replace(config, seeds=(5,), eval_every=50, eval_examples=100), [0.44])
    assert quiet["loose_0.44"].source == chosen["loose_0.44"].source
    other = ss.recorded_case_strengths(
        dataclasses.replace(config, hidden_units=16, b_learning_rate=0.5), [None])
    assert other["strict"].source.endswith(
        "; swept with other settings: hidden_units, b_learning_rate")
    with pytest.raises(ValueError, match=r"no recorded strength for the cases \['loose_0.5'\]"
                       r".*--strength auto.*--strength VALUE"):
        ss.recorded_case_strengths(config, [None, 0.5])


def test_load_recorded_strengths_refuses_unreadable_or_bad_files(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{")
    with pytest.raises(ValueError, match="cannot read the recorded strengths"):
        ss.load_recorded_strengths(str(bad))
    bad.write_text(json.dumps({"cases": {"strict": {"strength": 0}}}))
    with pytest.raises(ValueError, match="cases.strict.strength"):
        ss.load_recorded_strengths(str(bad))
    bad.write_text(json.dumps({"cases": {"strict": {"strength": "big"}}}))
    with pytest.raises(ValueError, match="cases.strict.strength"):
        ss.load_recorded_strengths(str(bad))
    good = tmp_path / "good.json"
    good.write_text(json.dumps({"cases": {"strict": {"strength": 3.0}}}))
    chosen = ss.recorded_case_strengths(tm.TwoModelsConfig(), [None], path=str(good))
    assert chosen["strict"] == tm.CaseStrength(3.0, f"validation choice, {good} (undated)")


# --------------------------------------------------------------------------- --strength auto
_KEYS = ("a_baseline", "a_final_without", "a_final_with", "b_final_without", "b_final_with",
         "d_without", "d_with", "a_drop_without", "b_accuracy_gap")


def _fake_case(strength, reduction_val=float("nan")):
    return {**{k: 0.5 for k in _KEYS}, "forgetting_reduction": 0.0, "strength_seen": strength,
            "forgetting_reduction_val": reduction_val, "b_final_with_val": 0.5,
            "b_final_without_val": 0.5}


def test_run_auto_experiment_keeps_the_runs_of_the_chosen_strength(monkeypatch):
    def fake_sweep(data, config, level, strengths, progress=None):
        # validation reduction grows with the strength, B's cost is 0 everywhere
        return {"level": level, "strengths": list(strengths), "diverged": [],
                "seeds": {f"{a:g}": [_fake_case(a, reduction_val=math.log10(a) / 10)]
                          for a in strengths}}

    monkeypatch.setattr(ss, "sweep_strengths", fake_sweep)
    messages = []
    results = ss.run_auto_experiment(None, tm.TwoModelsConfig(seeds=(0,)), [None, 0.44],
                                     [1, 1e4], 1.0, progress=messages.append)
    assert results["strength_auto"]["strengths"] == [1.0, 1e4]
    for name in ("strict", "loose_0.44"):
        case = results["cases"][name]
        assert case["strength"] == 1e4 == results["strength_auto"]["cases"][name]["strength"]
        assert case["seeds"][0]["strength_seen"] == 1e4
        assert case["strength_source"] == ("validation choice, --strength auto in this run "
                                           "(grid 1,10000, tolerance 1 points)")
        assert results["overview"][name]["strength"] == 1e4
        assert results["overview"][name]["b_accuracy_gap"] == 0.5
    assert messages[0].startswith("strict: strength 10000 (largest reduction")


def test_run_auto_experiment_falls_back_to_the_smallest_strength_when_the_rule_cannot_choose(
        monkeypatch):
    def fake_sweep(data, config, level, strengths, progress=None):
        seeds = {f"{a:g}": [] if (level, a) == (None, 1e2) else [_fake_case(a)]
                 for a in strengths}
        if level == 0.5:
            seeds = {f"{a:g}": [] for a in strengths}
        return {"level": level, "strengths": list(strengths), "seeds": seeds, "diverged": []}

    monkeypatch.setattr(ss, "sweep_strengths", fake_sweep)
    messages = []
    config = tm.TwoModelsConfig(seeds=(0,), loose_levels=())
    results = ss.run_auto_experiment(None, config, [None], [1e2, 1e4, 1e6], 1.0,
                                     progress=messages.append)
    choice = results["strength_auto"]["cases"]["strict"]
    # 1e2 has no finished run, so the smallest strength with one is used
    assert choice["fallback"] and choice["strength"] == 1e4 and choice["left_out"] == [1e2]
    assert "must be a finite number" in choice["error"]
    assert results["cases"]["strict"]["strength"] == 1e4
    assert results["cases"]["strict"]["strength_source"].startswith(
        "smallest strength with finished runs: the rule could not choose")
    assert results["cases"]["strict"]["seeds"][0]["strength_seen"] == 1e4
    assert "rule could not choose" in messages[-1]
    with pytest.raises(RuntimeError, match="diverged for every strength"):
        ss.run_auto_experiment(None, config, [0.5], [1e2], 1.0, progress=messages.append)
