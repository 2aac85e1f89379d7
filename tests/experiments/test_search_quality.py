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


def _search_quality(data, config, budget, out, resume=False, seeds=(0, 1)):
    protocol = sq.SearchQualityConfig(experiment=config, seeds=seeds, budget=budget,
                                      derive_samples=config.derive_samples)
    return sq.run_search_quality(protocol, data, out, resume=resume)


# --------------------------------------------------------------------------- pure summaries
def test_summarize_arms_pairs_seeds_and_counts_wins():
    def arms(enas, enas_wpl, uniform_ws, uniform_ws_wpl, random_on_enas):
        values = dict(enas=enas, enas_wpl=enas_wpl, uniform_ws=uniform_ws,
                      uniform_ws_wpl=uniform_ws_wpl, random_on_enas=random_on_enas)
        return {arm: {"valid": test + 10, "test": test} for arm, test in values.items()}

    results = {0: arms(90, 85, 80, 82, 93), 1: arms(100, 104, 95, 90, 98),
               2: {"enas": {"valid": 1, "test": 1}}}  # unfinished seed: left out
    out = sq.summarize_arms(results)
    assert sq.ARMS == ("enas", "enas_wpl", "uniform_ws", "uniform_ws_wpl", "random_on_enas")
    assert out["seeds"] == [0, 1] and set(out["arms"]) == set(sq.ARMS)
    assert out["arms"]["enas_wpl"]["test_per_seed"] == [85, 104]
    assert out["arms"]["enas"]["test_mean"] == pytest.approx(95.0)
    assert out["arms"]["enas"]["test_std"] == pytest.approx(5.0)
    assert out["arms"]["uniform_ws"]["valid_mean"] == pytest.approx(97.5)
    assert out["enas_wpl_minus_enas"] == {"per_seed": [-5.0, 4.0], "mean": pytest.approx(-0.5),
                                          "better_seeds": 1}
    assert out["uniform_ws_wpl_minus_uniform_ws"]["per_seed"] == [2.0, -5.0]
    assert out["uniform_ws_minus_enas"] == {"per_seed": [-10.0, -5.0],
                                            "mean": pytest.approx(-7.5), "better_seeds": 2}
    assert out["random_on_enas_minus_enas"]["per_seed"] == [3.0, -2.0]
    empty = sq.summarize_arms({})
    assert empty["seeds"] == [] and math.isnan(empty["enas_wpl_minus_enas"]["mean"])


def test_arm_configs_set_the_sampler_and_wpl_and_name_their_folders():
    base = enas.get_preset("rnn", "tiny")
    got = {arm: (c.sampler, c.search.wpl, c.seed)
           for arm, c in ((a, sq.seed_config(base, 3, a)) for a in sq.SEARCHES)}
    assert got == {"enas": ("enas", False, 3), "enas_wpl": ("enas", True, 3),
                   "uniform_ws": ("uniform", False, 3), "uniform_ws_wpl": ("uniform", True, 3)}
    assert sq.search_dir("/o", 3, "uniform_ws_wpl") == os.path.join("/o", "seed3",
                                                                    "uniform_ws_wpl")
    for call in (lambda: sq.search_dir("/o", 0, "random_on_enas"),
                 lambda: sq.seed_config(base, 0, "wpl")):
        with pytest.raises(ValueError, match="has no search of its own"):
            call()


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
    """One seed, five arms: four searches (ENAS and uniform, each without and with WPL) and
    uniform draws on the ENAS supernet; then a resume trains nothing, and the ranking protocol
    reuses the four searches."""
    data, config, budget = _tiny_protocol(write_tiny_ptb(tmp_path / "ptb"))
    out = str(tmp_path / "out")
    result = _search_quality(data, config, budget, out, seeds=(0,))
    last = json.loads(json.dumps(result))  # as the benchmark prints it
    assert last["seeds"] == [0]
    for arm in sq.ARMS:
        row = last["arms"][arm]
        assert len(row["test_per_seed"]) == 1 and len(row["valid_per_seed"]) == 1
        assert all(v > 1.0 for v in row["test_per_seed"] + row["valid_per_seed"])
    for arm, reference in sq.DIFFERENCES:
        diff = (last["arms"][arm]["test_per_seed"][0]
                - last["arms"][reference]["test_per_seed"][0])
        assert last[f"{arm}_minus_{reference}"]["per_seed"] == pytest.approx([diff])
    for arm in sq.SEARCHES:
        directory = sq.search_dir(out, 0, arm)
        saved = enas.ENASExperimentConfig.load(os.path.join(directory, "experiment.json"))
        assert (saved.sampler, saved.search.wpl) == sq.SEARCHES[arm] and saved.seed == 0
        derived = json.load(open(os.path.join(out, "seed0", f"derived_{arm}.json")))
        assert derived["scored_on"] == arm and derived["num_samples"] == 3
        history = json.load(open(os.path.join(directory, "history.json")))
        assert ("mean_reward" in history[-1]) == (saved.sampler == "enas")
    random = json.load(open(os.path.join(out, "seed0", "derived_random_on_enas.json")))
    assert random["scored_on"] == "enas" and last["cells"]["0"]["random_on_enas"]["scored_on"] \
        == "enas"
    protocol = json.load(open(os.path.join(out, sq.CONFIG_FILE)))
    assert protocol["arms"] == list(sq.ARMS)

    # Not without resume; with it, nothing is trained again and the figures are the same.
    with pytest.raises(FileExistsError):
        _search_quality(data, config, budget, out, seeds=(0,))

    def no_training(*args, **kwargs):
        raise AssertionError("a cached cell was trained again")

    monkeypatch.setattr(from_scratch, "train_cell", no_training)
    resumed = _search_quality(data, config, budget, out, resume=True, seeds=(0,))
    assert resumed["arms"] == result["arms"]
    with pytest.raises(ValueError, match="other settings"):
        _search_quality(data, config, TrainBudget(epochs=1, max_batches=3), out, resume=True,
                        seeds=(0,))
    monkeypatch.undo()

    # The ranking protocol reuses the four searches (no new checkpoint).
    checkpoints = sorted(p for p in (tmp_path / "out").rglob("ckpt-*.index"))
    ranked = ranking.run_ranking(
        ranking.RankingConfig(experiment=config, seeds=(0,), budget=budget,
                              num_architectures=4), data, out)
    assert sorted(p for p in (tmp_path / "out").rglob("ckpt-*.index")) == checkpoints
    assert len(ranked["architectures"]) == 4 and ranked["seeds"] == [0]
    for supernet in ranking.SUPERNETS:
        for which in ("without", "with"):
            for measure in ("kendall_tau", "spearman"):
                values = ranked[f"{measure}_{supernet}_{which}_per_seed"]
                assert len(values) == 1 and all(-1.0 <= v <= 1.0 for v in values if v == v)
    truth = [a["valid"] for a in ranked["architectures"]]
    assert set(ranked["supernet_errors"]["0"]) == set(sq.SEARCHES)
    from wpl_keras.nas.analysis.rank_correlation import kendall_tau
    want = kendall_tau(ranked["supernet_errors"]["0"]["uniform_ws_wpl"], truth)
    got = ranked["kendall_tau_uniform_ws_with_per_seed"][0]
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
