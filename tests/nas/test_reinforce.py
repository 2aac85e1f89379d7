"""Tests for REINFORCE with an EMA baseline."""

import numpy as np
import pytest
import tensorflow as tf

from wpl_keras.nas.controller import Controller
from wpl_keras.nas.reinforce import Reinforce, ema_baseline, reinforce_loss


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


def test_checkpoint_restores_controller_optimizer_baseline(tmp_path, seed):
    controller = Controller((3, 3), units=4, seed=2)
    trainer = Reinforce(controller, learning_rate=0.01)
    for r in (1.0, 0.0, 2.0):
        trainer.update(controller.sample_architecture(), r)
    path = tf.train.Checkpoint(**trainer.checkpoint_items()).save(str(tmp_path / "ckpt"))
    trainer.update((0, 0), 5.0)
    after_a = [controller.sample_architecture() for _ in range(4)]
    after_lp = float(controller.log_prob_and_entropy((1, 2))[0])

    controller2 = Controller((3, 3), units=4, seed=77)
    trainer2 = Reinforce(controller2, learning_rate=0.01)
    tf.train.Checkpoint(**trainer2.checkpoint_items()).restore(path).assert_consumed()
    assert int(trainer2.step) == 3
    saved_baseline = float(trainer2.baseline)
    assert float(trainer.baseline) == pytest.approx(0.95 * saved_baseline + 0.05 * 5.0)
    trainer2.update((0, 0), 5.0)  # same update from the same state (incl. Adam moments)
    assert float(trainer2.baseline) == pytest.approx(float(trainer.baseline))
    assert [controller2.sample_architecture() for _ in range(4)] == after_a
    assert float(controller2.log_prob_and_entropy((1, 2))[0]) == pytest.approx(after_lp, rel=1e-5)


def test_bad_arguments():
    controller = Controller((2,), units=4)
    with pytest.raises(ValueError, match="baseline_decay"):
        Reinforce(controller, baseline_decay=1.0)
    with pytest.raises(ValueError, match="entropy_weight"):
        Reinforce(controller, entropy_weight=-1.0)
