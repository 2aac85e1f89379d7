"""Ranking fidelity of a supernet: does its ranking of fixed architectures agree with their
ranking after training from scratch, and does WPL change that?

``M`` architectures are drawn uniformly once (:func:`fixed_architectures`, a fixed seed, the
same for every run) and trained from scratch with one budget (the ground truth, cached in the
same :class:`~wpl_keras.experiments.from_scratch.CellCache` as the search-quality benchmark).
Two supernets (:data:`SUPERNETS`): ``enas`` (trained by the ENAS search) and ``uniform_ws``
(trained on uniform draws, random search with weight sharing), each searched without and with
WPL per seed (the searches of :mod:`wpl_keras.experiments.search_quality`: arms ``<supernet>``
and ``<supernet>_wpl``, shared when both benchmarks use one folder). Each supernet scores the
``M`` architectures with the derive step's measure (``task.validation_error`` on the fixed
validation batch). The agreement is Kendall's τ_b and Spearman's ρ
(:mod:`wpl_keras.nas.analysis.rank_correlation`) between the supernet's errors and the
from-scratch validation errors; 1 is the same order, 0 no relation.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from wpl_keras.experiments import enas
from wpl_keras.experiments import search_quality as sq
from wpl_keras.experiments.from_scratch import CellCache, TrainBudget
from wpl_keras.nas.analysis.rank_correlation import kendall_tau, spearman_rho
from wpl_keras.utils.validation import check_fields

RANKING_FILE = "ranking_config.json"
ARCHITECTURE_SEED = 2020
# The supernets compared: each is the search-quality arm of that name (without WPL) and
# "<name>_wpl" (with WPL).
SUPERNETS = ("enas", "uniform_ws")


def supernet_arms(supernet: str) -> Dict[str, str]:
    """``{"without": arm, "with": arm}``: the search-quality arms of ``supernet`` without and
    with WPL (``supernet`` and ``supernet + "_wpl"``)."""
    if supernet not in SUPERNETS:
        raise ValueError(f"unknown supernet {supernet!r}; known: {list(SUPERNETS)}.")
    return {"without": supernet, "with": f"{supernet}_wpl"}


def fixed_architectures(space, count: int, seed: int = ARCHITECTURE_SEED
                        ) -> List[Tuple[int, ...]]:
    """``count`` distinct architectures drawn uniformly from ``space`` with ``seed``.

    Raises:
        ValueError: for ``count < 2`` (no ranking) or more than 100 × ``count`` draws without
            finding ``count`` distinct ones.
    """
    if int(count) < 2:
        raise ValueError(f"a ranking needs at least 2 architectures, got {count}.")
    rng = np.random.default_rng(seed)
    chosen: List[Tuple[int, ...]] = []
    for _ in range(100 * int(count)):
        arch = space.sample(rng)
        if arch not in chosen:
            chosen.append(arch)
            if len(chosen) == count:
                return chosen
    raise ValueError(f"could not draw {count} distinct architectures from the space.")


def correlations(supernet_errors: Sequence[float], truth: Sequence[float]) -> Dict[str, float]:
    """``{"kendall_tau", "spearman"}`` between a supernet's errors and the true errors."""
    return {"kendall_tau": kendall_tau(supernet_errors, truth),
            "spearman": spearman_rho(supernet_errors, truth)}


def _mean_std(values: Sequence[float]) -> Tuple[float, float, int]:
    """``(mean, population std, count of NaN)`` of ``values`` with the NaNs left out."""
    finite = [v for v in values if v == v]
    if not finite:
        return float("nan"), float("nan"), len(values)
    return float(np.mean(finite)), float(np.std(finite)), len(values) - len(finite)


def summarize_ranking(truth: Sequence[float],
                      scores: Mapping[int, Mapping[str, Sequence[float]]]) -> Dict[str, Any]:
    """The benchmark's JSON from the true errors and ``{seed: {arm: supernet errors}}`` with
    the arms of :func:`supernet_arms`.

    Returns:
        For each supernet ``n`` of :data:`SUPERNETS` and ``w`` in ``without``/``with`` (WPL):
        ``kendall_tau_<n>_<w>`` and ``spearman_<n>_<w>`` (means over the seeds that have both
        of ``n``'s arms; NaN seeds left out of the mean and counted in ``undefined``), their
        ``*_per_seed`` lists and ``*_std`` (population), ``<n>_with_minus_without_tau`` (per
        seed and mean), and ``seeds`` (per supernet: ``seeds_<n>``; ``seeds``: those with
        every arm).
    """
    out: Dict[str, Any] = {"undefined": 0}
    every = sorted(s for s in scores
                   if all(arm in scores[s] for n in SUPERNETS for arm in supernet_arms(n).values()))
    out["seeds"] = every
    for supernet in SUPERNETS:
        arms = supernet_arms(supernet)
        seeds = sorted(s for s in scores if all(arm in scores[s] for arm in arms.values()))
        out[f"seeds_{supernet}"] = seeds
        per = {}
        for which, arm in arms.items():
            for measure in ("kendall_tau", "spearman"):
                values = [correlations(scores[s][arm], truth)[measure] for s in seeds]
                per[(measure, which)] = values
                name = f"{measure}_{supernet}_{which}"
                mean, std, undefined = _mean_std(values)
                out["undefined"] += undefined
                out[f"{name}_per_seed"], out[name], out[f"{name}_std"] = values, mean, std
        diffs = [w - o for w, o in zip(per[("kendall_tau", "with")],
                                       per[("kendall_tau", "without")])]
        out[f"{supernet}_with_minus_without_tau"] = {"per_seed": diffs,
                                                     "mean": _mean_std(diffs)[0]}
    return out


@dataclasses.dataclass(frozen=True)
class RankingConfig:
    """The ranking benchmark's protocol (saved as ``ranking_config.json``).

    Args:
        experiment: the search experiment (space and preset); ``seed`` replaced per seed.
        seeds: the search seeds.
        budget: the from-scratch training of the ground truth.
        num_architectures: ``M`` (8–12 in the literature's protocol; 20 here, so that one
            pair of architectures swapped moves τ by 1/95 rather than 1/22.5).
        architecture_seed: the seed of the ``M`` uniform draws.
        train_seed: the initialisation seed of every from-scratch training.
    """

    experiment: enas.ENASExperimentConfig
    seeds: Tuple[int, ...]
    budget: TrainBudget
    num_architectures: int = 20
    architecture_seed: int = ARCHITECTURE_SEED
    train_seed: int = 0

    def __post_init__(self):
        object.__setattr__(self, "seeds", sq.check_seeds(self.seeds))
        check_fields(self, {"num_architectures": dict(integer=True, minimum=2),
                            "architecture_seed": dict(integer=True, minimum=0),
                            "train_seed": dict(integer=True, minimum=0)})
        self.budget.check_space(self.experiment.space)

    def to_json(self) -> dict:
        return {"experiment": self.experiment.to_json(), "seeds": list(self.seeds),
                "budget": self.budget.to_json(),
                "num_architectures": int(self.num_architectures),
                "architecture_seed": int(self.architecture_seed),
                "train_seed": int(self.train_seed), "supernets": list(SUPERNETS)}


def run_ranking(config: RankingConfig, data, out_dir: str, *, resume: bool = False,
                progress: Optional[Callable[[str], None]] = None) -> Dict[str, Any]:
    """Ground truth (cached), every seed's four searches (each supernet of :data:`SUPERNETS`
    without and with WPL; shared with the search-quality benchmark in the same ``out_dir``),
    the supernets' scores, and :func:`summarize_ranking` plus the architectures and every
    score."""
    say = progress or (lambda message: None)
    os.makedirs(out_dir, exist_ok=True)
    sq.check_or_save_protocol(out_dir, RANKING_FILE, config.to_json(), resume=resume)
    space = enas.build_space(config.experiment)
    archs = fixed_architectures(space, config.num_architectures, config.architecture_seed)
    cells = CellCache(os.path.join(out_dir, sq.CELLS_FILE))
    truth = []
    for k, arch in enumerate(archs):
        say(f"ground truth {k + 1}/{len(archs)}: {list(arch)}")
        truth.append(cells.train(data, arch, config.experiment, config.budget,
                                 seed=config.train_seed, progress=say))
    scores: Dict[int, Dict[str, List[float]]] = {}
    for seed in config.seeds:
        scores[seed] = {}
        for arm in (a for n in SUPERNETS for a in supernet_arms(n).values()):
            say(f"seed {seed}: {arm} search")
            directory = sq.run_arm_search(config.experiment, data, out_dir, seed, arm)
            task, _ = sq.restore_search(sq.seed_config(config.experiment, seed, arm), data,
                                        directory)
            scores[seed][arm] = [float(task.validation_error(a)) for a in archs]
    summary = summarize_ranking([t["valid"] for t in truth], scores)
    summary["architectures"] = [
        {"arch": list(a), "string": space.to_string(a), "valid": t["valid"], "test": t["test"]}
        for a, t in zip(archs, truth)]
    summary["supernet_errors"] = {str(s): v for s, v in scores.items()}
    summary["truth_valid_spread"] = {
        "min": float(np.min([t["valid"] for t in truth])),
        "max": float(np.max([t["valid"] for t in truth])),
        "std": float(np.std([t["valid"] for t in truth]))}
    return summary


def measure_spread(experiment: enas.ENASExperimentConfig, data, budget: TrainBudget,
                   cells: CellCache, *, seeds: Sequence[int] = (0, 1),
                   architecture_seed: int = ARCHITECTURE_SEED,
                   progress: Optional[Callable[[str], None]] = None) -> Dict[str, Any]:
    """How much two random cells differ under ``budget``, against the noise of the training
    seed: the first two of :func:`fixed_architectures`, each trained with every seed in
    ``seeds``.

    Returns:
        ``{"cells": [{"arch", "valid_per_seed", "test_per_seed"}], "cell_gap_valid"
        (|difference of the two cells' seed means|), "seed_noise_valid" (mean over the cells
        of the population std over seeds), "gap_over_noise", "seconds_per_cell", "budget"}``.
    """
    space = enas.build_space(experiment)
    archs = fixed_architectures(space, 2, architecture_seed)
    rows, seconds = [], []
    for arch in archs:
        runs = [cells.train(data, arch, experiment, budget, seed=s, progress=progress)
                for s in seeds]
        seconds += [r["seconds"] for r in runs]
        rows.append({"arch": list(arch), "string": space.to_string(arch),
                     "valid_per_seed": [r["valid"] for r in runs],
                     "test_per_seed": [r["test"] for r in runs]})
    gap = abs(float(np.mean(rows[0]["valid_per_seed"])) - float(np.mean(rows[1]["valid_per_seed"])))
    noise = float(np.mean([np.std(r["valid_per_seed"]) for r in rows]))
    return {"cells": rows, "cell_gap_valid": gap, "seed_noise_valid": noise,
            "gap_over_noise": gap / noise if noise > 0 else float("inf"),
            "seconds_per_cell": float(np.mean(seconds)), "budget": budget.to_json()}
