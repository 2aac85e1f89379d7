"""Tests for NAOOracle on a hypermodel's own hyperparameters (no space)."""

import json

import keras_tuner
import numpy as np
import pytest

from wpl_keras.nas.controllers.nao import NAOConfig
from wpl_keras.tuner.hyperparameter_decisions import DecisionSpace
from wpl_keras.tuner.nao import NAOOracle
from tests.tuner.oracle_setup import ready_oracle

CONFIG = NAOConfig(token_embedding=4, units=8, predictor_units=8, epochs=5, batch_size=4)


def _declare(hp):
    hp.Choice("act", ["relu", "tanh", "gelu"])
    hp.Int("layers", 1, 3)
    hp.Boolean("bn")


def _oracle(tmp_path, declare=_declare, **kwargs):
    oracle = NAOOracle(objective=keras_tuner.Objective("score", "max"), max_trials=8,
                       nao_config=CONFIG, seed_archs=3, new_archs=2, top_k_seeds=2, seed=1,
                       **kwargs)
    return ready_oracle(oracle, tmp_path, declare)


def _drive(oracle, n):
    done = []
    for _ in range(n):
        trial = oracle.create_trial("t0")
        assert trial.status == "RUNNING"
        values = dict(trial.hyperparameters.values)
        score = float(values["act"] == "tanh") + 0.1 * values["layers"]
        oracle.update_trial(trial.trial_id, {"score": score})
        trial.status = "COMPLETED"
        oracle.end_trial(trial)
        done.append(values)
    return done


def test_nao_without_space_proposes_the_declared_hyperparameters_and_resumes(tmp_path, seed):
    oracle = _oracle(tmp_path)
    assert isinstance(oracle.adapter.space, DecisionSpace)
    assert oracle.adapter.space.decision_sizes == (3, 3, 2)
    values = _drive(oracle, 6)
    assert all(set(v) == {"act", "layers", "bn"} for v in values)
    assert len({tuple(sorted(v.items())) for v in values}) == 6  # "cache": no repeats
    assert oracle.adapter.rounds >= 1 and len(oracle.adapter.scored) == 6
    oracle.save()
    state = json.loads((tmp_path / "proj" / "oracle.json").read_text())
    assert [d["name"] for d in state["decisions"]] == ["act", "layers", "bn"]
    resumed = _oracle(tmp_path, declare=None)
    resumed.reload()
    assert resumed.adapter.scored == oracle.adapter.scored
    assert resumed.adapter.queue == oracle.adapter.queue
    for a, b in zip(oracle.controller.variables, resumed.controller.variables):
        np.testing.assert_array_equal(a.numpy(), b.numpy())


def test_nao_refuses_conditionals_and_late_hyperparameters_saying_why(tmp_path, seed):
    def conditional(hp):
        hp.Choice("kind", ["a", "b"])
        with hp.conditional_scope("kind", ["b"]):
            hp.Int("width", 1, 2)

    with pytest.raises(ValueError, match=r"conditional hyperparameters \['width'\].*"
                                         r"ENASOracle"):
        _oracle(tmp_path, conditional)
    oracle = _oracle(tmp_path)
    hp = oracle.get_space()
    hp.Fixed("extra_before_start", 1)
    oracle.update_space(hp)  # before the first proposal: the controller is rebuilt
    assert oracle.adapter.space.decision_sizes == (3, 3, 2, 1)
    _drive(oracle, 1)
    hp = oracle.get_space()
    hp.Boolean("late")
    with pytest.raises(ValueError, match=r"cannot add hyperparameters \['late'\] after the "
                                         r"search started"):
        oracle.update_space(hp)


def test_decision_space_strings_round_trip(tmp_path):
    oracle = _oracle(tmp_path)
    space = oracle.adapter.space
    text = space.to_string((2, 0, 1))
    assert text == "act='gelu' layers=1 bn=True"
    assert space.from_string(text) == (2, 0, 1)
    with pytest.raises(Exception, match="not a value of 'act'"):
        space.from_string("act='elu' layers=1 bn=True")
