"""Idle time at iterator ends: the library's CIFAR-10 training pipeline with and without
``tf.data``'s autotuning thread, in ``model.fit``.

``model.fit`` makes a new iterator over its dataset each epoch and drops the last one. With
autotuning on, dropping an iterator waits for its autotuning thread to wake, which sleeps an
optimization period that doubles up to 60 s: the process waits with the CPU idle.
:func:`wpl_keras.data.options.without_autotune_thread` turns the autotuning model off, as
every pipeline of the library does.

The same Keras model (two 3×3 convolutions of 32 filters, global average pooling, a dense
layer; SGD) is fit for ``--epochs`` epochs on ``--images`` random 32×32 images through
:func:`wpl_keras.data.cifar10_pipeline.make_dataset` (training augmentation, batch
``--batch-size``), once with TensorFlow's default options (autotune on) and once as the library
builds it (autotune off), ``--repeats`` times alternately. Per epoch it records the wall time
and the process CPU time; ``idle_s`` is the fit's wall time minus its CPU time divided by the
cores the epoch used when busy (the first epoch's CPU / wall ratio), summed over epochs.

    python benchmarks/pipeline_stall.py

The last line of output is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import time

import keras
import numpy as np
import tensorflow as tf

from wpl_keras.data.cifar10_pipeline import make_dataset


class _EpochClock(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.epochs = []

    def on_epoch_begin(self, epoch, logs=None):
        self._start = (time.perf_counter(), time.process_time())

    def on_epoch_end(self, epoch, logs=None):
        wall, cpu = time.perf_counter(), time.process_time()
        self.epochs.append({"wall_s": round(wall - self._start[0], 3),
                            "cpu_s": round(cpu - self._start[1], 3)})


def _fit(dataset: tf.data.Dataset, epochs: int, seed: int) -> dict:
    keras.utils.set_random_seed(seed)
    model = keras.Sequential([
        keras.Input((32, 32, 3)), keras.layers.Conv2D(32, 3, activation="relu"),
        keras.layers.Conv2D(32, 3, activation="relu"), keras.layers.GlobalAveragePooling2D(),
        keras.layers.Dense(10)])
    model.compile(optimizer="sgd",
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    clock = _EpochClock()
    wall, cpu = time.perf_counter(), time.process_time()
    model.fit(dataset, epochs=epochs, verbose=0, callbacks=[clock])
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    between = wall - sum(e["wall_s"] for e in clock.epochs)  # set-up, between epochs, end
    return {"wall_s": round(wall, 3), "cpu_s": round(cpu, 3),
            "outside_epochs_wall_s": round(between, 3), "epochs": clock.epochs}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=4096)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    rng = np.random.default_rng(args.seed)
    x = rng.integers(0, 256, (args.images, 32, 32, 3), dtype=np.uint8)
    y = rng.integers(0, 10, args.images).astype(np.int32)
    library = make_dataset(x, y, args.batch_size, training=True, seed=args.seed,
                           drop_remainder=True)
    default = tf.data.Options()
    default.autotune.enabled = True
    arms = {"autotune_on": library.with_options(default), "library": library}
    runs = {name: [] for name in arms}
    for repeat in range(args.repeats):
        for name, dataset in arms.items():
            runs[name].append(_fit(dataset, args.epochs, args.seed))
            print(json.dumps({"arm": name, "repeat": repeat, **runs[name][-1]}), flush=True)
    summary = {}
    for name, fits in runs.items():
        idle = []
        for fit in fits:
            first = fit["epochs"][0]
            cores = first["cpu_s"] / first["wall_s"]  # the busy epoch's CPU per wall second
            idle.append(fit["wall_s"] - fit["cpu_s"] / cores)
        summary[name] = {"wall_s": [f["wall_s"] for f in fits],
                         "cpu_s": [f["cpu_s"] for f in fits],
                         "idle_s": [round(v, 2) for v in idle],
                         "autotune": bool(arms[name].options().autotune.enabled)}
    result = {"benchmark": "pipeline_stall", "data": "random uint8 32x32x3 images",
              "settings": vars(args), "cpus": os.cpu_count(), "tensorflow": tf.__version__,
              "arms": summary}
    print(json.dumps(result), flush=True)
    return result


if __name__ == "__main__":
    main()
