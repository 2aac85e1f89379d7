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
SCRIPT = HERE / "tuner_worker.py"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env(**extra):
    env = dict(os.environ)
    env.update(
        PYTHONPATH=str(ROOT) + os.pathsep + env.get("PYTHONPATH", ""),
        TF_CPP_MIN_LOG_LEVEL="2",
        CUDA_VISIBLE_DEVICES="",
        **extra,
    )
    return env


def _start(tuner_id, port, directory, logs, *extra, env_extra=None):
    env = _env(
        KERASTUNER_ORACLE_IP="127.0.0.1",
        KERASTUNER_ORACLE_PORT=str(port),
        KERASTUNER_TUNER_ID=tuner_id,
        **(env_extra or {}),
    )
    log = open(logs / f"{tuner_id}.log", "w")
    return subprocess.Popen(
        [sys.executable, str(SCRIPT), "--directory", str(directory), *extra],
        env=env, cwd=str(ROOT), stdout=log, stderr=subprocess.STDOUT,
    )


def _start_ps(address, logs):
    """The parameter server, through the module's own entry point."""
    log = open(logs / "ps.log", "w")
    return subprocess.Popen(
        [sys.executable, "-m", "wpl_keras.tuner.shared_weights", "--ps", address],
        env=_env(), cwd=str(ROOT), stdout=log, stderr=subprocess.STDOUT,
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
    from wpl_keras.nas.controllers.enas import Controller

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

    from tests.tuner.tiny_task import TinySpace

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


def _store_events(path: pathlib.Path):
    assert path.exists(), f"{path} was not written"
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_two_workers_share_one_supernet_on_a_parameter_server(tmp_path):
    """Chief + ps + two workers built from DIFFERENT seeds, running trials concurrently;
    worker_a is killed inside the training of its second trial (after its pull). Both workers
    trained the ps's variables: one initialised them and the other pulled the same values,
    the shared counter equals the trials both pushed, the ps checksum equals the initial one
    plus every pushed delta of both workers, and worker_b's pulls saw worker_a's pushes. The
    dead worker does not stall the search."""
    port, ps_address, logs = _free_port(), f"127.0.0.1:{_free_port()}", tmp_path
    marker = tmp_path / "hang_started"
    args = ("--max-trials", "8", "--trial-timeout", "10", "--barrier", "2")
    share = {"WPL_KERAS_PS_ADDRESS": ps_address}
    procs = [_start_ps(ps_address, logs), _start("chief", port, tmp_path, logs, *args)]
    deadline = time.monotonic() + 240  # generous for a loaded 2-core machine
    try:
        worker_a = _start("worker_a", port, tmp_path, logs, *args, "--seed", "1",
                          "--hang-marker", str(marker), "--hang-on-trial", "1", env_extra=share)
        worker_b = _start("worker_b", port, tmp_path, logs, *args, "--seed", "2", env_extra=share)
        procs += [worker_a, worker_b]
        while not marker.exists():
            assert time.monotonic() < deadline, (logs / "worker_a.log").read_text()[-3000:]
            assert worker_a.poll() is None, (logs / "worker_a.log").read_text()[-3000:]
            time.sleep(0.5)
        worker_a.send_signal(signal.SIGKILL)
        worker_a.wait(timeout=10)
        assert _wait(worker_b, deadline, logs, "worker_b") == 0
        assert _wait(procs[1], deadline, logs, "chief") == 0
    finally:
        _stop_all(procs)
    summary = json.loads((tmp_path / "chief_summary.json").read_text())
    assert set(summary["statuses"].values()) == {"COMPLETED"} and len(summary["statuses"]) == 8
    assert summary["num_reaped_trials"] == 1 and summary["reinforce_step"] == 8

    events_a = _store_events(tmp_path / "worker_a_store.jsonl")
    events_b = _store_events(tmp_path / "worker_b_store.jsonl")
    attach_a, attach_b = events_a[0], events_b[0]
    assert attach_a["event"] == attach_b["event"] == "attach"
    assert attach_a["initialized_here"] != attach_b["initialized_here"]  # exactly one
    assert attach_a["trials"] == attach_b["trials"] == 0
    assert attach_a["checksum"] == attach_b["checksum"]  # different seeds, one supernet
    pushes_a = [e for e in events_a if e["event"] == "push"]
    pushes_b = [e for e in events_b if e["event"] == "push"]
    pulls_b = [e for e in events_b if e["event"] == "pull"]
    assert len(pushes_a) == 1  # then killed inside its second trial
    assert events_a[-1]["event"] == "pull"  # the killed trial pulled, never pushed
    assert len(pushes_b) == _trials_run(logs / "worker_b.log") == 7  # 6 new + the retry
    final = events_b[-1]
    assert final["event"] == "final"
    assert final["trials"] == len(pushes_a) + len(pushes_b) == 8
    deltas = sum(e["delta_checksum"] for e in pushes_a + pushes_b)
    assert final["checksum"] == pytest.approx(attach_a["checksum"] + deltas, rel=1e-6, abs=1e-4)
    assert pulls_b[-1]["trials"] == len(pushes_a) + len(pushes_b) - 1  # saw worker_a's pushes
    # worker_a was dead during worker_b's last trial: the ps holds exactly what b pushed.
    assert final["checksum"] == pytest.approx(pushes_b[-1]["checksum"], rel=1e-6, abs=1e-4)
    last_trial = pulls_b[-1]["checksum"] + pushes_b[-1]["delta_checksum"]
    assert final["checksum"] == pytest.approx(last_trial, rel=1e-6, abs=1e-4)


def _start_client(mode, address, tmp_path):
    log = open(tmp_path / f"{mode}.log", "w")
    return subprocess.Popen(
        [sys.executable, str(HERE / "store_client.py"), "--ps", address, "--mode", mode,
         "--out", str(tmp_path / f"{mode}.json")],
        env=_env(), cwd=str(ROOT), stdout=log, stderr=subprocess.STDOUT,
    )


def _client_result(proc, mode, tmp_path):
    assert proc.wait(timeout=120) == 0, (tmp_path / f"{mode}.log").read_text()[-3000:]
    return json.loads((tmp_path / f"{mode}.json").read_text())


def test_store_protocol_layout_checks_and_a_bare_server(tmp_path):
    """Against a real ps: the first client initialises and pushes; a later process with other
    local values pulls exactly what was pushed; a second layout over the same namespace and a
    plain tf Server (no lock variables) and variables created before connecting fail with
    errors that name the fix."""
    address, bare_address = f"127.0.0.1:{_free_port()}", f"127.0.0.1:{_free_port()}"
    bare_code = ("import sys, tensorflow as tf; tf.distribute.Server(tf.train.ClusterSpec("
                 "{'ps': [sys.argv[1]]}), job_name='ps', task_index=0).join()")
    bare_log = open(tmp_path / "bare.log", "w")
    procs = [_start_ps(address, tmp_path),
             subprocess.Popen([sys.executable, "-c", bare_code, bare_address], env=_env(),
                              stdout=bare_log, stderr=subprocess.STDOUT)]
    try:
        procs.append(_start_client("bare", bare_address, tmp_path))  # alongside "first"
        first = _client_result(_start_client("first", address, tmp_path), "first", tmp_path)
        second = _client_result(_start_client("second", address, tmp_path), "second", tmp_path)
        bare = _client_result(procs[-1], "bare", tmp_path)
    finally:
        _stop_all(procs)
    assert first["initialized_here"] and first["attach_trials"] == 0
    assert first["push"]["trials"] == 1
    assert first["push"]["delta_checksum"] == pytest.approx(1.5 + 10.0)
    assert first["ps_checksum"] == pytest.approx(6.0 + 1.5 + 10.0)
    assert "shape [2, 2] on the ps" in first["shape_error"]
    assert "same configuration" in first["shape_error"]
    assert "holds 2 variables" in first["count_error"]
    assert not second["initialized_here"] and second["attach_trials"] == 1
    assert second["pulled"] == [[1.5, 2.5, 3.5], [[1.0, 2.0], [3.0, 4.0]]]  # not its own 7s
    assert second["push"]["trials"] == 2
    assert second["ps_checksum"] == pytest.approx(first["ps_checksum"] + 3.0)
    assert "call store.connect() first" in second["stale_error"]
    assert second["stale_error"].startswith("RuntimeError") and not second["stale_attached"]
    assert bare["error"].startswith("RuntimeError")
    assert "python -m wpl_keras.tuner.shared_weights" in bare["error"]


def _proc_net_listeners(port: int) -> set:
    """The addresses that listen on TCP ``port`` on this machine, read from /proc/net/tcp and
    /proc/net/tcp6 (each 32-bit word of an address in host byte order), not through the
    package's own socket query."""
    import ipaddress

    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for row in pathlib.Path(table).read_text().splitlines()[1:]:
            local, state = row.split()[1], row.split()[3]
            host_hex, port_hex = local.split(":")
            if state != "0A" or int(port_hex, 16) != port:  # 0A: LISTEN
                continue
            raw = bytes.fromhex(host_hex)
            words = [raw[i:i + 4] for i in range(0, len(raw), 4)]
            if sys.byteorder == "little":
                words = [w[::-1] for w in words]
            found.add(str(ipaddress.ip_address(b"".join(words))))
    return found


@pytest.mark.skipif(
    not pathlib.Path("/proc/net/tcp6").exists(),
    reason="compares the printed address with the kernel socket table in /proc/net/tcp and "
           "/proc/net/tcp6, which only Linux has")
def test_parameter_server_prints_the_sockets_it_really_listens_on(tmp_path):
    """Asked for 127.0.0.1, TensorFlow's gRPC server listens on every interface: the printed
    line must name exactly the sockets /proc/net lists for the port, and stderr must warn."""
    port = _free_port()
    err = open(tmp_path / "ps.err", "w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "wpl_keras.tuner.shared_weights", "--ps", f"127.0.0.1:{port}"],
        env=_env(), cwd=str(ROOT), stdout=subprocess.PIPE, stderr=err, text=True)
    try:
        line = proc.stdout.readline()  # the ps prints one line once it serves
        listening = _proc_net_listeners(port)
        with socket.create_connection(("127.0.0.1", port), timeout=10):
            pass  # the IPv4 loopback reaches it (the socket is dual-stack, as printed)
    finally:
        proc.kill()
        proc.wait(timeout=30)
        err.close()
    assert line.startswith("parameter server /job:ps/task:0 listening on "), line
    printed = re.findall(r"\[?([0-9a-fA-F:.]+?)\]?:(\d+) \(", line.split("; asked for")[0])
    assert printed and {int(p) for _, p in printed} == {port}, line
    assert {h for h, _ in printed} == listening, (line, listening)
    if listening != {"127.0.0.1"}:  # TensorFlow 2.x: "::" (every interface)
        assert f"asked for 127.0.0.1:{port}: TensorFlow's gRPC server cannot bind" in line
        warning = (tmp_path / "ps.err").read_text()
        assert f"WARNING: port {port} is open to every machine" in warning
        assert "no authentication" in warning and "file reads and writes" in warning
