"""Weight-sharing tuning of a user's hypermodel against KerasTuner's own tuners, on CIFAR-10.

Per seed ``s``, every arm searches :func:`~wpl_keras.experiments.cifar_hypermodel.
build_cifar_hypermodel` for the same time budget (:mod:`wpl_keras.tuner.wall_clock`; by default
CPU seconds of the process, so that other jobs on the machine do not change an arm's compute),
objective ``val_accuracy`` on one fixed validation split:

* ``random_search``: ``keras_tuner.RandomSearch``, each trial trained from scratch for
  ``trial_epochs`` epochs;
* ``hyperband``: ``keras_tuner.Hyperband`` (``max_epochs = hyperband_max_epochs``, factor 3);
* ``ws_random`` / ``ws_random_wpl``: :class:`~wpl_keras.tuner.weight_sharing.WeightSharingTuner`
  with ``keras_tuner.oracles.RandomSearchOracle`` (random search with weight sharing), each
  trial ``steps_per_trial`` steps on the shared weights, without / with WPL;
* ``ws_enas`` / ``ws_enas_wpl``: the same with :class:`~wpl_keras.tuner.enas.ENASOracle`
  (no search space given: its controller learns the hypermodel's own hyperparameters).

Each arm's best hyperparameters are then trained from scratch with one budget
(``final_epochs`` epochs, ``final_seed``) and evaluated on the test split. The benchmark also
measures how well the shared weights rank models: ``tau_configs`` configurations drawn once
(seed 0) are trained from scratch (``trial_epochs``) and scored on the final shared weights of
``ws_random`` and ``ws_random_wpl``; Kendall's τ_b between the two scorings
(:func:`~wpl_keras.nas.analysis.rank_correlation.kendall_tau`) is ``kendall_tau_without`` /
``kendall_tau_with`` (seed 0's tuners).

Everything lives under one output folder (``seed<s>/<arm>`` KerasTuner projects with their
``wall_clock.json`` anytime curves, ``finals.json`` and ``tau_scratch.json`` caches), so a
killed run resumes where it stopped, and a resumed run may add seeds; the protocol (every setting
but the seeds) is saved first and a resumed run must match it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import keras
import keras_tuner
import numpy as np

from wpl_keras.experiments.cifar_hypermodel import build_cifar_hypermodel
from wpl_keras.experiments.search_quality import check_or_save_protocol, check_seeds
from wpl_keras.nas.analysis.rank_correlation import kendall_tau
from wpl_keras.tuner.enas import ENASOracle
from wpl_keras.tuner.wall_clock import with_wall_clock_budget
from wpl_keras.tuner.weight_sharing import WeightSharingTuner
from wpl_keras.utils.config import JsonConfig
from wpl_keras.utils.plotting import new_figure
from wpl_keras.utils.strict_json import write_json_atomic
from wpl_keras.utils.validation import check_fields
from wpl_keras.wpl.config import WPLConfig
from wpl_keras.wpl.schedule import ScheduleConfig

ARMS = ("random_search", "hyperband", "ws_random", "ws_random_wpl", "ws_enas", "ws_enas_wpl")
WS_ARMS = ARMS[2:]
OBJECTIVE = keras_tuner.Objective("val_accuracy", "max")
CONFIG_FILE = "tuner_quality_config.json"
FINALS_FILE = "finals.json"
TAU_FILE = "tau_scratch.json"
MAX_TRIALS = 100_000  # the wall clock, not a trial count, ends every arm


def kerastuner_seed(seed: int) -> int:
    """The seed handed to a KerasTuner oracle for benchmark seed ``seed``: ``seed + 1``
    (KerasTuner reads a seed of 0 as "no seed" and draws a random one)."""
    return int(seed) + 1


@dataclasses.dataclass(frozen=True)
class Splits:
    """Train images for the searches and final trainings, the fixed validation split every
    arm's objective uses, and the test split (float32 images in 0–255, int32 labels)."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_valid: np.ndarray
    y_valid: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray


@dataclasses.dataclass(frozen=True)
class TunerQualityConfig(JsonConfig):
    """The benchmark's protocol (saved beside the results before any number).

    Args:
        seeds: tuner seeds; every arm of a seed gets the same seed.
        arm_budget_s: seconds of search per arm and seed, on ``clock``.
        clock: ``"process"`` (CPU seconds of the benchmark's process: the same compute for
            every arm even when other jobs load the machine) or ``"wall"``
            (:mod:`wpl_keras.tuner.wall_clock`).
        train_size, valid_size, test_size: images in each split (train and valid drawn from
            CIFAR-10's train split with seed 0, test from its test split).
        batch_size: every training's batch size.
        trial_epochs: epochs of a from-scratch trial (``random_search``, the τ configs).
        hyperband_max_epochs: Hyperband's ``max_epochs`` (factor 3).
        steps_per_trial: shared-weight steps per weight-sharing trial.
        wpl_start_trial, strength: the WPL arms' schedule (constant ``α``, no flush).
        fisher_normalization: the WPL arms' Fisher normalisation (``"mean"``: ``α`` is the
            mean per-entry strength, whatever the layer's gradient scale).
        final_epochs, final_seed: the one from-scratch budget of every arm's best model.
        tau_configs: configurations in the Kendall-τ comparison.
        controller_learning_rate: the ENAS arms' REINFORCE learning rate. The ENAS default
            (3.5e-4) is made for thousands of controller steps; a weight-sharing trial is one
            step and an arm runs tens of trials, where the oracle's tests learn a synthetic
            score at rates of 0.05–0.1; the arms use 0.05 (set before any ENAS arm ran).
    """

    seeds: Tuple[int, ...] = (0, 1, 2)
    arm_budget_s: float = 900.0
    clock: str = "process"
    train_size: int = 10_000
    valid_size: int = 2_000
    test_size: int = 10_000
    batch_size: int = 64
    trial_epochs: int = 3
    hyperband_max_epochs: int = 9
    steps_per_trial: int = 50
    wpl_start_trial: int = 10
    strength: float = 10.0
    fisher_normalization: str = "mean"
    final_epochs: int = 8
    final_seed: int = 0
    tau_configs: int = 20
    controller_learning_rate: float = 0.05

    def __post_init__(self):
        object.__setattr__(self, "seeds", check_seeds(self.seeds))
        positive = dict(integer=True, minimum=1)
        check_fields(self, {
            "arm_budget_s": dict(minimum=0, exclusive_minimum=True),
            "train_size": positive, "valid_size": positive, "test_size": positive,
            "batch_size": positive, "trial_epochs": positive, "steps_per_trial": positive,
            "hyperband_max_epochs": dict(integer=True, minimum=2),
            "wpl_start_trial": dict(integer=True, minimum=0), "strength": dict(minimum=0),
            "final_epochs": positive, "final_seed": dict(integer=True, minimum=0),
            "tau_configs": dict(integer=True, minimum=2),
            "controller_learning_rate": dict(minimum=0, exclusive_minimum=True),
        })

    def wpl_config(self) -> WPLConfig:
        return WPLConfig(fisher_normalization=self.fisher_normalization)

    def schedule(self, wpl: bool) -> ScheduleConfig:
        return ScheduleConfig(wpl=wpl, wpl_start_epoch=self.wpl_start_trial,
                              strength=self.strength, strength_decay=None, flush_every=0)


def protocol_of(config: TunerQualityConfig) -> Dict[str, Any]:
    """The settings a resumed run must keep: every field but ``seeds`` (a resumed run may add
    seeds; each seed's arms, final trainings and the τ trainings are kept per seed)."""
    protocol = config.to_json()
    protocol.pop("seeds")
    return protocol


def make_splits(arrays, config: TunerQualityConfig) -> Splits:
    """Draws the three splits from :class:`~wpl_keras.data.cifar10.CIFAR10Arrays` (seed 0)."""
    rng = np.random.default_rng(0)
    n_train = config.train_size + config.valid_size
    if n_train > len(arrays.x_train) or config.test_size > len(arrays.x_test):
        raise ValueError(
            f"tuner_quality: train_size + valid_size = {n_train} and test_size = "
            f"{config.test_size} exceed the data ({len(arrays.x_train)} train, "
            f"{len(arrays.x_test)} test images).")
    order = rng.permutation(len(arrays.x_train))[:n_train]
    train, valid = order[:config.train_size], order[config.train_size:]
    test = rng.permutation(len(arrays.x_test))[:config.test_size]

    def images(x):
        return np.asarray(x, np.float32)

    return Splits(images(arrays.x_train[train]), arrays.y_train[train].astype(np.int32),
                  images(arrays.x_train[valid]), arrays.y_train[valid].astype(np.int32),
                  images(arrays.x_test[test]), arrays.y_test[test].astype(np.int32))


# --------------------------------------------------------------------------- the arms
def make_tuner(arm: str, config: TunerQualityConfig, seed: int, directory: str,
               hypermodel: Callable = build_cifar_hypermodel):
    """The arm's tuner with its wall-clock budget (a KerasTuner project at
    ``directory/<arm>``, continued when it exists)."""
    common = dict(budget_s=config.arm_budget_s, clock=config.clock, directory=directory,
                  project_name=arm, overwrite=False)
    if arm == "random_search":
        return with_wall_clock_budget(keras_tuner.RandomSearch)(
            hypermodel, objective=OBJECTIVE, max_trials=MAX_TRIALS, seed=kerastuner_seed(seed),
            **common)
    if arm == "hyperband":
        return with_wall_clock_budget(keras_tuner.Hyperband)(
            hypermodel, objective=OBJECTIVE, max_epochs=config.hyperband_max_epochs, factor=3,
            hyperband_iterations=MAX_TRIALS, seed=kerastuner_seed(seed), **common)
    if arm not in WS_ARMS:
        raise ValueError(f"unknown arm {arm!r}; arms are {ARMS}.")
    if arm.startswith("ws_enas"):
        oracle = ENASOracle(objective=OBJECTIVE, max_trials=MAX_TRIALS, repeats="rerun",
                            learning_rate=config.controller_learning_rate,
                            seed=kerastuner_seed(seed), controller_seed=seed)
    else:
        oracle = keras_tuner.oracles.RandomSearchOracle(objective=OBJECTIVE,
                                                        max_trials=MAX_TRIALS,
                                                        seed=kerastuner_seed(seed))
    return with_wall_clock_budget(WeightSharingTuner)(
        oracle, hypermodel=hypermodel, steps_per_trial=config.steps_per_trial,
        schedule=config.schedule(wpl=arm.endswith("_wpl")), wpl_config=config.wpl_config(),
        **common)


def run_arm(arm: str, config: TunerQualityConfig, splits: Splits, directory: str,
            seed: int, hypermodel: Callable = build_cifar_hypermodel) -> Dict[str, Any]:
    """Searches one arm for its budget (resuming a started one); returns its best
    hyperparameters (without Hyperband's ``tuner/`` bookkeeping values), trial count and
    anytime curve."""
    keras.utils.set_random_seed(seed)
    tuner = make_tuner(arm, config, seed, directory, hypermodel)
    fit = dict(validation_data=(splits.x_valid, splits.y_valid), batch_size=config.batch_size,
               verbose=0)
    if arm == "random_search":
        fit["epochs"] = config.trial_epochs
    tuner.search(splits.x_train, splits.y_train, **fit)
    best = tuner.get_best_hyperparameters(1)
    if not best:
        raise RuntimeError(f"{arm}: no trial finished within {config.arm_budget_s:g} s; raise "
                           "arm_budget_s.")
    curve = tuner.wall_clock["curve"]
    values = {k: v for k, v in best[0].values.items() if not k.startswith("tuner/")}
    return {"best": values, "trials": len(curve),
            "best_val_accuracy": curve[-1]["best"], "curve": curve, "tuner": tuner}


# --------------------------------------------------------------------------- from scratch
def values_key(values: Mapping[str, Any]) -> str:
    return hashlib.sha1(json.dumps(dict(values), sort_keys=True).encode()).hexdigest()[:16]


def hyperparameters_of(values: Mapping[str, Any],
                       hypermodel: Callable = build_cifar_hypermodel
                       ) -> keras_tuner.HyperParameters:
    """The hypermodel's hyperparameters (every one registered) set to ``values``."""
    hp = keras_tuner.HyperParameters()
    hypermodel(hp)
    keras.utils.clear_session()
    for name, value in values.items():
        hp.values[name] = value
    return hp


def train_from_scratch(values: Mapping[str, Any], splits: Splits, *, epochs: int,
                       batch_size: int, seed: int,
                       hypermodel: Callable = build_cifar_hypermodel) -> Dict[str, float]:
    """Builds ``values``' model afresh, fits it ``epochs`` epochs (seed ``seed``) and returns
    its final validation and test accuracy."""
    keras.utils.clear_session()
    keras.utils.set_random_seed(seed)
    model = hypermodel(hyperparameters_of(values, hypermodel))
    model.fit(splits.x_train, splits.y_train, batch_size=batch_size, epochs=epochs, verbose=0)
    valid = model.evaluate(splits.x_valid, splits.y_valid, batch_size=256, verbose=0,
                           return_dict=True)
    test = model.evaluate(splits.x_test, splits.y_test, batch_size=256, verbose=0,
                          return_dict=True)
    return {"valid": float(valid["accuracy"]), "test": float(test["accuracy"])}


class JsonCache:
    """A dict persisted as one JSON file, written atomically after every entry."""

    def __init__(self, path: str):
        self.path = path
        self.items: Dict[str, Any] = {}
        if os.path.exists(path):
            with open(path) as f:
                self.items = json.load(f)

    def get_or_compute(self, key: str, compute: Callable[[], Any]) -> Any:
        if key not in self.items:
            self.items[key] = compute()
            write_json_atomic(self.path, self.items)
        return self.items[key]


def tau_configurations(count: int, hypermodel: Callable = build_cifar_hypermodel
                       ) -> List[Dict[str, Any]]:
    """``count`` distinct configurations drawn by ``RandomSearchOracle`` (benchmark seed 0)."""
    oracle = keras_tuner.oracles.RandomSearchOracle(objective=OBJECTIVE, max_trials=count,
                                                    seed=kerastuner_seed(0))
    hp = keras_tuner.HyperParameters()
    hypermodel(hp)
    keras.utils.clear_session()
    oracle.update_space(hp)
    configs: Dict[str, Dict[str, Any]] = {}
    for k in range(100 * count):
        drawn = oracle.populate_space(f"tau{k}")
        if drawn["values"] is None:
            break
        configs.setdefault(values_key(drawn["values"]), dict(drawn["values"]))
        if len(configs) == count:
            return list(configs.values())
    raise ValueError(f"the hypermodel gave fewer than {count} distinct configurations in "
                     f"{100 * count} draws.")


def shared_weight_ranking(tuner, configs: Sequence[Mapping[str, Any]], splits: Splits
                          ) -> List[float]:
    """Each configuration's validation accuracy on the tuner's final shared weights."""
    scores = []
    for values in configs:
        score = tuner.shared_score(values, (splits.x_valid, splits.y_valid))
        if isinstance(score, Mapping):
            score = score["val_accuracy"]
        scores.append(float(score))
    return scores


# --------------------------------------------------------------------------- summary
def mean_std(values: Sequence[float]) -> Tuple[float, float]:
    """Mean and sample standard deviation (0 for one value)."""
    values = np.asarray(values, np.float64)
    std = float(values.std(ddof=1)) if len(values) > 1 else 0.0
    return float(values.mean()), std


def summarize(per_seed: Mapping[int, Mapping[str, Mapping[str, Any]]],
              tau: Mapping[str, float]) -> Dict[str, Any]:
    """The benchmark's JSON: per arm the test accuracy (%) mean ± std over seeds, its
    per-seed values and trial counts; the Kendall τ values; and
    ``ws_best_minus_random_search``, the best weight-sharing arm's mean test accuracy minus
    ``random_search``'s, in points."""
    arms: Dict[str, Dict[str, Any]] = {}
    for arm in ARMS:
        rows = [per_seed[s][arm] for s in sorted(per_seed) if arm in per_seed[s]]
        if not rows:
            continue
        tests = [100.0 * r["test"] for r in rows]
        mean, std = mean_std(tests)
        arms[arm] = {"test_mean": mean, "test_std": std, "test_per_seed": tests,
                     "trials": float(np.mean([r["trials"] for r in rows])),
                     "trials_per_seed": [r["trials"] for r in rows]}
    ws = [a for a in WS_ARMS if a in arms]
    gap = None
    if ws and "random_search" in arms:
        best_ws = max(ws, key=lambda a: arms[a]["test_mean"])
        gap = {"arm": best_ws,
               "points": arms[best_ws]["test_mean"] - arms["random_search"]["test_mean"]}
    return {"arms": arms, "kendall_tau_without": tau.get("without"),
            "kendall_tau_with": tau.get("with"),
            "ws_best_minus_random_search": None if gap is None else gap["points"],
            "ws_best_arm": None if gap is None else gap["arm"],
            "seeds": sorted(per_seed)}


def plot_anytime(curves: Mapping[str, Mapping[int, Sequence[Mapping[str, Any]]]], path: str,
                 *, clock: str = "wall") -> None:
    """The anytime curves (best validation accuracy found against search time on ``clock``)
    as a PNG."""
    fig, ax = new_figure(figsize=(7.5, 4.8))
    colors = dict(zip(ARMS, ["C0", "C1", "C2", "C3", "C4", "C5"]))
    for arm, per_seed in curves.items():
        for k, (seed, curve) in enumerate(sorted(per_seed.items())):
            points = [(p["elapsed_s"] / 60.0, 100.0 * p["best"]) for p in curve
                      if p["best"] is not None]
            if points:
                t, best = zip(*points)
                ax.step(t, best, where="post", color=colors[arm], alpha=0.8,
                        label=arm if k == 0 else None)
    ax.set_xlabel("search time (CPU min of the process)" if clock == "process"
                  else "search time (min)")
    ax.set_ylabel("best validation accuracy found (%)")
    ax.set_title("Anytime curves (weight-sharing arms: accuracy on the shared weights)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def run_tuner_quality(config: TunerQualityConfig, splits: Splits, out_dir: str, *,
                      resume: bool = False, arms: Sequence[str] = ARMS,
                      hypermodel: Callable = build_cifar_hypermodel,
                      progress: Optional[Callable[[str], None]] = None) -> Dict[str, Any]:
    """Runs every seed's arms, the final from-scratch trainings and the Kendall-τ comparison
    (see the module docstring); returns :func:`summarize` plus each arm's best values."""
    say = progress or (lambda message: None)
    unknown = [a for a in arms if a not in ARMS]
    if unknown:
        raise ValueError(f"unknown arms {unknown}; arms are {ARMS}.")
    os.makedirs(out_dir, exist_ok=True)
    check_or_save_protocol(out_dir, CONFIG_FILE, protocol_of(config), resume=resume)
    finals = JsonCache(os.path.join(out_dir, FINALS_FILE))
    per_seed: Dict[int, Dict[str, Dict[str, Any]]] = {}
    curves: Dict[str, Dict[int, Any]] = {arm: {} for arm in arms}
    best_values: Dict[str, Dict[str, Any]] = {}
    tuners: Dict[str, Any] = {}
    for seed in config.seeds:
        per_seed[seed] = {}
        for arm in arms:
            say(f"seed {seed}: {arm} search ({config.arm_budget_s:g} s)")
            found = run_arm(arm, config, splits, os.path.join(out_dir, f"seed{seed}"), seed,
                            hypermodel)
            if seed == config.seeds[0]:
                tuners[arm] = found["tuner"]
            say(f"seed {seed}: {arm}: {found['trials']} trials, best {found['best']}; "
                "training it from scratch")
            key = f"{seed}/{arm}/{values_key(found['best'])}"
            trained = finals.get_or_compute(key, lambda: train_from_scratch(
                found["best"], splits, epochs=config.final_epochs,
                batch_size=config.batch_size, seed=config.final_seed, hypermodel=hypermodel))
            per_seed[seed][arm] = {**trained, "trials": found["trials"]}
            curves[arm][seed] = found["curve"]
            best_values[f"{seed}/{arm}"] = found["best"]
    tau = kendall_taus(config, splits, out_dir, tuners, hypermodel, say)
    plot_anytime(curves, os.path.join(out_dir, "anytime.png"), clock=config.clock)
    return {**summarize(per_seed, tau), "best_values": best_values}


def kendall_taus(config: TunerQualityConfig, splits: Splits, out_dir: str,
                 tuners: Mapping[str, Any], hypermodel: Callable, say) -> Dict[str, float]:
    """τ between from-scratch accuracy and the shared-weight score of ``config.tau_configs``
    fixed configurations, on ``ws_random`` (``"without"``) and ``ws_random_wpl`` (``"with"``)."""
    present = {name: tuners[arm] for name, arm in (("without", "ws_random"),
                                                  ("with", "ws_random_wpl")) if arm in tuners}
    if not present:
        return {}
    configs = tau_configurations(config.tau_configs, hypermodel)
    scratch = JsonCache(os.path.join(out_dir, TAU_FILE))
    accuracy = []
    for k, values in enumerate(configs):
        say(f"tau: configuration {k + 1}/{len(configs)} from scratch")
        result = scratch.get_or_compute(values_key(values), lambda: train_from_scratch(
            values, splits, epochs=config.trial_epochs, batch_size=config.batch_size,
            seed=config.final_seed, hypermodel=hypermodel))
        accuracy.append(result["valid"])
    taus = {}
    for name, tuner in present.items():
        shared = shared_weight_ranking(tuner, configs, splits)
        tau = kendall_tau(shared, accuracy)
        taus[name] = None if math.isnan(tau) else tau
    return taus
