"""Does a search with WPL end with a better cell, and how do ENAS and random search with weight
sharing compare? Five arms per seed, one budget, cells trained from scratch (the protocol of
Yu et al., "Evaluating the search phase of neural architecture search", ICLR 2020, with WPL as
the treatment and random search with weight sharing, Li & Talwalkar 2019, as the baseline).

Per seed ``s``, with the experiment's preset and ``seed = s``, every arm derives one cell as the
lowest supernet error on the fixed validation batch among ``K`` proposed architectures
(:func:`wpl_keras.nas.search.derive.derive_best`):

1. ``enas``: the ENAS search without WPL; ``K`` architectures sampled from its trained
   controller;
2. ``enas_wpl``: the same search with WPL, derived the same way;
3. ``uniform_ws``: random search with weight sharing (the supernet trained on uniformly drawn
   architectures, :mod:`wpl_keras.nas.search.uniform`), without WPL; ``K`` uniform draws of its
   restored sampler scored by its own supernet;
4. ``uniform_ws_wpl``: the same search with WPL, derived the same way;
5. ``random_on_enas``: ``K`` uniform draws (a :class:`~wpl_keras.nas.search.uniform.
   UniformSampler` seeded ``10000 + s``) scored on the ``enas`` arm's final shared weights, so
   it differs from ``enas`` only in the policy that proposes the candidates.

Each arm's cell is trained from scratch with one :class:`~wpl_keras.experiments.from_scratch.
TrainBudget` and seed (:class:`~wpl_keras.experiments.from_scratch.CellCache`), giving its
validation and test perplexity (RNN) or error % (CNN). :func:`summarize_arms` turns the
per-seed results into the benchmark's JSON; lower is better for every number, so
``enas_wpl_minus_enas < 0`` means WPL's cell is better.

Everything is kept under one output folder (``seed<s>/<arm>`` for the four searches,
``seed<s>/derived_<arm>.json`` for the derive results, ``cells.json`` for the trained cells), so
a killed run resumes where it stopped.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from typing import Any, Callable, Dict, Mapping, Optional, Sequence, Tuple

import numpy as np

from wpl_keras.experiments import enas
from wpl_keras.experiments.from_scratch import CellCache, TrainBudget
from wpl_keras.nas.search.uniform import UniformSampler
from wpl_keras.utils.strict_json import write_json_atomic
from wpl_keras.utils.validation import check_fields, check_number

# The arms with a search of their own: arm → (sampler, WPL on).
SEARCHES: Dict[str, Tuple[str, bool]] = {
    "enas": ("enas", False), "enas_wpl": ("enas", True),
    "uniform_ws": ("uniform", False), "uniform_ws_wpl": ("uniform", True),
}
# Uniform draws scored on the enas arm's supernet.
RANDOM_ON_ENAS = "random_on_enas"
ARMS = (*SEARCHES, RANDOM_ON_ENAS)
# The paired differences the summary reports: (arm, reference), as "<arm>_minus_<reference>".
DIFFERENCES = (("enas_wpl", "enas"), ("uniform_ws_wpl", "uniform_ws"), ("uniform_ws", "enas"),
               (RANDOM_ON_ENAS, "enas"))
# The seed of random_on_enas's sampler is this plus the search seed, so its stream differs
# from every search's.
RANDOM_SEED_OFFSET = 10_000
CONFIG_FILE = "search_quality_config.json"
CELLS_FILE = "cells.json"


def search_dir(out_dir: str, seed: int, arm: str) -> str:
    """Where the search of ``arm`` (a key of :data:`SEARCHES`) for ``seed`` lives."""
    if arm not in SEARCHES:
        raise ValueError(f"arm {arm!r} has no search of its own; searches: {list(SEARCHES)}.")
    return os.path.join(out_dir, f"seed{seed}", arm)


def seed_config(base: enas.ENASExperimentConfig, seed: int, arm: str
                ) -> enas.ENASExperimentConfig:
    """The experiment of ``arm``'s search (a key of :data:`SEARCHES`): ``base`` with ``seed``,
    the arm's sampler and WPL on or off."""
    if arm not in SEARCHES:
        raise ValueError(f"arm {arm!r} has no search of its own; searches: {list(SEARCHES)}.")
    sampler, wpl = SEARCHES[arm]
    return dataclasses.replace(base, seed=int(seed), sampler=sampler).with_wpl(wpl)


def run_arm_search(base: enas.ENASExperimentConfig, data, out_dir: str, seed: int, arm: str):
    """Runs (or finishes) the search of ``arm`` for ``seed``; returns its folder."""
    directory = search_dir(out_dir, seed, arm)
    enas.run_search_experiment(seed_config(base, seed, arm), None, directory, resume=True,
                               data=data)
    return directory


def restore_search(config: enas.ENASExperimentConfig, data, directory: str):
    """``(task, proposer)`` of the finished search in ``directory``: the ENAS controller, or a
    uniform search's restored sampler (:func:`wpl_keras.experiments.enas.load_search`).

    Raises:
        RuntimeError: the search has not run all its epochs.
    """
    task, proposer, restored = enas.load_search(config, data, directory)
    if restored["epoch"] < config.search.epochs:
        raise RuntimeError(f"the search in {directory} stopped after {restored['epoch']} of "
                           f"{config.search.epochs} epochs; run it to the end first.")
    return task, proposer


def derive_arm(base: enas.ENASExperimentConfig, data, out_dir: str, seed: int, arm: str,
               num_samples: int) -> Dict[str, Any]:
    """The derived cell of ``arm`` for ``seed`` (read back when it was derived before).

    Returns:
        :meth:`DerivedArchitecture.to_json` of the arm plus ``scored_on`` (the search whose
        supernet scored it), saved as ``seed<s>/derived_<arm>.json``.
    """
    from wpl_keras.nas.search.derive import derive_best

    path = os.path.join(out_dir, f"seed{seed}", f"derived_{arm}.json")
    if os.path.exists(path):
        with open(path) as f:
            return json.load(f)
    supernet = "enas" if arm == RANDOM_ON_ENAS else arm
    task, proposer = restore_search(seed_config(base, seed, supernet), data,
                                    search_dir(out_dir, seed, supernet))
    if arm == RANDOM_ON_ENAS:
        proposer = UniformSampler(task.space.decision_sizes, seed=RANDOM_SEED_OFFSET + seed)
    derived = derive_best(task, proposer, num_samples).to_json(task.space)
    derived["scored_on"] = supernet
    write_json_atomic(path, derived)
    return derived


def _paired(results, seeds, arm: str, reference: str) -> Dict[str, Any]:
    diffs = [float(results[s][arm]["test"]) - float(results[s][reference]["test"])
             for s in seeds]
    return {"per_seed": diffs, "mean": float(np.mean(diffs)) if diffs else math.nan,
            "better_seeds": int(sum(d < 0 for d in diffs))}


def summarize_arms(results: Mapping[int, Mapping[str, Mapping[str, float]]]) -> Dict[str, Any]:
    """The benchmark's comparison from ``{seed: {arm: {"valid", "test"}}}``.

    Returns:
        ``{"arms": {arm: {"test_per_seed", "test_mean", "test_std", "valid_per_seed",
        "valid_mean", "valid_std"}}, "seeds"}`` plus, for each ``(arm, reference)`` of
        :data:`DIFFERENCES`, ``"<arm>_minus_<reference>": {"per_seed", "mean",
        "better_seeds"}``: the paired test differences ``arm − reference`` per seed (negative
        when ``arm``'s cell is better), their mean, and how many are negative. std is the
        population std over seeds; only seeds with every arm count.
    """
    seeds = sorted(s for s in results if all(arm in results[s] for arm in ARMS))
    out: Dict[str, Any] = {"seeds": seeds, "arms": {}}
    for arm in ARMS:
        row = {}
        for split in ("test", "valid"):
            values = [float(results[s][arm][split]) for s in seeds]
            row[f"{split}_per_seed"] = values
            row[f"{split}_mean"] = float(np.mean(values)) if values else math.nan
            row[f"{split}_std"] = float(np.std(values)) if values else math.nan
        out["arms"][arm] = row
    for arm, reference in DIFFERENCES:
        out[f"{arm}_minus_{reference}"] = _paired(results, seeds, arm, reference)
    return out


def check_seeds(seeds: Sequence[int]) -> Tuple[int, ...]:
    """``seeds`` as a tuple of Python ints; raises ValueError unless it is non-empty and
    without repeats and each seed an integer >= 0 (``TypeError`` for a non-integer)."""
    if not seeds or len(set(seeds)) != len(seeds):
        raise ValueError(f"seeds must be distinct and non-empty, got {seeds}.")
    return tuple(check_number(f"seeds[{i}]", seed, integer=True, minimum=0)
                 for i, seed in enumerate(seeds))


@dataclasses.dataclass(frozen=True)
class SearchQualityConfig:
    """The benchmark's protocol, fixed before any number is read (saved as
    ``search_quality_config.json`` with the arms, :data:`ARMS`; a resumed run must match it).

    Args:
        experiment: the search experiment (space and preset); its ``seed`` is replaced per
            seed, its ``sampler`` and WPL per arm (:func:`seed_config`).
        seeds: the search seeds.
        budget: every cell's from-scratch training.
        derive_samples: ``K`` architectures each arm scores (default: the preset's).
        train_seed: the initialisation seed of every from-scratch training.
    """

    experiment: enas.ENASExperimentConfig
    seeds: Tuple[int, ...]
    budget: TrainBudget
    derive_samples: int
    train_seed: int = 0

    def __post_init__(self):
        object.__setattr__(self, "seeds", check_seeds(self.seeds))
        check_fields(self, {"derive_samples": dict(integer=True, minimum=1),
                            "train_seed": dict(integer=True, minimum=0)})
        self.budget.check_space(self.experiment.space)

    def to_json(self) -> dict:
        return {"experiment": self.experiment.to_json(), "seeds": list(self.seeds),
                "budget": self.budget.to_json(), "derive_samples": int(self.derive_samples),
                "train_seed": int(self.train_seed), "arms": list(ARMS)}


def check_or_save_protocol(out_dir: str, name: str, protocol: dict, *, resume: bool) -> None:
    """Saves ``protocol`` as ``out_dir/name``; with ``resume``, first checks it equals the saved
    one.

    Raises:
        FileExistsError: ``out_dir/name`` exists and ``resume`` is False.
        ValueError: resuming with settings other than the saved ones.
    """
    path = os.path.join(out_dir, name)
    if os.path.exists(path):
        if not resume:
            raise FileExistsError(f"{path} exists: pass --resume to continue that run, or "
                                  "choose another output folder.")
        with open(path) as f:
            saved = json.load(f)
        if saved != json.loads(json.dumps(protocol)):
            raise ValueError(f"{path} holds other settings than this run's; a resumed run "
                             "keeps its protocol (use another output folder to change it).")
        return
    write_json_atomic(path, protocol)


def run_search_quality(config: SearchQualityConfig, data, out_dir: str, *,
                       resume: bool = False,
                       progress: Optional[Callable[[str], None]] = None) -> Dict[str, Any]:
    """Runs every seed's arms (the four searches of :data:`SEARCHES` with
    :func:`run_arm_search`, then per arm of :data:`ARMS` :func:`derive_arm` and its cell
    trained from scratch) and returns :func:`summarize_arms` plus per-seed details.

    Args:
        data: the space's data as :func:`wpl_keras.experiments.enas.prepare` returns it.
        resume: continue a run in ``out_dir`` (finished searches, derive results and trained
            cells are kept; an unfinished search resumes from its checkpoint).
    """
    say = progress or (lambda message: None)
    os.makedirs(out_dir, exist_ok=True)
    check_or_save_protocol(out_dir, CONFIG_FILE, config.to_json(), resume=resume)
    cells = CellCache(os.path.join(out_dir, CELLS_FILE))
    results: Dict[int, Dict[str, Dict[str, float]]] = {}
    details: Dict[str, Any] = {}
    for seed in config.seeds:
        for arm in SEARCHES:
            say(f"seed {seed}: {arm} search")
            run_arm_search(config.experiment, data, out_dir, seed, arm)
        results[seed], details[str(seed)] = {}, {}
        for arm in ARMS:
            derived = derive_arm(config.experiment, data, out_dir, seed, arm,
                                 config.derive_samples)
            say(f"seed {seed}: {arm} cell {derived['arch']} (supernet error "
                f"{derived['error']:.2f}); training it from scratch")
            trained = cells.train(data, derived["arch"], config.experiment, config.budget,
                                  seed=config.train_seed, progress=say)
            results[seed][arm] = trained
            details[str(seed)][arm] = {"arch": derived["arch"],
                                       "string": derived.get("architecture", {}).get("string"),
                                       "supernet_error": derived["error"],
                                       "scored_on": derived["scored_on"],
                                       "valid": trained["valid"], "test": trained["test"]}
    return {**summarize_arms(results), "cells": details}

