"""The search-quality and ranking protocols: their summaries on hand-made results, the cell
cache and protocol checks, and both protocols end to end on tiny PTB text as
benchmarks/search_quality.py and benchmarks/ranking.py run them (sharing searches and trained
cells, resuming without retraining)."""

import json
import math
import os

import numpy as np
import pytest

from tests.experiments.test_app_stages import write_tiny_cifar
from tests.experiments.test_enas import write_tiny_ptb
from wpl_keras.experiments import enas
from wpl_keras.experiments import from_scratch
from wpl_keras.experiments import ranking
from wpl_keras.experiments import search_quality as sq
from wpl_keras.experiments.from_scratch import CellCache, TrainBudget
from wpl_keras.experiments.protocol_options import experiment_and_budget


def _tiny_protocol(data_dir, **budget):
    """``(data, config, budget)`` of the tiny RNN preset on ``data_dir``, progress bars off,
    one from-scratch epoch of ``max_batches`` (default 2) windows."""
    config, budget = experiment_and_budget("rnn", "tiny", quiet=True, epochs=1,
                                           max_batches=budget.get("max_batches", 2))
    data, config = enas.prepare(config, data_dir)
    return data, config, budget


def _search_quality(data, config, budget, out, resume=False):
    protocol = sq.SearchQualityConfig(experiment=config, seeds=(0, 1), budget=budget,
                                      derive_samples=config.derive_samples)
    return sq.run_search_quality(protocol, data, out, resume=resume)


# --------------------------------------------------------------------------- pure summaries
def test_summarize_arms_pairs_seeds_and_counts_wpl_wins():
    results = {
        0: {"enas": {"valid": 100, "test": 90}, "wpl": {"valid": 95, "test": 85},
            "random": {"valid": 102, "test": 93}},
        1: {"enas": {"valid": 110, "test": 100}, "wpl": {"valid": 112, "test": 104},
            "random": {"valid": 108, "test": 98}},
        2: {"enas": {"valid": 1, "test": 1}},  # unfinished seed: left out
    }
    out = sq.summarize_arms(results)
    assert out["seeds"] == [0, 1]
    assert out["arms"]["wpl"]["test_per_seed"] == [85, 104]
    assert out["arms"]["enas"]["test_mean"] == pytest.approx(95.0)
    assert out["arms"]["enas"]["test_std"] == pytest.approx(5.0)
    assert out["arms"]["random"]["valid_mean"] == pytest.approx(105.0)
    assert out["wpl_minus_enas"] == {"per_seed": [-5.0, 4.0], "mean": pytest.approx(-0.5)}
    assert out["wpl_better_seeds"] == 1
    assert out["random_minus_enas"]["per_seed"] == [3.0, -2.0]
    empty = sq.summarize_arms({})
    assert empty["seeds"] == [] and math.isnan(empty["wpl_minus_enas"]["mean"])


def test_summarize_ranking_per_seed_and_means():
    truth = [10.0, 20.0, 30.0, 40.0]
    scores = {0: {"enas": [4, 3, 2, 1], "wpl": [1, 2, 3, 4]},
              1: {"enas": [1, 2, 4, 3], "wpl": [1, 2, 3, 4]},
              2: {"enas": [5, 5, 5, 5], "wpl": [2, 1, 3, 4]}}
    out = ranking.summarize_ranking(truth, scores)
    assert out["kendall_tau_with_per_seed"] == pytest.approx([1.0, 1.0, 4 / 6])
    assert out["kendall_tau_without_per_seed"][:2] == pytest.approx([-1.0, 4 / 6])
    assert math.isnan(out["kendall_tau_without_per_seed"][2])  # a constant supernet score
    assert out["undefined"] == 2  # its tau and rho
    assert out["kendall_tau_without"] == pytest.approx((-1.0 + 4 / 6) / 2)
    assert out["spearman_with_per_seed"] == pytest.approx([1.0, 1.0, 0.8])
    assert out["with_minus_without_tau"]["per_seed"][:2] == pytest.approx([2.0, 1 / 3])
    assert out["with_minus_without_tau"]["mean"] == pytest.approx((2.0 + 1 / 3) / 2)


def test_fixed_architectures_are_distinct_valid_and_reproducible():
    space = enas.build_space(enas.get_preset("rnn", "cpu-small"))
    archs = ranking.fixed_architectures(space, 10)
    assert archs == ranking.fixed_architectures(space, 10)
    assert len(set(archs)) == 10 and all(space.validate(a) == a for a in archs)
    assert ranking.fixed_architectures(space, 10, seed=1) != archs
    with pytest.raises(ValueError, match="at least 2"):
        ranking.fixed_architectures(space, 1)


def test_uniform_sampler_is_seeded_and_covers_the_space():
    space = enas.build_space(enas.get_preset("rnn", "tiny"))
    first = [sq.UniformSampler(space, 3).sample_architecture() for _ in range(2)]
    assert first[0] == first[1]
    sampler = sq.UniformSampler(space, 3)
    draws = np.array([sampler.sample_architecture() for _ in range(400)])
    for k, size in enumerate(space.decision_sizes):
        assert set(draws[:, k]) == set(range(size))


# --------------------------------------------------------------------------- budget and cache
def test_train_budget_checks():
    with pytest.raises(ValueError, match="epochs"):
        TrainBudget(epochs=0)
    with pytest.raises(ValueError, match="max_batches"):
        TrainBudget(epochs=1, max_batches=0)
    with pytest.raises(ValueError, match="train_size does not apply to the rnn"):
        TrainBudget(epochs=1, train_size=100).check_space("rnn")
    with pytest.raises(ValueError, match="max_batches does not apply to the cnn"):
        TrainBudget(epochs=1, max_batches=3).check_space("cnn")
    with pytest.raises(ValueError, match="no from-scratch recipe"):
        TrainBudget(epochs=1).check_space("nao")
    rnn = TrainBudget.of_preset(enas.get_preset("rnn", "cpu-small"))
    assert rnn == TrainBudget(epochs=1, max_batches=200)
    cnn = TrainBudget.of_preset(enas.get_preset("cnn", "cpu-small"))
    assert cnn == TrainBudget(epochs=2, train_size=10000)


def test_cell_cache_trains_once_and_survives_a_restart(tmp_path, monkeypatch):
    calls = []

    def fake_train_cell(data, arch, config, budget, *, seed=0):
        calls.append((tuple(arch), budget, seed))
        return {"valid": float(sum(arch)), "test": 1.0 + seed, "seconds": 0.1}

    monkeypatch.setattr(from_scratch, "train_cell", fake_train_cell)
    config = enas.get_preset("rnn", "tiny")
    path = str(tmp_path / "cells.json")
    cache = CellCache(path)
    budget = TrainBudget(epochs=1, max_batches=2)
    assert cache.train(None, (1, 2), config, budget)["valid"] == 3.0
    assert cache.train(None, [1, 2], config, budget)["valid"] == 3.0
    assert cache.train(None, (1, 2), config, budget, seed=1)["test"] == 2.0
    assert cache.train(None, (1, 2), config, TrainBudget(epochs=2, max_batches=2))
    assert len(calls) == 3
    again = CellCache(path)
    again.train(None, (1, 2), config, budget, seed=1)
    assert len(calls) == 3 and len(again.entries) == 3


def test_protocol_is_saved_and_a_resume_must_keep_it(tmp_path):
    out = str(tmp_path)
    sq.check_or_save_protocol(out, "p.json", {"a": 1, "t": (1, 2)}, resume=False)
    sq.check_or_save_protocol(out, "p.json", {"a": 1, "t": [1, 2]}, resume=True)
    with pytest.raises(FileExistsError, match="--resume"):
        sq.check_or_save_protocol(out, "p.json", {"a": 1, "t": [1, 2]}, resume=False)
    with pytest.raises(ValueError, match="other settings"):
        sq.check_or_save_protocol(out, "p.json", {"a": 2, "t": [1, 2]}, resume=True)


def test_configs_refuse_bad_seeds_and_a_budget_for_another_space():
    config = enas.get_preset("rnn", "tiny")
    budget = TrainBudget(epochs=1, max_batches=2)
    with pytest.raises(ValueError, match="distinct"):
        sq.SearchQualityConfig(config, seeds=(0, 0), budget=budget, derive_samples=3)
    with pytest.raises(ValueError, match="derive_samples"):
        sq.SearchQualityConfig(config, seeds=(0,), budget=budget, derive_samples=0)
    with pytest.raises(ValueError, match="does not apply"):
        ranking.RankingConfig(config, seeds=(0,), budget=TrainBudget(epochs=1, train_size=9))
    with pytest.raises(ValueError, match="num_architectures"):
        ranking.RankingConfig(config, seeds=(0,), budget=budget, num_architectures=1)


# --------------------------------------------------------------------------- end to end
@pytest.mark.slow
def test_both_protocols_on_tiny_text_share_searches_and_cells_and_resume(tmp_path,
                                                                         monkeypatch):
    data, config, budget = _tiny_protocol(write_tiny_ptb(tmp_path / "ptb"))
    out = str(tmp_path / "out")
    result = _search_quality(data, config, budget, out)
    last = json.loads(json.dumps(result))  # as the benchmark prints it
    assert last["seeds"] == [0, 1]
    for arm in sq.ARMS:
        row = last["arms"][arm]
        assert len(row["test_per_seed"]) == 2 and len(row["valid_per_seed"]) == 2
        assert all(v > 1.0 for v in row["test_per_seed"] + row["valid_per_seed"])
        assert row["test_mean"] == pytest.approx(np.mean(row["test_per_seed"]))
    diffs = [w - e for w, e in zip(last["arms"]["wpl"]["test_per_seed"],
                                   last["arms"]["enas"]["test_per_seed"])]
    assert last["wpl_minus_enas"]["per_seed"] == pytest.approx(diffs)
    assert last["wpl_better_seeds"] == sum(d < 0 for d in diffs)
    assert last["cells"]["1"]["random"]["arch"] == result["cells"]["1"]["random"]["arch"]
    for seed in (0, 1):
        for arm in ("enas", "wpl"):
            saved = enas.ENASExperimentConfig.load(
                os.path.join(sq.search_dir(out, seed, arm), "experiment.json"))
            assert saved.seed == seed and saved.search.wpl == (arm == "wpl")
        random = json.load(open(os.path.join(out, f"seed{seed}", "derived_random.json")))
        assert random["scored_on"] == "enas" and random["num_samples"] == 3

    # Not without resume; with it, nothing is trained again and the figures are the same.
    with pytest.raises(FileExistsError):
        _search_quality(data, config, budget, out)

    def no_training(*args, **kwargs):
        raise AssertionError("a cached cell was trained again")

    monkeypatch.setattr(from_scratch, "train_cell", no_training)
    resumed = _search_quality(data, config, budget, out, resume=True)
    assert resumed["arms"] == result["arms"]
    with pytest.raises(ValueError, match="other settings"):
        _search_quality(data, config, TrainBudget(epochs=1, max_batches=3), out, resume=True)
    monkeypatch.undo()

    # The ranking protocol reuses the two searches per seed (no new checkpoint).
    checkpoints = sorted(p for p in (tmp_path / "out").rglob("ckpt-*.index"))
    ranked = ranking.run_ranking(
        ranking.RankingConfig(experiment=config, seeds=(0, 1), budget=budget,
                              num_architectures=4), data, out)
    assert sorted(p for p in (tmp_path / "out").rglob("ckpt-*.index")) == checkpoints
    assert len(ranked["architectures"]) == 4 and ranked["seeds"] == [0, 1]
    for key in ("kendall_tau_without", "kendall_tau_with", "spearman_without",
                "spearman_with"):
        assert len(ranked[f"{key}_per_seed"]) == 2
        assert all(-1.0 <= v <= 1.0 for v in ranked[f"{key}_per_seed"] if v == v)
    truth = [a["valid"] for a in ranked["architectures"]]
    for seed in ("0", "1"):
        assert len(ranked["supernet_errors"][seed]["enas"]) == 4
    from wpl_keras.nas.analysis.rank_correlation import kendall_tau
    want = kendall_tau(ranked["supernet_errors"]["1"]["wpl"], truth)
    got = ranked["kendall_tau_with_per_seed"][1]
    assert (math.isnan(want) and math.isnan(got)) or got == pytest.approx(want)


@pytest.mark.slow
def test_measure_spread_trains_two_cells_with_two_seeds(tmp_path):
    data, config, budget = _tiny_protocol(write_tiny_ptb(tmp_path / "ptb"))
    out = tmp_path / "out"
    out.mkdir()
    messages = []
    result = ranking.measure_spread(config, data, budget, CellCache(str(out / sq.CELLS_FILE)),
                                    progress=messages.append)
    assert len(result["cells"]) == 2 and result["cells"][0]["arch"] != result["cells"][1]["arch"]
    a, b = result["cells"]
    assert result["cell_gap_valid"] == pytest.approx(
        abs(np.mean(a["valid_per_seed"]) - np.mean(b["valid_per_seed"])))
    assert result["seed_noise_valid"] == pytest.approx(
        (np.std(a["valid_per_seed"]) + np.std(b["valid_per_seed"])) / 2)
    assert len(json.load(open(os.path.join(out, "cells.json")))) == 4


@pytest.mark.slow
def test_cnn_cell_is_trained_on_train_minus_held_out_and_scored_on_both(tmp_path):
    from wpl_keras.data.cifar10 import load_cifar10

    folder = write_tiny_cifar(tmp_path / "cifar" / "cifar-10-batches-py")
    config = enas.get_preset("cnn", "tiny")
    data, config = enas.prepare(config, str(tmp_path / "cifar"), verify=False)
    space = enas.build_space(config)
    arch = space.sample(np.random.default_rng(0))
    result = from_scratch.train_cell(data, arch, config, TrainBudget(epochs=1))
    assert 0.0 <= result["valid"] <= 100.0 and 0.0 <= result["test"] <= 100.0
    # the held-out images are whole multiples of 1 / num_valid
    held_out = config.task.num_valid
    assert (result["valid"] / 100.0 * held_out) == pytest.approx(
        round(result["valid"] / 100.0 * held_out))
    assert load_cifar10 and folder


@pytest.mark.parametrize("make, error, match", [
    (lambda: TrainBudget(epochs=1.0), TypeError, "TrainBudget.epochs must be an integer >= 1"),
    (lambda: TrainBudget(epochs="2"), TypeError, "TrainBudget.epochs"),
    (lambda: TrainBudget(epochs=1, train_size=np.int64(0)), ValueError, "TrainBudget.train_size"),
    (lambda: TrainBudget(epochs=1, max_batches=2.5), TypeError, "TrainBudget.max_batches"),
    (lambda: sq.SearchQualityConfig(enas.get_preset("rnn", "tiny"), seeds=(0, 1.5),
                                    budget=TrainBudget(epochs=1), derive_samples=3),
     TypeError, r"seeds\[1\] must be an integer >= 0"),
    (lambda: sq.SearchQualityConfig(enas.get_preset("rnn", "tiny"), seeds=(0,),
                                    budget=TrainBudget(epochs=1), derive_samples="3"),
     TypeError, "SearchQualityConfig.derive_samples"),
    (lambda: ranking.RankingConfig(enas.get_preset("rnn", "tiny"), seeds=(0,),
                                   budget=TrainBudget(epochs=1), architecture_seed=-1),
     ValueError, "RankingConfig.architecture_seed"),
])
def test_benchmark_configs_refuse_bad_numbers_naming_the_field(make, error, match):
    with pytest.raises(error, match=match):
        make()


def test_benchmark_configs_take_numpy_integers_as_python_ints():
    budget = TrainBudget(epochs=np.int64(2), max_batches=np.int32(3))
    assert (budget.epochs, budget.max_batches) == (2, 3) and type(budget.epochs) is int
    config = sq.SearchQualityConfig(enas.get_preset("rnn", "tiny"), seeds=(np.int64(0),),
                                    budget=budget, derive_samples=np.int64(4))
    assert json.loads(json.dumps(config.to_json()))["derive_samples"] == 4
