"""Tests for REINFORCE with an EMA baseline: entropy modes, baseline start and reset."""

import dataclasses
import json

import keras
import numpy as np
import pytest
import tensorflow as tf

from wpl_keras.nas.controllers.enas import Controller
from wpl_keras.nas.controllers.reinforce import (
    Reinforce,
    decision_loss,
    ema_baseline,
    entropy_reward_advantages,
    reinforce_loss,
)


def test_formulas_on_tiny_values():
    assert float(ema_baseline(tf.constant(1.0), tf.constant(3.0), 0.75)) == pytest.approx(1.5)
    loss = reinforce_loss(tf.constant(-2.0), tf.constant(0.5), tf.constant(4.0), 0.1)
    assert float(loss) == pytest.approx(-(-2.0 * 4.0 + 0.1 * 0.5))


def test_update_reports_ema_baseline_and_advantage(seed):
    controller = Controller([3, 2], units=4, seed=0)
    trainer = Reinforce(controller, learning_rate=1e-3, baseline_decay=0.5)
    out = trainer.update((1, 0), 2.0)
    assert out["baseline"] == pytest.approx(1.0)  # 0.5 * 0 + 0.5 * 2
    assert out["advantage"] == pytest.approx(1.0)
    out = trainer.update((0, 1), 4.0)
    assert out["baseline"] == pytest.approx(2.5)
    assert out["advantage"] == pytest.approx(1.5)
    assert int(trainer.step) == 2
    with pytest.raises(ValueError, match="finite"):
        trainer.update((0, 1), float("nan"))


def test_reinforce_moves_probability_to_rewarded_choice(seed):
    """Toy reward: 1 per decision equal to the target; π(target) must grow, one trace."""
    sizes = (4, 3, 5)
    target = (2, 0, 3)
    controller = Controller(sizes, units=16, seed=1)
    trainer = Reinforce(controller, learning_rate=0.02, baseline_decay=0.8, entropy_weight=1e-4)
    before = float(controller.log_prob_and_entropy(target)[0])
    for _ in range(120):
        arch = controller.sample_architecture()
        trainer.update(arch, float(sum(a == t for a, t in zip(arch, target))))
    after = float(controller.log_prob_and_entropy(target)[0])
    assert after > before + 1.0, (before, after)
    probs = controller.decision_probabilities(target)
    assert int(np.argmax(probs[0])) == target[0]
    assert trainer.tracing_count == 1
    assert controller.tracing_counts["sample"] == 1


RELEASE = dict(entropy_mode="reward", baseline_init="first_reward", baseline_reset_each_epoch=True)


@pytest.mark.parametrize("options", [{}, RELEASE], ids=["default", "release"])
def test_checkpoint_restores_controller_optimizer_baseline(tmp_path, seed, options):
    """Everything the next update reads is restored: weights, sampler, Adam moments, the
    baselines, their "initialised" flag and the last started epoch (a restored trainer in
    the same epoch does not reset again; a fresh one would start from the reward)."""
    controller = Controller((3, 3), units=4, seed=2)
    trainer = Reinforce(controller, learning_rate=0.01, **options)
    trainer.start_epoch(0)
    for r in (1.0, 0.0, 2.0):
        trainer.update(controller.sample_architecture(), r)
    path = tf.train.Checkpoint(**trainer.checkpoint_items()).save(str(tmp_path / "ckpt"))
    assert trainer.start_epoch(0) is False
    trainer.update((0, 0), 5.0)
    after_a = [controller.sample_architecture() for _ in range(4)]
    after_lp = float(controller.log_prob_and_entropy((1, 2))[0])

    controller2 = Controller((3, 3), units=4, seed=77)
    trainer2 = Reinforce(controller2, learning_rate=0.01, **options)
    tf.train.Checkpoint(**trainer2.checkpoint_items()).restore(path).assert_consumed()
    assert int(trainer2.step) == 3 and int(trainer2.baseline_epoch) == 0
    assert bool(trainer2.baseline_initialized)
    saved_baseline = float(trainer2.baseline)
    assert float(trainer.baseline) == pytest.approx(0.95 * saved_baseline + 0.05 * 5.0)
    saved_entropy = trainer2.entropy_baseline.numpy()
    if options:
        assert np.all(saved_entropy > 0)  # the reward mode's entropy baselines moved
    assert trainer2.start_epoch(0) is False  # restored: epoch 0 already started
    trainer2.update((0, 0), 5.0)  # same update from the same state (incl. Adam moments)
    assert float(trainer2.baseline) == pytest.approx(float(trainer.baseline))
    np.testing.assert_allclose(trainer2.entropy_baseline.numpy(),
                               trainer.entropy_baseline.numpy(), rtol=1e-6)
    assert [controller2.sample_architecture() for _ in range(4)] == after_a
    assert float(controller2.log_prob_and_entropy((1, 2))[0]) == pytest.approx(after_lp, rel=1e-5)
    # A trainer that lost the flag would restart from the reward (first_reward) instead.
    if options:
        assert float(trainer.baseline) != pytest.approx(5.0)


def test_bad_arguments():
    controller = Controller((2,), units=4)
    with pytest.raises(ValueError, match="baseline_decay"):
        Reinforce(controller, baseline_decay=1.0)
    with pytest.raises(ValueError, match="entropy_weight"):
        Reinforce(controller, entropy_weight=-1.0)


@pytest.mark.parametrize("kwargs, error", [
    (dict(baseline_decay=np.float32(1.0)), ValueError), (dict(baseline_decay="0.9"), TypeError),
    (dict(entropy_weight=float("nan")), ValueError), (dict(entropy_weight=None), TypeError),
    (dict(learning_rate=0.0), ValueError), (dict(learning_rate=tf.constant(-1e-3)), ValueError),
    (dict(learning_rate="fast"), TypeError), (dict(learning_rate=float("inf")), ValueError),
])
def test_bad_numbers_name_the_argument(kwargs, error):
    controller = Controller((2,), units=4)
    (name,) = kwargs
    with pytest.raises(error, match=f"Reinforce {name} must be"):
        Reinforce(controller, **kwargs)
    trainer = Reinforce(controller, learning_rate=np.float32(1e-3),
                        baseline_decay=tf.constant(0.5))
    assert trainer.baseline_decay == 0.5
    for reward, bad in ((float("nan"), ValueError), ("1", TypeError), (None, TypeError)):
        with pytest.raises(bad, match="Reinforce.update: reward must be a finite number"):
            trainer.update((0,), reward)


# ---------------------------------------------------------------------------------------------
# Entropy modes, baseline start and reset, against a NumPy replay of the published updates.

SIZES = (3, 4, 2)
W = 0.5  # a large entropy weight, so that the entropy terms show in every number


def _tiny_controller(seed=3):
    """Weights ×10, temperature 0.5 and tanh 2.5: decision distributions far from uniform,
    whose entropies depend on the earlier decisions."""
    controller = Controller(SIZES, units=8, temperature=0.5, tanh_constant=2.5, seed=seed)
    for v in controller.trainable_variables:
        v.assign(10.0 * v)
    return controller


class _Replay:
    """The published updates in NumPy, in their own form (no decomposition of the baseline):
    ``"bonus"`` a scalar EMA of ``R``; ``"reward"`` (ENAS-PyTorch / WPL release) a per-decision
    EMA of ``R'_k = R + w H_k``; ``"reward_sum"`` (ENAS TF) a scalar EMA of ``R + w Σ H_k``.
    ``b`` is the EMA of the raw reward that ``update`` reports as ``baseline``."""

    def __init__(self, mode, init, decay):
        self.mode, self.init, self.decay = mode, init, decay
        self.shaped = None  # the baseline of the (shaped) reward, in the published form
        self.b = None

    def _ema(self, old, new):
        if old is None:
            if self.init == "first_reward":
                return new
            old = np.zeros_like(new)
        return self.decay * old + (1 - self.decay) * new

    def reset(self):
        self.shaped, self.b = None, None

    def step(self, probs, arch, reward):
        probs = [np.asarray(p, np.float64) for p in probs]
        log_probs = np.array([np.log(p[a]) for p, a in zip(probs, arch)])
        entropies = np.array([-(p * np.log(p)).sum() for p in probs])
        self.b = self._ema(self.b, np.float64(reward))
        if self.mode == "bonus":
            adv = np.full(len(arch), reward - self.b)
            loss = -(log_probs.sum() * adv[0] + W * entropies.sum())
        elif self.mode == "reward":
            shaped = reward + W * entropies
            self.shaped = self._ema(self.shaped, shaped)
            adv = shaped - self.shaped
            loss = -(log_probs * adv).sum()
        else:
            shaped = np.float64(reward + W * entropies.sum())
            self.shaped = self._ema(self.shaped, shaped)
            adv = np.full(len(arch), shaped - self.shaped)
            loss = -log_probs.sum() * adv[0]
        return {"baseline": self.b, "advantage": adv.mean(), "loss": loss,
                "log_prob": log_probs.sum(), "entropy": entropies.sum()}, adv


def _expected_gradient(controller, arch, adv, mode):
    """Gradient of the mode's loss with ``A`` constant, from the softmax probabilities."""
    variables = controller.trainable_variables
    with tf.GradientTape() as tape:
        probs = controller._probabilities(tf.constant(arch, tf.int32))
        log_probs = tf.stack([tf.math.log(p[a]) for p, a in zip(probs, arch)])
        loss = -tf.reduce_sum(log_probs * tf.constant(adv, tf.float32))
        if mode == "bonus":
            loss -= W * tf.add_n([-tf.reduce_sum(p * tf.math.log(p)) for p in probs])
    return [tf.convert_to_tensor(g) for g in tape.gradient(loss, variables)]


STEPS = [((1, 0, 1), 2.0), ((2, 3, 0), 4.0), ((0, 1, 1), 1.0), ((1, 2, 0), 3.5)]


@pytest.mark.parametrize("mode", ["bonus", "reward", "reward_sum"])
@pytest.mark.parametrize("init", ["zero", "first_reward"])
def test_each_mode_matches_hand_computed_advantage_loss_and_gradient(seed, mode, init):
    """Baselines, advantage, loss and the applied gradient (SGD with rate 1: ``Δθ = −∇loss``)
    equal a NumPy replay of the published update, step by step, for every mode and start."""
    controller = _tiny_controller()
    trainer = Reinforce(controller, baseline_decay=0.75, entropy_weight=W, entropy_mode=mode,
                        baseline_init=init, optimizer=keras.optimizers.SGD(learning_rate=1.0))
    replay = _Replay(mode, init, 0.75)
    for i, (arch, reward) in enumerate(STEPS):
        probs = controller.decision_probabilities(arch)
        want, adv = replay.step(probs, arch, reward)
        if mode == "reward" and not (i == 0 and init == "first_reward"):
            assert np.ptp(adv) > 1e-3  # per-decision advantages differ: a real per-step check
        if i == 0 and init == "first_reward":
            np.testing.assert_allclose(adv, 0.0, atol=1e-7)  # the baseline starts at R
        grads = _expected_gradient(controller, arch, adv, mode)
        before = [v.numpy() for v in controller.trainable_variables]
        got = trainer.update(arch, reward)
        for key, value in want.items():
            assert got[key] == pytest.approx(value, rel=1e-5, abs=1e-6), (i, key)
        for old, v, g in zip(before, controller.trainable_variables, grads):
            np.testing.assert_allclose(v.numpy(), old - g.numpy(), rtol=1e-4, atol=1e-6)
    assert trainer.tracing_count == 1


def test_modes_differ_on_the_same_step(seed):
    """The three modes give three different updates of the same controller state."""
    moved = {}
    for mode in ("bonus", "reward", "reward_sum"):
        controller = _tiny_controller()
        trainer = Reinforce(controller, baseline_decay=0.75, entropy_weight=W, entropy_mode=mode,
                            optimizer=keras.optimizers.SGD(learning_rate=1.0))
        trainer.update((1, 0, 1), 2.0)
        moved[mode] = np.concatenate([v.numpy().ravel() for v in controller.trainable_variables])
    assert not np.allclose(moved["bonus"], moved["reward"])
    assert not np.allclose(moved["reward"], moved["reward_sum"])
    assert not np.allclose(moved["bonus"], moved["reward_sum"])


def test_pure_formulas_on_tiny_values():
    adv = entropy_reward_advantages(tf.constant(3.0), tf.constant(1.0), tf.constant([1.0, 0.5]),
                                    tf.constant([0.25, 1.0]), 0.1, summed=False)
    np.testing.assert_allclose(adv.numpy(), [2.0 + 0.1 * 0.75, 2.0 - 0.1 * 0.5])
    adv = entropy_reward_advantages(tf.constant(3.0), tf.constant(1.0), tf.constant([1.0, 0.5]),
                                    tf.constant([0.25, 1.0]), 0.1, summed=True)
    np.testing.assert_allclose(adv.numpy(), [2.0 + 0.1 * 0.25] * 2)
    loss = decision_loss(tf.constant([-1.0, -2.0]), tf.constant([3.0, -1.0]))
    assert float(loss) == pytest.approx(-(-3.0 + 2.0))


@pytest.mark.parametrize("mode", ["bonus", "reward"])
def test_start_epoch_resets_once_per_epoch_only_when_set(seed, mode):
    arch = (1, 0, 1)
    for reset in (False, True):
        controller = _tiny_controller()
        trainer = Reinforce(controller, baseline_decay=0.5, entropy_weight=W, entropy_mode=mode,
                            baseline_init="first_reward", baseline_reset_each_epoch=reset)
        assert trainer.start_epoch(0) is reset
        assert trainer.update(arch, 2.0)["baseline"] == pytest.approx(2.0)  # first reward
        assert trainer.update(arch, 4.0)["baseline"] == pytest.approx(3.0)
        assert trainer.start_epoch(0) is False  # same epoch: nothing changes
        assert float(trainer.baseline) == pytest.approx(3.0)
        assert trainer.start_epoch(1) is reset
        out = trainer.update(arch, 10.0)
        if reset:  # the baseline starts again from the epoch's first reward: A = 0
            assert out["baseline"] == pytest.approx(10.0)
            assert out["advantage"] == pytest.approx(0.0, abs=1e-6)
        else:
            assert out["baseline"] == pytest.approx(0.5 * 3.0 + 0.5 * 10.0)
        assert int(trainer.baseline_epoch) == 1
    # Under "zero" the reset puts the baseline back to 0.
    trainer = Reinforce(_tiny_controller(), baseline_decay=0.5, baseline_reset_each_epoch=True)
    trainer.start_epoch(0)
    trainer.update(arch, 4.0)
    trainer.start_epoch(1)
    assert trainer.update(arch, 4.0)["baseline"] == pytest.approx(2.0)


def test_controller_config_carries_the_options(tmp_path):
    """ControllerConfig: defaults keep the entropy bonus; the RNN paper preset is the
    release's form; JSON round trip; old JSON reads the defaults; bad values name the field;
    build_search hands the options to Reinforce."""
    from wpl_keras.experiments import enas

    default = enas.ControllerConfig()
    assert (default.entropy_mode, default.baseline_init, default.baseline_reset_each_epoch) == (
        "bonus", "zero", False)
    paper = enas.get_preset("rnn", "paper")
    assert (paper.controller.entropy_mode, paper.controller.baseline_init,
            paper.controller.baseline_reset_each_epoch) == ("reward", "first_reward", True)
    again = enas.ENASExperimentConfig.from_json(json.dumps(paper.to_json()))
    assert again.controller == paper.controller
    old = paper.to_json()
    for key in ("entropy_mode", "baseline_init", "baseline_reset_each_epoch"):
        del old["controller"][key]
    assert enas.ENASExperimentConfig.from_json(old).controller == default
    for kwargs, field in (({"entropy_mode": "regularizer"}, "entropy_mode"),
                          ({"baseline_init": "mean"}, "baseline_init"),
                          ({"baseline_reset_each_epoch": "yes"}, "baseline_reset_each_epoch")):
        with pytest.raises(ValueError, match=f"ControllerConfig.{field}"):
            enas.ControllerConfig(**kwargs)

    corpus = tmp_path / "ptb"
    corpus.mkdir()
    words = [f"w{i}" for i in range(20)] + ["<unk>"]
    for split in ("train", "valid", "test"):
        (corpus / f"{split}.txt").write_text(" " + " ".join(words * 6) + " \n")
    tiny = enas.get_preset("rnn", "tiny")
    tiny = dataclasses.replace(tiny, controller=dataclasses.replace(
        tiny.controller, entropy_mode="reward_sum", baseline_init="first_reward",
        baseline_reset_each_epoch=True))
    data, tiny = enas.prepare(tiny, str(corpus))
    _, _, reinforce = enas.build_search(tiny, data)
    assert (reinforce.entropy_mode, reinforce.baseline_init,
            reinforce.baseline_reset_each_epoch) == ("reward_sum", "first_reward", True)
    assert reinforce.get_config()["entropy_mode"] == "reward_sum"


def test_bad_mode_arguments():
    controller = Controller((2,), units=4)
    with pytest.raises(ValueError, match="entropy_mode"):
        Reinforce(controller, entropy_mode="regularizer")
    with pytest.raises(ValueError, match="baseline_init"):
        Reinforce(controller, baseline_init="mean")
    with pytest.raises(ValueError, match="baseline_reset_each_epoch"):
        Reinforce(controller, baseline_reset_each_epoch=1)


@pytest.mark.parametrize("mode", ["bonus", "reward", "reward_sum"])
def test_masked_update_never_moves_an_inactive_head(seed, mode):
    """A decision with ``m_k = 0`` in every update gets no gradient: its head's weights are
    unchanged (Adam's moments stay 0), while the active heads move; one trace for all masks."""
    controller = _tiny_controller()
    trainer = Reinforce(controller, learning_rate=0.1, baseline_decay=0.5, entropy_weight=W,
                        entropy_mode=mode)
    inactive = [w.numpy().copy() for w in controller.heads[1].weights]
    active = [w.numpy().copy() for w in controller.heads[2].weights]
    for arch, reward in STEPS:
        out = trainer.update(arch, reward, mask=(1, 0, 1))
        assert np.isfinite(out["loss"])
    for before, w in zip(inactive, controller.heads[1].weights):
        np.testing.assert_array_equal(before, w.numpy())
    assert any(not np.allclose(b, w.numpy()) for b, w in zip(active, controller.heads[2].weights))
    assert trainer.masked_tracing_count == 1 and trainer.tracing_count == 0
    if mode != "bonus":  # the inactive decision's entropy baseline never moved
        assert float(trainer.entropy_baseline[1]) == 0.0
        assert float(trainer.entropy_baseline[0]) != 0.0


def test_masked_bonus_update_matches_hand_computed_gradient(seed):
    """SGD with rate 1: ``Δθ = ∇[Σ_k m_k ℓ_k · (R − b) + w Σ_k m_k H_k]``."""
    controller = _tiny_controller()
    trainer = Reinforce(controller, baseline_decay=0.75, entropy_weight=W,
                        optimizer=keras.optimizers.SGD(learning_rate=1.0))
    mask = np.array([1.0, 0.0, 1.0], np.float32)
    b = 0.0
    for arch, reward in STEPS:
        b = 0.75 * b + 0.25 * reward
        variables = controller.trainable_variables
        with tf.GradientTape() as tape:
            probs = controller._probabilities(tf.constant(arch, tf.int32))
            log_probs = tf.stack([tf.math.log(p[a]) for p, a in zip(probs, arch)])
            entropies = tf.stack([-tf.reduce_sum(p * tf.math.log(p)) for p in probs])
            objective = (tf.reduce_sum(mask * log_probs) * (reward - b)
                         + W * tf.reduce_sum(mask * entropies))
        grads = [tf.convert_to_tensor(g) for g in tape.gradient(objective, variables)]
        want_lp = float(tf.reduce_sum(mask * log_probs))
        before = [v.numpy() for v in variables]
        got = trainer.update(arch, reward, mask=mask)
        assert got["log_prob"] == pytest.approx(want_lp, rel=1e-5)
        assert got["advantage"] == pytest.approx(reward - b, rel=1e-6)
        for old, v, g in zip(before, controller.trainable_variables, grads):
            np.testing.assert_allclose(v.numpy(), old + g.numpy(), rtol=1e-4, atol=1e-6)


def test_for_controller_keeps_baselines_and_step_and_rebuilds_the_optimizer(seed):
    controller = _tiny_controller()
    trainer = Reinforce(controller, learning_rate=0.05, baseline_decay=0.5, entropy_weight=W,
                        entropy_mode="reward")
    for arch, reward in STEPS:
        trainer.update(arch, reward)
    grown = controller.grown(SIZES + (4,))
    moved = trainer.for_controller(grown)
    assert moved.controller is grown and moved.optimizer is not trainer.optimizer
    assert float(moved.baseline) == float(trainer.baseline)
    assert int(moved.step) == int(trainer.step) == len(STEPS)
    assert bool(moved.baseline_initialized)
    np.testing.assert_array_equal(moved.entropy_baseline.numpy()[:3],
                                  trainer.entropy_baseline.numpy())
    assert float(moved.entropy_baseline[3]) == 0.0
    assert moved.get_config()["optimizer"]["config"]["learning_rate"] == pytest.approx(0.05)
    moved.update((1, 0, 1, 3), 1.0)
    assert int(moved.step) == len(STEPS) + 1
    with pytest.raises(ValueError, match="fewer than the current"):
        moved.for_controller(Controller((3,), units=8))
