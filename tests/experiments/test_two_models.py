"""The two-model experiment runner at tiny settings on tiny synthetic data."""

import dataclasses
import json
import math
import os

import numpy as np
import pytest

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
    with pytest.raises(ValueError, match="loose levels"):
        tm.TwoModelsConfig(loose_levels=(1.5,))


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
