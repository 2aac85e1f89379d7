"""Tests for the tuner benchmark's protocol (tiny hypermodel, tiny data)."""

import json

import keras
import numpy as np
import pytest

from wpl_keras.experiments import tuner_quality as tq


def tiny_hypermodel(hp):
    units = hp.Choice("units", [2, 4, 8, 16])
    with hp.conditional_scope("units", [8, 16]):
        hp.Boolean("extra")
    model = keras.Sequential([keras.Input((32, 32, 3)), keras.layers.Rescaling(1 / 255.0),
                              keras.layers.GlobalAveragePooling2D(name="pool"),
                              keras.layers.Dense(units, activation="relu", name="hidden"),
                              keras.layers.Dense(10, name="classifier")])
    model.compile(optimizer=keras.optimizers.Adam(1e-2),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])
    return model


def tiny_splits():
    rng = np.random.default_rng(0)

    def part(n):
        return (rng.integers(0, 256, (n, 32, 32, 3)).astype("float32"),
                rng.integers(0, 10, n).astype("int32"))

    return tq.Splits(*part(64), *part(32), *part(32))


def tiny_config(**kwargs):
    base = dict(seeds=(0,), arm_budget_s=1e-3, batch_size=16, trial_epochs=1,
                hyperband_max_epochs=2, steps_per_trial=2, wpl_start_trial=1, final_epochs=1,
                tau_configs=3)
    return tq.TunerQualityConfig(**{**base, **kwargs})


def test_summary_reports_means_trials_taus_and_the_gap_in_points():
    per_seed = {0: {"random_search": {"test": 0.40, "trials": 5},
                    "ws_random": {"test": 0.45, "trials": 50},
                    "ws_enas_wpl": {"test": 0.43, "trials": 40}},
                1: {"random_search": {"test": 0.42, "trials": 7},
                    "ws_random": {"test": 0.41, "trials": 52},
                    "ws_enas_wpl": {"test": 0.47, "trials": 44}}}
    out = tq.summarize(per_seed, {"without": 0.1, "with": 0.3})
    rs = out["arms"]["random_search"]
    assert rs["test_mean"] == pytest.approx(41.0) and rs["trials"] == 6.0
    assert rs["test_std"] == pytest.approx(np.std([40.0, 42.0], ddof=1))
    assert out["ws_best_arm"] == "ws_enas_wpl"
    assert out["ws_best_minus_random_search"] == pytest.approx(45.0 - 41.0)
    assert (out["kendall_tau_without"], out["kendall_tau_with"]) == (0.1, 0.3)


def test_config_refuses_bad_settings_naming_them():
    with pytest.raises(ValueError, match="steps_per_trial"):
        tq.TunerQualityConfig(steps_per_trial=0)
    with pytest.raises(ValueError, match="tau_configs"):
        tq.TunerQualityConfig(tau_configs=1)


@pytest.mark.slow
def test_tau_configurations_are_distinct_and_fixed():
    first = tq.tau_configurations(5, tiny_hypermodel)
    assert first == tq.tau_configurations(5, tiny_hypermodel)
    assert len({json.dumps(c, sort_keys=True) for c in first}) == 5
    with pytest.raises(ValueError, match="fewer than 9"):
        tq.tau_configurations(9, tiny_hypermodel)  # 2 + 2·2 = 6 distinct configurations


@pytest.mark.slow
def test_kerastuner_arms_run_train_the_best_from_scratch_and_resume(tmp_path):
    config, splits = tiny_config(), tiny_splits()
    arms = ("random_search", "hyperband")
    out = tq.run_tuner_quality(config, splits, str(tmp_path), arms=arms,
                               hypermodel=tiny_hypermodel)
    for arm in arms:
        assert out["arms"][arm]["trials"] == 1  # the budget ends each arm after one trial
        assert 0.0 <= out["arms"][arm]["test_mean"] <= 100.0
    assert (tmp_path / "anytime.png").stat().st_size > 0
    finals = json.loads((tmp_path / tq.FINALS_FILE).read_text())
    assert len(finals) == 2
    with pytest.raises(FileExistsError, match="--resume"):
        tq.run_tuner_quality(config, splits, str(tmp_path), arms=arms,
                             hypermodel=tiny_hypermodel)
    again = tq.run_tuner_quality(config, splits, str(tmp_path), arms=arms, resume=True,
                                 hypermodel=tiny_hypermodel)
    assert again["arms"] == out["arms"]  # spent budgets, cached final trainings
    more = tq.run_tuner_quality(tiny_config(seeds=(0, 1)), splits, str(tmp_path),
                                arms=("random_search",), resume=True,
                                hypermodel=tiny_hypermodel)  # adds a seed
    assert more["seeds"] == [0, 1] and more["arms"]["random_search"]["test_per_seed"][0] == \
        out["arms"]["random_search"]["test_per_seed"][0]
    assert len(json.loads((tmp_path / tq.FINALS_FILE).read_text())) == 3
    with pytest.raises(ValueError, match="other settings"):
        tq.run_tuner_quality(tiny_config(final_epochs=2), splits, str(tmp_path), arms=arms,
                             resume=True, hypermodel=tiny_hypermodel)


@pytest.mark.slow
def test_weight_sharing_arms_run_and_the_shared_weights_rank_the_fixed_configurations(tmp_path):
    config, splits = tiny_config(tau_configs=2, arm_budget_s=1e-3), tiny_splits()
    arms = ("ws_random", "ws_random_wpl", "ws_enas_wpl")
    out = tq.run_tuner_quality(config, splits, str(tmp_path), arms=arms,
                               hypermodel=tiny_hypermodel)
    assert set(out["arms"]) == set(arms)
    for arm in arms:
        assert out["arms"][arm]["trials"] == 1
        curve = json.loads((tmp_path / "seed0" / arm / "wall_clock.json").read_text())["curve"]
        assert 0.0 <= curve[0]["score"] <= 1.0
    for key in ("kendall_tau_without", "kendall_tau_with"):
        assert out[key] is None or -1.0 <= out[key] <= 1.0
    assert len(json.loads((tmp_path / tq.TAU_FILE).read_text())) == 2
    assert out["ws_best_minus_random_search"] is None  # no random_search arm to compare
