"""Tests for :mod:`wpl_keras.nas.search.distribute` within one process: strategy kinds,
TF_CONFIG, which task is the chief, signals and output folders. The runs on several devices or
processes are in ``tests/distributed/``."""

import json
import os
import signal

import pytest
import tensorflow as tf

from wpl_keras.nas.search import distribute
from wpl_keras.nas.search.distribute import (
    free_ports,
    is_chief,
    local_tf_config,
    resolve_kind,
    task_of,
    tf_config_workers,
    worker_out_dir,
)


def test_resolve_kind_and_tf_config():
    two = {"TF_CONFIG": local_tf_config([1111, 2222], 1)}
    assert tf_config_workers(two) == 2
    assert json.loads(two["TF_CONFIG"])["task"] == {"type": "worker", "index": 1}
    assert resolve_kind("auto", two) == "multi_worker"
    assert resolve_kind("mirrored", {}) == "mirrored"
    assert tf_config_workers({}) == 0
    with pytest.raises(ValueError, match="unknown strategy"):
        resolve_kind("tpu")
    with pytest.raises(ValueError, match="not valid JSON"):
        tf_config_workers({"TF_CONFIG": "{oops"})
    ports = free_ports(3)
    assert len(set(ports)) == 3


def test_multi_worker_without_tf_config_is_a_clear_error(monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    with pytest.raises(ValueError, match="TF_CONFIG"):
        distribute.make_strategy("multi_worker")
    assert distribute.make_strategy("default").num_replicas_in_sync == 1


def _config(task_type, index, cluster=None):
    return {"cluster": cluster or {"worker": ["127.0.0.1:1", "127.0.0.1:2"]},
            "task": {"type": task_type, "index": index}}


def test_is_chief_from_tf_config():
    assert is_chief(local_tf_config([1111, 2222], 0))  # JSON text
    assert not is_chief(local_tf_config([1111, 2222], 1))
    assert is_chief(_config("worker", 0)) and not is_chief(_config("worker", 1))
    with_chief = {"chief": ["127.0.0.1:3"], "worker": ["127.0.0.1:1", "127.0.0.1:2"]}
    assert is_chief(_config("chief", 0, with_chief))
    assert not is_chief(_config("worker", 0, with_chief))  # a chief task exists
    assert not is_chief(_config("worker", 1, with_chief))
    assert not is_chief(_config("evaluator", 0))
    assert is_chief({}) and is_chief("")  # no cluster: one process
    assert task_of(_config("worker", 1)) == ("worker", 1, _config("worker", 1)["cluster"])
    with pytest.raises(ValueError, match="not valid JSON"):
        is_chief("{oops")


def test_is_chief_reads_the_environment(monkeypatch):
    monkeypatch.setenv("TF_CONFIG", local_tf_config([1111, 2222], 1))
    assert not is_chief() and task_of()[:2] == ("worker", 1)
    assert worker_out_dir("/runs/a") == os.path.join("/runs/a", "workers", "worker_1")
    monkeypatch.delenv("TF_CONFIG")
    assert is_chief() and worker_out_dir("/runs/a") == "/runs/a"


def test_single_process_strategies_are_the_chief(monkeypatch):
    # Whatever TF_CONFIG says, a strategy of one process writes the requested folder.
    monkeypatch.setenv("TF_CONFIG", local_tf_config([1111, 2222], 1))
    strategy = distribute.make_strategy("default")
    assert task_of(strategy) == (None, 0, {})
    assert is_chief(strategy) and worker_out_dir("/runs/a", strategy) == "/runs/a"


def test_one_process_signals_and_task_strategy():
    strategy = distribute.make_strategy("default")
    for pending in (None, signal.SIGINT, signal.SIGTERM):
        assert distribute.agreed_signal(strategy, pending) == pending

    class Task:
        strategy = None

    assert distribute.task_strategy(Task()) is tf.distribute.get_strategy()
    Task.strategy = strategy
    assert distribute.task_strategy(Task()) is strategy


def test_worker_out_dir_of_other_tasks():
    assert worker_out_dir("out", _config("worker", 0)) == "out"
    assert worker_out_dir("out", _config("worker", 1)) == os.path.join("out", "workers",
                                                                       "worker_1")
    with_chief = {"chief": ["h:3"], "worker": ["h:1"]}
    assert worker_out_dir("out", _config("chief", 0, with_chief)) == "out"
    assert worker_out_dir("out", _config("worker", 0, with_chief)) == os.path.join(
        "out", "workers", "worker_0")
