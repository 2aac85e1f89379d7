"""Speed and agreement of :func:`estimate_fisher`: vectorised Jacobian vs per-example loop.

Model: model A of the two-model experiment (flatten → 4 × Dense(64, relu) → Dense(10) logits),
Fisher of its 4 hidden layers on 200 examples (the paper's MNIST setting), ``kind="empirical"``
and ``kind="true"``. Times are wall-clock seconds of a whole ``estimate_fisher`` call: the first
call (includes tracing) and the median of ``--repeats`` further calls (``estimate_fisher`` caches
its traced functions on the model, so these measure the computation).

``max_relative_difference`` = max over tensors and both kinds of
``max |F_vec − F_loop| / max |F_loop|`` (per tensor); ``max_elementwise_relative_difference``
= max of ``|F_vec − F_loop| / |F_loop|`` over entries with ``|F_loop| > 1e-6 · max |F_loop|``.

    python benchmarks/fisher.py [--data-dir ../shared/data/mnist]

The last line of output is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import keras
import numpy as np

from wpl_keras.experiments.two_models import TwoModelsConfig, build_models
from wpl_keras.wpl.fisher_estimation import estimate_fisher


def _timed(fn, repeats):
    start = time.perf_counter()
    result = fn()
    first = time.perf_counter() - start
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return result, first, statistics.median(times) if times else first


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--data-dir", default=None,
                        help="MNIST idx folder: use 200 real validation images and a briefly "
                             "trained A (default: random MNIST-shaped inputs, untrained A)")
    parser.add_argument("--samples", type=int, default=200)
    parser.add_argument("--batch-size", type=int, default=50,
                        help="examples per vectorised Jacobian")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)

    keras.utils.set_random_seed(0)
    model, _, shared = build_models((28, 28), TwoModelsConfig())
    if args.data_dir:
        from wpl_keras.data.mnist import load_mnist

        data = load_mnist(args.data_dir)
        model.compile(optimizer=keras.optimizers.SGD(0.1),
                      loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        model.fit(data.x_train[:6400], data.y_train[:6400], batch_size=64, epochs=1, verbose=0)
        x, y = data.x_val[: args.samples], data.y_val[: args.samples]
        source = f"MNIST validation images ({data.source}); A trained 100 SGD steps"
    else:
        rng = np.random.default_rng(0)
        x = rng.random((args.samples, 28, 28), dtype=np.float32)
        y = rng.integers(0, 10, args.samples).astype(np.int32)
        source = "random MNIST-shaped inputs and labels; untrained A"
    variables = [v for layer in shared for v in layer.trainable_weights]

    per_kind = {}
    worst, worst_elem = 0.0, 0.0
    for kind in ("empirical", "true"):
        common = dict(num_samples=args.samples, kind=kind, seed=0, from_logits=True,
                      batch_size=args.batch_size)
        fast, fast_first, fast_median = _timed(
            lambda: estimate_fisher(model, (x, y), variables, method="vectorized", **common),
            args.repeats)
        slow, slow_first, slow_median = _timed(
            lambda: estimate_fisher(model, (x, y), variables, method="loop", **common),
            args.repeats)
        rel, elem = 0.0, 0.0
        for f, s in zip(fast, slow):
            f, s = np.asarray(f, np.float64), np.asarray(s, np.float64)
            scale = np.max(np.abs(s))
            if scale > 0:
                rel = max(rel, float(np.max(np.abs(f - s)) / scale))
                mask = np.abs(s) > 1e-6 * scale
                elem = max(elem, float(np.max(np.abs(f - s)[mask] / np.abs(s)[mask])))
        worst, worst_elem = max(worst, rel), max(worst_elem, elem)
        per_kind[kind] = {
            "vectorized_seconds_first": fast_first,
            "vectorized_seconds_median": fast_median,
            "loop_seconds_first": slow_first,
            "loop_seconds_median": slow_median,
            "speedup_median": slow_median / fast_median,
            "max_relative_difference": rel,
            "max_elementwise_relative_difference": elem,
        }
        print(f"{kind}: {per_kind[kind]}", flush=True)
    report = {
        "benchmark": "fisher",
        "vectorized_seconds": per_kind["empirical"]["vectorized_seconds_median"],
        "loop_seconds": per_kind["empirical"]["loop_seconds_median"],
        "speedup": per_kind["empirical"]["speedup_median"],
        "max_relative_difference": worst,
        "max_elementwise_relative_difference": worst_elem,
        "agree_to_1e-5": worst <= 1e-5,
        "kinds": per_kind,
        "data": source,
        "settings": {
            "model": "model A: flatten -> 4 x Dense(64, relu) -> Dense(10) logits",
            "variables": "the 4 hidden layers (kernels and biases, 50,240 + 3 x 4,160 = 62,720 "
                         "weights)",
            "num_samples": args.samples, "batch_size": args.batch_size, "repeats": args.repeats,
            "device": "CPU (2 cores shared with other processes)",
        },
    }
    print(json.dumps(report))
    return report


if __name__ == "__main__":
    main()
