"""``wpl-two-models`` (apps/two_models.py): which WPL strength each case runs at (the recorded
validation choice by default, ``--strength``/``--alpha`` a number, ``--strength auto``), and
what results.json and the printed summary say about it."""

import argparse
import json

import numpy as np
import pytest

from apps import two_models as app
from wpl_keras.experiments import strength_sweep as ss
from wpl_keras.experiments import two_models as tm
from wpl_keras.wpl.strength import choose_strength
from tests.experiments.mnist_files import write_mnist

TINY_ARGS = ["--iterations", "20", "--eval-every", "10", "--hidden-units", "16",
             "--a-max-epochs", "4", "--fisher-samples", "20", "--validation-size", "60"]
_KEYS = ("a_baseline", "a_final_without", "a_final_with", "b_final_without", "b_final_with",
         "d_without", "d_with", "a_drop_without")


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("mnist")
    write_mnist(str(path), n_train=300)
    return str(path)


@pytest.fixture
def fake_run_case(monkeypatch):
    """``run_case`` without training: records (case config strength, seed, level); its B gap
    is the strength's log10 so each case's figures show which strength it ran at."""
    calls = []

    def run_case(data, config, seed, level=None):
        calls.append((config.strength, seed, level))
        gap = float(np.log10(config.strength)) if config.strength > 0 else -1.0
        return {**{k: 0.5 for k in _KEYS}, "seed": seed, "level": level, "seconds": 0.0,
                "forgetting_reduction": 0.75, "b_accuracy_gap": gap, "runs": {}}

    monkeypatch.setattr(tm, "run_case", run_case)
    return calls


def _run(data_dir, out, *args):
    return app.main(["--data-dir", data_dir, "--no-verify", "--out", str(out), "--no-plot",
                     "--validation-size", "60", *args])


def _printed_summary(capsys):
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])["summary"]


def test_strength_parsing_strength_and_alpha_are_one_option():
    parser = app.build_parser()
    assert parser.parse_args(["--out", "x"]).strength is None  # the recorded choice per case
    for flag in ("--strength", "--alpha"):
        args = parser.parse_args(["--out", "x", flag, "60"])
        assert args.strength == 60.0 and app.config_from_args(args).strength == 60.0
    args = parser.parse_args(["--out", "x", "--alpha", "AUTO", "--auto-alphas", "1e3,1e5",
                              "--auto-tolerance", "2"])
    assert args.strength == "auto" and args.auto_strengths == [1e3, 1e5]
    assert args.auto_tolerance == 2
    assert parser.parse_args(["--out", "x", "--auto-strengths", "1,10"]).auto_strengths == [1, 10]
    assert app.config_from_args(args).strength == tm.TwoModelsConfig().strength
    for bad in ("-1", "nan", "often"):
        with pytest.raises(argparse.ArgumentTypeError, match="'auto'"):
            app.parse_strength(bad)
    for bad in ("", "1e3,0", "1e3,x", "inf"):
        with pytest.raises(argparse.ArgumentTypeError):
            app.parse_strength_grid(bad)
    text = parser.format_help()
    assert "--strength" in text and "--alpha" in text and "--auto-strengths" in text
    assert "two_models_strengths.json" in text


def test_case_strengths_default_is_the_recorded_choice_and_a_number_overrides_it():
    parser = app.build_parser()
    args = parser.parse_args(["--out", "x"])
    chosen = app.case_strengths(args, app.config_from_args(args))
    recorded = ss.load_recorded_strengths()["cases"]
    assert {name: c.strength for name, c in chosen.items()} == {
        name: recorded[name]["strength"] for name in ("strict", "loose_0.56", "loose_0.44",
                                                      "loose_0.36")}
    assert all(c.source.startswith("validation choice, wpl_keras/experiments/"
                                   "two_models_strengths.json") for c in chosen.values())
    args = parser.parse_args(["--out", "x", "--alpha", "1e8", "--no-strict",
                              "--loose-levels", "0.3"])
    assert app.case_strengths(args, app.config_from_args(args)) == {
        "loose_0.3": tm.CaseStrength(1e8, app.COMMAND_LINE_SOURCE)}


def test_default_run_uses_the_recorded_strength_per_case_and_records_its_source(
        data_dir, tmp_path, capsys, fake_run_case):
    assert _run(data_dir, tmp_path / "out", "--seeds", "0", "1") == 0
    recorded = ss.load_recorded_strengths()["cases"]
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    summary = _printed_summary(capsys)
    assert list(results["cases"]) == ["strict", "loose_0.56", "loose_0.44", "loose_0.36"]
    for name, case in results["cases"].items():
        want = recorded[name]["strength"]
        assert case["strength"] == want and [s for s, _, _ in fake_run_case
                                              if s == want]
        # the tiny files need a smaller validation split than the sweep's, and it says so
        assert case["strength_source"] == ("validation choice, wpl_keras/experiments/"
                                           "two_models_strengths.json (2026-11-29); swept "
                                           "with other settings: validation_size")
        row = results["overview"][name]
        assert row["strength"] == want and row["strength_source"] == case["strength_source"]
        assert row["b_accuracy_gap"] == pytest.approx(np.log10(want))  # beside the reduction
        assert row["forgetting_reduction"] == 0.75 and row["seeds"] == 2
        assert summary[name] == {k: (round(v, 4) if isinstance(v, float) and k != "strength"
                                     else v) for k, v in row.items()}
    # every seed of a case ran at that case's strength
    assert [(s, seed) for s, seed, level in fake_run_case if level == 0.44] == [(1.0, 0), (1.0, 1)]


def test_a_number_overrides_the_recorded_choice_for_every_case(data_dir, tmp_path, capsys,
                                                                fake_run_case):
    assert _run(data_dir, tmp_path / "out", "--seeds", "0", "--alpha", "1e8") == 0
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    assert {s for s, _, _ in fake_run_case} == {1e8}
    assert {c["strength_source"] for c in results["cases"].values()} == {
        app.COMMAND_LINE_SOURCE}
    config = tm.TwoModelsConfig.from_json(
        json.loads((tmp_path / "out" / "config.json").read_text()))
    assert config.strength == 1e8


def test_a_case_without_a_recorded_choice_is_refused_before_any_work(tmp_path, capsys,
                                                                     fake_run_case):
    code = app.main(["--data-dir", str(tmp_path / "absent"), "--out", str(tmp_path / "o"),
                     "--loose-levels", "0.5"])
    err = capsys.readouterr().err
    assert code == 2 and fake_run_case == []
    assert "no recorded strength for the cases ['loose_0.5']" in err and "--strength auto" in err


@pytest.mark.slow
def test_strength_auto_uses_the_strength_chosen_on_validation(data_dir, tmp_path, capsys,
                                                              monkeypatch):
    tables = []
    real_table = ss.strength_table
    monkeypatch.setattr(ss, "strength_table", lambda sweep: tables.append(real_table(sweep))
                        or tables[-1])
    out = tmp_path / "out"
    code = app.main(["--data-dir", data_dir, "--no-verify", "--out", str(out),
                     "--seeds", "0", "--loose-levels", "--strength", "auto",
                     "--auto-strengths", "1e2,1e8", "--no-plot", *TINY_ARGS])
    assert code == 0
    summary = _printed_summary(capsys)
    results = json.loads(open(out / "results.json").read())
    assert list(results["cases"]) == ["strict"] and len(tables) == 1
    (table,) = tables
    choice = results["strength_auto"]["cases"]["strict"]
    assert results["strength_auto"]["strengths"] == [1e2, 1e8]
    assert not choice["fallback"] and choice["error"] is None  # A forgets on validation here
    rule = choose_strength([r["strength"] for r in table], [r["reduction_val"] for r in table],
                           [r["b_accuracy_val"] for r in table],
                           np.mean([r["b_accuracy_without_val"] for r in table]), 1.0)
    assert choice["strength"] == rule.strength and choice["choice"]["reason"] == rule.reason
    case = results["cases"]["strict"]
    assert case["strength"] == choice["strength"] == summary["strict"]["strength"]
    assert case["strength_source"].startswith("validation choice, --strength auto in this run")
    row = next(r for r in table if r["strength"] == case["strength"])
    (one,) = case["seeds"]
    assert one["forgetting_reduction_val"] == pytest.approx(row["reduction_val"], nan_ok=True)
    assert summary["strict"]["forgetting_reduction"] == pytest.approx(
        round(one["forgetting_reduction"], 4), nan_ok=True)
    assert "alpha" not in json.dumps(summary) and "alpha_auto" not in results
