"""The WPL strength sweep of the two-model experiment: every α from one trained A, and the α
chosen on validation data by :func:`wpl_keras.wpl.strength.choose_strength`.

Used by ``wpl-two-models --alpha auto`` and ``benchmarks/alpha_sweep.py``.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Optional, Sequence

from wpl_keras.experiments.two_models import (
    TwoModelsConfig,
    case_name,
    mean_std,
    run_case,
    train_a,
)
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
