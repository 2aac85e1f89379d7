"""Trials to reach a known best architecture: ENAS oracle vs KerasTuner's RandomSearchOracle.

A synthetic objective over the ENAS recurrent-cell space (``RNNCellSpace``; a small inline
space if that module is absent) with one known best architecture ``a*`` drawn at random:

    ``score(a) = (1/D) Σ_k [a_k = a*_k]``     (fraction of decisions that match, partial credit)

Both oracles are driven through the KerasTuner trial protocol (create_trial → update_trial →
end_trial, as a Tuner would), with the same trial budget. For each seed we record the number of
trials until a trial scores 1 (a miss counts as the budget) and report the median over seeds.
No data set is involved; this measures the search strategy only.

    python benchmarks/oracle.py --seeds 5 --budget 150 --num-nodes 4

Last line of output: one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras_tuner  # noqa: E402
import numpy as np  # noqa: E402

from wpl_keras.tuner.controller_oracle import (  # noqa: E402
    hyperparameters_to_architecture,
    space_hyperparameters,
)
from wpl_keras.tuner.enas import ENASOracle  # noqa: E402


def make_space(num_nodes: int):
    try:
        from wpl_keras.nas.spaces.rnn.space import RNNCellSpace
    except ImportError:  # pragma: no cover - fallback before the RNN space existed
        from wpl_keras.nas.base import SearchSpace

        class RNNCellSpace(SearchSpace):  # a stand-in with the same decision sizes
            name = "enas_rnn_like"

            def __init__(self, num_nodes):
                self.num_nodes = num_nodes

            @property
            def decision_sizes(self):
                sizes = [4]
                for i in range(1, self.num_nodes):
                    sizes += [i, 4]
                return tuple(sizes)

            @property
            def decision_names(self):
                return tuple(f"d{k}" for k in range(len(self.decision_sizes)))

            def to_string(self, arch):
                return ",".join(map(str, self.validate(arch)))

            def from_string(self, text):
                return self.validate([int(t) for t in text.split(",")])

    return RNNCellSpace(num_nodes=num_nodes)


def score(arch, best) -> float:
    """Fraction of decisions equal to the best architecture's."""
    return float(np.mean([a == b for a, b in zip(arch, best)]))


def trials_to_best(oracle, space, best, budget: int):
    """Runs the trial protocol until a trial hits ``best``.

    Returns:
        (1-based index of the hitting trial or ``budget`` on a miss, whether it hit).
    """
    for n in range(1, budget + 1):
        trial = oracle.create_trial("tuner0")
        if trial.status != "RUNNING":
            return budget, False  # the oracle stopped: a miss
        arch = hyperparameters_to_architecture(space, trial.hyperparameters)
        value = score(arch, best)
        oracle.update_trial(trial.trial_id, {"score": value})
        trial.status = "COMPLETED"
        oracle.end_trial(trial)
        if value == 1.0:
            return n, True
    return budget, False


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--budget", type=int, default=150)
    parser.add_argument("--num-nodes", type=int, default=4)
    parser.add_argument("--units", type=int, default=32)
    parser.add_argument("--learning-rate", type=float, default=0.01)
    parser.add_argument("--baseline-decay", type=float, default=0.9)
    parser.add_argument("--entropy-weight", type=float, default=0.01)
    parser.add_argument("--max-resamples", type=int, default=100)
    args = parser.parse_args()

    space = make_space(args.num_nodes)
    objective = keras_tuner.Objective("score", "max")
    num_archs = int(np.prod(space.decision_sizes))
    enas, rand, bests, enas_hits, random_hits = [], [], [], [], []
    start = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        for seed in range(args.seeds):
            rng = np.random.default_rng(1000 + seed)
            best = space.sample(rng)
            bests.append(list(best))
            oracle = ENASOracle(
                space, objective, max_trials=args.budget, units=args.units,
                learning_rate=args.learning_rate, baseline_decay=args.baseline_decay,
                entropy_weight=args.entropy_weight, controller_seed=seed,
                max_resamples=args.max_resamples, seed=seed + 1,
            )
            oracle._set_project_dir(tmp, f"enas_{seed}")
            n, hit = trials_to_best(oracle, space, best, args.budget)
            enas.append(n)
            enas_hits.append(hit)
            random_oracle = keras_tuner.oracles.RandomSearchOracle(
                objective=objective, max_trials=args.budget,
                hyperparameters=space_hyperparameters(space), seed=seed + 1,
            )
            random_oracle._set_project_dir(tmp, f"random_{seed}")
            n, hit = trials_to_best(random_oracle, space, best, args.budget)
            rand.append(n)
            random_hits.append(hit)
            print(f"seed {seed}: best={space.to_string(best)} enas={enas[-1]} random={rand[-1]}",
                  flush=True)
    result = {
        "benchmark": "oracle_trials_to_best",
        "enas_trials_to_best": float(statistics.median(enas)),
        "random_trials_to_best": float(statistics.median(rand)),
        "enas_fewer": bool(statistics.median(enas) < statistics.median(rand)),
        "enas_hits": sum(enas_hits),
        "random_hits": sum(random_hits),
        "enas_per_seed": enas,
        "random_per_seed": rand,
        "data": "synthetic objective: fraction of decisions equal to a random best architecture",
        "space": {"name": space.name, "num_nodes": args.num_nodes,
                  "decision_sizes": list(space.decision_sizes), "num_architectures": num_archs},
        "best_architectures": bests,
        "settings": {"seeds": args.seeds, "budget": args.budget, "units": args.units,
                     "learning_rate": args.learning_rate, "baseline_decay": args.baseline_decay,
                     "entropy_weight": args.entropy_weight, "max_resamples": args.max_resamples,
                     "repeats": "cache", "miss_counts_as": "budget",
                     "random_baseline": "keras_tuner.oracles.RandomSearchOracle"},
        "seconds": round(time.time() - start, 1),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
