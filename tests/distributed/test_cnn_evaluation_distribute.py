"""The micro-CNN task's evaluation split over two logical CPUs equals one device.

``CNNSearchTask._eval_fn`` (behind ``validation_error``, ``reward`` and so derive's scoring)
runs each replica on its rows of the batch inside ``strategy.run``, with the supernet's
BatchNorm moments all-reduced over the replicas. The logical devices must be configured before
TensorFlow initialises, so the run is a subprocess.
"""

import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

pytestmark = pytest.mark.distributed

ROOT = pathlib.Path(__file__).resolve().parents[2]

_CODE = """
import json
import numpy as np
import tensorflow as tf
from wpl_keras.nas.search.distribute import make_strategy, split_cpu
split_cpu(2)
from wpl_keras.data.cifar10 import SearchSplits
from wpl_keras.nas.spaces.cnn.space import MicroCellSpace
from wpl_keras.nas.spaces.cnn.supernet import SupernetConfig
from wpl_keras.nas.spaces.cnn.task import CNNSearchTask, CNNTaskConfig

def run(strategy):
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (29, 8, 8, 3), dtype=np.uint8)
    y = rng.integers(0, 10, 29).astype(np.int32)
    splits = SearchSplits(x[:16], y[:16], x[16:], y[16:])
    space = MicroCellSpace(2)
    cfg = CNNTaskConfig(supernet=SupernetConfig(num_cells=1, filters=4, num_stages=1),
                        batch_size=8, eval_batch_size=5, fixed_valid_size=13, augment=False)
    task = CNNSearchTask(space, cfg, splits, strategy=strategy, seed=0)
    seen = []  # (training, replicas in sync) of every supernet call, when traced
    call = task.supernet.call
    def recording_call(inputs, training=False):
        context = tf.distribute.get_replica_context()
        seen.append([bool(training), None if context is None else
                     int(context.num_replicas_in_sync)])
        return call(inputs, training=training)
    task.supernet.call = recording_call
    rng = np.random.default_rng(1)
    archs = [space.sample(rng) for _ in range(3)]
    task.train_architecture(archs[0], 1, wpl_active=False)
    err1 = [task.validation_error(a) for a in archs]
    rewards = [task.reward(a) for a in archs]
    ce = []
    for n in (13, 1, 4):  # the whole fixed batch, fewer rows than replicas, an even split
        acc, loss = task._eval(task.fixed_images[:n], task.fixed_labels[:n], task._arch(archs[1]))
        ce += [float(acc), float(loss)]
    return {"err1": err1, "rewards": rewards, "ce": ce, "eval_traces": task.eval_traces,
            "eval_calls": [s for s in seen if not s[0]]}

print(json.dumps({"one": run(make_strategy("default")), "two": run(make_strategy("mirrored"))}))
"""


@pytest.fixture(scope="module")
def runs():
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=str(ROOT))
    env.pop("TF_CONFIG", None)
    proc = subprocess.run([sys.executable, "-c", _CODE], cwd=str(ROOT), env=env,
                          capture_output=True, text=True, timeout=600)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    assert proc.returncode == 0 and lines, proc.stderr[-3000:]
    return json.loads(lines[-1])


def test_evaluation_runs_on_each_replica(runs):
    """The evaluation traces once, and its supernet call is traced once per replica, inside
    a replica context of 2 replicas (each replica scores its rows), not once in
    cross-replica context on one device."""
    assert runs["two"]["eval_traces"] == 1 and runs["one"]["eval_traces"] == 1
    assert runs["two"]["eval_calls"] == [[False, 2], [False, 2]], runs["two"]["eval_calls"]
    assert runs["one"]["eval_calls"] == [[False, 1]], runs["one"]["eval_calls"]


def test_split_evaluation_equals_one_device(runs):
    """err1, rewards and (accuracy, cross-entropy) on 13, 1 and 4 fixed images agree.

    Tolerance: err1 and rewards are correct counts over the batch, so they must be equal
    (``abs`` difference <= 1e-9); the cross-entropies agree to ``rtol 1e-5, atol 1e-6``
    (BatchNorm moments from all-reduced shifted sums on two replicas, one fused kernel on one
    device: the same values up to the order of the sums)."""
    one, two = runs["one"], runs["two"]
    assert len(set(one["ce"][1::2])) == 3  # the three batches score differently
    np.testing.assert_allclose(two["err1"], one["err1"], rtol=0, atol=1e-9)
    np.testing.assert_allclose(two["rewards"], one["rewards"], rtol=0, atol=1e-9)
    np.testing.assert_allclose(two["ce"], one["ce"], rtol=1e-5, atol=1e-6)
