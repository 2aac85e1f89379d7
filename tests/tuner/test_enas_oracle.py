"""Tests for the controller-driven KerasTuner oracle (ENAS) and the weight-sharing tuner."""

import json

import keras
import keras_tuner
import numpy as np
import pytest
import tensorflow as tf

from tests.tuner.tiny_task import TinySpace, TinyTask, match_score  # noqa: E402

from wpl_keras.nas.base import InvalidArchitectureError  # noqa: E402
from wpl_keras.tuner.controller_oracle import (  # noqa: E402
    architecture_to_values,
    hyperparameters_to_architecture,
    space_hyperparameters,
)
from wpl_keras.tuner.enas import ENASOracle, WeightSharingTuner  # noqa: E402
from wpl_keras.wpl.schedule import ScheduleConfig, flush_at, strength_at  # noqa: E402


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


def test_weight_sharing_tuner_trains_supernet_with_wpl_and_exports(tmp_path, seed):
    task = TinyTask(seed=0)
    task.wpl_state.strength.assign(0.0)  # as a search task starts: the tuner sets alpha
    before = task.module.w0.numpy().copy()
    oracle = ENASOracle(task.space, keras_tuner.Objective("reward", "max"), max_trials=5,
                        units=8, repeats="rerun")
    schedule = ScheduleConfig(wpl_start_epoch=1, strength=60.0, strength_decay=None,
                              flush_every=0)
    tuner = WeightSharingTuner(oracle, task, batches_per_trial=3, schedule=schedule,
                               build_standalone=task.build_standalone,
                               directory=str(tmp_path), project_name="ws")
    tuner.search()
    trials = list(oracle.trials.values())
    assert len(trials) == 5 and all(t.status == "COMPLETED" for t in trials)
    assert not np.allclose(before, task.module.w0.numpy())  # shared weights trained
    wpl_on = [t for t in trials if t.metrics.get_last_value("wpl_active") == 1.0]
    assert len(wpl_on) == 4
    assert int(task.wpl_state.num_fisher_updates) == 4
    assert any(t.metrics.get_last_value("penalty") > 0 for t in wpl_on[1:])
    assert all(t.metrics.get_last_value("wpl_strength") == 60.0 for t in wpl_on)
    assert float(task.wpl_state.strength) == 60.0
    assert int(oracle.reinforce.step) == 5

    arch = tuner.get_best_architectures()[0]
    model = tuner.get_best_models()[0]
    x = task.val_x[:16]
    want = task._logits(tf.constant(arch), x).numpy()
    np.testing.assert_allclose(model.predict(x, verbose=0), want, rtol=1e-4, atol=1e-5)
    export_dir = str(tmp_path / "exported")
    model.export(export_dir, verbose=False)
    loaded = tf.saved_model.load(export_dir)  # keep a reference while serving
    served = loaded.serve(tf.constant(x))
    np.testing.assert_allclose(served.numpy(), want, rtol=1e-4, atol=1e-5)
    assert (tmp_path / "ws" / "supernet" / "checkpoint.index").exists()


@pytest.mark.parametrize("kwargs, error", [
    (dict(batches_per_trial=0), ValueError), (dict(batches_per_trial=7.0), TypeError),
])
def test_weight_sharing_tuner_refuses_bad_numbers(tmp_path, kwargs, error):
    task = TinyTask(seed=0)
    oracle = ENASOracle(task.space, keras_tuner.Objective("reward", "max"), max_trials=1,
                        units=8)
    (name,) = kwargs
    with pytest.raises(error, match=f"WeightSharingTuner {name}.* must be"):
        WeightSharingTuner(oracle, task, **kwargs, directory=str(tmp_path), project_name="bad")
    tuner = WeightSharingTuner(oracle, task, batches_per_trial=np.int64(2),
                               directory=str(tmp_path), project_name="good")
    assert tuner.batches_per_trial == 2
    assert strength_at(0, tuner.schedule) == 60.0 and not flush_at(5, tuner.schedule)


@pytest.mark.parametrize("schedule", [60.0, {"strength": 60.0}, lambda trial: 60.0])
def test_weight_sharing_tuner_takes_only_the_one_schedule_type(tmp_path, schedule):
    task = TinyTask(seed=0)
    oracle = ENASOracle(task.space, keras_tuner.Objective("reward", "max"), max_trials=1,
                        units=8)
    with pytest.raises(TypeError, match="schedule must be a wpl_keras.wpl.schedule.ScheduleConfig"):
        WeightSharingTuner(oracle, task, schedule=schedule, directory=str(tmp_path),
                           project_name="bad")


def test_weight_sharing_tuner_follows_a_decaying_schedule_per_trial(tmp_path, seed):
    """α per trial is strength_at(trials before, schedule), read back from the task's one
    strength variable; the Fisher is reset at flush_at's trials."""
    task = TinyTask(seed=0)
    task.wpl_state.strength.assign(0.0)
    schedule = ScheduleConfig(wpl_start_epoch=1, strength=8.0, strength_decay="exponential",
                              strength_decay_start=2, strength_decay_rate=0.5, flush_every=2)
    oracle = ENASOracle(task.space, keras_tuner.Objective("reward", "max"), max_trials=4,
                        units=8, repeats="rerun")
    resets = []
    reset = task.wpl_state.reset_fisher
    task.wpl_state.reset_fisher = lambda: (resets.append(tuner.trials_run), reset())[1]
    tuner = WeightSharingTuner(oracle, task, batches_per_trial=1, schedule=schedule,
                               directory=str(tmp_path), project_name="decay")
    tuner.search(verbose=0)
    trials = sorted(oracle.trials.values(), key=lambda t: int(t.trial_id))
    got = [t.metrics.get_last_value("wpl_strength") for t in trials]
    assert got == [strength_at(t, schedule) for t in range(4)] == [0.0, 8.0, 4.0, 2.0]
    assert resets == [3]  # flush_at(3): two trials after WPL turned on at trial 1


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
