"""Tests for the wall-clock budget of any KerasTuner tuner."""

import json

import keras
import keras_tuner
import numpy as np
import pytest

from wpl_keras.tuner.wall_clock import WALL_CLOCK_FILE, with_wall_clock_budget


def _build(hp):
    model = keras.Sequential([keras.Input((4,)),
                              keras.layers.Dense(hp.Choice("units", [2, 3, 4, 5, 6, 7]),
                                                 name="hidden"),
                              keras.layers.Dense(1, name="out")])
    model.compile(optimizer="sgd", loss="mse")
    return model


def _data():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(32, 4)).astype("float32")
    return x, x.sum(axis=1, keepdims=True)


def _tuner(tmp_path, budget_s, clock="wall"):
    return with_wall_clock_budget(keras_tuner.RandomSearch)(
        _build, objective="val_loss", max_trials=100, seed=1, budget_s=budget_s, clock=clock,
        directory=str(tmp_path), project_name="rs", overwrite=False)


@pytest.mark.slow
def test_search_stops_at_the_first_trial_end_past_the_budget_and_resumes_the_count(tmp_path):
    x, y = _data()
    tuner = _tuner(tmp_path, budget_s=1e-6)
    tuner.search(x, y, validation_data=(x, y), epochs=1, verbose=0)
    assert len(tuner.oracle.trials) == 1
    curve = tuner.wall_clock["curve"]
    assert [p["trial_id"] for p in curve] == list(tuner.oracle.trials)
    assert curve[0]["best"] == curve[0]["score"] == tuner.oracle.get_best_trials(1)[0].score
    first = tuner.elapsed_s
    assert first > 0
    tuner.search(x, y, validation_data=(x, y), epochs=1, verbose=0)  # spent: no trial
    assert len(tuner.oracle.trials) == 1

    resumed = _tuner(tmp_path, budget_s=first + 1e-6)  # a little more budget: one trial
    assert resumed.elapsed_s == pytest.approx(first)
    resumed.search(x, y, validation_data=(x, y), epochs=1, verbose=0)
    assert len(resumed.oracle.trials) == 2
    saved = json.loads((tmp_path / "rs" / WALL_CLOCK_FILE).read_text())
    assert len(saved["curve"]) == 2 and saved["elapsed_s"] > first
    best = [p["best"] for p in saved["curve"]]
    assert best[1] == min(p["score"] for p in saved["curve"])  # the anytime best, minimised


@pytest.mark.slow
def test_process_clock_budget_allows_several_trials_and_a_resume_keeps_its_clock(tmp_path):
    x, y = _data()
    clock = "process"
    tuner = _tuner(tmp_path, budget_s=3600, clock=clock)
    tuner.oracle.max_trials = 2
    tuner.search(x, y, validation_data=(x, y), epochs=1, verbose=0)
    assert len(tuner.wall_clock["curve"]) == 2 and tuner.wall_clock["clock"] == clock
    assert 0 < tuner.elapsed_s < 3600
    other = "wall" if clock == "process" else "process"
    with pytest.raises(ValueError, match="keeps its clock"):
        _tuner(tmp_path, budget_s=3600, clock=other)
    with pytest.raises(ValueError, match="clock must be one of"):
        _tuner(tmp_path / "new", budget_s=1, clock="cpu")


@pytest.mark.parametrize("budget, error", [(0, ValueError), (-1.0, ValueError),
                                           ("10", TypeError), (float("nan"), ValueError)])
def test_bad_budget_is_refused_naming_the_argument(tmp_path, budget, error):
    with pytest.raises(error, match="budget_s"):
        _tuner(tmp_path, budget_s=budget)
