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
from tests.tuner.oracle_setup import ready_oracle


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


# ------------------------------------------- without a space: the hypermodel's hyperparameters
def _hp_oracle(tmp_path, declare=None, **kwargs):
    kwargs.setdefault("units", 8)
    oracle = ENASOracle(objective=keras_tuner.Objective("score", "max"), **kwargs)
    return ready_oracle(oracle, tmp_path, declare)


def _drive(oracle, score_fn, n, before_end=None):
    """Runs ``n`` trials by hand with ``score = score_fn(values)``; returns their values."""
    done = []
    for _ in range(n):
        trial = oracle.create_trial("tuner0")
        if trial.status != "RUNNING":
            break
        values = dict(trial.hyperparameters.values)
        oracle.update_trial(trial.trial_id, {"score": score_fn(values)})
        trial.status = "COMPLETED"
        if before_end is not None:
            before_end(trial)
        oracle.end_trial(trial)
        done.append(values)
    return done


def _declare_conditional(hp):
    hp.Choice("kind", ["a", "b"])
    with hp.conditional_scope("kind", ["b"]):
        hp.Choice("x", [1, 2, 3])
    hp.Int("n", 1, 3)


def _weights(layer):
    return [w.numpy().copy() for w in layer.weights]


def test_without_space_decisions_come_from_the_declared_hyperparameters(tmp_path, seed):
    oracle = _hp_oracle(tmp_path)
    assert oracle.controller is None and oracle.decisions == ()
    with pytest.raises(ValueError, match="needs a space"):
        oracle.best_architectures(1)
    hp = keras_tuner.HyperParameters()
    _declare_conditional(hp)
    oracle.update_space(hp)
    assert [d.name for d in oracle.decisions] == ["kind", "x", "n"]
    assert oracle.controller.decision_sizes == (2, 3, 3)
    values = _drive(oracle, lambda v: float(v["n"]), 4)
    assert len(values) == 4 and all(set(v) == ({"kind", "x", "n"} if v["kind"] == "b" else
                                                {"kind", "n"}) for v in values)
    assert int(oracle.reinforce.step) == oracle.num_controller_updates >= 4


def test_an_inactive_decision_is_not_sampled_into_values_nor_learned_from(tmp_path, seed):
    oracle = _hp_oracle(tmp_path, _declare_conditional, max_trials=8, learning_rate=0.1,
                        repeats="rerun", controller_seed=0)
    x_head = oracle.controller.heads[1]
    seen = {"a_before_b": 0, "b": 0}

    def check(trial):
        before = _weights(x_head)
        kind = trial.hyperparameters.values["kind"]
        _, mask = oracle._trial_path(trial)
        np.testing.assert_array_equal(mask, [1, 1 if kind == "b" else 0, 1])
        yield_changed = lambda: any(not np.array_equal(b, a) for b, a in
                                    zip(before, _weights(x_head)))
        seen["pending"] = (kind, yield_changed)

    def score(values):
        return float(values["kind"] == "b") + 0.1 * values["n"]

    for _ in range(8):
        _drive(oracle, score, 1, before_end=check)
        kind, changed = seen.pop("pending")
        if kind == "a" and seen["b"] == 0:
            assert not changed()  # the x head never got a gradient: Adam left it exactly
            seen["a_before_b"] += 1
        elif kind == "b":
            seen["b"] += 1
            assert changed()
    assert seen["a_before_b"] >= 1 and seen["b"] >= 1


def test_controller_learns_the_best_value_on_a_synthetic_score(tmp_path, seed):
    def declare(hp):
        hp.Choice("units", [16, 32, 64, 128])
        hp.Boolean("bn")
        hp.Float("drop", 0.0, 0.5, step=0.25)

    oracle = _hp_oracle(tmp_path, declare, max_trials=24, learning_rate=0.1, repeats="rerun",
                        baseline_decay=0.8)
    p_before = oracle.controller.decision_probabilities((0, 0, 0))[0][2]
    _drive(oracle, lambda v: float(v["units"] == 64) + 0.2 * float(v["bn"]), 24)
    p_after = oracle.controller.decision_probabilities((0, 0, 0))[0][2]
    assert p_before == pytest.approx(0.25, abs=0.05)
    assert p_after > p_before + 0.2, (p_before, p_after)


def test_a_new_hyperparameter_grows_the_controller_keeping_learned_weights(tmp_path, seed):
    oracle = _hp_oracle(tmp_path, _declare_conditional, max_trials=10, learning_rate=0.1)
    _drive(oracle, lambda v: float(v["n"]), 3)
    pending = oracle.create_trial("tuner0")  # proposed before the growth
    old = oracle.controller
    layers = [old.cell, *old.heads, *old.embeddings]
    before = [_weights(layer) for layer in layers]
    step = int(oracle.reinforce.step)
    hp = oracle.get_space()
    hp.Boolean("extra")
    oracle.update_space(hp)
    grown = oracle.controller
    assert grown is not old and grown.decision_sizes == (2, 3, 3, 2)
    assert [d.name for d in oracle.decisions] == ["kind", "x", "n", "extra"]
    for layer, weights in zip([grown.cell, *grown.heads[:3], *grown.embeddings[:2]], before):
        for a, b in zip(weights, _weights(layer)):
            np.testing.assert_array_equal(a, b)
    assert int(oracle.reinforce.step) == step >= 3  # REINFORCE state carried over
    new_head = _weights(grown.heads[3])
    oracle.update_trial(pending.trial_id, {"score": 1.0})
    pending.status = "COMPLETED"
    assert "extra" not in pending.hyperparameters.values
    oracle.end_trial(pending)  # learned with m = 0 for "extra", which it never sampled
    for a, b in zip(new_head, _weights(grown.heads[3])):
        np.testing.assert_array_equal(a, b)
    values = _drive(oracle, lambda v: float(v["n"]), 3)
    assert all("extra" in v for v in values)


def test_resume_rebuilds_a_grown_controller_before_reading_its_checkpoint(tmp_path, seed):
    oracle = _hp_oracle(tmp_path, _declare_conditional, max_trials=10, learning_rate=0.1)
    _drive(oracle, lambda v: float(v["n"]), 2)
    hp = oracle.get_space()
    hp.Choice("extra", ["p", "q", "r"])
    oracle.update_space(hp)
    _drive(oracle, lambda v: float(v["n"]), 3)
    oracle.save()
    state = json.loads((tmp_path / "proj" / "oracle.json").read_text())
    assert [d["name"] for d in state["decisions"]] == ["kind", "x", "n", "extra"]
    assert state["space"] is None and len(state["sampled_paths"]) == 5

    resumed = _hp_oracle(tmp_path, max_trials=10, learning_rate=0.1, controller_seed=7)
    resumed.reload()
    assert resumed.decisions == oracle.decisions
    assert resumed.controller.decision_sizes == (2, 3, 3, 3)
    for a, b in zip(oracle.controller.variables, resumed.controller.variables):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    assert int(resumed.reinforce.step) == int(oracle.reinforce.step)
    assert resumed.controller.sample_architecture() == oracle.controller.sample_architecture()
    assert len(_drive(resumed, lambda v: float(v["n"]), 2)) == 2

    other = _hp_oracle(tmp_path, max_trials=10, max_int_values=2)
    with pytest.raises(ValueError, match="max_int_values=2"):
        other.reload()  # "n" (1..3) no longer fits: refused when the space is rebuilt


def test_without_space_bad_input_names_the_fix(tmp_path):
    with pytest.raises(TypeError, match=r"pass the objective by keyword \(objective=...\)"):
        ENASOracle("val_accuracy", 4)
    oracle = _hp_oracle(tmp_path)
    hp = keras_tuner.HyperParameters()
    hp.Float("lr", 1e-4, 1e-2, sampling="log")
    with pytest.raises(ValueError, match="'lr' has no step.*float_bins"):
        oracle.update_space(hp)
    binned = _hp_oracle(tmp_path, float_bins={"lr": 3})
    binned.update_space(hp)
    np.testing.assert_allclose(binned.decisions[0].values, [1e-4, 1e-3, 1e-2], rtol=1e-9)


def _build_hypermodel(hp):
    model = keras.Sequential([keras.Input((5,))])
    kind = hp.Choice("kind", ["plain", "hidden"])
    with hp.conditional_scope("kind", ["hidden"]):
        if kind == "hidden":
            model.add(keras.layers.Dense(hp.Int("units", 4, 8, step=4), activation="relu"))
    if hp.Boolean("dropout"):
        model.add(keras.layers.Dropout(hp.Float("rate", 0.0, 0.5, step=0.25)))
    model.add(keras.layers.Dense(2))
    model.compile(keras.optimizers.Adam(hp.Choice("lr", [1e-3, 1e-2])),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"], run_eagerly=True)  # one tiny batch: no tracing
    return model


@pytest.mark.slow
def test_plain_keras_tuner_search_and_resume_without_space(tmp_path, seed):
    x = np.random.default_rng(0).normal(size=(32, 5)).astype("float32")
    y = (x[:, 0] > 0).astype("int32")

    def tuner_for(oracle, overwrite):
        return keras_tuner.Tuner(oracle=oracle, hypermodel=_build_hypermodel,
                                 directory=str(tmp_path), project_name="hm",
                                 overwrite=overwrite)

    oracle = ENASOracle(objective=keras_tuner.Objective("val_accuracy", "max"), max_trials=4,
                        seed=0, controller_seed=0, units=8, learning_rate=0.05)
    tuner = tuner_for(oracle, True)
    names = [d.name for d in oracle.decisions]
    assert names[:3] == ["kind", "dropout", "lr"] and "units" in names  # every scope activated
    tuner.search(x, y, validation_data=(x, y), epochs=1, verbose=0)
    assert [t.status for t in oracle.trials.values()] == ["COMPLETED"] * 4
    for trial in oracle.trials.values():
        values = trial.hyperparameters.values
        assert ("units" in values) == (values["kind"] == "hidden")
    assert oracle.num_controller_updates >= 4
    best = tuner.get_best_hyperparameters()[0]
    assert best.values == oracle.get_best_trials(1)[0].hyperparameters.values

    resumed = ENASOracle(objective=keras_tuner.Objective("val_accuracy", "max"), max_trials=6,
                         seed=0, controller_seed=3, units=8, learning_rate=0.05)
    resumed_tuner = tuner_for(resumed, False)
    assert resumed.decisions == oracle.decisions
    for a, b in zip(oracle.controller.variables, resumed.controller.variables):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    step = int(resumed.reinforce.step)
    resumed_tuner.search(x, y, validation_data=(x, y), epochs=1, verbose=0)
    assert len(resumed.trials) == 6 and int(resumed.reinforce.step) >= step + 2
