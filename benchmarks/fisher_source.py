"""Benchmark: the cost of the Fisher from validation batches (``WPLConfig.fisher_source``).

Times one architecture's training with WPL on, ``task.train_architecture(arch, k,
wpl_active=True)`` (``k`` training steps, the Fisher update, the anchor snapshot), for
``fisher_source="train"`` (the last training step's gradient) and ``"valid"`` (the same
steps plus one forward and backward pass on the next validation window), on real PTB at the
ENAS RNN ``cpu-small`` experiment preset (its task config, ``k = batches_per_arch`` and ``α``;
one device). Both tasks start from the same seed and train the same ``--archs`` sampled
architectures after one warm-up architecture (which traces every step function); the two are
timed in alternation, one architecture each, so they see the same machine load.

Reported: the median seconds per architecture of each, ``ratio`` = median ``"valid"`` /
median ``"train"``; as the architectures' times vary more than the pass costs on a shared
machine, also the two parts measured directly, alternating, ``--steps`` times each: the
median training step (WPL on, no Fisher update) ``train_step_ms`` and the median validation
pass ``valid_pass_ms``, with ``step_ratio = 1 + valid_pass / (k · train_step)``; and
``token_ratio`` = ``1 + (eval_batch_size · eval_bptt) / (k ·
batch_size · bptt)``, the ratio if the validation pass cost what a training step costs per
token. The last line printed is one JSON object.

    python benchmarks/fisher_source.py [--data-dir ../shared/data/ptb] [--archs 4] [--steps 10]
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _tasks(corpus, task_config, seed: int) -> dict:
    """``{source: RNNSearchTask}`` for both Fisher sources, ``α`` written in."""
    import dataclasses

    from wpl_keras.nas.spaces.rnn.task import RNNSearchTask

    tasks = {}
    for source in ("train", "valid"):
        wpl = dataclasses.replace(task_config.wpl, fisher_source=source)
        tasks[source] = RNNSearchTask(corpus, dataclasses.replace(task_config, wpl=wpl),
                                      seed=seed)
    return tasks


def time_sources(corpus, task_config, *, batches: int, strength: float, num_archs: int,
                 seed: int = 0) -> dict:
    """Seconds per architecture (``train_architecture(arch, batches, wpl_active=True)``)
    under each Fisher source, the two timed in alternation after one warm-up architecture;
    also returns the tasks and the last architecture."""
    import numpy as np

    tasks = _tasks(corpus, task_config, seed)
    rng = np.random.default_rng(seed)
    archs = [tasks["train"].space.sample(rng) for _ in range(num_archs + 1)]
    seconds = {source: [] for source in tasks}
    warm_up = {}
    for k, arch in enumerate(archs):
        order = ("train", "valid") if k % 2 == 0 else ("valid", "train")
        for source in order:
            task = tasks[source]
            task.wpl_state.strength.assign(float(strength))
            start = time.perf_counter()
            out = task.train_architecture(arch, batches, wpl_active=True)
            elapsed = time.perf_counter() - start
            if not np.isfinite(out["loss"]):
                raise FloatingPointError(f"{source}: loss {out['loss']} at architecture {k}")
            if k == 0:
                warm_up[source] = round(elapsed, 2)
            else:
                seconds[source].append(elapsed)
    median = {source: statistics.median(values) for source, values in seconds.items()}
    return {
        "arch_s_train": round(median["train"], 3),
        "arch_s_valid": round(median["valid"], 3),
        "ratio": round(median["valid"] / median["train"], 3),
        "extra_pass_s": round(median["valid"] - median["train"], 3),
        "warm_up_s": warm_up,
        "arch_s_all": {s: [round(v, 3) for v in values] for s, values in seconds.items()},
        "traces": {s: [t.trace_count, t.fisher_trace_count] for s, t in tasks.items()},
        "fisher_updates": {s: int(t.wpl_state.num_fisher_updates.numpy())
                           for s, t in tasks.items()},
        "tasks": tasks,
        "last_arch": archs[-1],
    }


def time_parts(task, arch, *, repeats: int) -> dict:
    """Median milliseconds of one training step (WPL on, no Fisher update) and of one
    validation pass (:meth:`RNNSearchTask._valid_fisher_step`) of ``task``, alternating."""
    import tensorflow as tf

    a = tf.constant(arch, tf.int32)
    true, false = tf.constant(True), tf.constant(False)
    step, valid = [], []
    for _ in range(int(repeats)):
        start = time.perf_counter()
        float(task._train_step(a, true, false)[0])
        step.append(time.perf_counter() - start)
        start = time.perf_counter()
        float(task._valid_fisher_step(a))
        valid.append(time.perf_counter() - start)
    return {"train_step_ms": round(1000 * statistics.median(step), 1),
            "valid_pass_ms": round(1000 * statistics.median(valid), 1)}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=str(ROOT.parent / "shared" / "data" / "ptb"))
    parser.add_argument("--archs", type=int, default=4, help="timed architectures per source")
    parser.add_argument("--steps", type=int, default=10,
                        help="directly timed training steps and validation passes")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    import tensorflow as tf

    from wpl_keras.data.ptb import load_ptb
    from wpl_keras.experiments import enas

    config = enas.get_preset("rnn", "cpu-small")
    cfg, search = config.task, config.search
    corpus = load_ptb(args.data_dir)
    k = int(search.batches_per_arch)
    result = {
        "benchmark": "fisher_source",
        "space": "enas_rnn",
        "preset": "cpu-small",
        "data": f"PTB from {args.data_dir}",
        "device": "CPU, one device",
        "cpu_threads": os.cpu_count(),
        "tensorflow": tf.__version__,
        "settings": {
            "hidden_size": cfg.model.hidden_size, "embedding_size": cfg.model.embedding_size,
            "num_nodes": cfg.model.num_nodes, "vocab_size": cfg.model.vocab_size,
            "batch_size": cfg.batch_size, "bptt": cfg.bptt,
            "eval_batch_size": cfg.eval_batch_size, "eval_bptt": cfg.eval_bptt,
            "batches_per_arch": k, "strength": search.strength, "wpl_scope": cfg.wpl_scope,
            "wpl_mode": cfg.wpl.mode, "timed_archs": args.archs, "seed": args.seed,
        },
        "token_ratio": round(1.0 + cfg.eval_batch_size * cfg.eval_bptt
                             / (k * cfg.batch_size * cfg.bptt), 3),
    }
    timing = time_sources(corpus, cfg, batches=k, strength=search.strength,
                          num_archs=args.archs, seed=args.seed)
    tasks, last_arch = timing.pop("tasks"), timing.pop("last_arch")
    result.update(timing)
    parts = time_parts(tasks["valid"], last_arch, repeats=args.steps)
    result.update(parts)
    result["step_ratio"] = round(
        1.0 + parts["valid_pass_ms"] / (k * parts["train_step_ms"]), 3)
    print(json.dumps(result), flush=True)
    return result


if __name__ == "__main__":
    main()
