"""Tests for the weight-sharing tuner on a shared-weights task."""

import keras_tuner
import numpy as np
import pytest
import tensorflow as tf

from tests.tuner.tiny_task import TinyTask
from wpl_keras.tuner.enas import ENASOracle
from wpl_keras.tuner.weight_sharing import WeightSharingTuner
from wpl_keras.wpl.schedule import ScheduleConfig, flush_at, strength_at


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
