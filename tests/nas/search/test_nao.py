"""NAO weight-sharing search: pool growth, WPL schedule, Figure-4 numbers, exact resume."""

import json
import os
import signal

import numpy as np
import pytest
import tensorflow as tf

from wpl_keras.nas.search import driver
from wpl_keras.nas.search import nao as nao_search
from tests.nas.fakes import RowTargetTask

from wpl_keras.nas.controllers.nao import NAOConfig, NAOController
from wpl_keras.nas.search.driver import SearchInterrupted
from wpl_keras.nas.search.nao import NAOSearchConfig, run_nao_search
from wpl_keras.experiments.presets import cpu_small_rnn_task


class _Crash(RuntimeError):
    pass


class FakeTask(RowTargetTask):
    """Rows ``W[3k + a_k]`` pulled to an architecture-specific target
    (:class:`fakes.RowTargetTask`); counts training calls and can simulate a kill."""

    def __init__(self, seed=0, dim=4, lr=0.3, crash_after=None):
        super().__init__("fake_nao", seed=seed, dim=dim, lr=lr)
        self.calls = tf.Variable(0, dtype=tf.int64)
        self.crash_after = crash_after
        self.alphas = []

    def target_seed(self, arch):
        return sum(a * 7**k for k, a in enumerate(arch))

    def train_architecture(self, arch, num_batches, *, wpl_active):
        if self.crash_after is not None and int(self.calls.numpy()) >= self.crash_after:
            raise _Crash("simulated kill")
        self.calls.assign_add(1)
        self.alphas.append((wpl_active, float(self.wpl_state.strength.numpy())))
        return {"loss": self.train_rows(arch, num_batches, wpl_active)[-1]}

    def checkpoint_items(self):
        return {"w": self.w, "wpl_state": self.wpl_state, "gen": self.gen, "calls": self.calls}

    def config(self):
        return {"kind": "fake"}


NAO_CFG = NAOConfig(token_embedding=4, units=8, predictor_units=8, epochs=4, batch_size=8,
                    max_rounds=5)


def _config(**kw):
    base = dict(epochs=4, shared_steps_per_epoch=5, batches_per_arch=2, seed_archs=6,
                controller_every=2, new_archs=3, top_k_seeds=3, max_pool=10,
                wpl_start_epoch=1, strength=10.0, flush_every=2, verbose=0)
    base.update(kw)
    return NAOSearchConfig(**base)


def _run(out, config, crash_after=None, resume=False):
    task = FakeTask(seed=1, crash_after=crash_after)
    nao = NAOController(task.space.decision_sizes, NAO_CFG, seed=2)
    result = run_nao_search(task, nao, config, str(out), seed=3, resume=resume,
                            handle_signals=False)
    return task, nao, result


def test_grow_pool_keeps_new_and_best():
    pool = [(0,), (1,), (2,), (3,)]
    scores = [0.1, 0.9, 0.5, 0.2]
    assert nao_search.grow_pool(pool, scores, [(5,), (1,), (5,)], 10) == pool + [(5,)]
    assert nao_search.grow_pool(pool, scores, [(5,), (6,)], 4) == [(1,), (2,), (5,), (6,)]


def test_with_regularization_sets_the_spaces_fields():
    from wpl_keras.nas.spaces.cnn.supernet import SupernetConfig

    rnn = nao_search.with_regularization(cpu_small_rnn_task(), output_dropout=0.75)
    assert rnn.model.output_dropout == 0.75
    rnn_drop = nao_search.with_regularization(cpu_small_rnn_task(), path_keep=0.9)
    assert rnn_drop.model.path_keep == 0.9  # the RNN supernet's random path dropping
    with pytest.raises(ValueError, match="no path-dropping field"):
        nao_search.with_regularization(cpu_small_rnn_task().optimizer, path_keep=0.9)
    cnn = nao_search.with_regularization(SupernetConfig(), output_dropout=0.25, path_keep=0.8)
    assert (cnn.dropout, cnn.drop_path_keep) == (0.25, 0.8)
    # The fields are found inside nested configs: the RNN task's model, the CNN task's supernet.
    from wpl_keras.nas.spaces.cnn.task import CNNTaskConfig

    task = CNNTaskConfig()
    cnn_task = nao_search.with_regularization(task, output_dropout=0.3, path_keep=0.7)
    assert (cnn_task.supernet.dropout, cnn_task.supernet.drop_path_keep) == (0.3, 0.7)
    assert cnn_task.final == task.final and cnn_task.optimizer == task.optimizer
    assert rnn.optimizer == cpu_small_rnn_task().optimizer
    assert nao_search.with_regularization(task) is task
    with pytest.raises(ValueError, match="output_dropout must be a finite number in"):
        nao_search.with_regularization(cpu_small_rnn_task(), output_dropout=1.0)


def test_config_validation_and_schedule():
    with pytest.raises(ValueError, match="max_pool"):
        _config(seed_archs=20, max_pool=10)
    with pytest.raises(ValueError, match="new_archs"):
        _config(new_archs=-1)
    c = _config()
    assert NAOSearchConfig.from_json(c.to_json()) == c
    assert c.schedule().wpl_start_epoch == 1


def test_search_grows_pool_and_follows_wpl_schedule(tmp_path):
    task, nao, result = _run(tmp_path / "run", _config())
    hist = result.history
    assert [r["epoch"] for r in hist] == [0, 1, 2, 3]
    # Controller phases after epochs 1 and 3; new architectures only after epoch 1.
    assert hist[1]["new_archs"] >= 1 and hist[1]["pool_size_after"] == 6 + hist[1]["new_archs"]
    assert "new_archs" not in hist[0] and hist[3]["new_archs"] == 0
    assert len(result.pool) == hist[1]["pool_size_after"]
    for arch in result.pool:
        task.space.validate(arch)
    arch, err = result.best_architecture()
    assert err == pytest.approx(task.validation_error(arch))
    # WPL off in epoch 0, on with α = 10 afterwards.
    assert task.alphas[:5] == [(False, 0.0)] * 5
    assert task.alphas[5:] == [(True, 10.0)] * 15
    assert all(len(r["err1"]) == 5 and len(r["err2"]) == 5 for r in hist)
    saved = json.load(open(tmp_path / "run" / "history.json"))
    assert len(saved) == 4
    assert len(json.load(open(tmp_path / "run" / "pool.json"))) == len(result.pool)
    with pytest.raises(FileExistsError):
        _run(tmp_path / "run", _config())


@pytest.mark.slow
def test_resume_equals_uninterrupted(tmp_path):
    config = _config(epochs=3, checkpoint_every=1)
    ref_task, ref_nao, ref = _run(tmp_path / "ref", config)
    # Killed after 12 trained architectures (in epoch 2, after one controller phase).
    with pytest.raises(_Crash):
        _run(tmp_path / "cut", config, crash_after=12)
    task, nao, resumed = _run(tmp_path / "cut", config, resume=True)
    assert [r["err1"] for r in resumed.history] == [r["err1"] for r in ref.history]
    assert [r["err2"] for r in resumed.history] == [r["err2"] for r in ref.history]
    assert [r["archs"] for r in resumed.history] == [r["archs"] for r in ref.history]
    assert resumed.pool == ref.pool
    np.testing.assert_array_equal(task.w.numpy(), ref_task.w.numpy())
    for a, b in zip(nao.variables, ref_nao.variables):
        np.testing.assert_array_equal(a.numpy(), b.numpy())


def _saved_counters(out, config):
    """(epoch, phase, step) of the latest checkpoint under ``out``."""
    task = FakeTask(seed=1)
    nao = NAOController(task.space.decision_sizes, NAO_CFG, seed=2)
    manager, loop, _ = nao_search.make_checkpoint_manager(task, nao, str(out / "ckpt"))
    manager.checkpoint.restore(manager.latest_checkpoint).expect_partial()
    return int(loop.epoch.numpy()), int(loop.phase.numpy()), int(loop.step.numpy())


# Epoch 1 (5 architectures trained, then one NAO iteration) is killed inside the NAO iteration:
# by a crash (the last checkpoint is the one after its last trained architecture, or epoch 0's
# end without unit checkpoints), or by SIGTERM (deferred to the iteration's end and saved).
@pytest.mark.parametrize("how,checkpoint_every,saved", [
    ("crash", 1, (1, driver.SHARED, 5)),
    ("crash", 0, (1, driver.SHARED, 0)),
    ("sigterm", 0, (1, driver.CONTROLLER, 1)),
])
@pytest.mark.slow
def test_resume_killed_in_controller_phase_equals_uninterrupted(
        tmp_path, how, checkpoint_every, saved):
    config = _config(epochs=3, checkpoint_every=checkpoint_every)
    ref_task, ref_nao, ref = _run(tmp_path / "ref", config)
    task = FakeTask(seed=1)
    nao = NAOController(task.space.decision_sizes, NAO_CFG, seed=2)
    fit = nao.fit

    def killed_fit(*args, **kwargs):
        if how == "crash":
            raise _Crash("simulated kill in the NAO iteration")
        os.kill(os.getpid(), signal.SIGTERM)
        return fit(*args, **kwargs)

    nao.fit = killed_fit
    out = tmp_path / "cut"
    expected = _Crash if how == "crash" else SearchInterrupted
    with pytest.raises(expected):
        run_nao_search(task, nao, config, str(out), seed=3, handle_signals=how == "sigterm")
    assert int(task.calls.numpy()) == 10  # both epochs' architectures trained, then killed
    assert _saved_counters(out, config) == saved
    np.random.seed(999)  # resume restores the global RNGs too
    task, nao, resumed = _run(out, config, resume=True)
    strip = lambda h: [{k: v for k, v in r.items() if k != "epoch_seconds"} for r in h]
    assert strip(resumed.history) == strip(ref.history)
    assert resumed.pool == ref.pool
    np.testing.assert_array_equal(resumed.pool_errors, ref.pool_errors)
    np.testing.assert_array_equal(task.w.numpy(), ref_task.w.numpy())
    for a, b in zip(task.wpl_state.fisher + task.wpl_state.anchors,
                    ref_task.wpl_state.fisher + ref_task.wpl_state.anchors):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    for a, b in zip(nao.variables, ref_nao.variables):
        np.testing.assert_array_equal(a.numpy(), b.numpy())


def test_verbose_prints_progress_and_pool(tmp_path, capsys):
    _run(tmp_path / "run", _config(epochs=2, verbose=1))
    out = capsys.readouterr().out
    assert "Epoch 1/2 (WPL off)" in out and "Epoch 2/2 (WPL on)" in out
    assert out.count("err2-err1: mean") == 2 and "; mean err1" in out
    assert out.rstrip().endswith("pool 6")  # the last epoch scores the pool, adds none


def test_mismatched_controller_is_an_error(tmp_path):
    task = FakeTask()
    nao = NAOController((3, 3), NAO_CFG, seed=0)
    with pytest.raises(ValueError, match="decision sizes"):
        run_nao_search(task, nao, _config(), str(tmp_path), handle_signals=False)


@pytest.mark.slow
def test_app_search_derive_and_resume(tmp_path, capsys):
    from apps import nao_search as app

    data = tmp_path / "ptb"
    data.mkdir()
    rng = np.random.default_rng(0)
    words = np.array(["the", "cat", "sat", "on", "a", "mat", "dog", "ran"])
    for split, n in (("train", 30), ("valid", 10), ("test", 10)):
        (data / f"{split}.txt").write_text(
            "\n".join(" ".join(rng.choice(words, 8)) for _ in range(n)) + "\n")
    out = tmp_path / "run"
    args = ["--preset", "tiny", "--data-dir", str(data), "--out", str(out), "--quiet",
            "--output-dropout", "0.25", "--epochs", "2"]
    assert app.main(args) == 0
    line = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert line["epochs"] == 2
    saved = json.load(open(out / "nao_experiment.json"))
    assert saved["output_dropout"] == 0.25 and saved["search"]["epochs"] == 2
    assert app.main(["derive", "--out", str(out)]) == 0
    derived = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert derived["arch"] == json.load(open(out / "derived.json"))["arch"]
    with pytest.raises(FileExistsError):
        app.main(["--out", str(out), "--data-dir", str(data)])
    assert app.main(["--out", str(out), "--data-dir", str(data), "--resume", "--epochs", "3"]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["epochs"] == 3
