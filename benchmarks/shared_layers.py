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
import dataclasses
import json
import os
import sys
import tempfile
import time
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from wpl_keras.data.mnist import load_mnist  # noqa: E402
from wpl_keras.experiments import two_models as tm  # noqa: E402
from wpl_keras.wpl.training import WPLDivergenceError  # noqa: E402

COUNTS = tuple(range(1, len(tm.A_LAYER_NAMES) + 1))
PER_COUNT_KEYS = ("a_baseline", "a_final_without", "a_final_with", "b_final_without",
                  "b_final_with", "a_drop_without", "a_drop_with", "forgetting_reduction")


# --------------------------------------------------------------------------- pure parts
def summarize_counts(cases: Mapping[int, Sequence[dict]]) -> Dict[str, dict]:
    """Seed mean (and std) of each per-case figure, per shared-layer count.

    Args:
        cases: ``{k: [run_case result per seed]}``.

    Returns:
        ``{str(k): {key: mean, key + "_std": std, "per_seed_lower": [0/1 per seed],
        "seeds_done": n}}`` for the keys of :data:`PER_COUNT_KEYS`; ``per_seed_lower`` is 1
        where that seed's ``a_drop_with < a_drop_without``; a count without any finished seed
        has NaN means.
    """
    out = {}
    for k in sorted(cases):
        row = {"seeds_done": len(cases[k])}
        for key in PER_COUNT_KEYS:
            stats = tm.mean_std([case[key] for case in cases[k]])
            row[key], row[f"{key}_std"] = stats["mean"], stats["std"]
        row["per_seed_lower"] = [int(c["a_drop_with"] < c["a_drop_without"]) for c in cases[k]]
        out[str(k)] = row
    return out


def headline(per_count: Mapping[str, dict]) -> dict:
    """``wpl_lower_everywhere``: 1 if ``a_drop_with < a_drop_without`` (seed means) at every
    count; ``drop_grows_with_k``: 1 if ``a_drop_without`` is non-decreasing in ``k``. A NaN
    mean (a count without a finished seed) makes both 0."""
    counts = sorted(per_count, key=int)
    without = [per_count[k]["a_drop_without"] for k in counts]
    lower = all(per_count[k]["a_drop_with"] < per_count[k]["a_drop_without"] for k in counts)
    grows = all(np.isfinite(without)) and all(b >= a for a, b in zip(without, without[1:]))
    return {"wpl_lower_everywhere": int(bool(counts) and lower), "drop_grows_with_k": int(grows)}


def _mean_curve(cases: Sequence[dict], run: str):
    return np.mean([case["runs"][run]["acc_a"] for case in cases], axis=0)


def plot_figure1(cases: Mapping[int, Sequence[dict]], per_count: Mapping[str, dict],
                 path: str) -> None:
    """Left: A's test accuracy while B trains, one colour per ``k`` (solid without WPL, dashed
    with; seed mean), as the paper's Figure 1 (right). Right: A's drop against ``k`` without and
    with WPL (seed mean ± std)."""
    from wpl_keras.utils.plotting import new_figure

    fig, (left, right) = new_figure(1, 2, figsize=(10.0, 4.0))
    colours = ["tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown"]
    done = {k: v for k, v in cases.items() if v}
    for index, k in enumerate(sorted(done)):
        its = cases[k][0]["runs"]["without"]["iterations"]
        colour = colours[index % len(colours)]
        left.plot(its, _mean_curve(cases[k], "without"), color=colour, label=f"{k} shared")
        left.plot(its, _mean_curve(cases[k], "with"), color=colour, linestyle="--")
    if done:
        left.axhline(np.mean([c["a_baseline"] for c in next(iter(done.values()))]),
                     color="black", linewidth=0.8, label="A before B")
    left.set_xlabel("Iterations (training B)")
    left.set_ylabel("Model A test accuracy")
    left.set_title("A while B trains (solid: w/o WPL, dashed: WPL)")
    left.set_ylim(0, 1)
    left.grid(alpha=0.3)
    left.legend(loc="lower left", fontsize=8)
    counts = sorted(per_count, key=int)
    xs = [int(k) for k in counts]
    for key, colour, label in (("a_drop_without", "tab:blue", "w/o WPL"),
                               ("a_drop_with", "tab:orange", "with WPL")):
        right.errorbar(xs, [per_count[k][key] for k in counts],
                       yerr=[per_count[k][f"{key}_std"] for k in counts], color=colour,
                       marker="o", capsize=3, label=label)
    right.axhline(0.0, color="black", linewidth=0.8)
    right.set_xticks(xs)
    right.set_xlabel("Layers of A shared by B")
    right.set_ylabel("A's accuracy drop after B (points)")
    right.set_title("Multi-model forgetting")
    right.grid(alpha=0.3)
    right.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


# --------------------------------------------------------------------------- run
def run_counts(data, config: tm.TwoModelsConfig, counts: Sequence[int],
               progress=print) -> Tuple[Dict[int, list], List[dict]]:
    """Per seed, trains A once (strict) and runs B without / with WPL for every count.

    A case whose B training diverges (:class:`WPLDivergenceError`, with or without WPL) is left
    out of ``cases`` and listed in ``diverged`` with its seed, count and message.

    Returns:
        ``({k: [run_case result per finished seed]}, diverged)``.
    """
    cases, diverged = {k: [] for k in counts}, []
    for seed in config.seeds:
        trained = tm.train_a(data, config, seed)
        for k in counts:
            try:
                case = tm.run_case(data, dataclasses.replace(config, shared_layers=k), seed,
                                   trained_a=trained)
            except WPLDivergenceError as error:
                diverged.append({"seed": seed, "shared_layers": k, "error": str(error)})
                progress(f"seed {seed}, {k} shared: B diverged, case left out ({error})")
                continue
            cases[k].append(case)
            progress(f"seed {seed}, {k} shared: A {case['a_baseline']:.4f} -> "
                     f"{case['a_final_without']:.4f} without / {case['a_final_with']:.4f} with "
                     f"WPL; B {case['b_final_without']:.4f} / {case['b_final_with']:.4f} "
                     f"({case['seconds']:.0f}s)")
    return cases, diverged


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


def _settings(config: tm.TwoModelsConfig, counts: Sequence[int]) -> dict:
    return {
        "model_a": f"flatten -> W_A1..W_A4 Dense({config.hidden_units}, relu) -> head_A Dense(10)",
        "model_b": f"flatten -> W_A1..W_Ak (shared) -> W_B(k+1)..W_B6 Dense({config.hidden_units}"
                   f", relu) -> head_B Dense(10); k in {list(counts)}",
        "a_strict": f"{config.a_optimizer} lr {config.a_learning_rate}, batch {config.batch_size}"
                    f", <= {config.a_max_epochs} epochs, early stopping on validation accuracy "
                    f"(patience {config.a_patience}); trained once per seed, shared by every k",
        "b": f"SGD lr {config.b_learning_rate} momentum {config.b_momentum}, batch "
             f"{config.batch_size}, {config.iterations} iterations",
        "fisher": f"{config.fisher_kind} Fisher of the k shared layers on "
                  f"{config.fisher_samples} validation images",
        "wpl": f"alpha {config.strength:g}, {config.wpl_mode} mode, l2 {config.l2}",
    }


def main(argv: Optional[Sequence[str]] = None) -> dict:
    """Runs the benchmark; prints progress lines, then the report as one JSON line."""
    args = build_parser().parse_args(argv)
    config = config_from_args(args)
    counts = sorted(set(args.counts))
    out = args.out or tempfile.mkdtemp(prefix="wpl_shared_layers_")
    os.makedirs(out, exist_ok=True)
    started = time.time()
    data = load_mnist(args.data_dir, validation_size=config.validation_size, seed=0,
                      verify=args.verify)
    cases, diverged = run_counts(data, config, counts, progress=lambda m: print(m, flush=True))
    per_count = summarize_counts(cases)
    paths = {"json": os.path.join(out, "shared_layers.json"),
             "figure": os.path.join(out, "shared_layers.png")}
    plot_figure1(cases, per_count, paths["figure"])
    sizes = data.sizes()
    report = {
        "benchmark": "shared_layers (paper Figure 1)",
        "data": f"MNIST ({data.source}); train {sizes['train']}, validation {sizes['val']} held "
                f"out of train, test {sizes['test']}",
        "shared_layers": per_count,
        **headline(per_count),
        "seeds": list(config.seeds),
        "diverged": [{"seed": d["seed"], "shared_layers": d["shared_layers"]} for d in diverged],
        "units": "a_drop: accuracy points; accuracies and reduction: fractions",
        "settings": _settings(config, counts),
        "outputs": paths,
        "seconds": round(time.time() - started, 1),
    }
    with open(paths["json"], "w") as handle:
        json.dump(tm.to_jsonable({"report": report, "config": config.to_json(),
                                  "cases": {str(k): v for k, v in cases.items()},
                                  "diverged": diverged}), handle, indent=1)
    print(json.dumps(tm.to_jsonable(report)))
    return report


if __name__ == "__main__":
    main()
