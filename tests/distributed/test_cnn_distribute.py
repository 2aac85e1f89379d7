"""Tests for strategy selection and distributed supernet training on CPU.

The distributed runs need logical devices or TF_CONFIG set before TensorFlow initialises,
so they run in subprocesses (started together, so their start-up overlaps).
"""

import json
import os
import pathlib
import re
import subprocess
import sys

import numpy as np
import pytest

from wpl_keras.nas.search.distribute import free_ports, local_tf_config

ROOT = pathlib.Path(__file__).resolve().parents[2]

_COMMON = """
import json, sys
import numpy as np
import tensorflow as tf
from wpl_keras.data.cifar10 import SearchSplits
from wpl_keras.nas.spaces.cnn.space import MicroCellSpace
from wpl_keras.nas.spaces.cnn.task import CNNSearchTask, CNNTaskConfig
from wpl_keras.nas.spaces.cnn.supernet import SupernetConfig
from wpl_keras.wpl.config import WPLConfig

def run(strategy, mode="proximal", stages=2):
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (48, 8, 8, 3), dtype=np.uint8)
    y = rng.integers(0, 10, 48).astype(np.int32)
    splits = SearchSplits(x[:32], y[:32], x[32:], y[32:])
    space = MicroCellSpace(2)
    # 15 fixed and 7 reward images (odd sizes); two stages: a reduction cell too (one stage,
    # a normal cell only, for the gradient mode: the cells and the WPL step are the same code
    # in both modes, and a smaller graph compiles in half the time). Every
    # BatchNorm runs on batch statistics: in training they are all-reduced over the replicas
    # (each replica's half of the batch is normalised as the whole batch is on one device),
    # and so in evaluation, which splits each batch over the replicas too.
    cfg = CNNTaskConfig(supernet=SupernetConfig(num_cells=1, filters=4, num_stages=stages),
                        batch_size=8, eval_batch_size=7, fixed_valid_size=15, augment=False,
                        wpl=WPLConfig(mode=mode))
    task = CNNSearchTask(space, cfg, splits, strategy=strategy, seed=0)
    task.wpl_state.strength.assign(60.0)  # alpha as the search driver would write it
    seen = []  # (training, replicas in sync) of every supernet call, when traced
    call = task.supernet.call
    def recording_call(inputs, training=False):
        context = tf.distribute.get_replica_context()
        seen.append([bool(training), None if context is None else
                     int(context.num_replicas_in_sync)])
        return call(inputs, training=training)
    task.supernet.call = recording_call
    rng = np.random.default_rng(1)
    archs = [space.sample(rng) for _ in range(3)]  # the third one has a Fisher and anchors
    values = []
    for k, arch in enumerate(archs):
        out = task.train_architecture(arch, 2, wpl_active=k > 0)
        values += [out["loss"], out["penalty"]]
    values += [task.validation_error(archs[0]), float(task.wpl_state.fisher_norm())]
    train_graph = task._train_step._list_all_concrete_functions()[0].graph.as_graph_def()
    ops = [n.op for n in train_graph.node] + [
        n.op for f in train_graph.library.function for n in f.node_def]
    return {"values": values, "replicas": int(strategy.num_replicas_in_sync),
            "steps": int(task.step.numpy()), "traces": task.train_traces,
            "optionals": ops.count("OptionalFromValue"), "eval_calls": [c for c in seen if not c[0]],
            **evaluate(task, archs)}

def evaluate(task, archs):
    # err1, reward and the mean cross-entropy on the fixed batch (15 images: an uneven split)
    # of the 3 trained and 3 new architectures, then accuracy and cross-entropy on the first 1
    # (fewer rows than replicas) and 4 (an even split) fixed images.
    rng = np.random.default_rng(2)
    archs = archs + [task.space.sample(rng) for _ in range(3)]
    err1, rewards, ce = [], [], []
    for arch in archs:
        err1.append(task.validation_error(arch))
        rewards.append(task.reward(arch))
        ce.append(float(task._eval(task.fixed_images, task.fixed_labels, task._arch(arch))[1]))
    for n in (1, 4):
        acc, loss = task._eval(task.fixed_images[:n], task.fixed_labels[:n], task._arch(archs[0]))
        ce += [float(acc), float(loss)]
    return {"err1": err1, "rewards": rewards, "eval_ce": ce, "eval_traces": task.eval_traces}
"""

_MIRRORED = """
from wpl_keras.nas.search.distribute import make_strategy, split_cpu
split_cpu(2)
""" + _COMMON + """
one = run(make_strategy("default"))
two = run(make_strategy("mirrored"))
# the gradient mode's two replicas are the two workers' (against this one device)
one_gradient = run(make_strategy("default"), "gradient", stages=1)
print(json.dumps({"one": one, "two": two, "one_gradient": one_gradient}))
"""

_WORKER = """
from wpl_keras.nas.search.distribute import make_strategy
strategy = make_strategy("auto")
""" + _COMMON + """
# the gradient mode's one-stage supernet, as the mirrored script's one_gradient run
print(json.dumps({"kind": type(strategy).__name__, **run(strategy, "gradient", stages=1)}),
      flush=True)
"""


def _start(code, env_extra=None):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=str(ROOT))
    env.pop("TF_CONFIG", None)
    env.update(env_extra or {})
    return subprocess.Popen([sys.executable, "-c", code], cwd=str(ROOT), env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _last_json(proc, timeout=900):  # four CNN runs on 2 shared cores
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        pytest.fail(f"subprocess timed out; stderr tail:\n{err[-2000:]}")
    lines = [line for line in out.splitlines() if line.startswith("{")]
    assert proc.returncode == 0 and lines, f"subprocess failed ({proc.returncode}):\n{err[-3000:]}"
    return {**json.loads(lines[-1]), "stderr": err}


@pytest.fixture(scope="module")
def runs():
    ports = free_ports(2)
    procs = {
        "mirrored": _start(_MIRRORED),
        "worker0": _start(_WORKER, {"TF_CONFIG": local_tf_config(ports, 0)}),
        "worker1": _start(_WORKER, {"TF_CONFIG": local_tf_config(ports, 1)}),
    }
    try:
        yield {**{name: _last_json(proc) for name, proc in procs.items()}, "ports": ports}
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()


def _pair(runs, mode):
    """One device and two replicas: in proximal mode a MirroredStrategy over two logical
    CPUs, in gradient mode the two workers (one replica each) of a multi-worker strategy."""
    if mode == "proximal":
        return runs["mirrored"]["one"], runs["mirrored"]["two"]
    return runs["mirrored"]["one_gradient"], runs["worker0"]


@pytest.mark.parametrize("mode", ["proximal", "gradient"])
def test_two_replicas_match_one_device(runs, mode):
    one, two = _pair(runs, mode)
    assert one["replicas"] == 1 and two["replicas"] == 2
    assert two["traces"] == 1
    assert one["values"][2] > 0  # something was trained
    assert one["values"][5] > 0  # the third architecture had a WPL penalty
    for a, b in zip(one["values"], two["values"]):
        assert abs(a - b) <= 1e-4 * max(1.0, abs(a)), (one["values"], two["values"])


@pytest.mark.parametrize("mode", ["proximal", "gradient"])
def test_no_switch_is_differentiated_by_tensorflow(runs, mode):
    """On one device and on two replicas every op, input and BN stage of the supernet has a
    written-out gradient (chosen_op, chosen_stage, chosen_input): the traced training step has
    none of the optionals TensorFlow adds when it differentiates through a ``tf.switch_case``
    whose branches have intermediates (they made the two-replica graph 2.6 times as many
    functions)."""
    for side, run in zip(("one", "two"), _pair(runs, mode)):
        assert run["optionals"] == 0, side


def test_evaluation_runs_on_each_replica(runs):
    """The evaluation traces once, and its supernet call is traced once per replica, inside
    a replica context of 2 replicas (each replica scores its rows of the batch), not once in
    cross-replica context on one device."""
    one, two = runs["mirrored"]["one"], runs["mirrored"]["two"]
    assert two["eval_calls"] == [[False, 2], [False, 2]], two["eval_calls"]
    assert one["eval_calls"] == [[False, 1]], one["eval_calls"]
    for name in ("worker0", "worker1"):  # one replica per worker, of two in sync
        assert runs[name]["eval_calls"] == [[False, 2]], runs[name]["eval_calls"]


@pytest.mark.parametrize("mode", ["proximal", "gradient"])
def test_replicated_evaluation_matches_one_device(runs, mode):
    """The replicated evaluation (err1 on the fixed batch, the reward's minibatches, and the
    mean cross-entropy behind them) on 2 logical CPUs equals one device after WPL training,
    over 6 architectures.

    Tolerance: err1 and rewards are correct counts over the batch, so they must be equal
    (``abs`` difference <= 1e-9; a count off by one would move err1 by 100/15); the
    cross-entropies agree to ``rtol 1e-5, atol 1e-6`` (the weights after training, with
    BatchNorm statistics all-reduced over the replicas, agree to float rounding).
    """
    one, two = _pair(runs, mode)
    assert two["eval_traces"] == 1 and one["eval_traces"] == 1
    assert len(one["err1"]) == len(one["rewards"]) == 6
    assert len(set(one["eval_ce"][:6])) == 6  # the architectures score differently
    np.testing.assert_allclose(two["err1"], one["err1"], rtol=0, atol=1e-9)
    np.testing.assert_allclose(two["rewards"], one["rewards"], rtol=0, atol=1e-9)
    np.testing.assert_allclose(two["eval_ce"], one["eval_ce"], rtol=1e-5, atol=1e-6)
    assert one["err1"][0] == pytest.approx(one["values"][-2])  # err1 before the new archs


def test_two_workers_complete_steps(runs):
    for name in ("worker0", "worker1"):
        result = runs[name]
        assert result["replicas"] == 2
        assert "CollectiveAllReduce" in result["kind"] or "MultiWorker" in result["kind"]
        assert result["steps"] == 6  # 3 architectures x 2 batches
        assert all(v == v for v in result["values"])  # no NaN
    # both workers apply the same all-reduced updates and evaluate alike
    for key in ("values", "err1", "rewards", "eval_ce"):
        assert runs["worker0"][key] == pytest.approx(runs["worker1"][key], rel=1e-5)


def test_each_worker_says_where_its_server_really_listens(runs):
    """TF_CONFIG names 127.0.0.1, but TensorFlow's gRPC server listens on every interface:
    each worker says so on stderr, with the port of its TF_CONFIG entry, and warns."""
    for index, port in enumerate(runs["ports"]):
        err = runs[f"worker{index}"]["stderr"]
        found = re.search(rf"multi-worker task /job:worker/task:{index} listening on "
                          rf"(\S+):{port} \(([^)]*)\)", err)
        assert found, err[-2000:]
        if found.group(1) != "127.0.0.1":  # TensorFlow 2.x: [::], every interface
            assert found.group(2) == "every interface, IPv4 and IPv6", found.group(0)
            assert f"asked for 127.0.0.1:{port}: TensorFlow's gRPC server cannot bind" in err
            assert f"WARNING: port {port} is open to every machine" in err
