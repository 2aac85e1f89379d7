"""Entry point of one process of the distributed-tuning test (chief or worker).

The role comes from KerasTuner's environment variables: ``KERASTUNER_TUNER_ID=chief`` runs the
ENAS oracle as a gRPC server; any other id runs trials of a :class:`WeightSharingTuner` on the
tiny task. With ``--hang-marker PATH`` a worker runs ``--hang-on-trial`` trials normally, then
writes PATH (the id of the trial it holds) when the next one starts and blocks forever (the test
kills it there).

    python tests/tuner/distributed_worker.py --directory DIR --max-trials 5 --trial-timeout 8
"""

import argparse
import json
import os
import pathlib
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

import keras_tuner  # noqa: E402

from tiny_task import TinyTask  # noqa: E402

from wpl_keras.tuner.enas import ENASOracle, WeightSharingTuner  # noqa: E402


class _FastSleep:
    """KerasTuner's chief polls its exit condition every 20 s; poll every second instead
    (test-only: keeps the test short, changes nothing else)."""

    def __getattr__(self, name):
        return getattr(time, name)

    @staticmethod
    def sleep(seconds):
        time.sleep(min(seconds, 1.0))


class HangingTuner(WeightSharingTuner):
    def __init__(self, *args, marker, hang_on_trial, **kwargs):
        super().__init__(*args, **kwargs)
        self.marker = marker
        self.hang_on_trial = hang_on_trial

    def run_trial(self, trial, *args, **kwargs):
        if self.trials_run < self.hang_on_trial:
            return super().run_trial(trial, *args, **kwargs)
        pathlib.Path(self.marker).write_text(trial.trial_id)
        while True:
            time.sleep(1)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--directory", required=True)
    parser.add_argument("--max-trials", type=int, default=6)
    parser.add_argument("--trial-timeout", type=float, default=None)
    parser.add_argument("--hang-marker", default=None)
    parser.add_argument("--hang-on-trial", type=int, default=0)
    args = parser.parse_args()
    tuner_id = os.environ["KERASTUNER_TUNER_ID"]

    task = TinyTask(seed=0)
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
    tuner_cls, extra = WeightSharingTuner, {}
    if args.hang_marker:
        tuner_cls = HangingTuner
        extra = {"marker": args.hang_marker, "hang_on_trial": args.hang_on_trial}
    tuner = tuner_cls(
        oracle,
        task,
        batches_per_trial=2,
        directory=os.path.join(args.directory, tuner_id),
        project_name="search",
        overwrite=True,
        **extra,
    )
    if tuner_id == "chief":
        from keras_tuner.src.distribute import oracle_chief

        oracle_chief.time = _FastSleep()
    tuner.search(verbose=0)
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
