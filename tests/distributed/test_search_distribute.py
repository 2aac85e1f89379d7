"""The ENAS and NAO searches under ``tf.distribute``: two MultiWorkerMirroredStrategy workers on
127.0.0.1 (the RNN ENAS search, stopped by a signal to one worker, resumed, and equal to one
device; only the chief writes ``out_dir``), one NAO epoch on one device against
MirroredStrategy over two logical CPUs (both WPL modes), and a search resumed under another
strategy than it was checkpointed under. The chief / output-folder / signal helpers of
:mod:`wpl_keras.nas.search.distribute` are tested in ``tests/nas/search/test_distribute.py``.

The distributed runs need ``TF_CONFIG`` or logical devices before TensorFlow initialises, so they
run in three subprocesses started together (two workers and one process with two logical CPUs),
so that their start-ups overlap.

Tolerance of "agree": ``|a - b| <= RTOL * |a| + ATOL`` with ``RTOL = 1e-5`` and
``ATOL = 1e-6``; architectures (sampled by the controller or drawn from the pool) must be equal.
The two-replica runs (two logical CPUs, or two workers) sum the rows' losses and gradients in
another order than one device, so the values are equal up to float32 rounding, not bit for
bit; the two workers all-reduce the same values, so they agree with each other too.

What a resumed search carries over, whatever the strategies: everything. The RNN task keeps the
FULL carried hidden state ``[batch, H]`` (training and reward) in its checkpoint, the same
value on every replica, and each replica reads its rows of it; a run resumed under another
device count re-slices it. The shared weights, optimizer, WPL Fisher, anchors and strength,
the data positions, the controller and REINFORCE state, the loop counters, the partial epoch
and the RNG states are plain (mirrored) variables and restore as they are.
"""

import json
import os
import pathlib
import signal
import subprocess
import sys

import numpy as np
import pytest

from wpl_keras.nas.search.distribute import free_ports, local_tf_config

ROOT = pathlib.Path(__file__).resolve().parents[2]
RTOL, ATOL = 1e-5, 1e-6

_TINY_PTB = """
import os
import numpy as np

def write_tiny_ptb(directory, words=30, lines=60):
    rng = np.random.default_rng(0)
    vocab = [f"w{i}" for i in range(words - 1)] + ["<unk>"]
    os.makedirs(directory, exist_ok=True)
    for split, n in (("train", lines), ("valid", lines // 4), ("test", lines // 4)):
        with open(os.path.join(directory, f"{split}.txt"), "w") as f:
            if split == "train":
                f.write(" " + " ".join(vocab) + " \\n")
            for _ in range(n):
                f.write(" " + " ".join(rng.choice(vocab, 8)) + " \\n")
"""

_HISTORY = """
KEYS = ("epoch", "archs", "err1", "err2", "train_loss", "train_penalty", "mean_reward",
        "fisher_norm", "wpl_strength", "wpl_active")

def history(records):
    return [{k: r[k] for k in KEYS if k in r} for r in records]
"""

# Two workers of a MultiWorkerMirroredStrategy run the tiny RNN ENAS experiment (the settings of
# the one-device reference below), both writing the same out_dir. Worker 1 alone gets a SIGINT
# in the second shared unit: both workers must stop there, save, and resume to the end (with
# the same objects: a process configures its collectives once).
_WORKER = _HISTORY + """
import json, os, signal, sys
from wpl_keras.experiments import enas
from wpl_keras.nas.search.driver import SearchInterrupted
from wpl_keras.nas.search.enas import run_search

data_dir, out_dir, signalled = sys.argv[1], sys.argv[2], sys.argv[3] == "1"
config = enas.get_preset("rnn", "tiny").replace(
    task={"strategy": "multi_worker"}, search={"epochs": 2, "wpl_start_epoch": 0})
built, build = [], enas.build_search

def build_and_keep(config, data):
    task, controller, reinforce = build(config, data)
    if signalled:
        train, units = task.train_architecture, []
        def signalled_train(arch, num_batches, *, wpl_active):
            units.append(arch)
            if len(units) == 2:
                os.kill(os.getpid(), signal.SIGINT)
            return train(arch, num_batches, wpl_active=wpl_active)
        task.train_architecture = signalled_train
    built.extend([task, controller, reinforce])
    return task, controller, reinforce

enas.build_search = build_and_keep
stop = None
try:
    enas.run_search_experiment(config, data_dir, out_dir, verify=False)
except SearchInterrupted as error:
    stop = {"signum": int(error.signum), "checkpoint": os.path.basename(error.checkpoint)}
result = run_search(*built, config.search, out_dir, resume=True)
print(json.dumps({"out_dir": result.out_dir, "checkpoint": result.checkpoint, "stop": stop,
                  "replicas": int(built[0].strategy.num_replicas_in_sync),
                  "history": history(result.history)}), flush=True)
"""

# One process with two logical CPUs: NAO one device vs mirrored, and resumes across strategies.
_MIRRORED = """
from wpl_keras.nas.search.distribute import split_cpu
split_cpu(2)
""" + _HISTORY + """
import dataclasses, json, os, signal, sys
import numpy as np
import tensorflow as tf
from wpl_keras.experiments import enas, nao as nao_experiment
from wpl_keras.nas.search.nao import run_nao_search
from wpl_keras.nas.search.driver import SearchInterrupted
from wpl_keras.nas.search.enas import run_search

DATA, OUT = sys.argv[1], sys.argv[2]

def flat(variables):
    return np.concatenate([np.ravel(tf.convert_to_tensor(v).numpy()) for v in variables]).tolist()

def nao_run(kind, mode):
    # One NAO epoch of the tiny RNN preset with WPL on from its first architecture.
    config = nao_experiment.nao_preset("rnn", "tiny").replace(
        search={"epochs": 1, "wpl_start_epoch": 0, "shared_steps_per_epoch": 5})
    task_config = dataclasses.replace(config.base.task, strategy=kind,
                                      wpl=dataclasses.replace(config.base.task.wpl, mode=mode))
    config = dataclasses.replace(config, base=dataclasses.replace(config.base, task=task_config))
    data, config = nao_experiment.prepare_nao(config, DATA, verify=False)
    task, nao = nao_experiment.build_nao_search(config, data)
    result = run_nao_search(task, nao, config.search, os.path.join(OUT, f"nao_{kind}_{mode}"),
                            seed=config.base.seed, handle_signals=False)
    state = task.wpl_state
    return {"replicas": int(task.strategy.num_replicas_in_sync),
            "weights": flat(task.supernet.trainable_variables), "fisher": flat(state.fisher),
            "anchors": flat(state.anchors), "history": history(result.history),
            "pool": [list(a) for a in result.pool], "pool_errors": result.pool_errors}

def enas_run(kind, out, *, stop_after=None, resume=False):
    # The tiny RNN ENAS search, 2 epochs with WPL from the first; with stop_after, SIGINT
    # arrives during that shared unit (the driver saves after it and raises).
    config = enas.get_preset("rnn", "tiny").replace(
        task={"strategy": kind}, search={"epochs": 2, "wpl_start_epoch": 0})
    data, config = enas.prepare(config, DATA, verify=False)
    task, controller, reinforce = enas.build_search(config, data)
    if stop_after:
        train, units = task.train_architecture, []
        def interrupted_train(arch, num_batches, *, wpl_active):
            units.append(arch)
            if len(units) == stop_after:
                os.kill(os.getpid(), signal.SIGINT)
            return train(arch, num_batches, wpl_active=wpl_active)
        task.train_architecture = interrupted_train
    try:
        result = run_search(task, controller, reinforce, config.search, out, resume=resume)
    except SearchInterrupted:
        state = task.checkpoint_items()["train_state"]
        return {"interrupted": True, "replicas": int(task.strategy.num_replicas_in_sync),
                "state_norm": float(tf.norm(tf.convert_to_tensor(state)))}
    return {"interrupted": False, "replicas": int(task.strategy.num_replicas_in_sync),
            "history": history(result.history)}

out = {}
for mode in ("proximal", "gradient"):
    out[f"nao_one_{mode}"] = nao_run("default", mode)
    out[f"nao_two_{mode}"] = nao_run("mirrored", mode)
out["reference"] = enas_run("default", os.path.join(OUT, "reference"))
for first, then in (("mirrored", "default"), ("default", "mirrored")):
    folder = os.path.join(OUT, f"{first}_to_{then}")
    out[f"{first}_stop"] = enas_run(first, folder, stop_after=5)  # epoch 1's 2nd shared unit
    out[f"{first}_to_{then}"] = enas_run(then, folder, resume=True)
print(json.dumps(out), flush=True)
"""


def _start(code, args, env_extra=None):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=str(ROOT))
    env.pop("TF_CONFIG", None)
    env.update(env_extra or {})
    return subprocess.Popen([sys.executable, "-c", code, *args], cwd=str(ROOT), env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _last_json(proc, timeout=400):
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        pytest.fail(f"subprocess timed out; stderr tail:\n{err[-3000:]}")
    lines = [line for line in out.splitlines() if line.startswith("{")]
    assert proc.returncode == 0 and lines, f"subprocess failed ({proc.returncode}):\n{err[-4000:]}"
    return json.loads(lines[-1])


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("search_distribute")
    data = root / "ptb"
    namespace = {}
    exec(_TINY_PTB, namespace)  # the same tiny corpus the subprocesses read
    namespace["write_tiny_ptb"](str(data))
    shared_out = root / "multi_worker"
    ports = free_ports(2)
    procs = {
        f"worker{i}": _start(_WORKER, [str(data), str(shared_out), str(i)],
                             {"TF_CONFIG": local_tf_config(ports, i)})
        for i in range(2)
    }
    procs["mirrored"] = _start(_MIRRORED, [str(data), str(root / "mirrored")])
    try:
        results = {name: _last_json(proc) for name, proc in procs.items()}
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
    results["shared_out"] = str(shared_out)
    return results


def _close(a, b, what):
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    assert a.shape == b.shape, (what, a.shape, b.shape)
    np.testing.assert_allclose(b, a, rtol=RTOL, atol=ATOL, err_msg=what)


def _same_history(one, two, what):
    assert len(one) == len(two), what
    for r1, r2 in zip(one, two):
        assert r1["archs"] == r2["archs"], (what, r1["epoch"])
        assert r1["wpl_active"] == r2["wpl_active"] and r1["wpl_strength"] == r2["wpl_strength"], what
        for key in ("err1", "err2", "train_loss", "train_penalty", "mean_reward",
                    "fisher_norm"):
            if key in r1:
                _close(r1[key], r2[key], f"{what}: epoch {r1['epoch']} {key}")


# --------------------------------------------------------------------------- multi-worker


def test_two_workers_complete_the_rnn_search_and_agree(runs):
    """Both workers finish (after the stop and resume below) with the same history, which is
    the one-device search's."""
    chief, other = runs["worker0"], runs["worker1"]
    for result in (chief, other):
        assert result["replicas"] == 2 and result["checkpoint"]
        assert [r["epoch"] for r in result["history"]] == [0, 1]
        assert result["history"][1]["wpl_active"] and result["history"][1]["fisher_norm"] > 0
        assert all(np.isfinite(result["history"][1]["err2"]))
    _same_history(chief["history"], other["history"], "worker 0 vs worker 1")
    _same_history(runs["mirrored"]["reference"]["history"], chief["history"],
                  "one device vs two workers")


def test_a_signal_to_one_worker_stops_every_worker_at_the_same_unit(runs):
    """SIGINT reached worker 1 only; both saved the same unit (the same checkpoint number,
    each in its own folder) and raised SearchInterrupted, so neither waits on the other."""
    assert runs["worker1"]["stop"] == runs["worker0"]["stop"]
    assert runs["worker0"]["stop"]["signum"] == signal.SIGINT
    assert runs["worker0"]["stop"]["checkpoint"].startswith("ckpt-")


def test_only_the_chief_writes_the_out_dir(runs):
    out = pathlib.Path(runs["shared_out"])
    private = out / "workers" / "worker_1"
    assert runs["worker0"]["out_dir"] == str(out)
    assert runs["worker1"]["out_dir"] == str(private)
    for folder, result in ((out, runs["worker0"]), (private, runs["worker1"])):
        for name in ("history.json", "history.csv", "experiment.json", "data_source.json",
                     "search_config.json", "task_config.json"):
            assert (folder / name).is_file(), folder / name
        assert result["checkpoint"].startswith(str(folder / "ckpt"))
        assert (folder / "ckpt" / "checkpoint").is_file()
    assert sorted(p.name for p in (out / "workers").iterdir()) == ["worker_1"]
    with open(out / "history.json") as f:
        written = json.load(f)
    assert [r["archs"] for r in written] == [r["archs"] for r in runs["worker0"]["history"]]


# --------------------------------------------------------------------------- NAO, 2 CPUs


@pytest.mark.parametrize("mode", ["proximal", "gradient"])
def test_nao_epoch_on_two_cpus_matches_one_device(runs, mode):
    one, two = runs["mirrored"][f"nao_one_{mode}"], runs["mirrored"][f"nao_two_{mode}"]
    assert one["replicas"] == 1 and two["replicas"] == 2
    record = one["history"][0]
    assert record["wpl_active"] and record["train_penalty"] > 0  # WPL acted in this epoch
    assert len(set(map(tuple, record["archs"]))) >= 2
    assert float(np.abs(one["fisher"]).sum()) > 0
    _same_history(one["history"], two["history"], f"NAO {mode}")
    for key in ("weights", "fisher", "anchors", "pool_errors"):
        _close(one[key], two[key], f"NAO {mode} {key}")
    assert one["pool"] == two["pool"]


# --------------------------------------------------------------------------- resume


@pytest.mark.parametrize("first,then", [("mirrored", "default"), ("default", "mirrored")])
def test_search_resumes_under_another_strategy(runs, first, then):
    """A search interrupted mid-epoch (after the second shared unit of epoch 1, 0-based, so
    the carried hidden state is not zero) under ``first`` and resumed under ``then`` continues
    where it stopped and equals the uninterrupted one-device search."""
    stopped = runs["mirrored"][f"{first}_stop"]
    resumed = runs["mirrored"][f"{first}_to_{then}"]
    reference = runs["mirrored"]["reference"]
    assert stopped["interrupted"] and stopped["state_norm"] > 0
    assert stopped["replicas"] == (2 if first == "mirrored" else 1)
    assert not resumed["interrupted"]
    assert resumed["replicas"] == (2 if then == "mirrored" else 1)
    assert [r["epoch"] for r in resumed["history"]] == [0, 1]
    _same_history(reference["history"], resumed["history"], f"{first} -> {then}")


# --------------------------------------------------------------------------- helpers
