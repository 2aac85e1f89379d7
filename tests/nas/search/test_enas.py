"""The search loop with a tiny fake shared-weights task and the real controller/REINFORCE."""

import json
import os
import signal

import numpy as np
import pytest
import tensorflow as tf

from wpl_keras.nas.search import driver
from wpl_keras.wpl import schedule
from wpl_keras.nas.search import enas as search
from tests.nas.fakes import RowTargetTask, interrupt_at

from wpl_keras.nas.controllers.enas import Controller
from wpl_keras.nas.controllers.reinforce import Reinforce
from wpl_keras.experiments.presets import cpu_small_search, paper_search


class FakeTask(RowTargetTask):
    """Shared rows W[offset_k + a_k] pulled towards an architecture-specific target
    (:class:`fakes.RowTargetTask`); logs each training call and Fisher flush."""

    def __init__(self, seed=0, dim=4, lr=0.3):
        super().__init__("fake", seed=seed, dim=dim, lr=lr)
        self.batches = tf.Variable(0, dtype=tf.int64)
        self.log = []  # (epoch, wpl_active, alpha) per train call
        self.flushes = []
        self.epoch = None
        original = self.wpl_state.reset_fisher

        def reset_fisher():
            self.flushes.append(self.epoch_next)
            original()

        self.wpl_state.reset_fisher = reset_fisher
        self.epoch_next = 0

    def target_seed(self, arch):
        return hash(tuple(arch)) % (2**32)

    def on_batch(self):
        self.batches.assign_add(1)

    def start_epoch(self, epoch):
        self.epoch = epoch
        self.epoch_next = epoch + 1

    def train_architecture(self, arch, num_batches, *, wpl_active):
        self.log.append((self.epoch, wpl_active, float(self.wpl_state.strength.numpy())))
        losses = self.train_rows(arch, num_batches, wpl_active)
        return {"loss": float(np.mean(losses)), "penalty": 0.0}

    def checkpoint_items(self):
        return {"w": self.w, "wpl_state": self.wpl_state, "gen": self.gen, "batches": self.batches}

    def config(self):
        return {"kind": "fake", "lr": self.lr}


class RandomController(tf.Module):
    """Uniform sampling from a checkpointable generator (no tracing: keeps tests fast)."""

    def __init__(self, sizes, seed=0):
        super().__init__()
        self.sizes = tuple(sizes)
        self.generator = tf.random.Generator.from_seed(seed)

    def sample_architecture(self):
        u = self.generator.uniform([len(self.sizes)]).numpy()
        return tuple(int(x * s) for x, s in zip(u, self.sizes))


class CountingReinforce:
    def __init__(self):
        self.step = tf.Variable(0, dtype=tf.int64)
        self.baseline = tf.Variable(0.0)
        self.started = []  # the epochs passed to start_epoch, one per controller update

    def start_epoch(self, epoch):
        self.started.append(epoch)

    def update(self, arch, reward):
        self.step.assign_add(1)
        self.baseline.assign(0.9 * self.baseline + 0.1 * reward)
        return {"baseline": float(self.baseline.numpy())}

    def checkpoint_items(self):
        return {"step": self.step, "baseline": self.baseline}


# REINFORCE as the WPL release's RNN search runs it.
RELEASE_REINFORCE = dict(entropy_mode="reward", baseline_init="first_reward",
                         baseline_reset_each_epoch=True)


def _build(seed=0, real_controller=True, reinforce_kw=None):
    task = FakeTask(seed=seed)
    if not real_controller:
        return task, RandomController(task.space.decision_sizes, seed), CountingReinforce()
    controller = Controller(task.space.decision_sizes, units=8, seed=seed)
    reinforce = Reinforce(controller, learning_rate=0.01, **(reinforce_kw or {}))
    return task, controller, reinforce


def _config(**kw):
    base = dict(
        epochs=5, shared_steps_per_epoch=4, batches_per_arch=2, controller_steps=3,
        wpl_start_epoch=1, strength=10.0, strength_decay="linear", strength_decay_start=3,
        strength_decay_rate=2.0, flush_every=2, verbose=0,
    )
    base.update(kw)
    return search.SearchConfig(**base)


def test_schedule_functions():
    c = _config()
    assert [schedule.wpl_active_at(e, c) for e in range(5)] == [False, True, True, True, True]
    assert [schedule.strength_at(e, c) for e in range(5)] == [0.0, 10.0, 10.0, 8.0, 6.0]
    assert [schedule.flush_at(e, c) for e in range(6)] == [False, False, False, True, False, True]
    off = _config(wpl=False)
    assert not any(schedule.wpl_active_at(e, off) for e in range(5))
    assert schedule.strength_at(3, off) == 0.0


def test_config_validation_and_json():
    with pytest.raises(ValueError, match="epochs"):
        search.SearchConfig(epochs=0)
    with pytest.raises(ValueError, match="strength_decay"):
        search.SearchConfig(strength_decay="cosine")
    with pytest.raises(ValueError, match="rate"):
        search.SearchConfig(strength_decay="exponential", strength_decay_rate=2.0)
    c = cpu_small_search(epochs=3)
    assert search.SearchConfig.from_json(json.dumps(c.to_json())) == c
    paper = paper_search()
    assert (paper.wpl_start_epoch, paper.strength, paper.flush_every, paper.batches_per_arch) == (
        5, 60.0, 2, 7)
    with pytest.raises(ValueError, match="unknown"):
        search.SearchConfig.from_json({"nope": 1})


def test_schedule_config_is_shared_by_both_searches():
    """ENAS and NAO hold the same schedule fields, validated and read by the same code."""
    from wpl_keras.wpl.schedule import ScheduleConfig
    from wpl_keras.nas.search.nao import NAOSearchConfig

    fields = dict(wpl_start_epoch=1, strength=10.0, strength_decay="linear",
                  strength_decay_start=3, strength_decay_rate=2.0, flush_every=2)
    enas, nao = _config(), NAOSearchConfig(**fields)
    assert enas.schedule() == nao.schedule() == ScheduleConfig(**fields)
    assert type(nao.schedule()) is ScheduleConfig
    for e in range(6):
        for fn in (schedule.wpl_active_at, schedule.strength_at, schedule.flush_at):
            assert fn(e, enas) == fn(e, nao) == fn(e, ScheduleConfig(**fields))
    for cls in (search.SearchConfig, NAOSearchConfig, ScheduleConfig):
        with pytest.raises(ValueError, match=f"{cls.__name__}.strength_decay"):
            cls(strength_decay="cosine")
        with pytest.raises(ValueError, match="flush_every"):
            cls(flush_every=-1)
        with pytest.raises(ValueError, match="strength"):
            cls(strength=-1.0)
    with pytest.raises(ValueError, match="NAOSearchConfig.epochs"):
        NAOSearchConfig(epochs=0)
    with pytest.raises(ValueError, match="controller_steps"):
        search.SearchConfig(controller_steps=-1)
    assert driver.SHARED < driver.CONTROLLER < driver.EPOCH_END


@pytest.mark.parametrize("field, value, error", [
    ("epochs", np.int64(0), ValueError), ("epochs", 2.0, TypeError), ("epochs", "3", TypeError),
    ("shared_steps_per_epoch", None, TypeError), ("batches_per_arch", True, TypeError),
    ("best_k", -1, ValueError), ("checkpoint_every", -1, ValueError),
    ("max_to_keep", 0, ValueError), ("verbose", 0.5, TypeError),
    ("wpl_start_epoch", -1, ValueError), ("strength", np.float32("nan"), ValueError),
    ("strength", float("inf"), ValueError), ("strength", "60", TypeError),
    ("strength_floor", -0.5, ValueError), ("strength_decay_rate", -1.0, ValueError),
    ("strength_decay_start", 1.5, TypeError), ("flush_every", np.array([1, 2]), TypeError),
    ("controller_steps", np.int32(-5), ValueError),
])
def test_loop_and_schedule_fields_refuse_bad_numbers(field, value, error):
    with pytest.raises(error, match=f"SearchConfig.{field} must be"):
        search.SearchConfig(**{field: value})


def test_loop_and_schedule_fields_take_numpy_and_tensor_scalars():
    config = search.SearchConfig(epochs=np.int64(3), strength=np.float32(30.0),
                                 strength_decay_rate=tf.constant(0.5),
                                 controller_steps=tf.constant(4))
    assert (config.epochs, config.strength, config.strength_decay_rate,
            config.controller_steps) == (3, 30.0, 0.5, 4)
    assert search.SearchConfig.from_json(json.dumps(config.to_json())) == config


def test_verbose_prints_progress_and_summary(tmp_path, seed, capsys):
    task, controller, reinforce = _build(real_controller=False)
    search.run_search(task, controller, reinforce, _config(epochs=2, verbose=1), str(tmp_path))
    out = capsys.readouterr().out
    assert "Epoch 1/2 (WPL off)" in out and "Epoch 2/2 (WPL on)" in out
    assert out.count("err2-err1: mean") == 2 and "mean reward" in out


def test_mid_epoch_checkpoint_of_another_format_is_refused(tmp_path, seed):
    """A partial epoch of another layout (an older loop's mid-epoch checkpoint) is an error
    that says what to do, not a KeyError deep in the loop."""
    config = _config(epochs=2, checkpoint_every=1)
    task, controller, reinforce = _build(real_controller=False)
    search.run_search(task, controller, reinforce, config, str(tmp_path))
    objs = _build(real_controller=False)
    manager, loop = search.make_checkpoint_manager(*objs, str(tmp_path / "ckpt"))
    manager.checkpoint.restore(manager.latest_checkpoint).expect_partial()
    loop.epoch.assign(1)
    # The previous ENAS loop's layout (rewards and REINFORCE statistics in separate lists).
    loop.partial.assign(json.dumps({"archs": [], "err1": [], "train": [], "rewards": [],
                                    "controller": [], "flushed": False, "start_time": 0.0,
                                    "elapsed": 0.0}))
    manager.save()
    with pytest.raises(ValueError, match="older version"):
        search.run_search(*_build(real_controller=False), config, str(tmp_path), resume=True)


def test_loop_schedule_logs_and_outputs(tmp_path, seed):
    task, controller, reinforce = _build(real_controller=False)
    config = _config()
    result = search.run_search(task, controller, reinforce, config, str(tmp_path))
    # WPL turns on at epoch 1, α follows the schedule, flush at epochs 3 (and would at 5).
    per_epoch = {}
    for epoch, active, alpha in task.log:
        per_epoch.setdefault(epoch, set()).add((active, alpha))
    assert per_epoch == {
        0: {(False, 0.0)}, 1: {(True, 10.0)}, 2: {(True, 10.0)}, 3: {(True, 8.0)},
        4: {(True, 6.0)},
    }
    assert task.flushes == [3]  # the flush happens before start_epoch(3): epoch_next is 3
    assert len(task.log) == 5 * 4
    assert int(reinforce.step.numpy()) == 5 * 3
    assert reinforce.started == [e for e in range(5) for _ in range(3)]
    h = result.history
    assert [r["epoch"] for r in h] == list(range(5))
    assert [r["flushed"] for r in h] == [False, False, False, True, False]
    for r in h:
        assert r["num_archs"] == 4 and len(r["err1"]) == 4 and len(r["err2"]) == 4
        d = np.array(r["err2"]) - np.array(r["err1"])
        assert r["mean_diff"] == pytest.approx(d.mean())
        assert r["max_diff"] == pytest.approx(d.max())
        assert np.isfinite(r["mean_reward"])
    # Files: configs, CSV, JSON, TensorBoard events, checkpoint.
    names = set(os.listdir(tmp_path))
    assert {"search_config.json", "task_config.json", "history.csv", "history.json", "tb",
            "ckpt"} <= names
    with open(tmp_path / "history.csv") as f:
        lines = f.read().strip().splitlines()
    assert len(lines) == 6 and "mean_diff" in lines[0]
    # α has one log name, read from its one variable: the schedule's α of each epoch.
    header = lines[0].split(",")
    assert "wpl_strength" in header and "alpha" not in header
    assert [r["wpl_strength"] for r in h] == [schedule.strength_at(e, config) for e in range(5)]
    assert all("alpha" not in r for r in h)
    assert any(n.startswith("events") for n in os.listdir(tmp_path / "tb"))
    # Re-running into the same directory without resume is refused.
    with pytest.raises(FileExistsError, match="resume"):
        search.run_search(*_build(real_controller=False), config, str(tmp_path))


def test_wpl_reduces_forgetting_on_the_fake(tmp_path, seed):
    """The fake has real forgetting, and WPL removes part of it (the loop wires WPL in)."""
    c = _config(epochs=3, shared_steps_per_epoch=6, wpl_start_epoch=1, strength=50.0,
                strength_decay=None, flush_every=0, controller_steps=1)
    off = search.run_search(*_build(real_controller=False), _config(**{**c.to_json(), "wpl": False}),
                            str(tmp_path / "off")).history
    on = search.run_search(*_build(real_controller=False), c, str(tmp_path / "on")).history
    without = np.mean([r["mean_diff"] for r in off[1:]])
    with_wpl = np.mean([r["mean_diff"] for r in on[1:]])
    assert without > 0
    assert with_wpl < without


@pytest.mark.slow
def test_baseline_resets_at_each_epoch_start_through_the_strategy(tmp_path, seed):
    """With ``baseline_reset_each_epoch`` (and the baseline from the first reward), each
    epoch's first REINFORCE update starts from its own reward (A = 0), later ones move the
    EMA; without the reset only the search's very first update does."""
    config = _config(epochs=3, shared_steps_per_epoch=2, controller_steps=3, wpl=False)
    for reset in (True, False):
        task, controller, reinforce = _build(
            reinforce_kw={**RELEASE_REINFORCE, "baseline_reset_each_epoch": reset})
        seen, original = [], reinforce.update

        def update(arch, reward, original=original, reinforce=reinforce, seen=seen):
            out = original(arch, reward)
            seen.append((int(reinforce.baseline_epoch.numpy()), reward, out))
            return out

        reinforce.update = update
        search.run_search(task, controller, reinforce, config, str(tmp_path / str(reset)))
        assert [e for e, _, _ in seen] == [0, 0, 0, 1, 1, 1, 2, 2, 2]
        for i, (epoch, reward, out) in enumerate(seen):
            first = i == 0 or (reset and i % 3 == 0)
            if first:
                assert out["baseline"] == pytest.approx(reward, rel=1e-6)
                assert out["advantage"] == pytest.approx(0.0, abs=1e-6)
            else:
                previous = seen[i - 1][2]["baseline"]
                assert out["baseline"] == pytest.approx(0.95 * previous + 0.05 * reward,
                                                        rel=1e-5)
        assert len({r for _, r, _ in seen}) > 3  # the rewards differ: the checks can fail


def test_resume_continues_with_the_strength_of_the_one_variable(tmp_path, seed):
    """α lives in one variable, the task's ``wpl_state.strength``, checkpointed with the task:
    the checkpoint holds no other α, and a search interrupted mid-epoch resumes with the
    saved α (not the new task's initial one), then follows the schedule, logging
    ``wpl_strength`` equal to what the task trained with."""
    config = _config()
    objs = _build(real_controller=False)
    # epoch 3's second architecture (4 per epoch)
    interrupt_at(objs[0], 14, lambda: os.kill(os.getpid(), signal.SIGTERM))
    out = str(tmp_path / "run")
    with pytest.raises(driver.SearchInterrupted) as info:
        search.run_search(*objs, config, out)
    names = [n for n, _ in tf.train.list_variables(info.value.checkpoint)]
    alphas = [n for n in names if "alpha" in n or "strength" in n]
    assert len(alphas) == 1 and alphas[0].startswith("task_wpl_state/"), alphas
    assert tf.train.load_variable(info.value.checkpoint, alphas[0]) == 8.0

    task, controller, reinforce = _build(real_controller=False)
    task.wpl_state.strength.assign(123.0)  # a new task's own α must not survive the restore
    history = search.run_search(task, controller, reinforce, config, out, resume=True).history
    # The rest of epoch 3 (its units 3 and 4; start_epoch is not called again mid-epoch), at
    # the saved α, then epoch 4 at the schedule's.
    assert [(active, a) for _, active, a in task.log[:2]] == [(True, 8.0)] * 2
    assert task.log[2:] == [(4, True, 6.0)] * 4
    assert [r["wpl_strength"] for r in history] == [0.0, 10.0, 10.0, 8.0, 6.0]
    assert float(task.wpl_state.strength.numpy()) == 6.0


def _final_state(task, controller, reinforce):
    arrays = [task.w.numpy(), reinforce.baseline.numpy(), task.wpl_state.strength.numpy()]
    arrays += [reinforce.entropy_baseline.numpy(), reinforce.baseline_initialized.numpy(),
               reinforce.baseline_epoch.numpy()]
    arrays += [f.numpy() for f in task.wpl_state.fisher + task.wpl_state.anchors]
    arrays += [np.asarray(v.numpy()) for v in controller.trainable_variables]
    return arrays


_RESUME_CONFIG = dict(epochs=2, shared_steps_per_epoch=3, controller_steps=2, wpl_start_epoch=1)


_REINFORCE_OPTIONS = {"default": None, "release": RELEASE_REINFORCE}


@pytest.fixture(scope="module")
def reference_runs(tmp_path_factory):
    """The uninterrupted runs (per REINFORCE option set) that interrupted-then-resumed runs
    must equal; each made on first use."""
    import keras

    runs = {}

    def get(options):
        if options not in runs:
            keras.utils.set_random_seed(1234)
            np.random.seed(1234)
            objs = _build(reinforce_kw=_REINFORCE_OPTIONS[options])
            history = search.run_search(
                *objs, _config(**_RESUME_CONFIG), str(tmp_path_factory.mktemp("ref"))
            ).history
            runs[options] = (history, _final_state(*objs))
        return runs[options]

    return get


# Units per epoch: 3 architectures trained, then 2 rewards. Killing at call 4 lands after the
# first controller update of epoch 0, at call 5 after its second, at call 7 in the shared
# phase of epoch 1. With the release's options, a resume at call 4 must not reset the baseline
# again in epoch 0; a resume at call 7 must reset it at epoch 1's first update.
@pytest.mark.parametrize("options,kill_at", [("default", 5), ("default", 7), ("release", 4),
                                             ("release", 7)])
def test_resume_equals_uninterrupted(tmp_path, seed, options, kill_at, reference_runs):
    """SIGTERM at unit ``kill_at`` → saved and raised; a fresh process-like resume then
    finishes with exactly the uninterrupted run's history and weights."""
    config = _config(**_RESUME_CONFIG)
    ref, ref_state = reference_runs(options)
    reinforce_kw = _REINFORCE_OPTIONS[options]

    objs = _build(reinforce_kw=reinforce_kw)
    calls = {"n": 0}
    original = objs[0].train_architecture
    original_reward = objs[0].reward

    def count():
        calls["n"] += 1
        if calls["n"] == kill_at:
            os.kill(os.getpid(), signal.SIGTERM)

    def train(*a, **k):
        count()
        return original(*a, **k)

    def reward(a):
        count()
        return original_reward(a)

    objs[0].train_architecture = train
    objs[0].reward = reward
    out = str(tmp_path / "run")
    with pytest.raises(driver.SearchInterrupted) as info:
        search.run_search(*objs, config, out)
    assert info.value.signum == signal.SIGTERM
    # Change the global RNGs: resume must restore them too.
    np.random.seed(999)
    resumed_objs = _build(seed=0, reinforce_kw=reinforce_kw)
    resumed = search.run_search(*resumed_objs, config, out, resume=True).history
    strip = lambda h: [{k: v for k, v in r.items() if k != "epoch_seconds"} for r in h]
    assert strip(resumed) == strip(ref)
    for a, b in zip(_final_state(*resumed_objs), ref_state):
        np.testing.assert_allclose(a, b, rtol=1e-6)
    info = search.restore_latest(*_build(), out)
    assert info["epoch"] == 2 and len(info["history"]) == 2


def test_a_checkpoint_of_the_former_layout_with_loop_alpha_resumes(tmp_path, seed, monkeypatch,
                                                                   reference_runs):
    """Checkpoints written while the loop still kept its own copy of α (``loop/alpha``)
    resume unchanged: that key is ignored, α comes from the task's ``wpl_state.strength``."""
    config = _config(**_RESUME_CONFIG)
    ref, ref_state = reference_runs("default")
    former_init = driver.LoopState.__init__

    def init_with_alpha(self):
        former_init(self)
        self.alpha = tf.Variable(-1.0, dtype=tf.float32, trainable=False, name="alpha")

    monkeypatch.setattr(driver.LoopState, "__init__", init_with_alpha)
    objs = _build()
    # epoch 1's first architecture: WPL on, α 10
    interrupt_at(objs[0], 4, lambda: os.kill(os.getpid(), signal.SIGTERM))
    out = str(tmp_path / "run")
    with pytest.raises(driver.SearchInterrupted) as info:
        search.run_search(*objs, config, out)
    monkeypatch.undo()
    names = [n for n, _ in tf.train.list_variables(info.value.checkpoint)]
    assert any(n.startswith("loop/alpha/") for n in names)
    np.random.seed(999)
    resumed_objs = _build()
    resumed = search.run_search(*resumed_objs, config, out, resume=True).history
    strip = lambda h: [{k: v for k, v in r.items() if k != "epoch_seconds"} for r in h]
    assert strip(resumed) == strip(ref)
    for a, b in zip(_final_state(*resumed_objs), ref_state):
        np.testing.assert_allclose(a, b, rtol=1e-6)


def test_derive_keeps_the_lowest_error(tmp_path, seed):
    from wpl_keras.nas.search import derive

    task, controller, _ = _build(real_controller=False)
    for arch in [(0, 0, 0), (1, 1, 1)]:
        task.train_architecture(arch, 3, wpl_active=False)
    result = derive.derive_best(task, controller, num_samples=12)
    errors = [e for _, e in result.candidates]
    assert result.error == min(errors) and errors == sorted(errors)
    assert result.error == pytest.approx(task.validation_error(result.arch))
    assert len({a for a, _ in result.candidates}) == len(result.candidates) <= 12
    paths = derive.write_derived(result, task.space, str(tmp_path))
    assert paths["png"] is None  # the fake space cannot plot
    assert derive.load_derived(paths["json"], task.space) == result.arch
    with pytest.raises(ValueError, match="num_samples"):
        derive.derive_best(task, controller, num_samples=0)
