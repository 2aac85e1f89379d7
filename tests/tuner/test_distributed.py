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
sys.path.insert(0, str(HERE))  # tiny_task, the helper module beside this file


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


def test_chief_and_two_workers_finish_every_trial_despite_a_killed_worker(tmp_path):
    """Chief + two workers over gRPC: worker_a runs one trial, then is killed inside its second;
    worker_b runs the rest and the retry. Every trial completes, the chief's controller learned
    from each, and the chief exits (it is not stalled by the dead worker)."""
    port, logs = _free_port(), tmp_path
    marker = tmp_path / "hang_started"
    args = ("--max-trials", "5", "--trial-timeout", "10")
    chief = _start("chief", port, tmp_path, logs, *args)
    worker_a = _start("worker_a", port, tmp_path, logs, *args,
                      "--hang-marker", str(marker), "--hang-on-trial", "1")
    procs = [chief, worker_a]
    deadline = time.monotonic() + 240  # generous for a loaded 2-core machine; ~60 s idle
    try:
        while not marker.exists():  # worker_a finished one trial and holds a second
            assert time.monotonic() < deadline, (logs / "worker_a.log").read_text()[-3000:]
            assert worker_a.poll() is None, (logs / "worker_a.log").read_text()[-3000:]
            time.sleep(0.5)
        procs.append(_start("worker_b", port, tmp_path, logs, *args))
        worker_a.send_signal(signal.SIGKILL)
        worker_a.wait(timeout=10)
        assert _wait(procs[2], deadline, logs, "worker_b") == 0
        assert _wait(chief, deadline, logs, "chief") == 0
    finally:
        _stop_all(procs)
    summary = json.loads((tmp_path / "chief_summary.json").read_text())
    assert len(summary["statuses"]) == 5
    assert set(summary["statuses"].values()) == {"COMPLETED"}
    assert summary["num_reaped_trials"] == 1
    killed_trial = marker.read_text()
    assert summary["statuses"][killed_trial] == "COMPLETED"  # retried by worker_b
    assert summary["reinforce_step"] == 5  # the chief's controller learned from every trial
    assert summary["head_kernel_sum"] != pytest.approx(_initial_head_sum(), abs=1e-7)
    assert _trials_run(logs / "worker_b.log") == 4  # 3 new trials + the retried one


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
