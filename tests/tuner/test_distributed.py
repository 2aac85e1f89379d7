"""Distributed tuning: an ENAS chief and two workers as separate processes over gRPC."""

import json
import os
import pathlib
import re
import signal
import socket
import subprocess
import sys
import time

import pytest

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parents[1]
SCRIPT = HERE / "distributed_worker.py"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start(tuner_id, port, directory, logs, *extra):
    env = dict(os.environ)
    env.update(
        KERASTUNER_ORACLE_IP="127.0.0.1",
        KERASTUNER_ORACLE_PORT=str(port),
        KERASTUNER_TUNER_ID=tuner_id,
        PYTHONPATH=str(ROOT) + os.pathsep + env.get("PYTHONPATH", ""),
        TF_CPP_MIN_LOG_LEVEL="2",
        CUDA_VISIBLE_DEVICES="",
    )
    log = open(logs / f"{tuner_id}.log", "w")
    return subprocess.Popen(
        [sys.executable, str(SCRIPT), "--directory", str(directory), *extra],
        env=env, cwd=str(ROOT), stdout=log, stderr=subprocess.STDOUT,
    )


def _wait(proc, deadline, logs, name):
    try:
        return proc.wait(timeout=max(1.0, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        pytest.fail(f"{name} did not finish in time; log:\n" + (logs / f"{name}.log").read_text()[-3000:])


def _stop_all(procs):
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)


def _trials_run(log: pathlib.Path) -> int:
    match = re.search(r"search finished, trials_run=(\d+)", log.read_text())
    assert match, log.read_text()[-3000:]
    return int(match.group(1))


def _initial_head_sum():
    """Sum of the first head's kernel of the controller the chief starts from."""
    from wpl_keras.nas.controller import Controller

    controller = Controller((3, 3), units=8, seed=0)
    return float(controller.head_0.kernel.numpy().sum())


def test_chief_and_two_workers_finish_every_trial(tmp_path):
    port, logs = _free_port(), tmp_path
    args = ("--max-trials", "6", "--trial-timeout", "60")
    procs = [_start("chief", port, tmp_path, logs, *args)]
    procs += [_start(f"worker{i}", port, tmp_path, logs, *args) for i in range(2)]
    deadline = time.monotonic() + 100
    try:
        for proc, name in zip(procs, ["chief", "worker0", "worker1"]):
            assert _wait(proc, deadline, logs, name) == 0, (logs / f"{name}.log").read_text()[-3000:]
    finally:
        _stop_all(procs)
    summary = json.loads((tmp_path / "chief_summary.json").read_text())
    assert len(summary["statuses"]) == 6
    assert set(summary["statuses"].values()) == {"COMPLETED"}
    assert summary["reinforce_step"] == 6  # the chief's controller learned from every trial
    assert summary["head_kernel_sum"] != pytest.approx(_initial_head_sum(), abs=1e-7)
    ran = [_trials_run(logs / f"worker{i}.log") for i in range(2)]
    assert sum(ran) == 6 and min(ran) >= 1, ran  # both workers ran trials


def test_worker_killed_mid_trial_does_not_stall_chief(tmp_path):
    port, logs = _free_port(), tmp_path
    marker = tmp_path / "hang_started"
    args = ("--max-trials", "4", "--trial-timeout", "8")
    chief = _start("chief", port, tmp_path, logs, *args)
    hanging = _start("worker_hang", port, tmp_path, logs, *args, "--hang-marker", str(marker))
    procs = [chief, hanging]
    deadline = time.monotonic() + 100
    try:
        while not marker.exists():  # the doomed worker holds a trial
            assert time.monotonic() < deadline, (logs / "worker_hang.log").read_text()[-3000:]
            assert hanging.poll() is None, (logs / "worker_hang.log").read_text()[-3000:]
            time.sleep(0.5)
        procs.append(_start("worker_ok", port, tmp_path, logs, *args))
        hanging.send_signal(signal.SIGKILL)
        hanging.wait(timeout=10)
        assert _wait(procs[2], deadline, logs, "worker_ok") == 0
        assert _wait(chief, deadline, logs, "chief") == 0
    finally:
        _stop_all(procs)
    summary = json.loads((tmp_path / "chief_summary.json").read_text())
    assert summary["num_reaped_trials"] == 1
    killed_trial = marker.read_text()
    # the dead worker's trial was retried by the live one and completed, like all others
    assert summary["statuses"][killed_trial] == "COMPLETED"
    assert set(summary["statuses"].values()) == {"COMPLETED"} and len(summary["statuses"]) == 4
    assert summary["reinforce_step"] == 4


def test_stale_trial_is_taken_back_in_process(tmp_path):
    """The take-back rule without processes: a silent tuner's trial is retried, then FAILED."""
    import keras_tuner

    from tiny_task import TinySpace

    from wpl_keras.tuner.enas import ENASOracle

    oracle = ENASOracle(TinySpace((3, 3)), keras_tuner.Objective("score", "max"), max_trials=2,
                        units=4, trial_timeout=30, idle_wait=0.05, max_retries_per_trial=1)
    oracle._set_project_dir(str(tmp_path), "p")
    dead = oracle.create_trial("dead")
    live = oracle.create_trial("live")
    oracle.update_trial(live.trial_id, {"score": 0.5})
    live.status = "COMPLETED"
    oracle.end_trial(live)
    assert oracle.create_trial("live").status == "IDLE"  # budget spent, "dead" may still report
    oracle._last_seen[dead.trial_id] -= 31  # 31 s of silence, without waiting for them
    retry = oracle.create_trial("live")
    assert retry.status == "RUNNING" and retry.trial_id == dead.trial_id
    assert "dead" not in oracle.tuner_ids and oracle.num_reaped_trials == 1
    oracle._last_seen[retry.trial_id] -= 31  # the retry goes silent too: no retries left
    assert oracle.create_trial("other").status == "STOPPED"
    assert oracle.trials[dead.trial_id].status == "FAILED"
    assert not oracle.ongoing_trials
