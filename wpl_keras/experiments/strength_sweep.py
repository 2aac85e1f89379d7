"""The WPL strength sweep of the two-model experiment: every α from one trained A, and the α
chosen on validation data by :func:`wpl_keras.wpl.strength.choose_strength`.

Used by ``wpl-two-models --alpha auto`` and ``benchmarks/alpha_sweep.py`` (whose report, with
the sweeps of several cases, their choices and the reduction-against-cost figure, is
:func:`write_sweep_report`).
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Callable, Dict, List, Optional, Sequence, Tuple

from wpl_keras.experiments.two_models import (
    TwoModelsConfig,
    case_name,
    mean_std,
    run_case,
    to_jsonable,
    train_a,
)
from wpl_keras.utils.strict_json import finite_or_null
from wpl_keras.wpl.strength import choose_strength
from wpl_keras.wpl.training import WPLDivergenceError


def sweep_strengths(data, config: TwoModelsConfig, level: Optional[float],
                    strengths: Sequence[float], *,
                    progress: Optional[Callable[[str], None]] = None) -> dict:
    """Runs one case (``level``; None = strict) at every WPL strength of a grid, every seed.

    Per seed A is trained once (:func:`train_a`) and every strength starts from it; each run is
    :func:`run_case` with ``config.strength`` set to that strength and ``validation=True``. B
    without WPL does not depend on the strength: it is trained once per seed and reused. A
    run whose B training diverges (:class:`WPLDivergenceError`) is left out and listed.

    Returns:
        ``{"level", "strengths": [α...], "seeds": {f"{α:g}": [run_case result per finished
        seed]}, "diverged": [{"seed", "strength", "error"}]}``.
    """
    strengths = [float(a) for a in strengths]
    out = {"level": level, "strengths": strengths, "seeds": {f"{a:g}": [] for a in strengths},
           "diverged": []}
    for seed in config.seeds:
        trained = train_a(data, config, seed, level)
        earlier = None
        for alpha in strengths:
            try:
                case = run_case(data, dataclasses.replace(config, strength=alpha), seed, level,
                                trained_a=trained, validation=True, without_from=earlier)
            except WPLDivergenceError as error:
                out["diverged"].append({"seed": seed, "strength": alpha, "error": str(error)})
                continue
            earlier = case
            out["seeds"][f"{alpha:g}"].append(case)
            if progress is not None:
                progress(f"{case_name(level)} seed {seed} alpha {alpha:g}: reduction "
                         f"{case['forgetting_reduction']:.4f} (validation "
                         f"{case['forgetting_reduction_val']:.4f}); B "
                         f"{case['b_final_without']:.4f} -> {case['b_final_with']:.4f} "
                         f"({case['seconds']:.0f}s)")
    return out


def strength_table(sweep: dict) -> list:
    """Seed means per strength of a :func:`sweep_strengths` result.

    Returns:
        One row per strength: ``strength``, ``seeds_done``; test side ``reduction`` and
        ``b_cost`` = ``100 · (b_final_with − b_final_without)`` (accuracy points, negative when
        B loses); validation side ``reduction_val``, ``b_accuracy_val`` (B with WPL),
        ``b_accuracy_without_val`` and ``b_cost_val``. NaN where no seed finished.
    """
    rows = []
    for alpha in sweep["strengths"]:
        cases = sweep["seeds"][f"{alpha:g}"]

        def mean(fn):
            return mean_std([fn(c) for c in cases])["mean"]

        rows.append({
            "strength": alpha, "seeds_done": len(cases),
            "reduction": mean(lambda c: c["forgetting_reduction"]),
            "b_cost": mean(lambda c: 100.0 * (c["b_final_with"] - c["b_final_without"])),
            "reduction_val": mean(lambda c: c["forgetting_reduction_val"]),
            "b_accuracy_val": mean(lambda c: c["b_final_with_val"]),
            "b_accuracy_without_val": mean(lambda c: c["b_final_without_val"]),
            "b_cost_val": mean(
                lambda c: 100.0 * (c["b_final_with_val"] - c["b_final_without_val"])),
        })
    return rows


def choose_case_strength(table: Sequence[dict], tolerance: float = 1.0) -> dict:
    """Applies :func:`~wpl_keras.wpl.strength.choose_strength` to the validation columns of a
    :func:`strength_table`.

    Strengths without a finished seed are left out of the grid; B's accuracy without WPL is the
    mean of ``b_accuracy_without_val`` over the other rows (B without WPL does not depend on α).

    Returns:
        ``{"strength", "choice" (StrengthChoice.to_json()), "left_out": [α...], "error"}``;
        ``strength`` and ``choice`` are None and ``error`` says why when the rule cannot choose
        (e.g. no forgetting on validation data, so a NaN reduction).
    """
    done = [row for row in table if row["seeds_done"] > 0]
    result = {"strength": None, "choice": None,
              "left_out": [row["strength"] for row in table if row["seeds_done"] == 0],
              "error": None}
    try:
        choice = choose_strength(
            [row["strength"] for row in done], [row["reduction_val"] for row in done],
            [row["b_accuracy_val"] for row in done],
            mean_std([row["b_accuracy_without_val"] for row in done])["mean"], tolerance)
    except ValueError as error:
        result["error"] = str(error)
        return result
    result.update(strength=choice.strength, choice=choice.to_json())
    return result


# --------------------------------------------------------------------------- output


def merge_sweeps(sweeps: Sequence[dict]) -> dict:
    """One :func:`sweep_strengths` result from several of the same case run on different grids
    (e.g. a grid extended below its smallest α after the rule fell back to it), read back from
    JSON or not.

    A strength present in several sweeps is taken from the first. JSON nulls (non-finite
    values written by ``finite_or_null``) become NaN again.

    Raises:
        ValueError: for no sweeps, or sweeps of different cases (levels).
    """
    if not sweeps:
        raise ValueError("merge_sweeps needs at least one sweep.")
    levels = {sweep["level"] for sweep in sweeps}
    if len(levels) != 1:
        raise ValueError(f"merge_sweeps: the sweeps are of different cases (levels {levels}).")
    out = {"level": sweeps[0]["level"], "strengths": [], "seeds": {}, "diverged": []}
    for sweep in sweeps:
        new = [a for a in sweep["strengths"] if f"{float(a):g}" not in out["seeds"]]
        for alpha in new:
            key = f"{float(alpha):g}"
            out["strengths"].append(float(alpha))
            out["seeds"][key] = [
                {k: (float("nan") if v is None else v) for k, v in case.items()}
                for case in sweep["seeds"][key]]
        out["diverged"] += [d for d in sweep["diverged"] if d["strength"] in new]
    out["strengths"].sort()
    return out


# --------------------------------------------------------------------------- several cases
def case_levels(strict: bool, levels: Sequence[float]) -> List[Optional[float]]:
    """The cases in order: None (strict) if ``strict``, then each loose level."""
    return ([None] if strict else []) + [float(v) for v in levels]


def chosen_entry(table: Sequence[dict], choice: dict) -> dict:
    """The ``chosen`` record of one case: the α the rule picked on validation data and the
    test-set ``reduction`` and ``b_cost`` (seed means) at that α.

    Args:
        table: :func:`strength_table` of the case.
        choice: :func:`choose_case_strength` of that table.
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


def case_entry(level: Optional[float], sweep: dict, tolerance: float) -> dict:
    """One case of the report from its sweep: ``{"level", "sweep", "table"
    (:func:`strength_table`), "choice" (:func:`choose_case_strength`), "chosen"
    (:func:`chosen_entry`)}``."""
    table = strength_table(sweep)
    choice = choose_case_strength(table, tolerance)
    return {"level": level, "sweep": sweep, "table": table, "choice": choice,
            "chosen": chosen_entry(table, choice)}


def run_cases(data, config: TwoModelsConfig, levels: Sequence[Optional[float]],
              strengths: Sequence[float], tolerance: float, *,
              progress: Optional[Callable[[str], None]] = None) -> Dict[str, dict]:
    """Every case of ``levels`` (:func:`case_levels`) at every strength (A trained once per
    seed and case, :func:`sweep_strengths`).

    Returns:
        ``{case name: case_entry(level, sweep, tolerance)}``.
    """
    out = {}
    for level in levels:
        sweep = sweep_strengths(data, config, level, strengths, progress=progress)
        case = out[case_name(level)] = case_entry(level, sweep, tolerance)
        choice = case["choice"]
        if progress is not None:
            progress(f"{case_name(level)}: chosen alpha {choice['strength']}"
                     + (f" ({choice['error']})" if choice["error"] else ""))
    return out


def cases_from_files(paths: Sequence[str],
                     tolerance: float) -> Tuple[Dict[str, dict], TwoModelsConfig, str]:
    """``(cases, config, data text)`` merged from earlier :func:`write_sweep_report` files
    (:func:`merge_sweeps` per case, the rule applied to the merged grid).

    Raises:
        ValueError: naming the file, for an unreadable one or a run with other settings than
            the first (only the α grid may differ).
    """
    runs = []
    for path in paths:
        try:
            with open(path) as handle:
                runs.append(json.load(handle))
        except (OSError, json.JSONDecodeError) as error:
            raise ValueError(f"cannot read {path}: {error}") from None
        if runs[-1].get("config") != runs[0].get("config"):
            raise ValueError(f"{path} was run with other settings than {paths[0]} (only the "
                             "alpha grid may differ).")
    if not runs:
        raise ValueError("cases_from_files needs at least one file.")
    names = list(dict.fromkeys(name for run in runs for name in run["sweeps"]))
    cases = {}
    for name in names:
        sweep = merge_sweeps([run["sweeps"][name] for run in runs if name in run["sweeps"]])
        cases[name] = case_entry(sweep["level"], sweep, tolerance)
    config = TwoModelsConfig.from_json(runs[0]["config"])
    return cases, config, runs[0]["report"]["data"]


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


def _settings(config: TwoModelsConfig) -> dict:
    """The report's description of the two models and their training."""
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


def write_sweep_report(cases: Dict[str, dict], config: TwoModelsConfig, out: str, *,
                       tolerance: float, data_text: str, seconds: float,
                       merged_from: Sequence[str] = ()) -> dict:
    """Writes ``alpha_sweep.json`` (the report, the config, every sweep and choice; NaN as
    null) and ``alpha_sweep.png`` (:func:`plot_pareto`) to ``out``; returns the report.

    Args:
        cases: :func:`run_cases` or :func:`cases_from_files` output.
        config: the two-model settings of the runs; tolerance: the rule's (accuracy points).
        data_text: what data was used; seconds: the run's wall time.
        merged_from: the files merged (:func:`cases_from_files`), if any.

    Returns:
        The report, as strict JSON (NaN as null): per case and α the seed means of
        :func:`strength_table` under ``cases``, the rule's ``chosen`` α per case
        (:func:`chosen_entry`), the ``alphas`` run, ``seeds``, ``settings`` and ``outputs``.
    """
    os.makedirs(out, exist_ok=True)
    paths = {"json": os.path.join(out, "alpha_sweep.json"),
             "figure": os.path.join(out, "alpha_sweep.png")}
    plot_pareto(cases, paths["figure"])
    report = {
        "benchmark": "alpha_sweep (two models)",
        "data": data_text,
        "alphas": sorted({a for c in cases.values() for a in c["sweep"]["strengths"]}),
        "seeds": list(config.seeds),
        "tolerance": tolerance,
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
        "merged_from": list(merged_from),
        "outputs": paths,
        "seconds": round(seconds, 1),
    }
    with open(paths["json"], "w") as handle:
        json.dump(finite_or_null(to_jsonable({
            "report": report, "config": config.to_json(),
            "sweeps": {name: c["sweep"] for name, c in cases.items()},
            "choices": {name: c["choice"] for name, c in cases.items()}})), handle, indent=1,
            allow_nan=False)
    return finite_or_null(to_jsonable(report))
