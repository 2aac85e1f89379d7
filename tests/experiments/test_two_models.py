"""The two-model experiment runner at tiny settings on tiny synthetic data."""

import dataclasses
import json
import math
import os

import numpy as np
import pytest
from matplotlib.axes import Axes

from wpl_keras.data.mnist import MnistSplits
from wpl_keras.experiments import two_models as tm
from wpl_keras.wpl.training import WPLDivergenceError


def _synthetic(seed=0, n_train=256, n_val=64, n_test=64, classes=10, side=6):
    rng = np.random.default_rng(seed)
    prototypes = rng.normal(0, 1, (classes, side, side)).astype(np.float32)

    def draw(n):
        y = rng.integers(0, classes, n).astype(np.int32)
        x = prototypes[y] + 0.8 * rng.normal(0, 1, (n, side, side)).astype(np.float32)
        return x.astype(np.float32), y

    return MnistSplits(*draw(n_train), *draw(n_val), *draw(n_test), source="synthetic")


TINY = dict(
    hidden_units=8, batch_size=16, a_max_epochs=2, a_steps_per_epoch=10, a_patience=1,
    loose_levels=(0.3,), loose_learning_rate=0.1, loose_check_every=2, loose_max_steps=400, iterations=20, eval_every=10,
    fisher_samples=20, seeds=(0,),
)


def test_pure_helpers():
    assert tm.forgetting(0.9, 0.6) == pytest.approx(0.3)
    assert tm.forgetting_reduction(0.3, 0.003) == pytest.approx(0.99)
    assert math.isnan(tm.forgetting_reduction(0.0, 0.1))
    stats = tm.mean_std([1.0, 3.0, float("nan")])
    assert stats["mean"] == 2.0 and stats["std"] == 1.0 and len(stats["values"]) == 3


def test_config_validation_and_json():
    config = tm.TwoModelsConfig(**TINY)
    assert tm.TwoModelsConfig.from_json(json.loads(json.dumps(config.to_json()))) == config
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.strength = 1.0
    with pytest.raises(ValueError, match="multiple of eval_every"):
        tm.TwoModelsConfig(iterations=25, eval_every=10)
    with pytest.raises(ValueError, match="wpl_mode"):
        tm.TwoModelsConfig(wpl_mode="bogus")
    with pytest.raises(ValueError, match=r"loose_levels\[0\] must be a finite number in \(0, 1\)"):
        tm.TwoModelsConfig(loose_levels=(1.5,))


@pytest.mark.parametrize("field, value, error", [
    ("strength", np.float32(-1), ValueError), ("strength", np.float32("nan"), ValueError),
    ("strength", "strong", TypeError), ("hidden_units", 0, ValueError),
    ("batch_size", 64.0, TypeError), ("a_learning_rate", 0.0, ValueError),
    ("b_momentum", 1.0, ValueError), ("l2", -1e-4, ValueError), ("fisher_samples", None, TypeError),
    ("a_steps_per_epoch", 0, ValueError), ("eval_examples", "all", TypeError),
    ("iterations", True, TypeError), ("loose_max_steps", float("inf"), TypeError),
])
def test_config_refuses_bad_numbers_naming_the_field(field, value, error):
    with pytest.raises(error, match=f"TwoModelsConfig.{field} must be"):
        tm.TwoModelsConfig(**{field: value})


def test_config_strength_inf_only_in_proximal_mode_and_numpy_fields_are_python():
    assert tm.TwoModelsConfig(strength=float("inf")).strength == float("inf")
    with pytest.raises(ValueError, match="TwoModelsConfig.strength must be a finite number"):
        tm.TwoModelsConfig(strength=float("inf"), wpl_mode="gradient")
    config = tm.TwoModelsConfig(**{**TINY, "strength": np.float64(5.0),
                                   "seeds": (np.int64(0),), "loose_levels": (np.float32(0.5),)})
    assert (config.strength, config.seeds, config.loose_levels) == (5.0, (0,), (0.5,))
    assert tm.TwoModelsConfig.from_json(json.loads(json.dumps(config.to_json()))) == config
    with pytest.raises(TypeError, match=r"TwoModelsConfig.seeds\[1\] must be an integer"):
        tm.TwoModelsConfig(seeds=(0, 1.5))


def test_b_shares_a_layers():
    config = tm.TwoModelsConfig(**TINY)
    model_a, make_b, shared = tm.build_models((6, 6), config)
    model_b = make_b()
    a_vars = {id(v) for layer in shared for v in layer.trainable_weights}
    b_vars = {id(v) for v in model_b.trainable_weights}
    assert a_vars <= b_vars
    assert len(model_b.trainable_weights) == len(model_a.trainable_weights) + 4
    dense_b = [layer.name for layer in model_b.layers if layer.__class__.__name__ == "Dense"]
    assert dense_b == ["W_A1", "W_A2", "W_A3", "W_A4", "W_B5", "W_B6", "head_B"]


@pytest.mark.slow
def test_run_experiment_tiny_end_to_end(tmp_path, seed):
    # B trained hard (momentum 0.9, lr 0.5) moves the shared weights; WPL (proximal, large
    # alpha) keeps A where it was.
    data = _synthetic()
    config = tm.TwoModelsConfig(**{**TINY, "b_learning_rate": 0.5, "fisher_samples": 64})
    messages = []
    results = tm.run_experiment(data, config, progress=messages.append)
    assert set(results["cases"]) == {"strict", "loose_0.3"}
    assert len(messages) == 2
    for case in results["cases"].values():
        (one,) = case["seeds"]
        for run in ("without", "with"):
            assert one["runs"][run]["iterations"] == [0, 10, 20]
            assert len(one["runs"][run]["acc_a"]) == 3
            # both runs start from the same A
            assert one["runs"][run]["acc_a"][0] == pytest.approx(one["a_baseline"])
        assert one["d_without"] == pytest.approx(one["a_baseline"] - one["a_final_without"])
        assert case["summary"]["a_drop_without"]["mean"] == pytest.approx(100 * one["d_without"])
    strict = results["cases"]["strict"]["seeds"][0]
    assert strict["d_without"] > 0.05
    assert abs(strict["d_with"]) < 0.5 * strict["d_without"]
    loose = results["cases"]["loose_0.3"]["seeds"][0]
    assert loose["a_training"]["val_accuracy"] >= 0.3
    for name, case in results["cases"].items():  # no strengths given: config.strength
        assert case["strength"] == config.strength
        assert case["strength_source"] == "TwoModelsConfig.strength"
        assert results["overview"][name]["b_accuracy_gap"] == pytest.approx(
            100 * (case["seeds"][0]["b_final_without"] - case["seeds"][0]["b_final_with"]))
    paths = tm.save_results(results, str(tmp_path / "out"))
    saved = json.loads(open(paths["results"]).read())
    assert saved["config"]["strength"] == config.strength
    assert tm.TwoModelsConfig.from_json(json.loads(open(paths["config"]).read())) == config
    assert os.path.getsize(paths["figure"]) > 1000


def test_gradient_mode_with_huge_alpha_raises_naming_alpha_and_lr(seed):
    data = _synthetic()
    config = tm.TwoModelsConfig(**{**TINY, "wpl_mode": "gradient", "strength": 1e9})
    model_a, make_b, shared = tm.build_models((6, 6), config)
    fisher = [np.ones(v.shape, np.float32) for layer in shared for v in layer.trainable_weights]
    with pytest.raises(WPLDivergenceError, match=r"alpha=1e\+09.*learning rate=0.1"):
        tm.train_b(model_a, make_b(), shared, data, fisher, config, wpl=True, seed=0,
                   x_eval=data.x_test, y_eval=data.y_test)


def test_loosest_helpful_level():
    def case(level, reduction, drop):
        return {"level": level, "summary": {"forgetting_reduction": {"mean": reduction},
                                            "a_drop_without": {"mean": drop}}}

    results = {"cases": {"strict": case(None, 1.0, 30), "loose_0.56": case(0.56, 0.9, 20),
                         "loose_0.44": case(0.44, 0.6, 10), "loose_0.36": case(0.36, 0.2, 10)}}
    assert tm.loosest_helpful_level(results) == "loose_0.44"
    results["cases"]["loose_0.44"] = case(0.44, 0.6, 2.0)
    assert tm.loosest_helpful_level(results) == "loose_0.56"


def test_app_arguments_and_data_dir_resolution(tmp_path):
    from apps import two_models as app

    args = app.build_parser().parse_args(
        ["--out", str(tmp_path), "--seeds", "3", "4", "--iterations", "200", "--alpha", "5",
         "--loose-levels", "0.5", "0.4"]
    )
    config = app.config_from_args(args)
    assert config.seeds == (3, 4) and config.iterations == 200 and config.strength == 5.0
    assert config.loose_levels == (0.5, 0.4)
    assert app.resolve_data_dir("given", {"WPL_DATA_DIR": "/x"}) == "given"
    assert app.resolve_data_dir(None, {"WPL_DATA_DIR": "/x"}) == os.path.join("/x", "mnist")
    assert app.resolve_data_dir(None, {}) is None
    (tmp_path / "train-images-idx3-ubyte.gz").write_bytes(b"")
    assert app.resolve_data_dir(None, {"WPL_DATA_DIR": str(tmp_path)}) == str(tmp_path)


def test_app_reports_missing_files(tmp_path, capsys):
    from apps import two_models as app

    code = app.main(["--data-dir", str(tmp_path / "empty"), "--out", str(tmp_path / "out")])
    assert code == 2
    assert "t10k-images-idx3-ubyte.gz" in capsys.readouterr().err


def test_config_json_names_the_renamed_alpha_field():
    obj = tm.TwoModelsConfig(**TINY).to_json()
    assert tm.TwoModelsConfig.from_json(obj) == tm.TwoModelsConfig(**TINY)
    obj["alpha"] = obj.pop("strength")
    with pytest.raises(ValueError, match="'alpha' is now 'strength'"):
        tm.TwoModelsConfig.from_json(obj)


# --------------------------------------------------------------------------- shared-layer count
@pytest.mark.parametrize("k", [1, 2, 3, 4])
def test_b_shares_the_first_k_of_a_layers(k):
    config = tm.TwoModelsConfig(**{**TINY, "shared_layers": k})
    model_a, make_b, shared = tm.build_models((6, 6), config)
    model_b = make_b()
    assert [layer.name for layer in shared] == list(tm.A_LAYER_NAMES[:k])
    dense_b = [layer.name for layer in model_b.layers if layer.__class__.__name__ == "Dense"]
    own = [f"W_B{i}" for i in range(k + 1, 7)]
    assert dense_b == list(tm.A_LAYER_NAMES[:k]) + own + ["head_B"]
    a_vars = {id(v) for v in model_a.trainable_weights}
    b_vars = {id(v) for v in model_b.trainable_weights}
    shared_vars = {id(v) for layer in shared for v in layer.trainable_weights}
    assert a_vars & b_vars == shared_vars and len(shared_vars) == 2 * k
    dense_a = [layer.name for layer in model_a.layers if layer.__class__.__name__ == "Dense"]
    assert dense_a == list(tm.A_LAYER_NAMES) + ["head_A"]


@pytest.mark.parametrize("k", [0, 5, -1])
def test_shared_layers_out_of_range_is_refused(k):
    with pytest.raises(ValueError, match=r"shared_layers must be an integer in \[1, 4\], got " + str(k)):
        tm.TwoModelsConfig(shared_layers=k)


def test_shared_layers_default_and_json_round_trip():
    assert tm.TwoModelsConfig().shared_layers == 4
    config = tm.TwoModelsConfig(**{**TINY, "shared_layers": 2})
    assert tm.TwoModelsConfig.from_json(json.loads(json.dumps(config.to_json()))) == config


def test_a_starts_and_trains_the_same_whatever_k():
    data = _synthetic()
    first = tm.train_a(data, tm.TwoModelsConfig(**{**TINY, "shared_layers": 1}), seed=3)
    last = tm.train_a(data, tm.TwoModelsConfig(**{**TINY, "shared_layers": 4}), seed=3)
    assert len(first.weights) == 10
    for a, b in zip(first.weights, last.weights):
        np.testing.assert_array_equal(a, b)
    other = tm.train_a(data, tm.TwoModelsConfig(**TINY), seed=4)
    assert not np.array_equal(first.weights[0], other.weights[0])


@pytest.mark.parametrize("k, level", [(2, None), (1, 0.3)])
@pytest.mark.slow
def test_run_case_from_trained_a_equals_training_a_itself(k, level):
    data = _synthetic()
    config = tm.TwoModelsConfig(**{**TINY, "shared_layers": k, "b_learning_rate": 0.5})
    trained = tm.train_a(data, dataclasses.replace(config, shared_layers=4), seed=0, level=level)
    reused = tm.run_case(data, config, 0, level, trained_a=trained)
    fresh = tm.run_case(data, config, 0, level)
    assert reused["shared_layers"] == k and reused["a_training"] == fresh["a_training"]
    for key in ("a_baseline", "fisher_max", "a_final_without", "a_final_with",
                "b_final_without", "b_final_with"):
        assert reused[key] == pytest.approx(fresh[key], abs=1e-6), key
    assert reused["runs"]["with"]["acc_a"] == pytest.approx(fresh["runs"]["with"]["acc_a"])
    assert reused["a_drop_with"] == pytest.approx(100 * reused["d_with"])


def test_trained_a_for_another_seed_level_or_width_is_refused():
    data = _synthetic()
    config = tm.TwoModelsConfig(**TINY)
    trained = tm.train_a(data, config, seed=0)
    with pytest.raises(ValueError, match=r"seed 0, level None.*case is seed 1"):
        tm.run_case(data, config, 1, trained_a=trained)
    with pytest.raises(ValueError, match=r"level 0.3.*train_a\(data, config, 0, 0.3\)"):
        tm.run_case(data, config, 0, 0.3, trained_a=trained)
    wider = dataclasses.replace(config, hidden_units=12)
    with pytest.raises(ValueError, match="same hidden_units"):
        tm.run_case(data, wider, 0, trained_a=trained)


@pytest.mark.parametrize("k", [1, 2, 3])
def test_initial_weights_of_a_and_b_tail_do_not_depend_on_k(k):
    def initial(shared_layers):
        import keras

        keras.utils.set_random_seed(7)
        config = tm.TwoModelsConfig(**{**TINY, "shared_layers": shared_layers})
        model_a, make_b, _ = tm.build_models((6, 6), config)
        return ([np.array(v) for v in model_a.weights],
                {v.path: np.array(v) for v in make_b().weights})

    a_k, b_k = initial(k)
    a_4, b_4 = initial(4)
    for x, y in zip(a_k, a_4):
        np.testing.assert_array_equal(x, y)
    for path in ("W_B5/kernel", "W_B6/kernel", "head_B/kernel"):
        np.testing.assert_array_equal(b_k[path], b_4[path])
    assert not np.array_equal(b_k[f"W_B{k + 1}/kernel"], b_4["W_B5/kernel"])


# --------------------------------------------------------------------------- strength per case
def test_case_strength_checks_its_fields():
    assert tm.CaseStrength(np.float64(2.0), "x").to_json() == {"strength": 2.0, "source": "x"}
    assert tm.CaseStrength(float("inf"), "x").strength == float("inf")
    with pytest.raises(ValueError, match="CaseStrength.strength"):
        tm.CaseStrength(-1.0, "x")
    with pytest.raises(ValueError, match="CaseStrength.source must say where"):
        tm.CaseStrength(1.0, " ")


def test_run_experiment_runs_each_case_at_its_strength(monkeypatch):
    calls = []

    def fake_run_case(data, config, seed, level=None):
        calls.append((level, seed, config.strength))
        keys = ("a_baseline", "a_final_without", "a_final_with", "b_final_without",
                "b_final_with", "d_without", "d_with", "a_drop_without")
        return {**{k: 0.5 for k in keys}, "forgetting_reduction": 0.9 if level is None else 0.6,
                "b_accuracy_gap": 0.1 * config.strength, "seconds": 0.0}

    monkeypatch.setattr(tm, "run_case", fake_run_case)
    config = tm.TwoModelsConfig(**{**TINY, "loose_levels": (0.44,), "seeds": (0, 1)})
    strengths = {"strict": tm.CaseStrength(1e8, "a"), "loose_0.44": tm.CaseStrength(1.0, "b"),
                 "loose_0.9": tm.CaseStrength(5.0, "unused")}
    messages = []
    results = tm.run_experiment(None, config, strengths=strengths, progress=messages.append)
    assert calls == [(None, 0, 1e8), (None, 1, 1e8), (0.44, 0, 1.0), (0.44, 1, 1.0)]
    assert messages[2].startswith("loose_0.44 seed 0 strength 1: ")
    assert results["config"]["strength"] == config.strength  # the config itself is unchanged
    assert results["overview"] == {
        "strict": {"strength": 1e8, "strength_source": "a", "forgetting_reduction": 0.9,
                   "forgetting_reduction_std": 0.0, "b_accuracy_gap": 1e7,
                   "b_accuracy_gap_std": 0.0, "a_baseline": 0.5, "a_drop_without": 0.5,
                   "seeds": 2},
        "loose_0.44": {"strength": 1.0, "strength_source": "b", "forgetting_reduction": 0.6,
                       "forgetting_reduction_std": 0.0, "b_accuracy_gap": 0.1,
                       "b_accuracy_gap_std": 0.0, "a_baseline": 0.5, "a_drop_without": 0.5,
                       "seeds": 2}}
    assert results["cases"]["loose_0.44"]["strength_source"] == "b"
    with pytest.raises(ValueError, match=r"no entry for the cases \['loose_0.44'\]"):
        tm.run_experiment(None, config, strengths={"strict": tm.CaseStrength(1.0, "a")})


def test_figure_titles_show_the_strength_reduction_and_b_gap(tmp_path, monkeypatch):
    titles = []
    seed = {"a_baseline": 0.9, "runs": {r: {"iterations": [0, 10], "acc_a": [0.9, 0.5],
                                            "acc_b": [0.1, 0.8]} for r in ("without", "with")}}
    summary = {"forgetting_reduction": {"mean": 0.553}, "b_accuracy_gap": {"mean": -0.16}}
    results = {"cases": {"loose_0.44": {"seeds": [seed], "summary": summary, "strength": 1.0}}}
    real_set_title = Axes.set_title
    monkeypatch.setattr(Axes, "set_title",
                        lambda ax, text, **kw: titles.append(text) or real_set_title(ax, text))
    tm.plot_results(results, str(tmp_path / "f.png"))
    assert titles == ["loose 0.44, α 1\nreduction 0.55, B gap -0.2 pts"]
