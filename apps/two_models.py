"""``wpl-two-models``: the paper's two-model MNIST experiment (§4.1, Figure 2).

    wpl-two-models --data-dir ../shared/data/mnist --out runs/two_models
    wpl-two-models --out runs/two_models              # MNIST via tensorflow-datasets download
    WPL_DATA_DIR=../shared/data wpl-two-models --out runs/two_models --seeds 0 1 --loose-levels 0.56
    wpl-two-models --out runs/two_models --alpha auto  # α per case, chosen on validation data

The app parses arguments into a :class:`~wpl_keras.experiments.two_models.TwoModelsConfig`,
loads MNIST and calls :func:`~wpl_keras.experiments.two_models.run_experiment`; it writes
``results.json``, ``config.json``, ``data_source.json`` (the data folder and ``--verify``)
and ``two_models.png`` into ``--out``. A data error (a failed download, missing or bad idx
files) is reported in one paragraph, with exit status 2.

``--alpha auto`` runs every case at every α of ``--auto-alphas`` (A trained once per seed and
case) and keeps, per case, the runs at the α that
:func:`~wpl_keras.wpl.strength.choose_strength` picks on validation data; ``results.json`` then
has ``alpha_auto`` (the grid, the tolerance and each case's choice).
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
AUTO_ALPHAS = tuple(10.0 ** e for e in range(0, 9))


def parse_alpha(text: str):
    """``--alpha``: ``"auto"``, or a number >= 0."""
    if text.strip().lower() == AUTO:
        return AUTO
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"alpha is a number >= 0 or 'auto', got {text!r}")
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"alpha is a number >= 0 or 'auto', got {text!r}")
    return value


def parse_alpha_grid(text: str) -> list:
    """``--auto-alphas``: comma-separated α, each finite and > 0 (``"1e2,1e4"``)."""
    try:
        values = [float(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"comma-separated numbers expected, got {text!r}")
    if not values or not all(0 < v < float("inf") for v in values):
        raise argparse.ArgumentTypeError(f"alphas must be finite numbers > 0, got {text!r}")
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
    parser.add_argument("--alpha", type=parse_alpha, default=d.strength,
                        help="WPL strength alpha (the penalty is "
                             "(alpha/2) sum F (theta - theta*)^2), or 'auto': per case, run "
                             "every alpha of --auto-alphas for every seed (A trained once per "
                             "seed and case) and keep the runs of the alpha chosen on "
                             "validation data: the largest validation forgetting reduction "
                             "among the alphas whose B validation accuracy is within "
                             "--auto-tolerance points of B's without WPL (ties: the smaller "
                             "alpha; if none is, the smallest cost to B). The choice per case "
                             "is in results.json under alpha_auto (config.json's strength is "
                             "then not the one used). Costs one B run pair per alpha")
    parser.add_argument("--auto-alphas", type=parse_alpha_grid, default=list(AUTO_ALPHAS),
                        help="comma-separated alpha grid of --alpha auto")
    parser.add_argument("--auto-tolerance", type=float, default=1.0,
                        help="accuracy points B may lose on validation data (--alpha auto)")
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
        strength=TwoModelsConfig().strength if args.alpha == AUTO else args.alpha,
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


def run_auto(data, config, *, strict: bool, alphas, tolerance: float, progress=print) -> dict:
    """``--alpha auto``: :func:`~wpl_keras.experiments.two_models.run_experiment`'s result with
    each case's runs taken at the α chosen on validation data.

    Per case, :func:`~wpl_keras.experiments.strength_sweep.sweep_strengths` runs every α and
    :func:`~wpl_keras.experiments.strength_sweep.choose_case_strength` picks one; when the rule
    cannot choose (e.g. A forgot nothing on validation data, so no reduction is defined) the
    smallest α with finished runs is used and ``alpha_auto`` says so.

    Returns:
        ``{"config", "source", "cases": {name: {"level", "seeds", "summary", "strength"}},
        "alpha_auto": {"alphas", "tolerance", "cases": {name: choice + "fallback"}}}``.

    Raises:
        RuntimeError: if every run of a case diverged.
    """
    from wpl_keras.experiments import strength_sweep, two_models

    results = {"config": config.to_json(), "source": getattr(data, "source", "arrays"),
               "cases": {}, "alpha_auto": {"alphas": list(alphas), "tolerance": tolerance,
                                           "cases": {}}}
    for level in ([None] if strict else []) + list(config.loose_levels):
        name = two_models.case_name(level)
        sweep = strength_sweep.sweep_strengths(data, config, level, alphas, progress=progress)
        table = strength_sweep.strength_table(sweep)
        choice = dict(strength_sweep.choose_case_strength(table, tolerance), fallback=False)
        if choice["strength"] is None:
            done = [row["strength"] for row in table if row["seeds_done"] > 0]
            if not done:
                raise RuntimeError(f"{name}: B diverged for every alpha and seed "
                                   f"({sweep['diverged']}).")
            choice.update(strength=min(done), fallback=True)
        alpha = choice["strength"]
        seeds = sweep["seeds"][f"{alpha:g}"]
        results["cases"][name] = {"level": level, "seeds": seeds,
                                  "summary": two_models.summarize(seeds), "strength": alpha}
        results["alpha_auto"]["cases"][name] = choice
        progress(f"{name}: alpha {alpha:g}"
                 + (f" (rule could not choose: {choice['error']}; smallest alpha used)"
                    if choice["fallback"] else f" ({choice['choice']['reason']})"))
    return results


def _rounded(value: float) -> Optional[float]:
    """``value`` to 4 decimals, or None for NaN (JSON has no NaN)."""
    return None if math.isnan(value) else round(value, 4)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point; returns the process exit code."""
    start_tensorflow()
    args = build_parser().parse_args(argv)
    from wpl_keras.data.mnist import load_mnist
    from wpl_keras.experiments import two_models
    from wpl_keras.experiments.data_source import (
        data_error_message,
        data_error_types,
        save_data_source,
    )

    try:
        config = config_from_args(args)
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
    if args.alpha == AUTO:
        results = run_auto(data, config, strict=not args.no_strict, alphas=args.auto_alphas,
                           tolerance=args.auto_tolerance,
                           progress=lambda m: print(m, flush=True))
    else:
        results = two_models.run_experiment(
            data, config, strict=not args.no_strict, progress=lambda m: print(m, flush=True)
        )
    paths = two_models.save_results(results, args.out, plot=not args.no_plot)
    summary = {
        name: {k: _rounded(case["summary"][k]["mean"])
               for k in ("a_baseline", "a_drop_without", "forgetting_reduction", "b_accuracy_gap")}
        for name, case in results["cases"].items()
    }
    if args.alpha == AUTO:
        for name, case in results["cases"].items():
            summary[name]["alpha"] = case["strength"]
    print(json.dumps({"out": paths, "summary": summary}))
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
