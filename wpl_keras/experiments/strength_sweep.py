"""The WPL strength sweep of the two-model experiment: every α from one trained A, and the α
chosen on validation data by :func:`wpl_keras.wpl.strength.choose_strength`.

Used by ``wpl-two-models`` (the recorded choices, :func:`recorded_case_strengths`; ``--strength
auto``, :func:`run_auto_experiment`) and ``benchmarks/alpha_sweep.py`` (whose report, with
the sweeps of several cases, their choices and the reduction-against-cost figure, is
:func:`write_sweep_report`).
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Callable, Dict, List, Optional, Sequence, Tuple

from wpl_keras.experiments.two_models import (
    CaseStrength,
    TwoModelsConfig,
    case_name,
    case_overview,
    mean_std,
    run_case,
    summarize,
    to_jsonable,
    train_a,
)
from wpl_keras.utils.strict_json import finite_or_null
from wpl_keras.utils.validation import check_number
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
        for strength in strengths:
            try:
                case = run_case(data, dataclasses.replace(config, strength=strength), seed,
                                level, trained_a=trained, validation=True,
                                without_from=earlier)
            except WPLDivergenceError as error:
                out["diverged"].append({"seed": seed, "strength": strength,
                                        "error": str(error)})
                continue
            earlier = case
            out["seeds"][f"{strength:g}"].append(case)
            if progress is not None:
                progress(f"{case_name(level)} seed {seed} strength {strength:g}: reduction "
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
    for strength in sweep["strengths"]:
        cases = sweep["seeds"][f"{strength:g}"]

        def mean(fn):
            return mean_std([fn(c) for c in cases])["mean"]

        rows.append({
            "strength": strength, "seeds_done": len(cases),
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


# --------------------------------------------------------------------------- recorded choices
RECORDED_STRENGTHS_FILE = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                       "two_models_strengths.json")
RECORDED_STRENGTHS_NAME = "wpl_keras/experiments/two_models_strengths.json"  # as sources say
# Settings that do not change what is trained (what is evaluated, how often, which cases and
# seeds run), so a run that differs from the recorded sweep only in them runs its settings.
_NOT_TRAINING = ("strength", "seeds", "loose_levels", "eval_every", "eval_examples")


def load_recorded_strengths(path: Optional[str] = None) -> dict:
    """The α choices of a recorded sweep (default :data:`RECORDED_STRENGTHS_FILE`, package
    data): ``{"produced_by", "tolerance", "config", "cases": {name: {"level", "strength",
    "reduction", "b_cost", "qualified", "strengths_swept"}}, ...}``.

    Raises:
        ValueError: naming the file, if it cannot be read or a case has no finite
            ``strength`` > 0.
    """
    path = RECORDED_STRENGTHS_FILE if path is None else path
    try:
        with open(path) as handle:
            recorded = json.load(handle)
        cases = recorded["cases"]
    except (OSError, json.JSONDecodeError, KeyError, TypeError) as error:
        raise ValueError(f"cannot read the recorded strengths {path}: {error!r}") from None
    for name, case in cases.items():
        try:
            check_number(f"{path}: cases.{name}.strength", case.get("strength"), minimum=0,
                         exclusive_minimum=True)
        except TypeError as error:
            raise ValueError(str(error)) from None
    return recorded


def recorded_case_strengths(config: TwoModelsConfig, levels: Sequence[Optional[float]],
                            path: Optional[str] = None) -> Dict[str, CaseStrength]:
    """``{case name: CaseStrength}`` for the cases ``levels`` (:func:`case_levels`), each at
    the α the rule chose on validation data in the recorded sweep
    (:func:`load_recorded_strengths`); what ``wpl-two-models`` runs without ``--strength``.

    Each ``source`` reads ``"validation choice, <file> (<date>)"``; where ``config`` trains
    differently from the sweep's config (any field but strength, seeds, loose_levels,
    eval_every, eval_examples), it adds ``"; swept with other settings: <fields>"``.

    Raises:
        ValueError: for a case the file has no choice for, naming the recorded cases and the
            fix (``--strength auto`` chooses it on validation data, ``--strength VALUE`` fixes
            it).
    """
    path = RECORDED_STRENGTHS_FILE if path is None else path
    recorded = load_recorded_strengths(path)
    names = [case_name(level) for level in levels]
    missing = [name for name in names if name not in recorded["cases"]]
    if missing:
        raise ValueError(
            f"no recorded strength for the cases {missing} in {path} (it has "
            f"{sorted(recorded['cases'])}); pass --strength auto to choose it on validation "
            "data, or --strength VALUE to run every case at VALUE.")
    run = config.to_json()
    swept = recorded.get("config", {})
    differ = [k for k in run if k not in _NOT_TRAINING and k in swept
              and to_jsonable(run[k]) != swept[k]]
    date = recorded.get("produced_by", {}).get("date", "undated")
    shown = (RECORDED_STRENGTHS_NAME if os.path.abspath(path) == RECORDED_STRENGTHS_FILE
             else path)
    source = f"validation choice, {shown} ({date})"
    if differ:
        source += "; swept with other settings: " + ", ".join(differ)
    return {name: CaseStrength(recorded["cases"][name]["strength"], source) for name in names}


def run_auto_experiment(data, config: TwoModelsConfig, levels: Sequence[Optional[float]],
                        strengths: Sequence[float], tolerance: float, *,
                        progress: Optional[Callable[[str], None]] = None) -> dict:
    """:func:`~wpl_keras.experiments.two_models.run_experiment`'s result with each case's runs
    taken at the α the rule chooses on validation data in this run (``--strength auto``).

    Per case (``levels``, :func:`case_levels`), :func:`sweep_strengths` runs every strength
    and :func:`choose_case_strength` picks one; when the rule cannot choose (e.g. A forgot
    nothing on validation data, so no reduction is defined) the smallest strength with
    finished runs is used and ``strength_auto`` says so (``fallback`` true).

    Returns:
        ``{"config", "source", "cases": {name: {"level", "seeds", "summary", "strength",
        "strength_source"}}, "overview", "strength_auto": {"strengths", "tolerance",
        "cases": {name: choice + "fallback"}}}``.

    Raises:
        RuntimeError: if every run of a case diverged.
    """
    strengths = [float(a) for a in strengths]
    results = {"config": config.to_json(), "source": getattr(data, "source", "arrays"),
               "cases": {}, "strength_auto": {"strengths": strengths, "tolerance": tolerance,
                                              "cases": {}}}
    for level in levels:
        name = case_name(level)
        sweep = sweep_strengths(data, config, level, strengths, progress=progress)
        table = strength_table(sweep)
        choice = dict(choose_case_strength(table, tolerance), fallback=False)
        if choice["strength"] is None:
            done = [row["strength"] for row in table if row["seeds_done"] > 0]
            if not done:
                raise RuntimeError(f"{name}: B diverged for every strength and seed "
                                   f"({sweep['diverged']}).")
            choice.update(strength=min(done), fallback=True)
        strength = choice["strength"]
        seeds = sweep["seeds"][f"{strength:g}"]
        how = ("smallest strength with finished runs: the rule could not choose"
               if choice["fallback"] else "validation choice")
        results["cases"][name] = {
            "level": level, "seeds": seeds, "summary": summarize(seeds), "strength": strength,
            "strength_source": f"{how}, --strength auto in this run (grid "
                               f"{','.join(f'{a:g}' for a in strengths)}, tolerance "
                               f"{tolerance:g} points)"}
        results["strength_auto"]["cases"][name] = choice
        if progress is not None:
            progress(f"{name}: strength {strength:g}"
                     + (f" (rule could not choose: {choice['error']}; smallest strength used)"
                        if choice["fallback"] else f" ({choice['choice']['reason']})"))
    results["overview"] = case_overview(results)
    return results


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
        for strength in new:
            key = f"{float(strength):g}"
            out["strengths"].append(float(strength))
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
    entry = {"strength": choice["strength"], "reduction": float("nan"), "b_cost": float("nan"),
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
            progress(f"{case_name(level)}: chosen strength {choice['strength']}"
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
                             "strength grid may differ).")
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
        if chosen["strength"] is not None:
            ax.plot([chosen["b_cost"]], [chosen["reduction"]], "o", markersize=12,
                    markerfacecolor="none", color="tab:red", label=f"chosen α {chosen['strength']:g}")
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
        "a": "trained once per seed and case, every strength starts from it; strict: "
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
    """Writes ``strength_sweep.json`` (the report, the config, every sweep and choice; NaN as
    null) and ``strength_sweep.png`` (:func:`plot_pareto`) to ``out``; returns the report.

    Args:
        cases: :func:`run_cases` or :func:`cases_from_files` output.
        config: the two-model settings of the runs; tolerance: the rule's (accuracy points).
        data_text: what data was used; seconds: the run's wall time.
        merged_from: the files merged (:func:`cases_from_files`), if any.

    Returns:
        The report, as strict JSON (NaN as null): per case and α the seed means of
        :func:`strength_table` under ``cases``, the rule's ``chosen`` α per case
        (:func:`chosen_entry`), the ``strengths`` run, ``seeds``, ``settings`` and ``outputs``.
    """
    os.makedirs(out, exist_ok=True)
    paths = {"json": os.path.join(out, "strength_sweep.json"),
             "figure": os.path.join(out, "strength_sweep.png")}
    plot_pareto(cases, paths["figure"])
    report = {
        "benchmark": "strength_sweep (two models)",
        "data": data_text,
        "strengths": sorted({a for c in cases.values() for a in c["sweep"]["strengths"]}),
        "seeds": list(config.seeds),
        "tolerance": tolerance,
        "cases": {name: {"level": c["level"], "strengths": {f"{r['strength']:g}": r
                                                            for r in c["table"]},
                         "diverged": [{"seed": d["seed"], "strength": d["strength"]}
                                      for d in c["sweep"]["diverged"]]}
                  for name, c in cases.items()},
        "chosen": {name: c["chosen"] for name, c in cases.items()},
        "rule": "on validation data: largest reduction_val among strengths with b_cost_val >= "
                "-tolerance; ties to the smaller strength; if none, the largest b_cost_val",
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
