"""Cost of WPL in ``model.fit``: median step time with WPL over without.

Two models, each trained twice from the same weights with ``model.fit`` (SGD momentum 0.9,
batch 64, MNIST-shaped inputs):

* ``mlp``: model B of the two-model experiment (flatten → 6 × Dense(64, relu) → Dense(10)), WPL
  on its first 4 layers (the weights shared with model A);
* ``conv``: Conv(16, 3×3) → MaxPool → Conv(32, 3×3) → MaxPool → flatten → Dense(64) → Dense(10),
  WPL on both convolutions and the hidden dense layer.

"With WPL" is a :class:`~wpl_keras.wpl.training.WPLModel` after
``apply_wpl(..., update_fisher=True)``: one gradient-mode
:class:`~wpl_keras.wpl.step.WPLStep` per batch (the penalty ``(α/2) Σ F (θ − θ*)²``, its closed-form
gradient added to the data gradient, the Fisher update ``F ← (1 − η_F) F + η_F g²`` from the
step's own data gradients; ``P`` is logged per epoch with ``α`` and ``‖F‖``, which are
read once per epoch); "without" is the same ``WPLModel`` class
with no WPL state (Keras' own train step). Step times are read per batch by a
callback after ``--warmup`` untimed steps (tracing). Both models are built once and their
``fit`` calls alternate in ``--chunks`` chunks, so that load from other processes hits both
alike. A model's ``ratio`` is the median over chunks of median(step with) / median(step without)
of the two back-to-back chunks (paired, so that load changes between chunks cancel);
``pooled_ratio`` divides the medians over all steps, ``cpu_ratio`` the same with process CPU
time. ``ratio`` is the larger of the two models' ratios. ``information`` holds the same figures
for variants that are not part of ``ratio``: by default ``mlp_proximal``, the MLP with
``apply_wpl(..., mode="proximal")`` (the exact proximal pull after the optimiser's step instead
of the gradient term). Each entry records the 1-minute load average when it was measured.

    python benchmarks/wpl_overhead.py

The last line of output is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

import keras
import numpy as np

from wpl_keras.wpl.training import WPLModel, apply_wpl


class _StepTimer(keras.callbacks.Callback):
    """Per-batch wall time and process CPU time (all threads) inside ``fit``."""

    def __init__(self):
        super().__init__()
        self.wall, self.cpu = [], []
        self._start = None

    def on_train_batch_begin(self, batch, logs=None):
        self._start = (time.perf_counter(), time.process_time())

    def on_train_batch_end(self, batch, logs=None):
        self.wall.append(time.perf_counter() - self._start[0])
        self.cpu.append(time.process_time() - self._start[1])


def build(kind: str):
    """Returns ``(model, names of the WPL-protected layers)``."""
    inputs = keras.Input((28, 28, 1))
    if kind == "mlp":
        h = keras.layers.Flatten()(inputs)
        names = []
        for k in range(6):
            name = f"dense_{k}"
            h = keras.layers.Dense(64, activation="relu", name=name)(h)
            names.append(name)
        protected = names[:4]
    elif kind == "conv":
        h = keras.layers.Conv2D(16, 3, activation="relu", name="conv_1")(inputs)
        h = keras.layers.MaxPooling2D()(h)
        h = keras.layers.Conv2D(32, 3, activation="relu", name="conv_2")(h)
        h = keras.layers.MaxPooling2D()(h)
        h = keras.layers.Flatten()(h)
        h = keras.layers.Dense(64, activation="relu", name="hidden")(h)
        protected = ["conv_1", "conv_2", "hidden"]
    else:
        raise ValueError(kind)
    outputs = keras.layers.Dense(10, name="head")(h)
    return WPLModel(inputs, outputs), protected


def make_variant(kind: str, wpl: bool, seed: int = 0, mode: str = "gradient"):
    """A compiled model of ``kind``, with or without WPL (same initial weights for a seed)."""
    keras.utils.set_random_seed(seed)
    model, protected = build(kind)
    if wpl:
        state = apply_wpl(model, protected, strength=10.0, update_fisher=True, mode=mode)
        state.assign_fisher([np.full(v.shape, 1e-3, np.float32) for v in state.protected_variables])
    model.compile(optimizer=keras.optimizers.SGD(0.01, momentum=0.9),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return model


def time_interleaved(kind: str, x, y, steps: int, warmup: int, chunks: int,
                     mode: str = "gradient") -> dict:
    """Alternates chunks of ``fit`` steps without and with WPL; returns per-step times."""
    batch = 64
    models = {"without": make_variant(kind, False),
              "with": make_variant(kind, True, mode=mode)}
    timers = {name: _StepTimer() for name in models}
    paired = []  # per chunk: median(with) / median(without), measured back to back
    for name, model in models.items():  # tracing / warm-up, not timed
        model.fit(x[: warmup * batch], y[: warmup * batch], batch_size=batch, verbose=0,
                  shuffle=False)
    per_chunk = max(1, steps // chunks)
    for c in range(chunks):
        lo = (c * per_chunk) % max(1, len(y) // batch - per_chunk) * batch
        sl = slice(lo, lo + per_chunk * batch)
        chunk = {}
        for name in (("without", "with") if c % 2 == 0 else ("with", "without")):
            before = len(timers[name].wall)
            models[name].fit(x[sl], y[sl], batch_size=batch, epochs=1, shuffle=False, verbose=0,
                             callbacks=[timers[name]])
            chunk[name] = statistics.median(timers[name].wall[before:])
        paired.append(chunk["with"] / chunk["without"])
    out = {name: {"wall": t.wall, "cpu": t.cpu} for name, t in timers.items()}
    out["paired_ratios"] = paired
    return out


def _measure(name: str, x, y, args) -> dict:
    """Times model ``name`` (``<kind>`` or ``<kind>_proximal``) with and without WPL."""
    kind, _, mode = name.partition("_")
    times = time_interleaved(kind, x, y, args.steps, args.warmup, args.chunks,
                             mode=mode or "gradient")
    med = {k: {c: statistics.median(times[k][c]) for c in ("wall", "cpu")}
           for k in ("without", "with")}
    out = {
        "median_step_ms_without": 1e3 * med["without"]["wall"],
        "median_step_ms_with": 1e3 * med["with"]["wall"],
        "ratio": statistics.median(times["paired_ratios"]),
        "pooled_ratio": med["with"]["wall"] / med["without"]["wall"],
        "cpu_ratio": med["with"]["cpu"] / med["without"]["cpu"],
        "steps_timed_per_variant": len(times["with"]["wall"]),
        "load_average_1min": os.getloadavg()[0],
    }
    print(f"{name}: {out}", flush=True)
    return out


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--steps", type=int, default=800, help="timed steps per variant")
    parser.add_argument("--warmup", type=int, default=20, help="untimed steps per variant first")
    parser.add_argument("--chunks", type=int, default=40,
                        help="the timed steps come in this many alternating with/without chunks")
    parser.add_argument("--models", nargs="+", default=["mlp", "conv"])
    parser.add_argument("--information", nargs="*", default=["mlp_proximal"],
                        help="also timed, reported apart and not part of `ratio`: "
                             "<model>_proximal (WPL in proximal mode)")
    args = parser.parse_args(argv)

    rng = np.random.default_rng(0)
    n = max(args.steps // args.chunks + 1, args.warmup) * 64 * 4
    x = rng.random((n, 28, 28, 1), dtype=np.float32)
    y = rng.integers(0, 10, n).astype(np.int32)
    per_model = {kind: _measure(kind, x, y, args) for kind in args.models}
    information = {name: _measure(name, x, y, args) for name in args.information}
    report = {
        "benchmark": "wpl_overhead",
        "ratio": max(m["ratio"] for m in per_model.values()),
        "models": per_model,
        "information": information,
        "data": "random MNIST-shaped inputs (28x28x1, 10 classes); step time does not depend on "
                "the values",
        "settings": {
            "batch_size": 64, "optimizer": "SGD lr 0.01 momentum 0.9",
            "wpl": "WPLModel + apply_wpl(strength=10, update_fisher=True), gradient mode "
                   "(information: the proximal mode)",
            "steps": args.steps, "warmup": args.warmup, "chunks": args.chunks,
            "device": "CPU (2 cores shared with other processes)",
            "timing": "per-batch wall time inside model.fit (callback); ratio = median over "
                      "chunks of the paired with/without chunk medians; cpu_ratio: pooled medians "
                      "of process CPU time",
        },
    }
    print(json.dumps(report))
    return report


if __name__ == "__main__":
    main()
