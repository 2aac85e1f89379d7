"""Entry point of one process of the distributed-tuning test (chief or worker).

The role comes from KerasTuner's environment variables: ``KERASTUNER_TUNER_ID=chief`` runs the
ENAS oracle as a gRPC server; any other id runs trials of a :class:`WeightSharingTuner` on the
tiny task. With ``--hang-marker PATH`` a worker runs ``--hang-on-trial`` trials normally, then
writes PATH (the id of the trial it holds) when the next one starts and blocks forever (the test
kills it there); the hang starts inside the trial's training, after the shared weights were
pulled.

With ``WPL_KERAS_PS_ADDRESS=host:port`` in the environment (read here, in the entry point
only) a worker shares one supernet through that parameter server: it attaches before the
search, waits at a file barrier for ``--barrier`` workers so that all of them run trials
concurrently, and writes one JSON line per pull/push to ``DIR/<tuner id>_store.jsonl``, ending
with the shared counter and the ps checksum after its search.

    python tests/distributed/tuner_worker.py --directory DIR --max-trials 5 --trial-timeout 8
"""

import argparse
import dataclasses
import json
import os
import pathlib
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras_tuner  # noqa: E402

from tests.tuner.tiny_task import TinyTask  # noqa: E402

from wpl_keras.tuner.enas import ENASOracle  # noqa: E402
from wpl_keras.tuner.weight_sharing import WeightSharingTuner  # noqa: E402
from wpl_keras.tuner.shared_weights import (  # noqa: E402
    SharedWeightStore,
    shared_task_variables,
)


class _FastSleep:
    """KerasTuner's chief polls its exit condition every 20 s; poll every second instead
    (test-only: keeps the test short, changes nothing else)."""

    def __getattr__(self, name):
        return getattr(time, name)

    @staticmethod
    def sleep(seconds):
        time.sleep(min(seconds, 1.0))


class TestTuner(WeightSharingTuner):
    """Logs every pull/push of its store to ``store_log``; with ``marker`` set, hangs inside
    the training of its trial number ``hang_on_trial`` (0-based), after the pull."""

    def __init__(self, *args, marker=None, hang_on_trial=0, store_log=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.marker = marker
        self.hang_on_trial = hang_on_trial
        self.store_log = store_log

    def log_store(self, event, record, **extra):
        if self.store_log:
            with open(self.store_log, "a") as f:
                f.write(json.dumps({"event": event, **dataclasses.asdict(record), **extra}) + "\n")

    def _hang(self, trial_id):
        if self.shared_weights is not None:
            self.log_store("pull", self.shared_weights.last_pull)
        pathlib.Path(self.marker).write_text(trial_id)
        while True:
            time.sleep(1)

    def run_trial(self, trial, *args, **kwargs):
        if self.marker and self.trials_run >= self.hang_on_trial:
            self.task.train_architecture = lambda *a, **k: self._hang(trial.trial_id)
        metrics = super().run_trial(trial, *args, **kwargs)
        if self.shared_weights is not None:
            self.log_store("pull", self.shared_weights.last_pull)
            self.log_store("push", self.shared_weights.last_push)
        return metrics


def _barrier(directory, tuner_id, count, timeout=120.0):
    """Waits until ``count`` workers wrote their ``ready_<id>`` file in ``directory``."""
    pathlib.Path(directory, f"ready_{tuner_id}").write_text("")
    deadline = time.monotonic() + timeout
    while len(list(pathlib.Path(directory).glob("ready_*"))) < count:
        if time.monotonic() > deadline:
            raise TimeoutError(f"{tuner_id}: fewer than {count} workers reached the barrier")
        time.sleep(0.1)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--directory", required=True)
    parser.add_argument("--max-trials", type=int, default=6)
    parser.add_argument("--trial-timeout", type=float, default=None)
    parser.add_argument("--hang-marker", default=None)
    parser.add_argument("--hang-on-trial", type=int, default=0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--barrier", type=int, default=0)
    args = parser.parse_args()
    tuner_id = os.environ["KERASTUNER_TUNER_ID"]
    ps_address = os.environ.get("WPL_KERAS_PS_ADDRESS")
    store = None
    if ps_address and tuner_id != "chief":
        store = SharedWeightStore(ps_address, init_timeout=60.0)
        store.connect()  # before the task is built

    task = TinyTask(seed=args.seed)
    oracle = ENASOracle(
        task.space,
        keras_tuner.Objective("reward", "max"),
        max_trials=args.max_trials,
        units=8,
        learning_rate=0.01,
        repeats="rerun",
        trial_timeout=args.trial_timeout,
        max_retries_per_trial=1,
        idle_wait=0.3,
    )
    store_log = os.path.join(args.directory, f"{tuner_id}_store.jsonl") if store else None
    tuner = TestTuner(
        oracle,
        task,
        batches_per_trial=2,
        shared_weights=store,
        directory=os.path.join(args.directory, tuner_id),
        project_name="search",
        overwrite=True,
        marker=args.hang_marker,
        hang_on_trial=args.hang_on_trial,
        store_log=store_log,
    )
    if tuner_id == "chief":
        from keras_tuner.src.distribute import oracle_chief

        oracle_chief.time = _FastSleep()
    if store is not None:
        record = store.attach(shared_task_variables(task))
        tuner.log_store("attach", record, initialized_here=store.initialized_here)
        if args.barrier:
            _barrier(args.directory, tuner_id, args.barrier)
    tuner.search(verbose=0)
    if store is not None:
        with open(store_log, "a") as f:
            f.write(json.dumps({"event": "final", "trials": store.trials(),
                                "checksum": store.checksum()}) + "\n")
    if tuner_id == "chief":
        summary = {
            "statuses": {t.trial_id: t.status for t in oracle.trials.values()},
            "reinforce_step": int(oracle.reinforce.step.numpy()),
            "num_reaped_trials": oracle.num_reaped_trials,
            "head_kernel_sum": float(oracle.controller.head_0.kernel.numpy().sum()),
        }
        pathlib.Path(args.directory, "chief_summary.json").write_text(json.dumps(summary))
    print(f"{tuner_id}: search finished, trials_run={tuner.trials_run}", flush=True)


if __name__ == "__main__":
    main()
