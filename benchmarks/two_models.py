"""Figure 2 of the paper: forgetting of model A while model B (sharing A's 4 layers) trains.

For every seed: train A strictly (to convergence) and loosely (stopped at validation top-1
levels), estimate A's Fisher on 200 validation images, train B for 1,500 SGD steps (momentum
0.9, lr 0.1) from the same start without and with WPL (proximal form), and record A's and B's
test accuracy. Each case runs at the WPL strength α the α-choice rule picked for it on
validation data in the recorded sweep (``wpl_keras/experiments/two_models_strengths.json``, as
``wpl-two-models`` does), or at ``--strength`` for every case. Reports, averaged over seeds:

* ``forgetting_reduction`` = (d_without − d_with) / d_without, d = acc_A(before) − acc_A(after);
* ``a_drop_without`` = A's baseline minus A's final accuracy when B trains without WPL (points);
* ``b_accuracy_gap`` = B's final accuracy without WPL minus with WPL (points);

for the strict case and for the loosest level where WPL still helps (mean reduction >= 0.5 with
A's drop without WPL >= 5 points), plus every level, each with its ``strength`` and
``strength_source``.

    python benchmarks/two_models.py --data-dir ../shared/data/mnist

The last line of output is one JSON object.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import tempfile
import time

from wpl_keras.data.mnist import load_mnist
from wpl_keras.experiments import strength_sweep
from wpl_keras.experiments import two_models as tm


def _triple(case: dict) -> dict:
    s = case["summary"]
    return {
        "strength": case["strength"],
        "strength_source": case["strength_source"],
        "forgetting_reduction": s["forgetting_reduction"]["mean"],
        "forgetting_reduction_std": s["forgetting_reduction"]["std"],
        "a_drop_without": s["a_drop_without"]["mean"],
        "a_drop_without_std": s["a_drop_without"]["std"],
        "a_drop_with": 100.0 * s["d_with"]["mean"],
        "b_accuracy_gap": s["b_accuracy_gap"]["mean"],
        "b_accuracy_gap_std": s["b_accuracy_gap"]["std"],
        "a_baseline": s["a_baseline"]["mean"],
        "a_final_without": s["a_final_without"]["mean"],
        "a_final_with": s["a_final_with"]["mean"],
        "b_final_without": s["b_final_without"]["mean"],
        "b_final_with": s["b_final_with"]["mean"],
    }


def main(argv=None) -> dict:
    defaults = tm.TwoModelsConfig()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--data-dir", default=None,
                        help="MNIST idx folder (default: tensorflow-datasets download)")
    parser.add_argument("--out", default=None,
                        help="folder for results.json/config.json/two_models.png "
                             "(default: a new temporary folder)")
    parser.add_argument("--seeds", type=int, nargs="+", default=list(defaults.seeds))
    parser.add_argument("--iterations", type=int, default=defaults.iterations)
    parser.add_argument("--strength", "--alpha", dest="strength", type=float, default=None,
                        help="WPL strength alpha for every case (default: per case, the "
                             "recorded validation choice)")
    parser.add_argument("--loose-levels", type=float, nargs="*", default=list(defaults.loose_levels))
    args = parser.parse_args(argv)

    config = dataclasses.replace(
        defaults, seeds=tuple(args.seeds), iterations=args.iterations,
        strength=defaults.strength if args.strength is None else args.strength,
        loose_levels=tuple(args.loose_levels))
    levels = strength_sweep.case_levels(True, config.loose_levels)
    if args.strength is None:
        strengths = strength_sweep.recorded_case_strengths(config, levels)
    else:
        strengths = {tm.case_name(level): tm.CaseStrength(args.strength, "--strength")
                     for level in levels}
    out = args.out or tempfile.mkdtemp(prefix="wpl_two_models_")
    started = time.time()
    data = load_mnist(args.data_dir, validation_size=config.validation_size, seed=0)
    results = tm.run_experiment(data, config, progress=lambda m: print(m, flush=True),
                                strengths=strengths)
    paths = tm.save_results(results, out)
    loose_name = tm.loosest_helpful_level(results)
    report = {
        "benchmark": "two_models (paper Figure 2)",
        "data": f"MNIST ({data.source}); train {data.sizes()['train']}, validation "
                f"{data.sizes()['val']} held out of train, test {data.sizes()['test']}",
        "strict": _triple(results["cases"]["strict"]),
        "loose": dict(
            level=None if loose_name is None else results["cases"][loose_name]["level"],
            case=loose_name,
            rule="loosest level with mean reduction >= 0.5 and mean a_drop_without >= 5",
            **({} if loose_name is None else _triple(results["cases"][loose_name])),
        ),
        "levels": {name: _triple(case) for name, case in results["cases"].items()},
        "units": "reduction: fraction; a_drop/b_gap: accuracy points; accuracies: fraction",
        "settings": {
            "model_a": "flatten -> W_A1..W_A4 Dense(64, relu) -> head_A Dense(10)",
            "model_b": "flatten -> W_A1..W_A4 (shared) -> W_B5, W_B6 Dense(64, relu) -> head_B",
            "a_strict": f"{config.a_optimizer} lr {config.a_learning_rate}, batch "
                        f"{config.batch_size}, <= {config.a_max_epochs} epochs, early stopping "
                        f"on validation accuracy (patience {config.a_patience})",
            "a_loose": f"plain SGD lr {config.loose_learning_rate}, stop when validation top-1 "
                       f">= level (checked every {config.loose_check_every} steps)",
            "b": f"SGD lr {config.b_learning_rate} momentum {config.b_momentum}, batch "
                 f"{config.batch_size}, {config.iterations} iterations",
            "fisher": f"{config.fisher_kind} Fisher of the shared weights on "
                      f"{config.fisher_samples} validation images",
            "wpl": f"{config.wpl_mode} mode, l2 {config.l2}; strength per case under "
                   "levels.<case>.strength",
            "seeds": list(config.seeds),
        },
        "outputs": paths,
        "seconds": round(time.time() - started, 1),
    }
    print(json.dumps(tm.to_jsonable(report)))
    return report


if __name__ == "__main__":
    main()
