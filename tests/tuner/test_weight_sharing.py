"""Tests for the weight-sharing tuner: the task form and the hypermodel form."""

import os
import pathlib
import signal
import subprocess
import sys
import time

import keras
import keras_tuner
import numpy as np
import pytest
import tensorflow as tf

from tests.tuner.tiny_task import TinyTask
from tests.utils.session_loader import serve_in_session
from wpl_keras.tuner.enas import ENASOracle
from wpl_keras.tuner.weight_bank import WeightBank, WeightKey
from wpl_keras.tuner.weight_sharing import WeightSharingTuner
from wpl_keras.wpl.config import WPLConfig
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


# ---------------------------------------------------------------------- the hypermodel form
HIDDEN_KEY = WeightKey("hidden/kernel", (6, 4))


def _build(hp):
    """A user's build: the activation changes no shape, so every trial shares every weight."""
    model = keras.Sequential([keras.Input((6,), name="features")])
    model.add(keras.layers.Dense(4, activation=hp.Choice("activation", ["relu", "tanh", "elu",
                                                                        "sigmoid"]),
                                 name="hidden"))
    model.add(keras.layers.Dense(2, name="head"))
    model.compile(optimizer=keras.optimizers.Adam(0.05), metrics=["accuracy"],
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return model


@pytest.fixture(scope="module")
def arrays():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(96, 6)).astype("float32")
    y = (x[:, 0] - x[:, 2] > 0).astype("int32")
    return x, y


def _hypermodel_tuner(path, *, max_trials=3, objective="val_accuracy", overwrite=True,
                      **kwargs):
    oracle = keras_tuner.oracles.RandomSearchOracle(
        keras_tuner.Objective(objective, "max"), max_trials=max_trials, seed=3)
    kwargs.setdefault("schedule", ScheduleConfig(wpl_start_epoch=1, strength=2.0,
                                                 strength_decay=None, flush_every=0))
    return WeightSharingTuner(oracle, hypermodel=kwargs.pop("hypermodel", _build),
                              steps_per_trial=kwargs.pop("steps_per_trial", 3),
                              wpl_config=WPLConfig(mode="gradient"), directory=str(path),
                              project_name="hm", overwrite=overwrite, **kwargs)


def _search(tuner, arrays):
    x, y = arrays
    tuner.search(x, y, validation_data=(x[:32], y[:32]), batch_size=16, verbose=0)


@pytest.mark.slow
def test_hypermodel_search_shares_weights_with_wpl_and_resumes(tmp_path, arrays, seed):
    tuner = _hypermodel_tuner(tmp_path, max_trials=3)
    _search(tuner, arrays)
    trials = sorted(tuner.oracle.trials.values(), key=lambda t: int(t.trial_id))
    assert [t.status for t in trials] == ["COMPLETED"] * 3
    last = [{k: t.metrics.get_last_value(k) for k in ("wpl_active", "wpl_penalty",
                                                      "shared_fraction")} for t in trials]
    assert [m["wpl_active"] for m in last] == [0.0, 1.0, 1.0]
    assert [m["shared_fraction"] for m in last] == [0.0, 1.0, 1.0]
    assert last[0]["wpl_penalty"] == 0.0 == last[1]["wpl_penalty"]  # F = 0 until trial 1 ends
    assert last[2]["wpl_penalty"] > 0
    assert all(0 <= t.score <= 1 for t in trials)  # val_accuracy on the fixed batches
    assert len(tuner.get_best_hyperparameters(3)) == 3 and tuner.trials_run == 3
    best = tuner.get_best_models(1)[0]  # the best trial's model on the shared weights
    np.testing.assert_array_equal(best.get_layer("hidden").kernel.numpy(),
                                  tuner.work.bank.get("weight", HIDDEN_KEY))
    # the bank holds the weights the last trial left: scoring its hyperparameters without
    # training gives what that trial reported on the same fixed batches
    scored = tuner.shared_score(trials[-1].hyperparameters.values,
                                (arrays[0][:32], arrays[1][:32]), batch_size=16)
    assert scored == pytest.approx({k: trials[-1].metrics.get_last_value(k)
                                    for k in ("val_loss", "val_accuracy")}, rel=1e-5)
    saved = {item: value.copy() for item, value in tuner.work.bank.values.items()}

    resumed = _hypermodel_tuner(tmp_path, max_trials=4, overwrite=False)
    assert resumed.trials_run == 3 and len(resumed.oracle.trials) == 3
    assert resumed.work.bank.values.keys() == saved.keys()
    for item, value in saved.items():
        np.testing.assert_array_equal(resumed.work.bank.values[item], value)
    assert resumed.work.bank.counters["optimizer_iterations"] == 9
    _search(resumed, arrays)
    assert len(resumed.oracle.trials) == 4  # continued to max_trials
    assert resumed.trials_run == 4
    assert resumed.work.bank.counters["optimizer_iterations"] == 12



@pytest.mark.slow
def test_retrain_best_fits_from_scratch_and_its_export_serves(tmp_path, arrays, seed):
    x, y = arrays
    tuner = _hypermodel_tuner(tmp_path, max_trials=2)
    train = tf.data.Dataset.from_tensor_slices((x, y)).batch(16)
    tuner.search(train, validation_data=train.take(2), verbose=0)  # datasets work too
    assert all(t.status == "COMPLETED" for t in tuner.oracle.trials.values())
    model = tuner.retrain_best(x, y, epochs=2, validation_data=(x[:32], y[:32]), verbose=0)
    assert len(model.history.history["val_loss"]) == 2
    assert not np.array_equal(model.get_layer("hidden").kernel.numpy(),
                              tuner.work.bank.get("weight", HIDDEN_KEY))  # not the shared ones
    export = str(tmp_path / "export" / "1")
    model.export(export, verbose=False)
    (name,) = tf.saved_model.load(export).signatures["serving_default"].structured_input_signature[1]
    (served,) = serve_in_session([{"dir": export, "signature": "serving_default",
                                   "inputs": {name: x[:5]}}], str(tmp_path / "session"))
    (output,) = served.values()
    np.testing.assert_allclose(output, model.predict(x[:5], verbose=0), rtol=1e-5, atol=1e-6)


def test_hypermodel_form_refuses_bad_input_with_clear_errors(tmp_path, arrays):
    task = TinyTask(seed=0)
    oracle = keras_tuner.oracles.RandomSearchOracle(keras_tuner.Objective("val_loss", "min"),
                                                    max_trials=1)
    with pytest.raises(ValueError, match="exactly one of task .* and hypermodel"):
        WeightSharingTuner(oracle, task, hypermodel=_build, directory=str(tmp_path))
    with pytest.raises(ValueError, match="needs steps_per_trial"):
        WeightSharingTuner(oracle, hypermodel=_build, directory=str(tmp_path))
    for steps, error in ((0, ValueError), (1.5, TypeError)):
        with pytest.raises(error, match="WeightSharingTuner steps_per_trial"):
            _hypermodel_tuner(tmp_path, steps_per_trial=steps)
    with pytest.raises(NotImplementedError, match="without shared_weights"):
        _hypermodel_tuner(tmp_path, shared_weights=object())
    tuner = _hypermodel_tuner(tmp_path, objective="val_auc")
    with pytest.raises(keras_tuner.errors.FatalValueError,
                       match=r"objective \['val_auc'\] is not among.*'val_accuracy', 'val_loss'"):
        _search(tuner, arrays)

    def uncompiled(hp):
        hp.Choice("units", [2, 3])
        return keras.Sequential([keras.Input((6,)), keras.layers.Dense(2)])

    with pytest.raises(keras_tuner.errors.FatalValueError, match="not compiled"):
        _search(_hypermodel_tuner(tmp_path, hypermodel=uncompiled), arrays)


def test_a_diverging_trial_is_failed_and_the_search_goes_on(tmp_path, arrays):
    def build(hp):
        model = _build(hp)
        if hp.get("activation") in ("relu", "tanh"):  # trials whose loss is NaN
            model.compile(optimizer="sgd", loss=lambda y, p: p[:, 0] * np.nan)
        return model

    tuner = _hypermodel_tuner(tmp_path, hypermodel=build, max_trials=3, steps_per_trial=1,
                              objective="val_loss")
    _search(tuner, arrays)  # 3 of 4 activations: at least one NaN trial, one finite trial
    trials = list(tuner.oracle.trials.values())
    failed = [t for t in trials if t.status == "FAILED"]
    assert {t.hyperparameters.get("activation") for t in failed} <= {"relu", "tanh"}
    assert len(trials) == 3 and failed and all(
        t.status == "COMPLETED" for t in trials if t not in failed)
    assert all("diverged" in t.message for t in failed)
    assert tuner.trials_run == 3 - len(failed)


_KILLED_SEARCH = '''
import pathlib, sys, time
import numpy as np
from tests.tuner.test_weight_sharing import _hypermodel_tuner, _search

tuner = _hypermodel_tuner(sys.argv[1], max_trials=4)
run_trial = tuner.run_trial

def hang_on_the_fourth(trial, *args, **kwargs):
    if tuner.trials_run == 3:  # the first three trials are saved: die inside the fourth
        pathlib.Path(sys.argv[2]).write_text(trial.trial_id)
        time.sleep(600)
    return run_trial(trial, *args, **kwargs)

tuner.run_trial = hang_on_the_fourth
rng = np.random.default_rng(0)
x = rng.normal(size=(96, 6)).astype("float32")
_search(tuner, (x, (x[:, 0] - x[:, 2] > 0).astype("int32")))
'''


@pytest.mark.slow
def test_a_search_killed_mid_trial_resumes_from_its_saved_shared_weights(tmp_path, arrays):
    """kill -9 inside trial 4: the bank of trial 3, the counters and the oracle continue."""
    marker = tmp_path / "hanging"
    script = tmp_path / "search.py"
    script.write_text(_KILLED_SEARCH)
    root = pathlib.Path(__file__).resolve().parents[2]
    proc = subprocess.Popen([sys.executable, str(script), str(tmp_path), str(marker)],
                            cwd=root, env={**os.environ, "PYTHONPATH": str(root)},
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 300
        while not marker.exists():
            assert proc.poll() is None, proc.stderr.read()[-3000:]
            assert time.monotonic() < deadline, "the search never reached its fourth trial"
            time.sleep(0.2)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    bank = WeightBank()
    bank.restore(str(tmp_path / "hm" / "shared_weights.npz"))
    resumed = _hypermodel_tuner(tmp_path, max_trials=4, overwrite=False)
    assert resumed.trials_run == 3 and bank.counters["optimizer_iterations"] == 9
    assert resumed.work.bank.manifest() == bank.manifest()
    _search(resumed, arrays)
    statuses = [t.status for t in resumed.oracle.trials.values()]
    assert statuses == ["COMPLETED"] * 4 and resumed.trials_run == 4
    assert resumed.work.bank.counters["optimizer_iterations"] == 12


@pytest.mark.slow  # ~5 s of CPU
def test_hypermodel_form_runs_with_the_enas_oracle_over_the_build_hyperparameters(
        tmp_path, arrays, seed):
    oracle = ENASOracle(objective=keras_tuner.Objective("val_accuracy", "max"), max_trials=3,
                        units=8, learning_rate=0.02, repeats="rerun")  # shared scores change
    tuner = WeightSharingTuner(oracle, hypermodel=_build, steps_per_trial=2,
                               directory=str(tmp_path), project_name="enas_hm")
    _search(tuner, arrays)
    trials = list(oracle.trials.values())
    assert [t.status for t in trials] == ["COMPLETED"] * 3
    assert all(t.hyperparameters.get("activation") in ("relu", "tanh", "elu", "sigmoid")
               for t in trials)
    assert int(oracle.reinforce.step) == 3  # the controller learned from every trial
    assert [t.metrics.get_last_value("shared_fraction") for t in trials][1:] == [1.0, 1.0]
