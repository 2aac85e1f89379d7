"""SharedWeightStore without a cluster: what it shares, and the errors that name the fix.

The store's pull/push protocol against a real parameter server is tested with processes in
``test_distributed.py``; these tests never connect this process to a cluster.
"""

import keras
import numpy as np
import pytest
import tensorflow as tf

from tests.tuner.tiny_task import TinyTask  # noqa: E402

from wpl_keras.tuner.shared_weights import (  # noqa: E402
    SharedWeightStore,
    SyncRecord,
    parse_address,
    shared_task_variables,
)


@pytest.mark.parametrize(
    "address, expected",
    [("127.0.0.1:2222", ("127.0.0.1", 2222)), ("ps-0.example:1", ("ps-0.example", 1)),
     ("[::1]:65535", ("[::1]", 65535))],
)
def test_parse_address(address, expected):
    assert parse_address(address) == expected


@pytest.mark.parametrize("address", ["127.0.0.1", ":2222", "host:", "host:0", "host:65536",
                                     "host:22a", ""])
def test_parse_address_rejects(address):
    with pytest.raises(ValueError, match="host:port"):
        parse_address(address)


def test_tiny_task_shares_weights_fisher_and_anchors_but_not_scalars():
    task = TinyTask(seed=0)
    shared = shared_task_variables(task)
    ids = {id(v) for v in shared}
    state = task.wpl_state
    expected = list(task.variables) + [getattr(f, "value", f) for f in state.fisher] + [
        getattr(a, "value", a) for a in state.anchors]
    assert ids == {id(v) for v in expected}
    assert len(shared) == len(ids) == 9  # 3 weights, 3 Fisher, 3 anchors; no duplicates
    assert id(task.module.position) not in ids  # int64 data position stays local
    assert id(getattr(state.strength, "value", state.strength)) not in ids  # α: the schedule's


def test_keras_supernet_and_optimizer_slots_are_shared_scalars_are_not():
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2),
                              keras.layers.BatchNormalization()])
    optimizer = keras.optimizers.SGD(learning_rate=0.1, momentum=0.9)
    optimizer.build(model.trainable_variables)

    class Task:
        supernet, wpl_state = model, None

    Task.optimizer = optimizer
    shared = shared_task_variables(Task())
    names = sorted(v.name for v in shared)
    assert all(isinstance(v, tf.Variable) and v.shape.rank >= 1 for v in shared)
    # kernel, bias, gamma, beta, moving mean/variance, and a momentum slot per trainable
    assert len(shared) == 6 + len(model.trainable_variables)
    assert not any("learning_rate" in n or "iteration" in n for n in names)


def test_task_without_shareable_variables_names_the_fix():
    class Empty:
        supernet = optimizer = wpl_state = None

    with pytest.raises(ValueError, match=r"store.attach\(variables\)"):
        shared_task_variables(Empty())


@pytest.mark.parametrize(
    "kwargs, match",
    [({"ps_address": "nohost"}, "host:port"),
     ({"ps_address": "127.0.0.1:1", "local_address": "x"}, "host:port"),
     ({"ps_address": "127.0.0.1:1", "namespace": ""}, "namespace"),
     ({"ps_address": "127.0.0.1:1", "namespace": "lock/x"}, "namespace"),
     ({"ps_address": "127.0.0.1:1", "init_timeout": 0}, "init_timeout"),
     ({"ps_address": "127.0.0.1:1", "init_timeout": float("nan")}, "init_timeout"),
     ({"ps_address": "127.0.0.1:1", "init_timeout": float("inf")}, "init_timeout")],
)
def test_store_rejects_bad_settings(kwargs, match):
    with pytest.raises(ValueError, match=match):
        SharedWeightStore(**kwargs)


@pytest.mark.parametrize("value", ["300", None, True, [1.0]])
def test_store_refuses_a_non_number_timeout(value):
    with pytest.raises(TypeError, match=r"SharedWeightStore init_timeout \(seconds\) must be"):
        SharedWeightStore("127.0.0.1:1", init_timeout=value)
    assert SharedWeightStore("127.0.0.1:1", init_timeout=np.float32(2.0)).init_timeout == 2.0


@pytest.mark.parametrize("operation", ["pull", "push", "trials", "checksum"])
def test_operations_before_attach_name_the_fix(operation):
    store = SharedWeightStore("127.0.0.1:1")
    assert not store.attached and store.last_pull is None
    with pytest.raises(RuntimeError, match=r"attach\(variables\)"):
        getattr(store, operation)()


def test_sync_record_is_frozen():
    record = SyncRecord(trials=3, checksum=1.5)
    assert record.delta_checksum == 0.0
    with pytest.raises(AttributeError):
        record.trials = 4


class _RecordingStore:
    """A store without a server: the shared counter starts at ``trials``; records calls."""

    def __init__(self, trials):
        self.counter = trials
        self.calls = []
        self.variables = None

    @property
    def attached(self):
        return self.variables is not None

    def attach(self, variables):
        self.variables = list(variables)
        self.calls.append("attach")

    def pull(self):
        self.calls.append("pull")
        self.pulled = [v.numpy().copy() for v in self.variables]
        return SyncRecord(trials=self.counter, checksum=0.0)

    def push(self):
        self.calls.append("push")
        self.changed = any(
            not (v.numpy() == p).all() for v, p in zip(self.variables, self.pulled)
        )
        self.counter += 1
        return SyncRecord(trials=self.counter, checksum=0.0)


@pytest.mark.parametrize("shared_trials, wpl_trials", [(0, 1), (2, 3), (5, 3)])
def test_tuner_pulls_and_pushes_each_trial_and_counts_shared_trials(
    tmp_path, shared_trials, wpl_trials
):
    """With a store the tuner attaches the task's shared variables once, pulls before and
    pushes after every trial, and turns WPL on from the SHARED trial count
    (``wpl_start_epoch=2`` of its schedule: on when the counter at the pull is ≥ 2), not its own."""
    import keras_tuner

    from wpl_keras.tuner.enas import ENASOracle
    from wpl_keras.tuner.weight_sharing import WeightSharingTuner
    from wpl_keras.wpl.schedule import ScheduleConfig

    task = TinyTask(seed=0)
    store = _RecordingStore(shared_trials)
    oracle = ENASOracle(task.space, keras_tuner.Objective("reward", "max"), max_trials=3,
                        units=8, repeats="rerun")
    schedule = ScheduleConfig(wpl_start_epoch=2, strength=60.0, strength_decay=None,
                              flush_every=0)
    tuner = WeightSharingTuner(oracle, task, batches_per_trial=1, schedule=schedule,
                               shared_weights=store, directory=str(tmp_path), project_name="s")
    tuner.search(verbose=0)
    assert store.calls == ["attach"] + ["pull", "push"] * 3
    assert {id(v) for v in store.variables} == {id(v) for v in shared_task_variables(task)}
    assert store.changed  # the push saw what the trial trained
    wpl_on = [t.metrics.get_last_value("wpl_active") for t in oracle.trials.values()]
    assert sum(wpl_on) == wpl_trials and tuner.trials_run == 3
