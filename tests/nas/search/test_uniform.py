"""Random search with weight sharing: the uniform sampler (uniform, seeded, checkpointed) and
its strategy in the search driver with a tiny fake task (schedule, records, resume after a
signal and after a kill without a final save)."""

import itertools
import json
import os
import signal

import numpy as np
import pytest
import tensorflow as tf

from tests.nas.fakes import interrupt_at
from tests.nas.search.test_enas import FakeTask
from wpl_keras.nas.search import driver
from wpl_keras.nas.search import uniform
from wpl_keras.nas.search.derive import derive_best
from wpl_keras.nas.search.schedule import LoopConfig
from wpl_keras.nas.search.enas import SearchConfig


def _draws(sampler, n):
    return [sampler.sample_architecture() for _ in range(n)]


# --------------------------------------------------------------------------- the sampler
def _chi2(draws, sizes):
    """Pearson's χ² of ``draws`` against the uniform distribution over every architecture."""
    counts = {a: 0 for a in itertools.product(*(range(n) for n in sizes))}
    for arch in draws:
        counts[tuple(arch)] += 1  # a KeyError here: a draw outside the space
    expected = len(draws) / len(counts)
    return sum((c - expected) ** 2 / expected for c in counts.values())


def test_sampler_is_uniform_over_every_architecture():
    """χ² of 1,200 draws over the 12 architectures of sizes (3, 2, 2): below 31.3, the 0.1%
    critical value of χ²(11); draws whose first decision takes 0 with probability 1/2 instead
    of 1/3 (expected χ² about 160) exceed it."""
    sizes = (3, 2, 2)
    draws = _draws(uniform.UniformSampler(sizes, seed=7), 1200)
    assert all(isinstance(a, int) for a in draws[0])
    assert _chi2(draws, sizes) < 31.3
    rng = np.random.default_rng(0)
    biased = [(int(rng.choice(3, p=[0.5, 0.25, 0.25])), int(rng.integers(2)),
               int(rng.integers(2))) for _ in range(1200)]
    assert _chi2(biased, sizes) > 31.3


def test_sampler_is_seeded():
    assert _draws(uniform.UniformSampler((3, 3, 3), seed=1), 20) == _draws(
        uniform.UniformSampler((3, 3, 3), seed=1), 20)
    assert _draws(uniform.UniformSampler((3, 3, 3), seed=1), 20) != _draws(
        uniform.UniformSampler((3, 3, 3), seed=2), 20)


def test_sampler_continues_its_stream_after_a_checkpoint_round_trip(tmp_path):
    sampler = uniform.UniformSampler((5, 4, 3, 2), seed=3)
    _draws(sampler, 7)
    path = tf.train.Checkpoint(sampler=sampler).save(str(tmp_path / "ckpt"))
    expected = _draws(sampler, 10)
    restored = uniform.UniformSampler((5, 4, 3, 2), seed=99)  # another seed: overwritten
    tf.train.Checkpoint(sampler=restored).restore(path).assert_consumed()
    assert _draws(restored, 10) == expected


@pytest.mark.parametrize("sizes, seed, error, match", [
    ((), 0, ValueError, "decision_sizes is empty"),
    ((3, 0), 0, ValueError, r"decision_sizes\[1\] must be an integer >= 1"),
    ((3, 2.0), 0, TypeError, r"decision_sizes\[1\]"),
    ((3,), -1, ValueError, "seed must be an integer >= 0"),
])
def test_sampler_refuses_bad_arguments_naming_them(sizes, seed, error, match):
    with pytest.raises(error, match=match):
        uniform.UniformSampler(sizes, seed=seed)


# --------------------------------------------------------------------------- the search
def _config(**kw):
    base = dict(epochs=3, shared_steps_per_epoch=4, batches_per_arch=2, wpl_start_epoch=1,
                strength=10.0, strength_decay="linear", strength_decay_start=2,
                strength_decay_rate=2.0, flush_every=0, verbose=0)
    base.update(kw)
    return LoopConfig(**base)


def _build(seed=0):
    task = FakeTask(seed=seed)
    return task, uniform.UniformSampler(task.space.decision_sizes, seed=seed)


def test_search_trains_the_samplers_stream_under_the_wpl_schedule(tmp_path, seed):
    task, sampler = _build()
    config = _config()
    result = uniform.run_search(task, sampler, config, str(tmp_path))
    history = result.history
    assert [r["epoch"] for r in history] == [0, 1, 2]
    trained = [tuple(a) for r in history for a in r["archs"]]
    assert trained == _draws(uniform.UniformSampler((3, 3, 3), seed=0), 12)
    # No controller phase: no reward, no controller statistics; the forgetting metrics are there.
    for r in history:
        assert "mean_reward" not in r and not any(k.startswith("controller_") for k in r)
        assert r["num_archs"] == 4 and len(r["err2"]) == 4
        assert r["mean_diff"] == pytest.approx(np.mean(np.array(r["err2"]) - r["err1"]))
    # The driver's schedule: WPL off in epoch 0, then α 10, then 8.
    assert sorted({(e, active, a) for e, active, a in task.log}) == [
        (0, False, 0.0), (1, True, 10.0), (2, True, 8.0)]
    saved = json.load(open(tmp_path / "search_config.json"))
    assert saved["sampler"] == "uniform" and saved["seed"] == 0
    assert LoopConfig.from_json({k: v for k, v in saved.items()
                                 if k not in ("sampler", "seed")}) == config
    names = [n for n, _ in tf.train.list_variables(result.checkpoint)]
    assert any(n.startswith("sampler/") for n in names)
    assert not any(n.startswith("controller") for n in names)


def test_search_takes_enas_config_and_uses_only_its_loop_fields(tmp_path, seed):
    task, sampler = _build()
    enas_config = SearchConfig(**_config(epochs=1).to_json(), controller_steps=5)
    uniform.run_search(task, sampler, enas_config, str(tmp_path))
    saved = json.load(open(tmp_path / "search_config.json"))
    assert "controller_steps" not in saved and saved["epochs"] == 1
    assert len(task.log) == 4


def test_search_refuses_a_sampler_of_another_space(tmp_path):
    task, _ = _build()
    with pytest.raises(ValueError, match="decision sizes"):
        uniform.run_search(task, uniform.UniformSampler((3, 3), seed=0), _config(),
                           str(tmp_path))
    with pytest.raises(TypeError, match="UniformSampler"):
        uniform.run_search(task, object(), _config(), str(tmp_path))


def test_wpl_reduces_forgetting_on_the_fake_under_uniform_sampling(tmp_path, seed):
    config = _config(epochs=3, shared_steps_per_epoch=6, strength=50.0, strength_decay=None)
    off = uniform.run_search(*_build(), _config(**{**config.to_json(), "wpl": False}),
                             str(tmp_path / "off")).history
    on = uniform.run_search(*_build(), config, str(tmp_path / "on")).history
    without = np.mean([r["mean_diff"] for r in off[1:]])
    assert without > 0
    assert np.mean([r["mean_diff"] for r in on[1:]]) < without


def _state(task):
    return [task.w.numpy(), task.wpl_state.strength.numpy()] + [
        v.numpy() for v in task.wpl_state.fisher + task.wpl_state.anchors]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The uninterrupted run that the interrupted-then-resumed runs must equal."""
    import keras

    keras.utils.set_random_seed(1234)
    task, sampler = _build()
    history = uniform.run_search(task, sampler, _config(),
                                 str(tmp_path_factory.mktemp("ref"))).history
    return history, _state(task), _draws(sampler, 5)


def _strip(history):
    return [{k: v for k, v in r.items() if k != "epoch_seconds"} for r in history]


class Killed(Exception):
    """Stands for kill -9: the process ends in the middle of a unit without saving."""


def _kill():
    raise Killed


@pytest.mark.parametrize("how, call", [("signal", 3), ("signal", 6), ("kill", 7)])
def test_resume_continues_the_same_stream_and_equals_the_uninterrupted_run(
        tmp_path, seed, reference, how, call):
    """SIGTERM (saved at the end of the unit) or a kill in the middle of a unit (the state of
    the last checkpoint, one per unit; the unit runs again) then a resume in new objects:
    the same architectures, history and weights as without the interruption."""
    ref_history, ref_state, ref_next = reference
    config = _config(checkpoint_every=1)
    task, sampler = _build()
    if how == "signal":
        interrupt_at(task, call, lambda: os.kill(os.getpid(), signal.SIGTERM))
        with pytest.raises(driver.SearchInterrupted):
            uniform.run_search(task, sampler, config, str(tmp_path))
    else:
        interrupt_at(task, call, _kill)
        with pytest.raises(Killed):
            uniform.run_search(task, sampler, config, str(tmp_path))
    np.random.seed(999)  # the global RNGs are the driver's to restore
    task, sampler = _build(seed=0)
    sampler.generator.reset_from_seed(5)  # a resume must overwrite the sampler's state
    history = uniform.run_search(task, sampler, config, str(tmp_path), resume=True).history
    assert _strip(history) == _strip(ref_history)
    for a, b in zip(_state(task), ref_state):
        np.testing.assert_allclose(a, b, rtol=1e-6)
    assert _draws(sampler, 5) == ref_next


def test_restore_latest_and_derive_continue_the_stream(tmp_path, seed):
    task, sampler = _build()
    uniform.run_search(task, sampler, _config(epochs=1), str(tmp_path))
    after_search = _draws(sampler, 6)
    task2, sampler2 = _build()
    restored = uniform.restore_latest(task2, sampler2, str(tmp_path))
    assert restored["epoch"] == 1 and len(restored["history"]) == 1
    np.testing.assert_array_equal(task2.w.numpy(), task.w.numpy())
    derived = derive_best(task2, sampler2, num_samples=6)
    assert {a for a, _ in derived.candidates} == set(after_search)
    assert derived.error == min(task2.validation_error(a) for a in after_search)
    with pytest.raises(FileNotFoundError, match="no search checkpoint"):
        uniform.restore_latest(*_build(), str(tmp_path / "none"))
