"""WPL strength α in the two-model experiment: forgetting removed against the cost to model B.

For every case (strict, and loose levels 0.56, 0.44, 0.36 by default), seed and α of a grid
(default 1 … 1e8 in decades), runs the two-model experiment of
``wpl_keras.experiments.two_models`` (A trained once per seed and case, every α starting from
that A; B trained without and with WPL) and reports, per case and α, seed means of:

* ``reduction`` = (d_without − d_with) / d_without on the test set;
* ``b_cost`` = B's final test accuracy with WPL minus without (accuracy points; negative when B
  loses accuracy with WPL);
* the validation-side values the rule uses: ``reduction_val``, ``b_accuracy_val`` (B with WPL),
  ``b_accuracy_without_val`` and ``b_cost_val``.

``chosen`` holds, per case, the α that :func:`wpl_keras.wpl.strength.choose_strength` picks on
the validation values (largest validation reduction among the α whose B validation accuracy is
within ``--tolerance`` points of B's without WPL; ties to the smaller α; if none, the smallest B
cost), with the test-set ``reduction`` and ``b_cost`` at that α. Writes ``strength_sweep.json``
(report and every run) and ``strength_sweep.png`` (per case, reduction against b_cost, one point
per α) to ``--out``. Report keys say ``strength`` for α (``strengths``, ``chosen.<case>.strength``).

The choices ``wpl-two-models`` runs by default are this benchmark's ``chosen`` strengths, kept as
package data in ``wpl_keras/experiments/two_models_strengths.json`` with the commands and date
that produced them; a new sweep that should change them is copied there by hand (and into
``benchmarks/README.md``, which a test compares with the file).

    python benchmarks/alpha_sweep.py --data-dir ../shared/data/mnist

``--merge A/strength_sweep.json B/strength_sweep.json`` runs nothing (files of earlier runs
named ``alpha_sweep.json`` merge the same way): it merges earlier runs made with
the same settings on different grids (e.g. a grid extended below the smallest α after the rule
fell back to it) and applies the rule to the merged grid.

The last line of output is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from typing import Optional, Sequence

from apps.two_models import AUTO_STRENGTHS, parse_strength_grid
from wpl_keras.data.mnist import load_mnist
from wpl_keras.experiments import strength_sweep
from wpl_keras.experiments import two_models as tm


def build_parser() -> argparse.ArgumentParser:
    """Command-line options (defaults: the two-model experiment's settings, seeds 0 1 2)."""
    d = tm.TwoModelsConfig()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--data-dir", default=None,
                        help="MNIST idx folder (default: tensorflow-datasets download)")
    parser.add_argument("--verify", action=argparse.BooleanOptionalAction, default=True,
                        help="check the idx files against the official MNIST md5s")
    parser.add_argument("--out", default=None, help="folder for strength_sweep.json/.png "
                        "(default: a new temporary folder)")
    parser.add_argument("--merge", nargs="+", default=None, metavar="JSON",
                        help="instead of running: merge earlier runs' strength_sweep.json "
                             "files (same settings, other grids) and apply the rule to the "
                             "merged grid")
    parser.add_argument("--strengths", "--alphas", dest="strengths", type=parse_strength_grid,
                        default=list(AUTO_STRENGTHS),
                        help="comma-separated grid of the WPL strength alpha (the same as "
                             "wpl-two-models --strength auto's default)")
    parser.add_argument("--tolerance", type=float, default=1.0,
                        help="accuracy points B may lose on validation data (the rule)")
    parser.add_argument("--seeds", type=int, nargs="+", default=list(d.seeds))
    parser.add_argument("--no-strict", action="store_true", help="skip the strict case")
    parser.add_argument("--loose-levels", type=float, nargs="*", default=list(d.loose_levels))
    parser.add_argument("--iterations", type=int, default=d.iterations)
    parser.add_argument("--eval-every", type=int, default=d.eval_every)
    parser.add_argument("--hidden-units", type=int, default=d.hidden_units)
    parser.add_argument("--a-max-epochs", type=int, default=d.a_max_epochs)
    parser.add_argument("--a-steps-per-epoch", type=int, default=d.a_steps_per_epoch)
    parser.add_argument("--loose-learning-rate", type=float, default=d.loose_learning_rate)
    parser.add_argument("--fisher-samples", type=int, default=d.fisher_samples)
    parser.add_argument("--validation-size", type=int, default=d.validation_size)
    return parser


def config_from_args(args: argparse.Namespace) -> tm.TwoModelsConfig:
    """The two-model config the options describe (``strength`` is set per α by the sweep)."""
    return tm.TwoModelsConfig(
        seeds=tuple(args.seeds), iterations=args.iterations, eval_every=args.eval_every,
        hidden_units=args.hidden_units, a_max_epochs=args.a_max_epochs,
        a_steps_per_epoch=args.a_steps_per_epoch, loose_learning_rate=args.loose_learning_rate,
        loose_levels=tuple(args.loose_levels), fisher_samples=args.fisher_samples,
        validation_size=args.validation_size,
    )


def main(argv: Optional[Sequence[str]] = None) -> dict:
    """Runs the sweep (or merges earlier runs with ``--merge``); prints progress lines, then
    the report (:func:`~wpl_keras.experiments.strength_sweep.write_sweep_report`) as one JSON
    line."""
    args = build_parser().parse_args(argv)
    out = args.out or tempfile.mkdtemp(prefix="wpl_strength_sweep_")
    started = time.time()
    if args.merge:
        try:
            cases, config, data_text = strength_sweep.cases_from_files(args.merge,
                                                                       args.tolerance)
        except ValueError as error:
            raise SystemExit(f"--merge: {error}")
    else:
        config = config_from_args(args)
        levels = strength_sweep.case_levels(not args.no_strict, args.loose_levels)
        data = load_mnist(args.data_dir, validation_size=config.validation_size, seed=0,
                          verify=args.verify)
        cases = strength_sweep.run_cases(data, config, levels, args.strengths, args.tolerance,
                                         progress=lambda m: print(m, flush=True))
        sizes = data.sizes()
        data_text = (f"MNIST ({data.source}); train {sizes['train']}, validation "
                     f"{sizes['val']} held out of train, test {sizes['test']}")
    report = strength_sweep.write_sweep_report(
        cases, config, out, tolerance=args.tolerance, data_text=data_text,
        seconds=time.time() - started, merged_from=args.merge or ())
    print(json.dumps(report, allow_nan=False))
    return report


if __name__ == "__main__":
    main()
