"""Paper Figure 1: model A's forgetting as a function of how many of its layers B shares.

The two-model experiment (:mod:`wpl_keras.experiments.two_models`) with ``shared_layers = k``
for several ``k``: per seed A is trained once and every ``k`` starts from that A; B is trained
without and with WPL. Per ``k`` the report gives seed means (accuracy points) of
``a_drop_without`` / ``a_drop_with`` (A's test accuracy before B minus after) and
``forgetting_reduction = (d_without − d_with) / d_without``, plus the flags
``wpl_lower_everywhere`` and ``drop_grows_with_k`` (:func:`headline`). Run by
``benchmarks/shared_layers.py``.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Dict, List, Mapping, Sequence, Tuple

import numpy as np

from wpl_keras.experiments import two_models as tm
from wpl_keras.wpl.training import WPLDivergenceError

COUNTS = tuple(range(1, len(tm.A_LAYER_NAMES) + 1))
PER_COUNT_KEYS = ("a_baseline", "a_final_without", "a_final_with", "b_final_without",
                  "b_final_with", "a_drop_without", "a_drop_with", "forgetting_reduction")


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
    """A's test accuracy along B's training in ``run`` ("without" / "with"), seed mean."""
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


def _settings(config: tm.TwoModelsConfig, counts: Sequence[int]) -> dict:
    """The report's description of the two models and their training."""
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


def write_layers_report(cases: Mapping[int, Sequence[dict]], diverged: Sequence[dict],
                        config: tm.TwoModelsConfig, counts: Sequence[int], out: str, *,
                        data_text: str, seconds: float) -> dict:
    """Writes ``shared_layers.json`` (the report, the config, every case and divergence) and
    ``shared_layers.png`` (:func:`plot_figure1`) to ``out``; returns the report.

    Args:
        cases, diverged: :func:`run_counts` output; config, counts: what was run.
        data_text: what data was used; seconds: the run's wall time.

    Returns:
        The report (JSON-ready): ``shared_layers`` (:func:`summarize_counts`), the
        :func:`headline` flags, ``seeds``, ``diverged`` (seed and count), ``settings`` and
        ``outputs``.
    """
    os.makedirs(out, exist_ok=True)
    per_count = summarize_counts(cases)
    paths = {"json": os.path.join(out, "shared_layers.json"),
             "figure": os.path.join(out, "shared_layers.png")}
    plot_figure1(cases, per_count, paths["figure"])
    report = {
        "benchmark": "shared_layers (paper Figure 1)",
        "data": data_text,
        "shared_layers": per_count,
        **headline(per_count),
        "seeds": list(config.seeds),
        "diverged": [{"seed": d["seed"], "shared_layers": d["shared_layers"]} for d in diverged],
        "units": "a_drop: accuracy points; accuracies and reduction: fractions",
        "settings": _settings(config, counts),
        "outputs": paths,
        "seconds": round(seconds, 1),
    }
    with open(paths["json"], "w") as handle:
        json.dump(tm.to_jsonable({"report": report, "config": config.to_json(),
                                  "cases": {str(k): v for k, v in cases.items()},
                                  "diverged": list(diverged)}), handle, indent=1)
    return tm.to_jsonable(report)
