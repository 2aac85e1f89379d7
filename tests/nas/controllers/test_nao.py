"""NAO controller: tokens, loss, joint training, gradient ascent, decoding, checkpoints."""

import json

import numpy as np
import pytest
import tensorflow as tf

from wpl_keras.nas.controllers import nao
from wpl_keras.nas.base import InvalidArchitectureError, InvalidSpaceError
from wpl_keras.nas.controllers.nao import NAOConfig, NAOController
from wpl_keras.nas.spaces.rnn.space import RNNCellSpace
from wpl_keras.utils.checkpoint import checkpoint_for

SIZES = RNNCellSpace(num_nodes=4).decision_sizes  # (4, 1, 4, 2, 4, 3, 4)
SMALL = NAOConfig(token_embedding=16, units=32, predictor_units=32, epochs=100, batch_size=8)


def _archs(n, seed=0):
    rng = np.random.default_rng(seed)
    out = []
    while len(out) < n:
        a = tuple(int(rng.integers(0, s)) for s in SIZES)
        if a not in out:
            out.append(a)
    return out


def _toy_score(archs):
    """A known ranking: the more 'relu' (1) activations, the better."""
    acts = np.asarray(archs)[:, ::2]
    return (acts == 1).sum(axis=1) / acts.shape[1]


@pytest.fixture(scope="module")
def trained():
    import keras

    keras.utils.set_random_seed(7)
    archs = _archs(10)
    scores = _toy_score(archs)
    model = NAOController(SIZES, SMALL, seed=3)
    before = model.evaluate_losses(archs, scores)
    last = model.fit(archs, scores)
    return model, archs, scores, before, last


def test_tokens_offsets_and_mask():
    sizes = (3, 1, 2)
    np.testing.assert_array_equal(nao.token_offsets(sizes), [0, 3, 4])
    tokens = nao.archs_to_tokens([(2, 0, 1), (0, 0, 0)], sizes)
    np.testing.assert_array_equal(tokens, [[2, 3, 5], [0, 3, 4]])
    assert nao.tokens_to_archs(tokens, sizes) == [(2, 0, 1), (0, 0, 0)]
    mask = nao.position_mask(sizes)
    assert mask.shape == (3, 6)
    np.testing.assert_array_equal(mask[1] == 0, [False, False, False, True, False, False])
    np.testing.assert_array_equal(mask[2] == 0, [False, False, False, False, True, True])
    with pytest.raises(ValueError, match="decision 1 is 1"):
        nao.archs_to_tokens([(0, 1, 0)], sizes)
    with pytest.raises(ValueError, match="3 decisions"):
        nao.archs_to_tokens([(0, 0)], sizes)
    with pytest.raises(ValueError, match=r"decision_sizes\[1\] must be an integer >= 1, got 0"):
        nao.token_offsets((2, 0))


def test_normalize_scores():
    np.testing.assert_allclose(nao.normalize_scores([100.0, 200.0, 150.0]), [1.0, 0.0, 0.5])
    np.testing.assert_allclose(
        nao.normalize_scores([1.0, 3.0], lower_is_better=False), [0.0, 1.0]
    )
    np.testing.assert_allclose(nao.normalize_scores([5.0, 5.0]), [0.5, 0.5])
    with pytest.raises(ValueError, match="NaN"):
        nao.normalize_scores([1.0, np.nan])
    with pytest.raises(ValueError, match="at least one"):
        nao.normalize_scores([])


def test_nao_loss_matches_hand_computation():
    pred = tf.constant([0.2, 0.9])
    target = tf.constant([0.0, 1.0])
    logits = tf.constant([[[0.0, 0.0]], [[np.log(3.0), 0.0]]], tf.float32)  # [2, 1, 2]
    tokens = tf.constant([[1], [0]])
    loss, mse, ce = nao.nao_loss(pred, target, logits, tokens, trade_off=0.8)
    want_mse = (0.2**2 + 0.1**2) / 2
    want_ce = (np.log(2.0) + np.log(4.0 / 3.0)) / 2
    np.testing.assert_allclose(float(mse), want_mse, rtol=1e-5)
    np.testing.assert_allclose(float(ce), want_ce, rtol=1e-5)
    np.testing.assert_allclose(float(loss), 0.8 * want_mse + 0.2 * want_ce, rtol=1e-5)


def test_config_validation_and_json():
    with pytest.raises(ValueError, match="trade_off"):
        NAOConfig(trade_off=1.5)
    with pytest.raises(ValueError, match="units"):
        NAOConfig(units=0)
    assert NAOConfig.from_json(SMALL.to_json()) == SMALL
    with pytest.raises(ValueError, match="unknown"):
        NAOConfig.from_json({"bogus": 1})


def test_training_reconstructs_seen_architectures(trained):
    model, archs, scores, before, last = trained
    assert last["ce"] < 0.25 * before["ce"]
    assert model.reconstruct(archs) == archs
    assert model.tracing_counts == {"encode": 1, "train": 1, "decode": 1}


def test_predictor_learns_toy_ranking(trained):
    model, archs, scores, before, last = trained
    assert last["mse"] < 0.2 * before["mse"]
    pred = model.predict_score(archs)
    # Every clearly better architecture is predicted better (a rank check, not a value check).
    order_pairs = [(i, j) for i in range(len(archs)) for j in range(len(archs))
                   if scores[i] > scores[j] + 0.2]
    assert order_pairs
    assert all(pred[i] > pred[j] for i, j in order_pairs)


def test_gradient_step_raises_predicted_score(trained):
    model, archs, _, _, _ = trained
    moved, before, after = model.gradient_step(archs, step_size=0.05)
    assert moved.shape == (len(archs), SMALL.units)
    assert np.all(after > before)


def test_decoded_architectures_are_valid_and_new(trained):
    model, archs, _, _, _ = trained
    space = RNNCellSpace(num_nodes=4)
    # Arbitrary embeddings, even far from any training point, decode to valid architectures.
    z = tf.random.stateless_normal([16, SMALL.units], seed=[1, 2]) * 5.0
    for arch in model.decode(z):
        assert space.validate(arch) == arch
    new = model.generate(archs, num_new=4, exclude=archs)
    assert 1 <= len(new) <= 4
    assert len(set(new)) == len(new)
    assert not set(new) & set(archs)
    for arch in new:
        space.validate(arch)
    with pytest.raises(ValueError, match="num_new"):
        model.generate(archs, num_new=-1)


def test_fit_input_errors():
    model = NAOController((2, 2), NAOConfig(units=4, token_embedding=4), seed=0)
    with pytest.raises(ValueError, match="scores"):
        model.fit([(0, 1)], [0.5, 0.1])
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        model.fit([(0, 1)], [3.0])
    with pytest.raises(ValueError, match="decision 1 is 2"):
        model.fit([(0, 2)], [0.5])


def test_checkpoint_restores_weights_optimizer_and_shuffling(tmp_path):
    cfg = NAOConfig(units=8, token_embedding=4, predictor_units=8, epochs=3, batch_size=2)
    sizes = (4, 1, 4)
    archs = [(0, 0, 1), (1, 0, 2), (3, 0, 3)]
    scores = [0.0, 0.5, 1.0]
    a = NAOController(sizes, cfg, seed=5)
    a.fit(archs, scores)
    path = checkpoint_for(**a.checkpoint_items()).save(str(tmp_path / "nao"))
    a.fit(archs, scores)
    b = NAOController(sizes, cfg, seed=99)  # different init: everything must come from the file
    checkpoint_for(**b.checkpoint_items()).restore(path).assert_existing_objects_matched()
    b.fit(archs, scores)
    np.testing.assert_allclose(b.predict_score(archs), a.predict_score(archs), rtol=1e-6)
    for va, vb in zip(a.variables, b.variables):
        np.testing.assert_allclose(va.numpy(), vb.numpy(), rtol=1e-6, atol=1e-7)


def test_get_config_round_trip():
    model = NAOController((2, 3), NAOConfig(units=4, token_embedding=4), seed=2)
    clone = NAOController.from_config(model.get_config())
    assert clone.decision_sizes == (2, 3)
    assert clone.nao_config == model.nao_config
    np.testing.assert_allclose(clone.predict_score([(1, 2)]), model.predict_score([(1, 2)]))


# --------------------------------------------------------------------------- KerasTuner oracle
@pytest.mark.slow
def test_nao_oracle_proposes_seeds_then_generated_and_resumes(tmp_path):
    import keras_tuner

    from wpl_keras.tuner.controller_oracle import hyperparameters_to_architecture
    from wpl_keras.tuner.nao import NAOOracle

    space = RNNCellSpace(num_nodes=3)  # (4, 1, 4, 2, 4): 128 architectures
    target = (1, 0, 1, 1, 1)
    cfg = NAOConfig(token_embedding=8, units=16, predictor_units=16, epochs=20, batch_size=8)

    def make():
        oracle = NAOOracle(space, keras_tuner.Objective("score", "max"), max_trials=9,
                           nao_config=cfg, seed_archs=5, new_archs=2, top_k_seeds=2, seed=4)
        oracle._set_project_dir(str(tmp_path), "proj")
        return oracle

    oracle = make()
    archs = []
    for _ in range(9):
        trial = oracle.create_trial("t0")
        assert trial.status == "RUNNING"
        arch = hyperparameters_to_architecture(space, trial.hyperparameters)
        score = float(np.mean([a == b for a, b in zip(arch, target)]))
        oracle.update_trial(trial.trial_id, {"score": score})
        trial.status = "COMPLETED"
        oracle.end_trial(trial)
        archs.append(arch)
    assert len(set(archs)) == 9  # seeds, then generated ones, never a repeat
    assert oracle.adapter.rounds >= 2 and len(oracle.adapter.scored) == 9
    oracle.save()
    state = json.loads((tmp_path / "proj" / "oracle.json").read_text())
    assert state["controller"]["nao_scored"] == 9
    resumed = make()
    resumed.reload()
    assert resumed.adapter.scored == oracle.adapter.scored
    assert resumed.adapter.queue == oracle.adapter.queue
    for a, b in zip(oracle.controller.variables, resumed.controller.variables):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    assert resumed.adapter.propose() == oracle.adapter.propose()


@pytest.mark.parametrize("archs, message", [
    ([(1.7, 0, 0)], r"architecture 0: decision 0 must be an integer, got 1.7"),
    ([(0, 0, 0), (2, 0, True)], r"architecture 1: decision 2 must be an integer, got True"),
    (np.array([[0.0, 0.0, 1.0]]), "architecture 0: decision 0 must be an integer"),
    ([(0, 0, float("inf"))], "decision 2 must be an integer, got inf"),
    ([(0, 0, "1")], "decision 2 must be an integer, got '1'"),
    ([(0, 0, -1)], r"decision 2 is -1, must be in \[0, 2\)"),
    ([(3, 0, 0)], r"decision 0 is 3, must be in \[0, 3\)"),
    ([(0, 0, 0, 0)], "expected 3 decisions, got 4"),
    ("002", "sequence of architectures"),
    (None, "sequence of architectures"),
])
def test_archs_to_tokens_is_strict(archs, message):
    with pytest.raises(InvalidArchitectureError, match=message):
        nao.archs_to_tokens(archs, (3, 1, 2))


def test_archs_to_tokens_accepts_integer_arrays_tensors_and_one_flat_architecture():
    sizes = (3, 1, 2)
    want = [[2, 3, 5], [0, 3, 4]]
    for archs in ([(2, 0, 1), (0, 0, 0)], np.array([[2, 0, 1], [0, 0, 0]], np.int16),
                  tf.constant([[2, 0, 1], [0, 0, 0]]), [np.array([2, 0, 1]), [0, 0, 0]]):
        np.testing.assert_array_equal(nao.archs_to_tokens(archs, sizes), want)
    np.testing.assert_array_equal(nao.archs_to_tokens((2, 0, 1), sizes), [want[0]])
    np.testing.assert_array_equal(nao.archs_to_tokens(np.array([2, 0, 1]), sizes), [want[0]])
    assert nao.archs_to_tokens([], sizes).shape == (0, 3)


def test_tokens_to_archs_rejects_tokens_outside_their_position():
    sizes = (3, 1, 2)
    with pytest.raises(InvalidArchitectureError, match=r"tokens row 0: decision 1 is 1"):
        nao.tokens_to_archs([[2, 4, 5]], sizes)  # token 4 belongs to position 2
    with pytest.raises(InvalidArchitectureError, match=r"decision 0 is -1"):
        nao.tokens_to_archs([[-1, 3, 4]], sizes)
    with pytest.raises(InvalidArchitectureError, match=r"integer array \[N, 3\]"):
        nao.tokens_to_archs([[2.0, 3.0, 4.0]], sizes)
    with pytest.raises(InvalidArchitectureError, match=r"integer array \[N, 3\]"):
        nao.tokens_to_archs([2, 3, 4], sizes)


@pytest.mark.parametrize("sizes, message", [
    ((3, 1.5), r"decision_sizes\[1\] must be an integer, got 1.5"),
    ((3, True), r"decision_sizes\[1\] must be an integer, got True"),
    ((3, "2"), r"decision_sizes\[1\] must be an integer, got '2'"),
    ((3, 0), r"decision_sizes\[1\] must be an integer >= 1, got 0"),
    ((), "at least one decision"),
])
def test_controller_and_mask_reject_malformed_decision_sizes(sizes, message):
    with pytest.raises(InvalidSpaceError, match=message):
        nao.position_mask(sizes)
    with pytest.raises(InvalidSpaceError, match=message):
        NAOController(sizes, NAOConfig(units=4, token_embedding=2))


@pytest.mark.parametrize("field, value, error", [
    ("units", 1.5, TypeError), ("units", True, TypeError), ("epochs", "3", TypeError),
    ("batch_size", 0, ValueError), ("max_rounds", 2.0, TypeError),
    ("predictor_layers", -1, ValueError), ("predictor_layers", 0.5, TypeError),
    ("learning_rate", float("nan"), ValueError), ("learning_rate", np.float32(-1), ValueError),
    ("step_size", float("inf"), ValueError), ("trade_off", "0.8", TypeError),
    ("trade_off", 1.5, ValueError), ("grad_clip", None, TypeError),
])
def test_nao_config_rejects_malformed_sizes(field, value, error):
    with pytest.raises(error, match=f"NAOConfig.{field} must be"):
        NAOConfig(**{field: value})


def test_nao_config_takes_numpy_scalars_as_python_numbers():
    config = NAOConfig(units=np.int64(8), learning_rate=np.float32(0.5))
    assert (config.units, config.learning_rate) == (8, 0.5)
    assert type(config.units) is int and type(config.learning_rate) is float


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(num_new=-1), ValueError, "num_new"), (dict(num_new=1.0), TypeError, "num_new"),
    (dict(num_new=1, step_size=0.0), ValueError, "step_size"),
    (dict(num_new=1, max_rounds="3"), TypeError, "max_rounds"),
])
def test_generate_refuses_bad_numbers(kwargs, error, match):
    controller = NAOController((3, 2), NAOConfig(units=4, token_embedding=2))
    with pytest.raises(error, match=f"NAOController.generate: {match} must be"):
        controller.generate([(0, 1)], **kwargs)
