"""Tests for the controller-driven KerasTuner oracle (ENAS)."""

import json

import keras
import keras_tuner
import numpy as np
import pytest

from tests.tuner.tiny_task import TinySpace, match_score  # noqa: E402

from wpl_keras.nas.base import InvalidArchitectureError  # noqa: E402
from wpl_keras.tuner.controller_oracle import (  # noqa: E402
    architecture_to_values,
    hyperparameters_to_architecture,
    space_hyperparameters,
)
from wpl_keras.tuner.enas import ENASOracle  # noqa: E402


def _run_synthetic(oracle, target, n, tuner_id="tuner0"):
    """Drives an oracle by hand: score = fraction of decisions matching ``target``."""
    done = []
    for _ in range(n):
        trial = oracle.create_trial(tuner_id)
        if trial.status != "RUNNING":
            break
        arch = hyperparameters_to_architecture(oracle.space, trial.hyperparameters)
        oracle.update_trial(trial.trial_id, {"score": match_score(arch, target)})
        trial.status = "COMPLETED"
        oracle.end_trial(trial)
        done.append(arch)
    return done


def _oracle(tmp_path, space, **kwargs):
    kwargs.setdefault("units", 8)
    oracle = ENASOracle(space, keras_tuner.Objective("score", "max"), **kwargs)
    oracle._set_project_dir(str(tmp_path), "proj")
    return oracle


def test_hyperparameters_round_trip():
    space = TinySpace((3, 4))
    hp = space_hyperparameters(space)
    assert [p.name for p in hp.space] == ["layer0_op", "layer1_op"]
    assert hp.space[1].values == [0, 1, 2, 3]
    assert architecture_to_values(space, (2, 3)) == {"layer0_op": 2, "layer1_op": 3}
    assert hyperparameters_to_architecture(space, {"layer0_op": 2, "layer1_op": 3}) == (2, 3)
    with pytest.raises(InvalidArchitectureError, match="lack decisions"):
        hyperparameters_to_architecture(space, {"layer0_op": 1})
    with pytest.raises(InvalidArchitectureError, match="must be in"):
        hyperparameters_to_architecture(space, {"layer0_op": 1, "layer1_op": 4})


def test_trials_are_controller_samples_and_scores_train_controller(tmp_path, seed):
    space = TinySpace((4, 4, 4))
    oracle = _oracle(tmp_path, space, max_trials=12, learning_rate=0.05, baseline_decay=0.5)
    before = [v.numpy().copy() for v in oracle.controller.trainable_variables]
    archs = _run_synthetic(oracle, (1, 2, 3), 12)
    assert len(archs) == 12 and len(set(archs)) == 12  # repeats are resampled ("cache")
    assert int(oracle.reinforce.step) == oracle.num_controller_updates >= 12
    after = oracle.controller.trainable_variables
    assert any(not np.allclose(b, a.numpy()) for b, a in zip(before, after))
    best = oracle.best_architectures(1)[0]
    assert match_score(best, (1, 2, 3)) == max(match_score(a, (1, 2, 3)) for a in archs)
    with pytest.raises(ValueError, match="repeats"):
        ENASOracle(space, "score", repeats="never")


def test_cache_repeats_stop_when_space_is_exhausted(tmp_path, seed):
    space = TinySpace((2, 2))
    oracle = _oracle(tmp_path, space, max_trials=10, max_resamples=30)
    archs = _run_synthetic(oracle, (0, 1), 10)
    assert sorted(archs) == [(0, 0), (0, 1), (1, 0), (1, 1)]  # 4 distinct, then STOPPED
    assert oracle.num_cached_updates > 0


def test_rerun_policy_allows_repeats(tmp_path, seed):
    oracle = _oracle(tmp_path, TinySpace((2, 2)), max_trials=8, repeats="rerun")
    archs = _run_synthetic(oracle, (0, 1), 8)
    assert len(archs) == 8 and len(set(archs)) <= 4


def test_state_resumes_with_trained_controller(tmp_path, seed):
    space = TinySpace((4, 4))
    oracle = _oracle(tmp_path, space, max_trials=6, learning_rate=0.05, controller_seed=1)
    _run_synthetic(oracle, (3, 3), 6)
    oracle.save()
    state = json.loads((tmp_path / "proj" / "oracle.json").read_text())
    assert state["controller"]["checkpoint"] == "controller/checkpoint"
    assert state["controller"]["reinforce_step"] == int(oracle.reinforce.step) >= 6
    assert (tmp_path / "proj" / "controller" / "checkpoint.index").exists()

    resumed = _oracle(tmp_path, space, max_trials=6, learning_rate=0.05, controller_seed=9)
    resumed.reload()
    assert int(resumed.reinforce.step) == int(oracle.reinforce.step)
    for a, b in zip(oracle.controller.trainable_variables, resumed.controller.trainable_variables):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    assert resumed.controller.sample_architecture() == oracle.controller.sample_architecture()
    assert len(resumed.trials) == len(oracle.trials) >= 4


@pytest.mark.slow
def test_ordinary_tuner_with_build_function(tmp_path, seed):
    space = TinySpace((2, 3))
    widths = (4, 8)
    activations = ("relu", "tanh", "linear")
    x = np.random.default_rng(0).normal(size=(64, 5)).astype("float32")
    y = (x[:, 0] > 0).astype("int32")

    def build(hp):
        a = hyperparameters_to_architecture(space, hp)
        model = keras.Sequential(
            [keras.Input((5,)), keras.layers.Dense(widths[a[0]], activations[a[1]]),
             keras.layers.Dense(2)]
        )
        model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                      metrics=["accuracy"])
        return model

    oracle = ENASOracle(space, keras_tuner.Objective("val_accuracy", "max"), max_trials=2,
                        units=8)
    tuner = keras_tuner.Tuner(oracle=oracle, hypermodel=build, directory=str(tmp_path),
                              project_name="plain")
    tuner.search(x, y, validation_data=(x, y), epochs=1, verbose=0)
    assert len(oracle.trials) == 2
    assert all(t.status == "COMPLETED" for t in oracle.trials.values())
    assert int(oracle.reinforce.step) >= 2
    best_arch = hyperparameters_to_architecture(space, tuner.get_best_hyperparameters()[0])
    model = tuner.get_best_models()[0]
    assert model.layers[0].units == widths[best_arch[0]]


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(max_trials=0), ValueError, "max_trials"), (dict(max_trials=2.5), TypeError, "max_trials"),
    (dict(max_resamples=-1), ValueError, "max_resamples"),
    (dict(trial_timeout=0.0), ValueError, "trial_timeout"),
    (dict(trial_timeout=float("nan")), ValueError, "trial_timeout"),
    (dict(trial_timeout="10"), TypeError, "trial_timeout"),
    (dict(idle_wait=-0.5), ValueError, "idle_wait"), (dict(seed=1.5), TypeError, "seed"),
    (dict(max_retries_per_trial=-1), ValueError, "max_retries_per_trial"),
    (dict(max_consecutive_failed_trials=0), ValueError, "max_consecutive_failed_trials"),
])
def test_oracle_refuses_bad_numbers_naming_the_argument(kwargs, error, match):
    with pytest.raises(error, match=f"ControllerOracle {match}.* must be"):
        ENASOracle(TinySpace((3, 3)), "score", units=8, **kwargs)


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(seed_archs=1), ValueError, "seed_archs"), (dict(new_archs=0), ValueError, "new_archs"),
    (dict(top_k_seeds="5"), TypeError, "top_k_seeds"), (dict(seed=None), TypeError, "seed"),
])
def test_nao_oracle_refuses_bad_numbers_naming_the_argument(kwargs, error, match):
    from wpl_keras.nas.controllers.nao import NAOConfig
    from wpl_keras.tuner.nao import NAOOracle

    with pytest.raises(error, match=f"NAOAdapter {match} must be"):
        NAOOracle(TinySpace((3, 3)), "score", nao_config=NAOConfig(units=4, token_embedding=2),
                  **kwargs)


@pytest.mark.parametrize("entropy_mode, baseline_init", [("reward", "first_reward"),
                                                         ("reward_sum", "zero")])
def test_oracle_passes_the_release_controller_update_options(tmp_path, seed, entropy_mode,
                                                             baseline_init):
    oracle = _oracle(tmp_path, TinySpace((3, 3)), max_trials=3, learning_rate=0.05,
                     entropy_mode=entropy_mode, baseline_init=baseline_init)
    config = oracle.reinforce.get_config()
    assert (config["entropy_mode"], config["baseline_init"]) == (entropy_mode, baseline_init)
    assert config["baseline_reset_each_epoch"] is False  # a tuner has no epochs
    _run_synthetic(oracle, (1, 2), 3)
    assert int(oracle.reinforce.step) >= 3
    with pytest.raises(ValueError, match="entropy_mode"):
        ENASOracle(TinySpace((3, 3)), "score", entropy_mode="penalty")
