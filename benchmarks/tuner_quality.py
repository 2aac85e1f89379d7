"""Does weight sharing (with and without WPL) tune a user's Keras hypermodel better than
KerasTuner's own tuners in the same wall-clock time? Six arms per seed on real CIFAR-10 (see
:mod:`wpl_keras.experiments.tuner_quality` for the protocol):

    python benchmarks/tuner_quality.py --data-dir ../shared/data/cifar10 --seeds 0,1,2 \
        --out /tmp/tuner_quality

``--resume`` continues a killed run in ``--out`` (KerasTuner projects, their wall-clock
counts, the final trainings and the Kendall-τ trainings are kept; the protocol must match).
``anytime.png`` in ``--out`` plots the best validation accuracy found against search time.

The last line of output is one JSON object: ``arms.<name>.test_mean`` / ``.test_std`` /
``.test_per_seed`` (test accuracy %, the arm's best hyperparameters trained from scratch with
one budget), ``.trials``, ``kendall_tau_without`` / ``kendall_tau_with`` (shared-weight score
against from-scratch accuracy over the fixed configurations), ``ws_best_minus_random_search``
(points), and the settings. The CIFAR-10 in ``../shared/data`` is a lossy JPEG re-encoding,
so accuracies are close to, not equal to, accuracies on the official files.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import tempfile
import time

from wpl_keras.data.cifar10 import load_cifar10
from wpl_keras.experiments import tuner_quality as tq
from wpl_keras.experiments.protocol_options import parse_seeds
from wpl_keras.utils.strict_json import finite_or_null, write_json_atomic


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    defaults = tq.TunerQualityConfig()
    parser.add_argument("--data-dir", default=None,
                        help="CIFAR-10 folder (default: tensorflow-datasets download)")
    parser.add_argument("--out", default=None, help="output folder (default: a new temp dir)")
    parser.add_argument("--resume", action="store_true", help="continue the run in --out")
    parser.add_argument("--seeds", type=parse_seeds, default=defaults.seeds,
                        help="comma-separated tuner seeds")
    parser.add_argument("--arms", default=",".join(tq.ARMS), help="comma-separated arms")
    for field in dataclasses.fields(tq.TunerQualityConfig):
        if field.name == "seeds":
            continue
        kind = type(getattr(defaults, field.name))
        parser.add_argument("--" + field.name.replace("_", "-"), type=kind,
                            default=getattr(defaults, field.name))
    return parser


def main(argv=None) -> dict:
    args = _parser().parse_args(argv)
    names = [f.name for f in dataclasses.fields(tq.TunerQualityConfig)]
    config = tq.TunerQualityConfig(**{n: getattr(args, n) for n in names})
    out = args.out or tempfile.mkdtemp(prefix="tuner_quality_")
    started = time.time()
    arrays = load_cifar10(args.data_dir)
    splits = tq.make_splits(arrays, config)
    arms = [a for a in args.arms.split(",") if a]
    result = {"benchmark": "tuner_quality",
              **tq.run_tuner_quality(config, splits, out, resume=args.resume, arms=arms,
                                     progress=lambda m: print(m, flush=True)),
              "config": config.to_json(), "data": arrays.source, "out": out,
              "anytime_png": os.path.join(out, "anytime.png"),
              "seconds": round(time.time() - started, 1)}
    write_json_atomic(os.path.join(out, "tuner_quality.json"), finite_or_null(result))
    print(json.dumps(finite_or_null(result), allow_nan=False))
    return result


if __name__ == "__main__":
    main()
