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
cost), with the test-set ``reduction`` and ``b_cost`` at that α. Writes ``alpha_sweep.json``
(report and every run) and ``alpha_sweep.png`` (per case, reduction against b_cost, one point
per α) to ``--out``.

    python benchmarks/alpha_sweep.py --data-dir ../shared/data/mnist

``--merge A/alpha_sweep.json B/alpha_sweep.json`` runs nothing: it merges earlier runs made with
the same settings on different grids (e.g. a grid extended below the smallest α after the rule
fell back to it) and applies the rule to the merged grid.

The last line of output is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from typing import Callable, Dict, List, Optional, Sequence

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from apps.two_models import AUTO_ALPHAS, parse_alpha_grid  # noqa: E402
from wpl_keras.data.mnist import load_mnist  # noqa: E402
from wpl_keras.experiments import strength_sweep  # noqa: E402
from wpl_keras.experiments import two_models as tm  # noqa: E402
from wpl_keras.utils.strict_json import finite_or_null  # noqa: E402

# --------------------------------------------------------------------------- pure parts
def chosen_entry(table: Sequence[dict], choice: dict) -> dict:
    """The ``chosen`` record of one case: the α the rule picked on validation data and the
    test-set ``reduction`` and ``b_cost`` (seed means) at that α.

    Args:
        table: :func:`~wpl_keras.experiments.strength_sweep.strength_table` of the case.
        choice: :func:`~wpl_keras.experiments.strength_sweep.choose_case_strength` of that table.
    """
    entry = {"alpha": choice["strength"], "reduction": float("nan"), "b_cost": float("nan"),
             "reduction_val": float("nan"), "b_cost_val": float("nan"),
             "qualified": None, "reason": choice["error"]}
    if choice["strength"] is None:
        return entry
    row = next(r for r in table if r["strength"] == choice["strength"])
    entry.update(reduction=row["reduction"], b_cost=row["b_cost"],
                 reduction_val=row["reduction_val"], b_cost_val=row["b_cost_val"],
                 qualified=choice["choice"]["qualified"], reason=choice["choice"]["reason"])
    return entry


def plot_pareto(cases: Dict[str, dict], path: str) -> None:
    """One panel per case: test reduction (y) against test ``b_cost`` (x), one point per α
    (seed means, labelled with α); the chosen α is ringed."""
    from wpl_keras.utils.plotting import new_figure

    names = list(cases)
    fig, axes = new_figure(1, len(names), figsize=(3.8 * len(names), 3.8), squeeze=False)
    for ax, name in zip(axes[0], names):
        rows = [r for r in cases[name]["table"] if r["seeds_done"] > 0]
        ax.plot([r["b_cost"] for r in rows], [r["reduction"] for r in rows], "o-",
                color="tab:blue")
        for r in rows:
            ax.annotate(f"{r['strength']:g}", (r["b_cost"], r["reduction"]), fontsize=7,
                        textcoords="offset points", xytext=(4, 4))
        chosen = cases[name]["chosen"]
        if chosen["alpha"] is not None:
            ax.plot([chosen["b_cost"]], [chosen["reduction"]], "o", markersize=12,
                    markerfacecolor="none", color="tab:red", label=f"chosen α {chosen['alpha']:g}")
            ax.legend(fontsize=8, loc="best")
        ax.axvline(0.0, color="black", linewidth=0.8)
        ax.set_xlabel("b_cost: B with − without WPL (test, points)")
        ax.set_ylabel("forgetting reduction (test)")
        ax.set_title(name.replace("_", " "))
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


# --------------------------------------------------------------------------- run
def case_levels(strict: bool, levels: Sequence[float]) -> List[Optional[float]]:
    """The cases in order: None (strict) if ``strict``, then each loose level."""
    return ([None] if strict else []) + [float(v) for v in levels]


def run_sweep(data, config: tm.TwoModelsConfig, levels: Sequence[Optional[float]],
              alphas: Sequence[float], tolerance: float,
              progress: Callable[[str], None] = print) -> Dict[str, dict]:
    """Every case of ``levels`` at every α (A trained once per seed and case).

    Returns:
        ``{case name: {"level", "sweep" (sweep_strengths), "table" (strength_table),
        "choice" (choose_case_strength), "chosen" (chosen_entry)}}``.
    """
    out = {}
    for level in levels:
        sweep = strength_sweep.sweep_strengths(data, config, level, alphas, progress=progress)
        case = out[tm.case_name(level)] = case_entry(level, sweep, tolerance)
        choice = case["choice"]
        progress(f"{tm.case_name(level)}: chosen alpha {choice['strength']}"
                 + (f" ({choice['error']})" if choice["error"] else ""))
    return out


def build_parser() -> argparse.ArgumentParser:
    """Command-line options (defaults: the two-model experiment's settings, seeds 0 1 2)."""
    d = tm.TwoModelsConfig()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--data-dir", default=None,
                        help="MNIST idx folder (default: tensorflow-datasets download)")
    parser.add_argument("--verify", action=argparse.BooleanOptionalAction, default=True,
                        help="check the idx files against the official MNIST md5s")
    parser.add_argument("--out", default=None, help="folder for alpha_sweep.json/.png "
                        "(default: a new temporary folder)")
    parser.add_argument("--merge", nargs="+", default=None, metavar="JSON",
                        help="instead of running: merge earlier runs' alpha_sweep.json files "
                             "(same settings, other alpha grids) and apply the rule to the "
                             "merged grid")
    parser.add_argument("--alphas", type=parse_alpha_grid, default=list(AUTO_ALPHAS),
                        help="comma-separated grid of alpha (the same as wpl-two-models "
                             "--alpha auto's default)")
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


def _settings(config: tm.TwoModelsConfig) -> dict:
    return {
        "model_a": f"flatten -> W_A1..W_A4 Dense({config.hidden_units}, relu) -> head_A Dense(10)",
        "model_b": "flatten -> W_A1..W_A4 (shared) -> W_B5, W_B6 -> head_B Dense(10)",
        "a": "trained once per seed and case, every alpha starts from it; strict: "
             f"{config.a_optimizer} lr {config.a_learning_rate}, <= {config.a_max_epochs} epochs,"
             f" early stopping; loose: plain SGD lr {config.loose_learning_rate} to the level",
        "b": f"SGD lr {config.b_learning_rate} momentum {config.b_momentum}, batch "
             f"{config.batch_size}, {config.iterations} iterations, without and with WPL",
        "fisher": f"{config.fisher_kind} Fisher of the shared weights on "
                  f"{config.fisher_samples} validation images",
        "wpl": f"{config.wpl_mode} mode, l2 {config.l2}",
        "validation": "the held-out validation split (also the Fisher's and loose stopping's "
                      "data); the test set is not used by the rule",
    }


def case_entry(level: Optional[float], sweep: dict, tolerance: float) -> dict:
    """One case of the report from its sweep: table, the rule's choice and the chosen entry."""
    table = strength_sweep.strength_table(sweep)
    choice = strength_sweep.choose_case_strength(table, tolerance)
    return {"level": level, "sweep": sweep, "table": table, "choice": choice,
            "chosen": chosen_entry(table, choice)}


def cases_from_files(paths: Sequence[str], tolerance: float):
    """``(cases, config, data text)`` merged from earlier runs' ``alpha_sweep.json`` files
    (:func:`~wpl_keras.experiments.strength_sweep.merge_sweeps` per case, the rule applied to
    the merged grid).

    Raises:
        SystemExit: for an unreadable file or runs with other settings than the first.
    """
    runs = []
    for path in paths:
        try:
            with open(path) as handle:
                runs.append(json.load(handle))
        except (OSError, json.JSONDecodeError) as error:
            raise SystemExit(f"--merge: cannot read {path}: {error}")
        if runs[-1].get("config") != runs[0].get("config"):
            raise SystemExit(f"--merge: {path} was run with other settings than {paths[0]} "
                             "(only the alpha grid may differ).")
    names = list(dict.fromkeys(name for run in runs for name in run["sweeps"]))
    cases = {}
    for name in names:
        sweep = strength_sweep.merge_sweeps([run["sweeps"][name] for run in runs
                                             if name in run["sweeps"]])
        cases[name] = case_entry(sweep["level"], sweep, tolerance)
    config = tm.TwoModelsConfig.from_json(runs[0]["config"])
    return cases, config, runs[0]["report"]["data"]


def main(argv: Optional[Sequence[str]] = None) -> dict:
    """Runs the sweep (or merges earlier runs with ``--merge``); prints progress lines, then
    the report as one JSON line."""
    args = build_parser().parse_args(argv)
    out = args.out or tempfile.mkdtemp(prefix="wpl_alpha_sweep_")
    os.makedirs(out, exist_ok=True)
    started = time.time()
    if args.merge:
        cases, config, data_text = cases_from_files(args.merge, args.tolerance)
    else:
        config = config_from_args(args)
        levels = case_levels(not args.no_strict, args.loose_levels)
        data = load_mnist(args.data_dir, validation_size=config.validation_size, seed=0,
                          verify=args.verify)
        cases = run_sweep(data, config, levels, args.alphas, args.tolerance,
                          progress=lambda m: print(m, flush=True))
        sizes = data.sizes()
        data_text = (f"MNIST ({data.source}); train {sizes['train']}, validation "
                     f"{sizes['val']} held out of train, test {sizes['test']}")
    paths = {"json": os.path.join(out, "alpha_sweep.json"),
             "figure": os.path.join(out, "alpha_sweep.png")}
    plot_pareto(cases, paths["figure"])
    alphas = sorted({a for c in cases.values() for a in c["sweep"]["strengths"]})
    report = {
        "benchmark": "alpha_sweep (two models)",
        "data": data_text,
        "alphas": alphas,
        "seeds": list(config.seeds),
        "tolerance": args.tolerance,
        "cases": {name: {"level": c["level"], "alphas": {f"{r['strength']:g}": r
                                                         for r in c["table"]},
                         "diverged": [{"seed": d["seed"], "alpha": d["strength"]}
                                      for d in c["sweep"]["diverged"]]}
                  for name, c in cases.items()},
        "chosen": {name: c["chosen"] for name, c in cases.items()},
        "rule": "on validation data: largest reduction_val among alphas with b_cost_val >= "
                "-tolerance; ties to the smaller alpha; if none, the largest b_cost_val",
        "units": "reduction: fraction; b_cost: accuracy points (B with WPL minus without); "
                 "accuracies: fractions; all seed means",
        "settings": _settings(config),
        "merged_from": list(args.merge or []),
        "outputs": paths,
        "seconds": round(time.time() - started, 1),
    }
    with open(paths["json"], "w") as handle:
        json.dump(finite_or_null(tm.to_jsonable({
            "report": report, "config": config.to_json(),
            "sweeps": {name: c["sweep"] for name, c in cases.items()},
            "choices": {name: c["choice"] for name, c in cases.items()}})), handle, indent=1,
            allow_nan=False)
    report = finite_or_null(tm.to_jsonable(report))
    print(json.dumps(report, allow_nan=False))
    return report


if __name__ == "__main__":
    main()
