"""The ranking protocol's pure parts: the fixed architectures, the per-supernet summary of
Kendall's τ and Spearman's ρ without and with WPL, and its protocol record. (The protocol end
to end, sharing its searches with the search-quality protocol, is in test_search_quality.py.)"""

import json
import math

import pytest

from wpl_keras.experiments import enas
from wpl_keras.experiments import ranking
from wpl_keras.experiments.from_scratch import TrainBudget


def test_fixed_architectures_are_distinct_valid_and_reproducible():
    space = enas.build_space(enas.get_preset("rnn", "cpu-small"))
    archs = ranking.fixed_architectures(space, 20)
    assert archs == ranking.fixed_architectures(space, 20)
    assert archs[:10] == ranking.fixed_architectures(space, 10)  # 20 extends the former 10
    assert len(set(archs)) == 20 and all(space.validate(a) == a for a in archs)
    assert ranking.fixed_architectures(space, 10, seed=1) != archs[:10]
    with pytest.raises(ValueError, match="at least 2"):
        ranking.fixed_architectures(space, 1)


def test_supernet_arms_name_the_search_quality_searches():
    from wpl_keras.experiments import search_quality as sq

    assert ranking.SUPERNETS == ("enas", "uniform_ws")
    for supernet in ranking.SUPERNETS:
        arms = ranking.supernet_arms(supernet)
        assert set(arms.values()) <= set(sq.SEARCHES)
        assert sq.SEARCHES[arms["without"]][1] is False and sq.SEARCHES[arms["with"]][1] is True
    assert ranking.supernet_arms("uniform_ws") == {"without": "uniform_ws",
                                                   "with": "uniform_ws_wpl"}
    with pytest.raises(ValueError, match="unknown supernet 'wpl'"):
        ranking.supernet_arms("wpl")


def test_summarize_ranking_per_supernet_per_seed_and_means():
    truth = [10.0, 20.0, 30.0, 40.0]
    scores = {0: {"enas": [4, 3, 2, 1], "enas_wpl": [1, 2, 3, 4],
                  "uniform_ws": [1, 2, 4, 3], "uniform_ws_wpl": [2, 1, 3, 4]},
              1: {"enas": [1, 2, 4, 3], "enas_wpl": [1, 2, 3, 4],
                  "uniform_ws": [1, 2, 3, 4], "uniform_ws_wpl": [4, 3, 2, 1]},
              2: {"enas": [5, 5, 5, 5], "enas_wpl": [2, 1, 3, 4]}}  # no uniform searches
    out = ranking.summarize_ranking(truth, scores)
    assert out["seeds"] == [0, 1]
    assert out["seeds_enas"] == [0, 1, 2] and out["seeds_uniform_ws"] == [0, 1]
    assert out["kendall_tau_enas_with_per_seed"] == pytest.approx([1.0, 1.0, 4 / 6])
    assert out["kendall_tau_enas_without_per_seed"][:2] == pytest.approx([-1.0, 4 / 6])
    assert math.isnan(out["kendall_tau_enas_without_per_seed"][2])  # a constant score
    assert out["kendall_tau_enas_without"] == pytest.approx((-1.0 + 4 / 6) / 2)
    assert out["spearman_enas_with_per_seed"] == pytest.approx([1.0, 1.0, 0.8])
    assert out["enas_with_minus_without_tau"]["per_seed"][:2] == pytest.approx([2.0, 1 / 3])
    assert out["enas_with_minus_without_tau"]["mean"] == pytest.approx((2.0 + 1 / 3) / 2)
    assert out["kendall_tau_uniform_ws_without_per_seed"] == pytest.approx([4 / 6, 1.0])
    assert out["kendall_tau_uniform_ws_with_per_seed"] == pytest.approx([4 / 6, -1.0])
    assert out["kendall_tau_uniform_ws_with"] == pytest.approx((4 / 6 - 1.0) / 2)
    assert out["kendall_tau_uniform_ws_with_std"] == pytest.approx((4 / 6 + 1.0) / 2)
    assert out["uniform_ws_with_minus_without_tau"]["per_seed"] == pytest.approx([0.0, -2.0])
    assert out["undefined"] == 2  # the constant score's tau and rho
    empty = ranking.summarize_ranking(truth, {})
    assert empty["seeds"] == [] and math.isnan(empty["kendall_tau_uniform_ws_with"])


def test_ranking_protocol_defaults_to_20_architectures_and_records_the_supernets():
    config = ranking.RankingConfig(enas.get_preset("rnn", "tiny"), seeds=(0, 1),
                                   budget=TrainBudget(epochs=1, max_batches=2))
    saved = json.loads(json.dumps(config.to_json()))
    assert config.num_architectures == 20 and saved["num_architectures"] == 20
    assert saved["supernets"] == ["enas", "uniform_ws"]
