"""The ENAS RNN search task under ``tf.distribute``: two logical CPUs match one device.

Everything that needs two logical CPU devices runs in ONE subprocess (the devices must be
configured before TensorFlow initialises; start-up dominates), which prints one JSON line.
For a tiny random PTB-like corpus, with every dropout on, WPL on (``α`` = 60 written into
``task.wpl_state.strength``), ``wpl_scope`` ``"cell"`` and ``"all"``, in both WPL modes
(``"gradient"``, ``"proximal"``), a task under the default strategy (one device) and a task
under ``MirroredStrategy`` over the two CPUs train the same 5 architectures x 2 batches
(WPL from the second architecture on), scoring each with ``validation_error`` (err1) and
``reward``. Two more pairs take the Fisher from validation batches (``wpl.fisher_source =
"valid"``, scope ``"all"``): one plain, one with the release's options below.
Two more pairs run the release's supernet options on top of the dropouts: output
BatchNorm (statistics over the global batch: each replica's row sums are all-reduced, in
training and evaluation), weight-drop on ``W_h`` only and path dropping (keep 0.7, one mask
per step for the whole batch; the first pair also carries the last node as the state, as
the release), at learning rate 1 (``γ``, ``β`` uniform ±0.025 as the
release; and ``γ = 1``, ``β = 0`` with init ±0.3). BatchNorm divides by each step's ``σ``
over the few rows of these tiny batches, which amplifies the float32 rounding of the
replicas' smaller matmuls; at the reference rate (≈ 18 here) ten steps grow it past the
tolerance, at rate 1 it stays within (a well-conditioned single step agrees to 3e-7
relative, so the synchronised gradient itself is exact up to rounding).

Tolerance: every compared value (losses, penalties, gradient norms, err1, rewards, every
supernet variable including the dropout seed state, every Fisher and anchor, the optimizer's
variables and the carried hidden states) agrees with ``rtol = 1e-5, atol = 1e-6``
(``numpy.testing.assert_allclose``). Two replicas differ from one device only by float
rounding: each replica's mean cross-entropy over its rows, scaled by its share of the batch,
and its gradients are summed over replicas, where one device averages all rows at once.
"""

import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
RTOL, ATOL = 1e-5, 1e-6
MODES = ("gradient", "proximal")
SCOPES = ("cell", "all")

_SCRIPT = r"""
import json, sys
from wpl_keras.nas.search.distribute import make_strategy, split_cpu
split_cpu(2)
import numpy as np
import tensorflow as tf
from wpl_keras.data.ptb import PTBCorpus
from wpl_keras.nas.spaces.rnn.task import RNNSearchTask
from wpl_keras.nas.spaces.rnn.config import RNNModelConfig, RNNSupernetConfig
from wpl_keras.wpl.config import WPLConfig
from wpl_keras.experiments.presets import cpu_small_rnn_task

V = 30
ONE, TWO = make_strategy("default"), make_strategy("mirrored")


def corpus():
    rng = np.random.default_rng(0)
    ids = lambda n: rng.integers(0, V, n).astype(np.int32)
    return PTBCorpus(ids(400), ids(120), ids(60), [f"w{i}" for i in range(V)], {})


RELEASE = {
    "gradient_all_release": ("gradient", "all", dict(
        output_batch_norm=True, batch_norm_init="uniform", weight_drop_scope="recurrent",
        recurrent_state="last_node", path_keep=0.7, init_range=0.025)),
    "proximal_cell_release": ("proximal", "cell", dict(
        output_batch_norm=True, batch_norm_init="unit", weight_drop_scope="recurrent",
        path_keep=0.7, init_range=0.3)),
}
RELEASE_LR = 1.0
VALID_FISHER = {
    "proximal_all_valid_fisher": ("proximal", "all", None, {}),
    "gradient_all_release_valid_fisher": (
        "gradient", "all", RELEASE["gradient_all_release"][2],
        {"optimizer": {"learning_rate": RELEASE_LR}}),
}


def config(mode, scope, model=None, **kw):
    # cpu_small keeps the reference dropouts (all on); tiny sizes; `model`: more model fields.
    base = dict(batch_size=6, bptt=4, eval_batch_size=4, eval_bptt=3,
                wpl=WPLConfig(mode=mode), wpl_scope=scope)
    base.update(kw)
    return cpu_small_rnn_task(
        model=RNNModelConfig(num_nodes=4, vocab_size=V, embedding_size=6, hidden_size=6,
                             **(model or {})),
        **base)


def arrays(task):
    out = {f"supernet_{k}": v for k, v in enumerate(task.supernet.variables)}
    out.update({f"optimizer_{k}": v for k, v in enumerate(task.optimizer.variables)})
    out.update({f"fisher_{k}": v for k, v in enumerate(task.wpl_state.fisher)})
    out.update({f"anchor_{k}": v for k, v in enumerate(task.wpl_state.anchors)})
    out.update(train_state=task.train_state, reward_state=task.reward_state,
               train_position=task.train_position, valid_position=task.valid_position,
               # the Fisher validation pass's (named apart from the Fisher tensors)
               valid_pass_state=task.fisher_state, valid_pass_position=task.fisher_position,
               valid_pass_seed=task.fisher_seed_generator.state)
    return {k: np.asarray(tf.convert_to_tensor(v)).astype(np.float64).tolist()
            for k, v in out.items()}


def train(task, archs, first_wpl=1):
    values = {"loss": [], "penalty": [], "grad_norm": [], "err1": [], "reward": []}
    for k, arch in enumerate(archs):
        out = task.train_architecture(arch, 2, wpl_active=k >= first_wpl)
        for name in ("loss", "penalty", "grad_norm"):
            values[name].append(out[name])
        values["err1"].append(task.validation_error(arch))
        values["reward"].append(task.reward(arch))
    return values


def run(strategy, mode, scope, model=None, **kw):
    task = RNNSearchTask(corpus(), config(mode, scope, model, **kw), seed=0, strategy=strategy)
    task.start_epoch(17)  # a decayed learning rate, written in the strategy's variables
    task.wpl_state.strength.assign(60.0)
    rng = np.random.default_rng(1)
    archs = [task.space.sample(rng) for _ in range(5)]
    values = train(task, archs)
    return task, archs, {"values": values, "arrays": arrays(task),
                         "replicas": int(strategy.num_replicas_in_sync),
                         "traces": [task.trace_count, task.eval_trace_count,
                                    task.fisher_trace_count]}


def error_of(**kw):
    try:
        RNNSearchTask(corpus(), config("proximal", "cell", **kw), strategy=TWO)
    except ValueError as error:
        return str(error)
    return None


def resume(saved, strategy, mode, scope, archs, path):
    # Checkpoint `saved`, restore into a fresh task under `strategy`, continue both.
    ckpt = tf.train.Checkpoint(**saved.checkpoint_items()).write(path)
    task = RNNSearchTask(corpus(), config(mode, scope), seed=0, strategy=strategy)
    tf.train.Checkpoint(**task.checkpoint_items()).read(ckpt).assert_consumed()
    restored = arrays(task)
    return {"restored": restored, "saved_arrays": arrays(saved),
            "saved": train(saved, archs, 0), "resumed": train(task, archs, 0),
            "saved_after": arrays(saved), "resumed_after": arrays(task),
            "replicas": [int(saved.strategy.num_replicas_in_sync),
                         int(strategy.num_replicas_in_sync)]}


out_dir = sys.argv[1]
results = {"runs": {}}
for mode in ("gradient", "proximal"):
    for scope in ("cell", "all"):
        one_task, archs, one = run(ONE, mode, scope)
        two_task, _, two = run(TWO, mode, scope)
        results["runs"][f"{mode}_{scope}"] = {"one": one, "two": two}
for name, (mode, scope, model) in RELEASE.items():
    lr = {"optimizer": {"learning_rate": RELEASE_LR}}
    results["runs"][name] = {"one": run(ONE, mode, scope, model, **lr)[2],
                             "two": run(TWO, mode, scope, model, **lr)[2]}
# The Fisher from validation batches: plain dropouts at the reference rate, and the release's
# options (synchronised BN over the validation pass's global batch too) at rate 1.
for name, (mode, scope, model, lr) in VALID_FISHER.items():
    valid = dict(wpl=WPLConfig(mode=mode, fisher_source="valid"), **lr)
    results["runs"][name] = {"one": run(ONE, mode, scope, model, **valid)[2],
                             "two": run(TWO, mode, scope, model, **valid)[2]}
# Resume across device counts (proximal, scope "all", the last pair above), both ways.
results["resume_two_to_one"] = resume(two_task, ONE, "proximal", "all", archs[:2],
                                      f"{out_dir}/two")
results["resume_one_to_two"] = resume(one_task, TWO, "proximal", "all", archs[:2],
                                      f"{out_dir}/one")
results["errors"] = {
    "batch_size": error_of(batch_size=5),
    "eval_batch_size": error_of(eval_batch_size=3),
    "jit_compile": error_of(jit_compile=True),
}
print(json.dumps(results))
"""


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    out = tmp_path_factory.mktemp("rnn_distribute")
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=str(ROOT))
    env.pop("TF_CONFIG", None)
    proc = subprocess.run([sys.executable, "-c", _SCRIPT, str(out)], cwd=str(ROOT), env=env,
                          capture_output=True, text=True, timeout=600)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    assert proc.returncode == 0 and lines, (
        f"subprocess failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    return json.loads(lines[-1])


def _assert_close(one: dict, two: dict, what: str) -> None:
    assert sorted(one) == sorted(two), what
    for name in one:
        np.testing.assert_allclose(np.asarray(two[name]), np.asarray(one[name]), rtol=RTOL,
                                   atol=ATOL, err_msg=f"{what}: {name}")


@pytest.mark.parametrize("scope", SCOPES)
@pytest.mark.parametrize("mode", MODES)
def test_two_cpus_match_one_device(results, mode, scope):
    _check_pair(results["runs"][f"{mode}_{scope}"], mode, scope, dense_weights=4, lr=20.0)


@pytest.mark.parametrize("mode, scope", [("gradient", "all"), ("proximal", "cell")])
def test_two_cpus_match_one_device_with_synchronised_batch_norm_and_path_dropping(
        results, mode, scope):
    """Output BatchNorm over the global batch (unsynchronised statistics over 3 rows per
    replica would differ from one device's over 6), recurrent weight-drop, path dropping."""
    run = results["runs"][f"{mode}_{scope}_release"]
    # With the last node carried, a step whose path mask drops the last node's input carries
    # s = p + c (f(0) − p) = 0 at p = 0 (tanh, ReLU, identity): the state may end at zero.
    _check_pair(run, mode, scope, dense_weights=6, lr=1.0,
                carried="reward_state" if mode == "gradient" else "train_state")
    # embedding, w_x, w_h, w_nodes, decoder bias, BN gamma and beta, the seed state
    assert len([k for k in run["one"]["arrays"] if k.startswith("supernet_")]) == 8


def _check_pair(run, mode, scope, dense_weights, lr, carried="train_state"):
    """One device and two CPUs agree on every value and variable, and the run did real
    work (WPL acted, architectures differ, every covered weight got a Fisher)."""
    one, two = run["one"], run["two"]
    assert (one["replicas"], two["replicas"]) == (1, 2)
    _assert_close(one["values"], two["values"], f"{mode}/{scope} values")
    _assert_close(one["arrays"], two["arrays"], f"{mode}/{scope} variables")
    # The comparison covers real work: WPL acted, dropout and training moved the weights.
    values, arrays = one["values"], one["arrays"]
    assert max(values["penalty"]) > 0, values["penalty"]
    assert all(p == 0 for p in values["penalty"][:1])  # WPL off for the first architecture
    assert len(set(np.round(values["err1"], 6))) > 1  # the architectures differ
    fisher = [np.abs(np.asarray(v)).sum() for k, v in arrays.items() if k.startswith("fisher_")]
    assert len(fisher) == (1 if scope == "cell" else 1 + dense_weights)
    assert all(f > 0 for f in fisher)
    assert np.abs(np.asarray(arrays[carried])).sum() > 0
    scalars = [v for k, v in arrays.items() if k.startswith("optimizer_") and np.ndim(v) == 0]
    assert any(abs(v - lr * 0.96 ** 2) < 1e-5 for v in scalars), scalars  # epoch 17's rate


def test_one_trace_per_step_function_under_both_strategies(results):
    """Train, eval and (fisher_source="valid" only) Fisher validation step: one trace each."""
    for name, run in results["runs"].items():
        fisher = 1 if name.endswith("_valid_fisher") else 0
        for device in ("one", "two"):
            assert run[device]["traces"] == [1, 1, fisher], (name, device, run[device]["traces"])


@pytest.mark.parametrize("name", ["proximal_all_valid_fisher",
                                  "gradient_all_release_valid_fisher"])
def test_two_cpus_match_one_device_with_the_fisher_from_validation_batches(results, name):
    """fisher_source="valid": after each WPL architecture, each replica runs the validation
    pass on its rows of the Fisher window (dropout masks drawn once for the global batch,
    BatchNorm over the global batch), the gradients are summed, and the Fisher, the Fisher
    position, carried state and generator match one device's."""
    run = results["runs"][name]
    release = "release" in name
    _check_pair(run, name.split("_")[0], "all", dense_weights=6 if release else 4,
                lr=1.0 if release else 20.0,
                carried="reward_state" if release else "train_state")
    arrays = run["one"]["arrays"]
    # 4 WPL architectures over the 9 windows of 3 steps: windows 1..4 read, 5 next.
    assert arrays["valid_pass_position"] == 5
    assert np.abs(np.asarray(arrays["valid_pass_state"])).sum() > 0
    assert np.asarray(arrays["valid_pass_state"]).shape == (4, 6)


@pytest.mark.parametrize("direction", ["resume_two_to_one", "resume_one_to_two"])
def test_checkpoint_resumes_under_another_device_count(results, direction):
    """A checkpoint written under one replica count restores everything (weights, optimizer,
    WPL state, positions, the FULL carried hidden states) into a task under the other, and
    the next steps (2 architectures x 2 batches with WPL, err1, reward) match the saving
    task's own continuation within the tolerance."""
    result = results[direction]
    assert sorted(result["replicas"]) == [1, 2]
    assert result["restored"] == result["saved_arrays"]  # restored exactly, full size
    assert np.asarray(result["restored"]["train_state"]).shape == (6, 6)
    _assert_close(result["saved"], result["resumed"], f"{direction} continued values")
    _assert_close(result["saved_after"], result["resumed_after"], f"{direction} variables")


@pytest.mark.parametrize("field, fix", [
    ("batch_size", "RNNSupernetConfig.batch_size 5 is not divisible by the 2 replicas"),
    ("eval_batch_size", "RNNSupernetConfig.eval_batch_size 3 is not divisible by the 2 "
                        "replicas"),
    ("jit_compile", "jit_compile is not supported with 2 replicas"),
])
def test_batch_not_divisible_by_replicas_is_a_clear_error(results, field, fix):
    message = results["errors"][field]
    assert message is not None and fix in message, message
    assert "set" in message  # names the fix
