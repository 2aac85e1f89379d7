"""Figure 1 of the paper: model A's forgetting as a function of how many layers B shares with it.

A = 4 × Dense + head; B = A's first ``k`` layers (shared objects, ``θs``) + ``6 − k`` own layers +
head (the two-model experiment of ``wpl_keras.experiments.two_models`` with ``shared_layers = k``).
For every seed, A is trained once to convergence (strict) and every ``k`` starts from that same
A: empirical Fisher of the ``k`` shared layers on 200 validation images, then B is trained for
1,500 SGD steps (momentum 0.9, lr 0.1) from the same start without and with WPL (proximal,
the two-model α). Reports per ``k``, averaged over seeds (accuracy points):

* ``a_drop_without`` = A's test accuracy before B minus after B, B trained without WPL;
* ``a_drop_with`` = the same with WPL;
* ``forgetting_reduction`` = (d_without − d_with) / d_without;

plus ``wpl_lower_everywhere`` (1 if the seed-mean ``a_drop_with`` < ``a_drop_without`` at every
``k``) and ``drop_grows_with_k`` (1 if the seed-mean ``a_drop_without`` does not decrease with
``k``, the paper's observation). A case whose B training diverges (SGD with momentum can blow
up, with or without WPL) is left out of the means and listed under ``diverged``. Writes ``shared_layers.json`` and ``shared_layers.png`` to
``--out``.

    python benchmarks/shared_layers.py --data-dir ../shared/data/mnist

The last line of output is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from typing import Optional, Sequence

from wpl_keras.data.mnist import load_mnist
from wpl_keras.experiments import two_models as tm
from wpl_keras.experiments.shared_layers import COUNTS, run_counts, write_layers_report


def build_parser() -> argparse.ArgumentParser:
    """Command-line options (defaults: the two-model experiment's, 2 seeds, k = 1..4)."""
    d = tm.TwoModelsConfig()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--data-dir", default=None,
                        help="MNIST idx folder (default: tensorflow-datasets download)")
    parser.add_argument("--verify", action=argparse.BooleanOptionalAction, default=True,
                        help="check the idx files against the official MNIST md5s")
    parser.add_argument("--out", default=None, help="folder for shared_layers.json/.png "
                        "(default: a new temporary folder)")
    parser.add_argument("--counts", type=int, nargs="+", default=list(COUNTS),
                        help="numbers of A's layers shared by B")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--iterations", type=int, default=d.iterations)
    parser.add_argument("--eval-every", type=int, default=d.eval_every)
    parser.add_argument("--alpha", type=float, default=d.strength)
    parser.add_argument("--hidden-units", type=int, default=d.hidden_units)
    parser.add_argument("--a-max-epochs", type=int, default=d.a_max_epochs)
    parser.add_argument("--a-steps-per-epoch", type=int, default=d.a_steps_per_epoch)
    parser.add_argument("--fisher-samples", type=int, default=d.fisher_samples)
    parser.add_argument("--validation-size", type=int, default=d.validation_size)
    return parser


def config_from_args(args: argparse.Namespace) -> tm.TwoModelsConfig:
    """The two-model config the options describe (its other fields at their defaults)."""
    return tm.TwoModelsConfig(
        seeds=tuple(args.seeds), iterations=args.iterations, eval_every=args.eval_every,
        strength=args.alpha, hidden_units=args.hidden_units, a_max_epochs=args.a_max_epochs,
        a_steps_per_epoch=args.a_steps_per_epoch, fisher_samples=args.fisher_samples,
        validation_size=args.validation_size,
    )


def main(argv: Optional[Sequence[str]] = None) -> dict:
    """Runs the benchmark; prints progress lines, then the report
    (:func:`~wpl_keras.experiments.shared_layers.write_layers_report`) as one JSON line."""
    args = build_parser().parse_args(argv)
    config = config_from_args(args)
    counts = sorted(set(args.counts))
    out = args.out or tempfile.mkdtemp(prefix="wpl_shared_layers_")
    started = time.time()
    data = load_mnist(args.data_dir, validation_size=config.validation_size, seed=0,
                      verify=args.verify)
    cases, diverged = run_counts(data, config, counts, progress=lambda m: print(m, flush=True))
    sizes = data.sizes()
    report = write_layers_report(
        cases, diverged, config, counts, out, seconds=time.time() - started,
        data_text=f"MNIST ({data.source}); train {sizes['train']}, validation {sizes['val']} "
                  f"held out of train, test {sizes['test']}")
    print(json.dumps(report))
    return report


if __name__ == "__main__":
    main()
