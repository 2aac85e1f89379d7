"""Does a search with WPL end with a better cell? Three arms per seed, one budget, cells
trained from scratch (the protocol of Yu et al., "Evaluating the search phase of neural
architecture search", ICLR 2020, with WPL as the treatment).

Per seed ``s``, with the experiment's preset and ``seed = s``:

1. ``enas``: the ENAS search without WPL; its derive step samples ``K`` architectures from
   the trained controller and keeps the one with the lowest supernet error on the fixed
   validation batch (:func:`wpl_keras.nas.search.derive.derive_best`);
2. ``wpl``: the same search with WPL, derived the same way;
3. ``random``: ``K`` architectures drawn uniformly (:class:`UniformSampler`) and scored by the
   same derive step on the ``enas`` arm's final shared weights, so it differs from ``enas``
   only in the policy that proposes the candidates.

Each arm's cell is trained from scratch with one :class:`~wpl_keras.experiments.from_scratch.
TrainBudget` and seed (:class:`~wpl_keras.experiments.from_scratch.CellCache`), giving its
validation and test perplexity (RNN) or error % (CNN). :func:`summarize_arms` turns the
per-seed results into the benchmark's JSON; lower is better for every number, so
``wpl_minus_enas < 0`` means WPL's cell is better.

Everything is kept under one output folder (``seed<s>/<arm>`` for the searches and derive
results, ``cells.json`` for the trained cells), so a killed run resumes where it stopped.
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
from wpl_keras.utils.strict_json import write_json_atomic
from wpl_keras.utils.validation import check_fields, check_number

ARMS = ("enas", "wpl", "random")
CONFIG_FILE = "search_quality_config.json"
CELLS_FILE = "cells.json"


class UniformSampler:
    """Proposes architectures uniformly at random from ``space`` (the random arm's policy),
    with the ``sample_architecture()`` interface of the controller."""

    def __init__(self, space, seed: int):
        self.space = space
        self.rng = np.random.default_rng(seed)

    def sample_architecture(self) -> Tuple[int, ...]:
        return self.space.sample(self.rng)


def search_dir(out_dir: str, seed: int, arm: str) -> str:
    """Where the search of ``arm`` (``enas`` or ``wpl``) for ``seed`` lives."""
    return os.path.join(out_dir, f"seed{seed}", arm)


def seed_config(base: enas.ENASExperimentConfig, seed: int, *, wpl: bool
                ) -> enas.ENASExperimentConfig:
    """The experiment of one search: ``base`` with ``seed`` and WPL on or off."""
    return dataclasses.replace(base, seed=int(seed)).with_wpl(wpl)


def run_arm_search(base: enas.ENASExperimentConfig, data, out_dir: str, seed: int, arm: str):
    """Runs (or finishes) the search of ``arm`` for ``seed``; returns its folder."""
    directory = search_dir(out_dir, seed, arm)
    enas.run_search_experiment(seed_config(base, seed, wpl=arm == "wpl"), None, directory,
                               resume=True, data=data)
    return directory


def restore_search(config: enas.ENASExperimentConfig, data, directory: str):
    """``(task, controller)`` of the finished search in ``directory``."""
    from wpl_keras.nas.search.enas import restore_latest

    task, controller, reinforce = enas.build_search(config, data)
    restored = restore_latest(task, controller, reinforce, directory)
    if restored["epoch"] < config.search.epochs:
        raise RuntimeError(f"the search in {directory} stopped after {restored['epoch']} of "
                           f"{config.search.epochs} epochs; run it to the end first.")
    return task, controller


def derive_arm(base: enas.ENASExperimentConfig, data, out_dir: str, seed: int, arm: str,
               num_samples: int) -> Dict[str, Any]:
    """The derived cell of ``arm`` for ``seed`` (read back when it was derived before).

    Returns:
        :meth:`DerivedArchitecture.to_json` of the arm, saved as ``seed<s>/derived_<arm>.json``.
    """
    from wpl_keras.nas.search.derive import derive_best

    path = os.path.join(out_dir, f"seed{seed}", f"derived_{arm}.json")
    if os.path.exists(path):
        with open(path) as f:
            return json.load(f)
    supernet_arm = "wpl" if arm == "wpl" else "enas"
    config = seed_config(base, seed, wpl=arm == "wpl")
    task, controller = restore_search(config, data, search_dir(out_dir, seed, supernet_arm))
    # The random arm's sampler seed differs from every search seed's controller stream.
    sampler = controller if arm != "random" else UniformSampler(task.space, 10_000 + seed)
    derived = derive_best(task, sampler, num_samples).to_json(task.space)
    derived["scored_on"] = supernet_arm
    write_json_atomic(path, derived)
    return derived


def summarize_arms(results: Mapping[int, Mapping[str, Mapping[str, float]]]) -> Dict[str, Any]:
    """The benchmark's comparison from ``{seed: {arm: {"valid", "test"}}}``.

    Returns:
        ``{"arms": {arm: {"test_per_seed", "test_mean", "test_std", "valid_per_seed",
        "valid_mean", "valid_std"}}, "seeds", "wpl_minus_enas": {"per_seed", "mean"},
        "wpl_better_seeds", "random_minus_enas": {"per_seed", "mean"}}``; differences are of
        test values (``wpl − enas`` per seed, negative when WPL's cell is better), std is the
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

    def paired(arm):
        diffs = [float(results[s][arm]["test"]) - float(results[s]["enas"]["test"])
                 for s in seeds]
        return {"per_seed": diffs, "mean": float(np.mean(diffs)) if diffs else math.nan}

    out["wpl_minus_enas"] = paired("wpl")
    out["wpl_better_seeds"] = int(sum(d < 0 for d in out["wpl_minus_enas"]["per_seed"]))
    out["random_minus_enas"] = paired("random")
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
    ``search_quality_config.json``; a resumed run must match it).

    Args:
        experiment: the search experiment (space and preset); its ``seed`` is replaced per seed.
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
                "train_seed": int(self.train_seed)}


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
    """Runs every seed's three arms (:func:`run_arm_search`, :func:`derive_arm`, cells trained
    from scratch) and returns :func:`summarize_arms` plus per-seed details.

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
        for arm in ("enas", "wpl"):
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
                                       "valid": trained["valid"], "test": trained["test"]}
    return {**summarize_arms(results), "cells": details}

