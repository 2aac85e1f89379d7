"""``wpl-two-models``: the paper's two-model MNIST experiment (§4.1, Figure 2).

    wpl-two-models --data-dir ../shared/data/mnist --out runs/two_models
    wpl-two-models --out runs/two_models              # MNIST via tensorflow-datasets download
    WPL_DATA_DIR=../shared/data wpl-two-models --out runs/two_models --seeds 0 1 --loose-levels 0.56
    wpl-two-models --out runs/two_models --strength auto  # α per case, chosen on validation data now
    wpl-two-models --out runs/two_models --strength 1e8   # one α for every case

The app parses arguments into a :class:`~wpl_keras.experiments.two_models.TwoModelsConfig`,
loads MNIST and calls :func:`~wpl_keras.experiments.two_models.run_experiment`; it writes
``results.json``, ``config.json``, ``data_source.json`` (the data folder and ``--verify``)
and ``two_models.png`` into ``--out``. A data error (a failed download, missing or bad idx
files) is reported in one paragraph, with exit status 2.

The WPL strength α of each case (``--strength``, also spelled ``--alpha``):

* not given: the α the α-choice rule picked on validation data in the recorded sweep
  (:func:`~wpl_keras.experiments.strength_sweep.recorded_case_strengths`, package data
  ``wpl_keras/experiments/two_models_strengths.json``); a case with no recorded choice is
  refused, naming the fix;
* ``auto``: every case at every α of ``--auto-strengths`` (A trained once per seed and case),
  keeping per case the runs at the α that :func:`~wpl_keras.wpl.strength.choose_strength`
  picks on this run's validation data
  (:func:`~wpl_keras.experiments.strength_sweep.run_auto_experiment`); ``results.json`` then
  has ``strength_auto`` (the grid, the tolerance and each case's choice);
* a number: that α for every case.

``results.json`` holds each case's ``strength`` and ``strength_source``, and ``overview``:
per case the strength, the forgetting reduction and B's ``b_accuracy_gap`` side by side.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import sys
from typing import Optional, Sequence

from apps.tf_startup import start_tensorflow

ENV_DATA_DIR = "WPL_DATA_DIR"
_MNIST_FILES = ("train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, "
                "t10k-images-idx3-ubyte.gz and t10k-labels-idx1-ubyte.gz")
AUTO = "auto"
# Decades 1 ... 1e8: on MNIST the strict case keeps B within a point up to 1e8, while the loose
# cases qualify only at 1-10 (benchmarks/README.md, alpha sweep).
AUTO_STRENGTHS = tuple(10.0 ** e for e in range(0, 9))
COMMAND_LINE_SOURCE = "--strength on the command line"


def parse_strength(text: str):
    """``--strength``: ``"auto"``, or a number >= 0."""
    if text.strip().lower() == AUTO:
        return AUTO
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"strength is a number >= 0 or 'auto', got {text!r}")
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"strength is a number >= 0 or 'auto', got {text!r}")
    return value


def parse_strength_grid(text: str) -> list:
    """``--auto-strengths``: comma-separated α, each finite and > 0 (``"1e2,1e4"``)."""
    try:
        values = [float(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"comma-separated numbers expected, got {text!r}")
    if not values or not all(0 < v < float("inf") for v in values):
        raise argparse.ArgumentTypeError(f"strengths must be finite numbers > 0, got {text!r}")
    return values


def resolve_data_dir(data_dir: Optional[str], environ=None) -> Optional[str]:
    """``--data-dir`` if given, else ``$WPL_DATA_DIR/mnist`` (or ``$WPL_DATA_DIR`` itself when
    it holds the idx files), else None (tensorflow-datasets download)."""
    from wpl_keras.data.mnist import MNIST_FILES

    if data_dir:
        return data_dir
    environ = os.environ if environ is None else environ
    root = environ.get(ENV_DATA_DIR)
    if not root:
        return None
    first = next(iter(MNIST_FILES.values()))
    if os.path.isfile(os.path.join(root, first)):
        return root
    return os.path.join(root, "mnist")


def build_parser() -> argparse.ArgumentParser:
    from wpl_keras.experiments.two_models import TwoModelsConfig

    d = TwoModelsConfig()
    parser = argparse.ArgumentParser(
        prog="wpl-two-models",
        description=(
            "Two models sharing weights on MNIST (paper section 4.1, Figure 2). Model A = 4 ReLU "
            "layers + its classifier; model B = A's 4 layers (shared) + 2 own layers + its "
            "classifier. A is trained (strictly to convergence, and/or loosely: stopped at lower "
            "accuracies), its Fisher is estimated on validation images, then B is trained with "
            "and without the Weight Plasticity Loss from the same start while A's and B's test "
            "accuracy are recorded. Writes results.json, config.json and two_models.png to --out."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "--data-dir", default=None,
        help="directory with the four MNIST idx .gz files (train-images-idx3-ubyte.gz, "
             "train-labels-idx1-ubyte.gz, t10k-images-idx3-ubyte.gz, t10k-labels-idx1-ubyte.gz). "
             f"Default: ${ENV_DATA_DIR}/mnist when {ENV_DATA_DIR} is set, else download with "
             "tensorflow-datasets (needs internet)")
    parser.add_argument("--verify", action=argparse.BooleanOptionalAction, default=True,
                        help="check the idx files against their standard checksums "
                             "(--no-verify: accept variants of the files)")
    parser.add_argument("--tfds-dir", default=None,
                        help="tensorflow-datasets cache directory for the download")
    parser.add_argument("--out", required=True, help="output directory")
    parser.add_argument("--seeds", type=int, nargs="+", default=list(d.seeds),
                        help="one full repetition per seed; figures show mean and spread")
    parser.add_argument("--iterations", type=int, default=d.iterations,
                        help="SGD steps of model B (paper: 1,500)")
    parser.add_argument("--eval-every", type=int, default=d.eval_every,
                        help="evaluate A and B on the test set every this many iterations")
    parser.add_argument(
        "--strength", "--alpha", dest="strength", type=parse_strength, default=None,
        help="WPL strength alpha (the penalty is (alpha/2) sum F (theta - theta*)^2). Not "
             "given: per case, the alpha the alpha-choice rule picked on validation data in "
             "the recorded sweep (wpl_keras/experiments/two_models_strengths.json; a case "
             "without a recorded choice is refused). A number: that alpha for every case. "
             "'auto': per case, run every alpha of --auto-strengths for every seed (A trained "
             "once per seed and case) and keep the runs of the alpha chosen on this run's "
             "validation data: the largest validation forgetting reduction among the alphas "
             "whose B validation accuracy is within --auto-tolerance points of B's without WPL "
             "(ties: the smaller alpha; if none is, the smallest cost to B); costs one B run "
             "pair per alpha. results.json gives each case's strength and strength_source "
             "(config.json's strength is the one used only for a number)")
    parser.add_argument("--auto-strengths", "--auto-alphas", dest="auto_strengths",
                        type=parse_strength_grid, default=list(AUTO_STRENGTHS),
                        help="comma-separated alpha grid of --strength auto")
    parser.add_argument("--auto-tolerance", type=float, default=1.0,
                        help="accuracy points B may lose on validation data (--strength auto)")
    parser.add_argument("--wpl-mode", choices=("proximal", "gradient"), default=d.wpl_mode,
                        help="proximal: exact proximal step after each SGD step, stable for any "
                             "alpha; gradient: penalty in the loss, diverges (with an error naming "
                             "alpha and the learning rate) once lr*alpha*max(F) >= 2(1+momentum)")
    parser.add_argument("--loose-levels", type=float, nargs="*", default=list(d.loose_levels),
                        help="validation top-1 accuracies at which loose training of A stops "
                             "(give none to skip the loose cases)")
    parser.add_argument("--no-strict", action="store_true",
                        help="skip the strict-convergence case")
    parser.add_argument("--b-learning-rate", type=float, default=d.b_learning_rate,
                        help="SGD learning rate of model B")
    parser.add_argument("--b-momentum", type=float, default=d.b_momentum,
                        help="SGD momentum of model B (0.9 makes A forget; 0 barely moves A)")
    parser.add_argument("--a-max-epochs", type=int, default=d.a_max_epochs,
                        help="epochs at most when training A to convergence")
    parser.add_argument("--fisher-samples", type=int, default=d.fisher_samples,
                        help="validation images used to estimate A's Fisher (paper: 200)")
    parser.add_argument("--fisher-kind", choices=("empirical", "true"), default=d.fisher_kind,
                        help="empirical: gradients of the true labels; true: of labels sampled "
                             "from A's prediction")
    parser.add_argument("--hidden-units", type=int, default=d.hidden_units,
                        help="units of every ReLU layer")
    parser.add_argument("--validation-size", type=int, default=d.validation_size,
                        help="training images held out for validation")
    parser.add_argument("--eval-examples", type=int, default=None,
                        help="test images used for the curves (default: all 10,000)")
    parser.add_argument("--no-plot", action="store_true", help="do not write two_models.png")
    return parser


def config_from_args(args: argparse.Namespace):
    """The :class:`TwoModelsConfig` the arguments describe."""
    from wpl_keras.experiments.two_models import TwoModelsConfig

    return dataclasses.replace(
        TwoModelsConfig(),
        seeds=tuple(args.seeds),
        iterations=args.iterations,
        eval_every=args.eval_every,
        strength=(args.strength if isinstance(args.strength, float)
                  else TwoModelsConfig().strength),
        wpl_mode=args.wpl_mode,
        loose_levels=tuple(args.loose_levels),
        b_learning_rate=args.b_learning_rate,
        b_momentum=args.b_momentum,
        a_max_epochs=args.a_max_epochs,
        fisher_samples=args.fisher_samples,
        fisher_kind=args.fisher_kind,
        hidden_units=args.hidden_units,
        validation_size=args.validation_size,
        eval_examples=args.eval_examples,
    )


def case_strengths(args: argparse.Namespace, config) -> Optional[dict]:
    """``{case name: CaseStrength}`` of a run that is not ``--strength auto``: the recorded
    validation choice per case when ``--strength`` is not given, else the given number.

    Raises:
        ValueError: for a case without a recorded choice (naming the fix).
    """
    from wpl_keras.experiments.strength_sweep import case_levels, recorded_case_strengths
    from wpl_keras.experiments.two_models import CaseStrength, case_name

    levels = case_levels(not args.no_strict, config.loose_levels)
    if args.strength is None:
        return recorded_case_strengths(config, levels)
    return {case_name(level): CaseStrength(args.strength, COMMAND_LINE_SOURCE)
            for level in levels}


def _rounded(value: float) -> Optional[float]:
    """``value`` to 4 decimals, or None for NaN (JSON has no NaN)."""
    return None if math.isnan(value) else round(value, 4)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point; returns the process exit code."""
    start_tensorflow()
    args = build_parser().parse_args(argv)
    from wpl_keras.data.mnist import load_mnist
    from wpl_keras.experiments import strength_sweep, two_models
    from wpl_keras.experiments.data_source import (
        data_error_message,
        data_error_types,
        save_data_source,
    )

    try:
        config = config_from_args(args)
        strengths = None if args.strength == AUTO else case_strengths(args, config)
    except ValueError as error:
        print(f"wpl-two-models: {error}", file=sys.stderr)
        return 2
    data_dir = resolve_data_dir(args.data_dir)
    try:
        data = load_mnist(data_dir, validation_size=config.validation_size, seed=0,
                          tfds_dir=args.tfds_dir, verify=args.verify)
    except data_error_types() as error:
        print(data_error_message("wpl-two-models", error, dataset="MNIST", files=_MNIST_FILES),
              file=sys.stderr)
        return 2
    save_data_source(args.out, data_dir, verify=args.verify)
    print(f"MNIST from {data.source}: {data.sizes()}", flush=True)
    progress = lambda m: print(m, flush=True)  # noqa: E731
    if args.strength == AUTO:
        results = strength_sweep.run_auto_experiment(
            data, config, strength_sweep.case_levels(not args.no_strict, config.loose_levels),
            args.auto_strengths, args.auto_tolerance, progress=progress)
    else:
        results = two_models.run_experiment(data, config, strict=not args.no_strict,
                                            progress=progress, strengths=strengths)
    paths = two_models.save_results(results, args.out, plot=not args.no_plot)
    summary = {name: {k: (_rounded(v) if isinstance(v, float) and k != "strength" else v)
                      for k, v in row.items()}
               for name, row in results["overview"].items()}
    print(json.dumps({"out": paths, "summary": summary}))
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
