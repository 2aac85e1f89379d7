"""wpl_keras.experiments.shared_layers (paper Figure 1, run by benchmarks/shared_layers.py): its
pure parts, and one tiny run on idx files."""

import json
import os

import numpy as np
import pytest

from tests.experiments.mnist_files import write_mnist
from wpl_keras.data.mnist import load_mnist
from wpl_keras.experiments import shared_layers as sl
from wpl_keras.experiments import two_models as tm


def _case(drop_without, drop_with, baseline=0.9, seed=0):
    return {
        "seed": seed, "a_baseline": baseline,
        "a_final_without": baseline - drop_without / 100, "a_final_with": baseline - drop_with / 100,
        "b_final_without": 0.8, "b_final_with": 0.7,
        "a_drop_without": drop_without, "a_drop_with": drop_with,
        "forgetting_reduction": (drop_without - drop_with) / drop_without,
        "runs": {run: {"iterations": [0, 10], "acc_a": [baseline, baseline - d / 100]}
                 for run, d in (("without", drop_without), ("with", drop_with))},
    }


def test_summarize_counts_means_stds_and_per_seed_flags():
    cases = {2: [_case(10.0, 1.0, seed=0), _case(30.0, 40.0, seed=1)], 1: [_case(4.0, 2.0)]}
    per_count = sl.summarize_counts(cases)
    assert list(per_count) == ["1", "2"]
    two = per_count["2"]
    assert two["a_drop_without"] == pytest.approx(20.0)
    assert two["a_drop_without_std"] == pytest.approx(10.0)
    assert two["a_drop_with"] == pytest.approx(20.5)
    assert two["a_drop_with_std"] == pytest.approx(19.5)
    assert two["forgetting_reduction"] == pytest.approx((0.9 + (-1 / 3)) / 2)
    assert two["per_seed_lower"] == [1, 0]
    assert per_count["1"]["a_final_with"] == pytest.approx(0.88)
    assert per_count["1"]["a_drop_with_std"] == 0.0


@pytest.mark.parametrize(
    "rows, lower, grows",
    [
        ({"1": (1.0, 0.5), "2": (5.0, 0.1), "3": (9.0, 0.2)}, 1, 1),
        ({"1": (1.0, 0.5), "2": (5.0, 5.0)}, 0, 1),  # equal is not lower
        ({"1": (6.0, 7.0), "2": (5.0, 0.1)}, 0, 0),  # higher at one count; drop shrinks
        ({"10": (6.0, 0.0), "2": (7.0, 0.0)}, 1, 0),  # counts sort as numbers, not strings
        ({"4": (-1.0, -2.0)}, 1, 1),
    ],
)
def test_headline_flags(rows, lower, grows):
    per_count = {k: {"a_drop_without": w, "a_drop_with": v} for k, (w, v) in rows.items()}
    assert sl.headline(per_count) == {"wpl_lower_everywhere": lower, "drop_grows_with_k": grows}


@pytest.mark.parametrize("empty", [None, 4])
def test_plot_writes_png(tmp_path, empty):
    cases = {1: [_case(4.0, 2.0)], 4: [_case(40.0, 0.5)]}
    if empty is not None:
        cases[empty] = []  # every seed of that count diverged
    path = str(tmp_path / "fig.png")
    sl.plot_figure1(cases, sl.summarize_counts(cases), path)
    assert open(path, "rb").read(8) == b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow
def test_tiny_run_on_idx_files(tmp_path):
    write_mnist(str(tmp_path / "data"))
    out = tmp_path / "out"
    config = tm.TwoModelsConfig(seeds=(0,), iterations=20, eval_every=10, hidden_units=8,
                                a_max_epochs=2, a_steps_per_epoch=10, fisher_samples=20,
                                validation_size=40)
    data = load_mnist(str(tmp_path / "data"), validation_size=40, seed=0, verify=False)
    messages = []
    cases, diverged = sl.run_counts(data, config, [1, 3], progress=messages.append)
    report = sl.write_layers_report(cases, diverged, config, [1, 3], str(out),
                                       data_text="tiny idx", seconds=1.0)
    assert json.loads(json.dumps(report)) == report
    assert len(messages) == 2 and messages[0].startswith("seed 0, 1 shared: A ")
    assert list(report["shared_layers"]) == ["1", "3"]
    assert report["seeds"] == [0] and report["wpl_lower_everywhere"] in (0, 1)
    assert report["diverged"] == [] and report["shared_layers"]["1"]["seeds_done"] == 1
    assert "k in [1, 3]" in report["settings"]["model_b"]
    saved = json.loads(open(report["outputs"]["json"]).read())
    assert saved["report"]["shared_layers"] == report["shared_layers"]
    one, three = saved["cases"]["1"][0], saved["cases"]["3"][0]
    assert (one["shared_layers"], three["shared_layers"]) == (1, 3)
    # every count starts from the same trained A
    assert one["a_baseline"] == three["a_baseline"]
    assert one["a_training"] == three["a_training"]
    assert os.path.getsize(report["outputs"]["figure"]) > 1000
    assert report["shared_layers"]["3"]["a_drop_with"] == pytest.approx(
        100 * (three["a_baseline"] - three["a_final_with"]))


def test_headline_with_a_count_without_finished_seeds_is_zero():
    per_count = sl.summarize_counts({1: [_case(4.0, 2.0)], 2: []})
    assert per_count["2"]["seeds_done"] == 0 and np.isnan(per_count["2"]["a_drop_without"])
    assert per_count["1"]["seeds_done"] == 1
    assert sl.headline(per_count) == {"wpl_lower_everywhere": 0, "drop_grows_with_k": 0}


def test_run_counts_trains_a_once_per_seed_and_leaves_diverged_cases_out(monkeypatch):
    from wpl_keras.wpl.training import WPLDivergenceError

    trained, calls = [], []

    def fake_train_a(data, config, seed):
        trained.append(seed)
        return ("A", seed)

    def fake_run_case(data, config, seed, trained_a=None):
        calls.append((seed, config.shared_layers, trained_a))
        if (seed, config.shared_layers) == (1, 2):
            raise WPLDivergenceError("Training diverged at batch 57")
        return {**_case(float(config.shared_layers), 0.0, seed=seed),
                "seconds": 0.0, "shared_layers": config.shared_layers}

    monkeypatch.setattr(tm, "train_a", fake_train_a)
    monkeypatch.setattr(tm, "run_case", fake_run_case)
    config = tm.TwoModelsConfig(seeds=(0, 1))
    messages = []
    cases, diverged = sl.run_counts(None, config, [1, 2], progress=messages.append)
    assert trained == [0, 1]
    assert calls == [(0, 1, ("A", 0)), (0, 2, ("A", 0)), (1, 1, ("A", 1)), (1, 2, ("A", 1))]
    assert [c["seed"] for c in cases[1]] == [0, 1] and [c["seed"] for c in cases[2]] == [0]
    assert diverged == [{"seed": 1, "shared_layers": 2, "error": "Training diverged at batch 57"}]
    assert "seed 1, 2 shared: B diverged" in messages[-1]
    per_count = sl.summarize_counts(cases)
    assert per_count["2"]["seeds_done"] == 1 and per_count["1"]["seeds_done"] == 2
    assert sl.headline(per_count) == {"wpl_lower_everywhere": 1, "drop_grows_with_k": 1}
