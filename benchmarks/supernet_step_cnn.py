"""Benchmark: one-trace micro-CNN supernet training step (CIFAR-10 shapes).

Measures, for :class:`wpl_keras.nas.spaces.cnn.task.CNNSearchTask`:

* ``traces``: traces of the training step after training ``--archs`` random architectures
  (must be 1: the architecture is an int32 tensor input);
* ``compile_s``: wall time of the first step (trace + graph optimisation + first run);
* ``paper_compile_s``: the same for the ``paper`` preset's search task (5 nodes, 3 stages of
  2 normal cells, 20 filters, batch 160, its WPL config; random CIFAR-shaped images), in a
  fresh subprocess (``--no-paper-compile`` skips it);
* ``step_ms`` / ``images_per_s``: mean step time without WPL over the architectures;
* ``wpl_ratio``: step time with WPL (α 60, proximal mode: the masked pull and its penalty
  every step, Fisher update on the last step of each architecture, anchor snapshot after it)
  over the time without. The flags are bool tensors of the one traced step (switching WPL on
  does not retrace): the pull runs in a ``tf.cond`` only with WPL on, while the masked Fisher
  update runs in both modes with its update flag multiplied in; the ratio therefore measures
  the pull, the snapshot and non-zero flags, not the Fisher update against a step without it;
* ``floor_ratio``: the median over the architectures of the step time (WPL off) over that
  architecture's floor ``Σ_kind 3 · FLOPs_kind / R_kind``: the conv FLOPs of the ops it chooses,
  counted analytically (:func:`chosen_conv_flops`; ×3 for forward + backward), at the conv
  rates ``R`` measured in the same run (:func:`conv_rates`: a chain of 20 of the same conv,
  per kind and per (resolution, width) of the supernet, median of samples taken before and
  after the timed steps). Kinds: the stem's 3×3 conv, dense 1×1 convs (pointwise, calibration,
  reductions, output conv, at the 1×1 rate of their stage) and 3×3 / 5×5 depthwise convs.
  Pools, BatchNorm, ReLU and additions are not counted. ``floor_ms``, ``step_gflop`` (forward
  + backward chosen conv FLOPs, median over the architectures) and ``conv_gflops`` (the rates)
  come with it;
* ``grappler``, ``onednn``: ``--grappler-off`` (Grappler's meta-optimizer off in the main
  process, to split ``compile_s`` into tracing and graph optimisation) and
  ``TF_ENABLE_ONEDNN_OPTS`` as run;
* ``train_graph``: ``functions`` and ``nodes`` of the traced training step (one device;
  ``mirrored_2cpu.train_graph`` gives both sides of the two-logical-CPU child), what the
  first step's trace and graph optimisation work through;
* ``mirrored_2cpu_ratio``: step time under ``MirroredStrategy`` over 2 logical CPU devices
  divided by the time on 1 device (a subprocess, since logical devices must be configured
  before TensorFlow starts); for information only: both share the same physical cores;
* ``mirrored_2cpu_equal``: 1 when, in a second such subprocess (oneDNN off, see
  ``EQUAL_ENV``), the mirrored run equals the one-device run over ``--equal-archs`` (5)
  architectures with WPL on (α 60, proximal, 2 batches each, WPL from the second
  architecture, no augmentation): the loss, penalty, err1 and reward of every architecture
  and each final weight, Fisher and anchor tensor, every value within
  ``‖two − one‖₂ <= 1e-3 · max(‖one‖₂, ‖two‖₂) + 1e-6``, else 0
  (``mirrored_2cpu_check.max_rel_diff`` gives the largest relative difference of each kind;
  :mod:`wpl_keras.experiments.device_equality`). ``mirrored_2cpu_check.reorder_control``
  gives the same differences between one device and one device that sums each training batch
  in reverse order: the float32 summation-order noise the two-replica gap is to be read
  against.

Data: the CIFAR-10 JPEG archives of ``--data-dir`` (lossy JPEG re-encodings of the real
images) when present, else random images of the same shape (``"data": "synthetic"``).
The last line of output is one JSON object.

Usage: ``python benchmarks/supernet_step_cnn.py [--archs 50] [--filters 16] ...``
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import subprocess
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from wpl_keras.experiments.device_equality import compare_runs, equality_values  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "cifar10"


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data-dir", default=str(DEFAULT_DATA) if DEFAULT_DATA.is_dir() else None)
    p.add_argument("--num-nodes", type=int, default=5)
    p.add_argument("--num-cells", type=int, default=1, help="normal cells per stage")
    p.add_argument("--num-stages", type=int, default=3)
    p.add_argument("--filters", type=int, default=16)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--archs", type=int, default=50)
    p.add_argument("--batches-per-arch", type=int, default=2)
    p.add_argument("--train-size", type=int, default=2000)
    p.add_argument("--mirrored-steps", type=int, default=10)
    p.add_argument("--equal-archs", type=int, default=5,
                   help="architectures of the two-logical-CPU equality check (WPL on)")
    p.add_argument("--no-mirrored", action="store_true")
    p.add_argument("--no-paper-compile", action="store_true",
                   help="skip paper_compile_s (the paper preset's first step, minutes)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--grappler-off", action="store_true",
                   help="switch off Grappler's meta-optimizer for this process (what "
                        "compile_s owes to graph optimisation; not a setting the library uses)")
    p.add_argument("--mirrored-child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--equality-child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--paper-child", action="store_true", help=argparse.SUPPRESS)
    return p


def _data(args):
    import numpy as np

    from wpl_keras.data.cifar10 import SearchSplits, load_cifar10, search_splits, subsample

    if args.data_dir:
        arrays = load_cifar10(args.data_dir)
        splits = search_splits(arrays, num_valid=500, seed=args.seed)
        x, y = subsample(splits.x_train, splits.y_train, args.train_size, args.seed)
        name = ("cifar10 jpeg archives (lossy re-encodings)" if arrays.lossy_jpeg
                else f"cifar10 ({arrays.source})")
        return SearchSplits(x, y, splits.x_valid, splits.y_valid), name
    rng = np.random.default_rng(args.seed)
    n = args.train_size + 500
    x = rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)
    y = rng.integers(0, 10, n).astype(np.int32)
    return SearchSplits(x[:-500], y[:-500], x[-500:], y[-500:]), "synthetic"


def _cell_plan(supernet, image_size: int):
    """Per cell: ``(resolution, width, cell_type, calibration widths, pre-reduce width)``."""
    plan, scale = [], 1
    for weights, cell_type in zip(supernet.cell_weights, supernet.cell_types):
        scale *= 2 if cell_type else 1
        calib = [None if w is None else int(w[0].shape[2]) for w in weights.calibration]
        pre = None if weights.pre_reduce is None else int(weights.pre_reduce[0].shape[2])
        plan.append((image_size // scale, weights.channels, cell_type, calib, pre))
    return plan


def chosen_conv_flops(supernet, arch, batch: int, image_size: int) -> dict:
    """Forward conv FLOPs (2 per multiply-add) of the ops ``arch`` runs, by rate key.

    Keys: ``("stem", s, c)`` for the 3×3 stem conv, ``("dense", s, c)`` for a 1×1 conv at
    resolution ``s`` and stage width ``c``, ``("depthwise{k}", s, c)`` for a k×k depthwise
    conv. Per cell at ``s × s`` and width ``c`` (``P = batch · s²``): the reduction before a
    reduction cell and a factorised calibration ``2 P c_in c``, a 1×1 calibration
    ``2 P c_in c``; per slot running a separable conv twice ``2 P k² c`` (depthwise) and
    ``2 P c²`` (pointwise); the output conv ``2 P (L c) c`` with ``L`` the cell's loose ends."""
    from wpl_keras.nas.spaces.cnn.space import OPS

    space = supernet.space
    cells = space.cells(arch)
    flops = {}

    def add(key, value):
        flops[key] = flops.get(key, 0.0) + float(value)

    stem = supernet.stem_kernel.shape
    add(("stem", image_size, int(stem[3])),
        2 * batch * image_size ** 2 * 9 * int(stem[2]) * int(stem[3]))
    for s, c, cell_type, calib, pre in _cell_plan(supernet, image_size):
        p = batch * s * s
        for cin in [w for w in calib if w is not None] + ([pre] if pre else []):
            add(("dense", s, c), 2 * p * cin * c)
        nodes = cells[cell_type]
        taken = {src for node in nodes for src in (node[0], node[2])}
        for node in nodes:
            for op in (node[1], node[3]):
                name = OPS[op]
                if name.startswith("sep"):
                    k = int(name[3])
                    add((f"depthwise{k}", s, c), 2 * 2 * p * k * k * c)
                    add(("dense", s, c), 2 * 2 * p * c * c)
        loose = space.num_nodes + 2 - len(taken)
        add(("dense", s, c), 2 * p * loose * c * c)
    return flops


def conv_rates(keys, batch: int, repeats: int = 5, chain: int = 20) -> dict:
    """FLOP/s per key of :func:`chosen_conv_flops`: the median over ``repeats`` of a traced
    chain of ``chain`` convs of that kind on ``[batch, s, s, c]`` (the stem: 3 input channels
    to ``c``, each link on a fresh input)."""
    import numpy as np
    import tensorflow as tf

    rates = {}
    for key in keys:
        kind, s, c = key
        x = tf.random.normal([batch, s, s, 3 if kind == "stem" else c])
        if kind == "stem":
            w = tf.random.normal([3, 3, 3, c]) * 0.1
            fn = tf.function(autograph=False, func=lambda x, w=w: tf.add_n(
                [tf.nn.conv2d(x + float(i), w, 1, "SAME") for i in range(chain)]))
            flops = 2 * batch * s * s * 9 * 3 * c
        elif kind == "dense":
            w = tf.random.normal([1, 1, c, c]) / np.sqrt(c)
            fn = tf.function(autograph=False, func=lambda x, w=w: _chain(
                lambda y: tf.nn.conv2d(y, w, 1, "SAME"), x, chain))
            flops = 2 * batch * s * s * c * c
        else:
            k = int(kind[-1])
            w = tf.random.normal([k, k, c, 1]) / k
            fn = tf.function(autograph=False, func=lambda x, w=w: _chain(
                lambda y: tf.nn.depthwise_conv2d(y, w, [1, 1, 1, 1], "SAME"), x, chain))
            flops = 2 * batch * s * s * k * k * c
        fn(x).numpy()
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            fn(x).numpy()
            times.append(time.perf_counter() - start)
        rates[key] = chain * flops / float(np.median(times))
    return rates


def _chain(op, x, n):
    for _ in range(n):
        x = op(x)
    return x


def _floor_fields(task, archs, plain_times, batch, image_size, rates) -> dict:
    """``floor_ratio`` and its parts from the per-architecture step times (WPL off)."""
    import numpy as np

    floors, gflops = [], []
    for arch in archs:
        flops = chosen_conv_flops(task.supernet, arch, batch, image_size)
        floors.append(sum(3.0 * f / rates[key] for key, f in flops.items()))
        gflops.append(3.0 * sum(flops.values()) / 1e9)
    ratios = [t / f for t, f in zip(plain_times, floors)]
    return {
        "floor_ratio": round(float(np.median(ratios)), 3),
        "floor_ms": round(1e3 * float(np.median(floors)), 2),
        "step_gflop": round(float(np.median(gflops)), 3),
        "conv_gflops": {"/".join(map(str, key)): round(rate / 1e9, 2)
                        for key, rate in sorted(rates.items())},
    }


def _task(args, splits, strategy=None, augment: bool = True):
    from wpl_keras.nas.spaces.cnn.space import MicroCellSpace
    from wpl_keras.nas.spaces.cnn.task import CNNSearchTask, CNNTaskConfig
    from wpl_keras.nas.spaces.cnn.supernet import SupernetConfig

    config = CNNTaskConfig(
        supernet=SupernetConfig(num_cells=args.num_cells, filters=args.filters,
                                num_stages=args.num_stages),
        batch_size=args.batch_size, eval_batch_size=100, fixed_valid_size=100, augment=augment,
    )
    task = CNNSearchTask(MicroCellSpace(args.num_nodes), config, splits, strategy=strategy,
                         seed=args.seed)
    task.wpl_state.strength.assign(60.0)  # α of the paper preset (a search's driver writes it)
    return task


# Tolerance of the two-logical-CPU equality checks (this benchmark's and the RNN's): every
# compared value (a scalar or a whole tensor) satisfies
# ‖two − one‖₂ <= rtol · max(‖one‖₂, ‖two‖₂) + atol. Float32 rounding (a different summation
# order of the all-reduced gradient) grows over the checks' training steps; a distribution
# error (rows evaluated twice or not at all, a gradient not all-reduced or scaled wrongly,
# other dropout masks) moves the values by far more than rtol.
# Environment of the CNN equality subprocess: oneDNN chooses its kernels by batch size, so a
# replica's part of the batch and the whole batch round differently, and through the max
# pools (whose gradient goes to one pixel of each window) and ReLUs such differences can grow
# far beyond rounding over the check's steps. With Eigen's kernels (oneDNN off) the two runs
# agree to rounding.
EQUAL_ENV = {"TF_ENABLE_ONEDNN_OPTS": "0"}


def _graph_size(task) -> dict:
    """Size of the task's traced training step: ``functions`` in its graph's library
    (switch branches, their gradients, custom gradients) and ``nodes`` in the graph and in
    every one of those functions."""
    graph = task._train_step._list_all_concrete_functions()[0].graph.as_graph_def()
    functions = graph.library.function
    return {"functions": len(functions),
            "nodes": len(graph.node) + sum(len(f.node_def) for f in functions)}


def _mirrored_child(args) -> dict:
    """In a fresh process with 2 logical CPUs: step time under mirrored over default, and
    the size of each one's traced training step."""
    from wpl_keras.nas.search.distribute import make_strategy, split_cpu

    split_cpu(2)
    import numpy as np

    splits, _ = _data(args)
    times, graphs = {}, {}
    for kind in ("default", "mirrored"):
        task = _task(args, splits, make_strategy(kind))
        arch = task.space.sample(np.random.default_rng(args.seed))
        task.train_architecture(arch, 1, wpl_active=False)  # compile
        start = time.perf_counter()
        task.train_architecture(arch, args.mirrored_steps, wpl_active=False)
        times[kind] = (time.perf_counter() - start) / args.mirrored_steps
        graphs[kind] = _graph_size(task)
    return {"default_step_ms": 1e3 * times["default"], "mirrored_step_ms": 1e3 * times["mirrored"],
            "ratio": times["mirrored"] / times["default"], "train_graph": graphs}


def _reversed_batches(task) -> None:
    """Makes ``task`` train on each batch with its examples in reverse order: the same
    examples and the same arithmetic, summed in another order (the reordering control)."""
    import tensorflow as tf

    replica_step = task._replica_step
    task._replica_step = lambda images, labels, arch: replica_step(
        tf.reverse(images, [0]), tf.reverse(labels, [0]), arch)


def _equality_child(args) -> dict:
    """In a fresh process with 2 logical CPUs: MirroredStrategy against one device over
    ``--equal-archs`` architectures with WPL on (:func:`equality_values`), compared by
    :func:`compare_runs`. Both runs train without augmentation (its random crops and flips
    are not reproducible between two dataset instances, even on one device); the parent
    starts this process with oneDNN off (:data:`EQUAL_ENV`).

    The reordering control (``reorder_control``): one device against one device that sums
    each batch in another order (:func:`_reversed_batches`), compared the same way. It is the
    float32 noise of the summation order alone, the yardstick for the two-replica gap (two
    replicas sum each half and then the halves). A float64 run cannot give that yardstick
    here: ``FusedBatchNormV3``, the one-device BatchNorm, has no float64 kernel."""
    from wpl_keras.nas.search.distribute import make_strategy, split_cpu

    split_cpu(2)
    import numpy as np

    splits, _ = _data(args)
    values, traces = {}, {}
    for kind in ("default", "mirrored", "reordered"):
        strategy = make_strategy("mirrored" if kind == "mirrored" else "default")
        task = _task(args, splits, strategy, augment=False)
        if kind == "reordered":
            _reversed_batches(task)
        rng = np.random.default_rng(args.seed + 1)
        values[kind] = equality_values(task, [task.space.sample(rng)
                                               for _ in range(args.equal_archs)])
        traces[kind] = [task.train_traces, task.eval_traces]
    check = compare_runs(values["default"], values["mirrored"])
    control = compare_runs(values["default"], values["reordered"])["max_rel_diff"]
    return {**check, "reorder_control": {"max_rel_diff": control},
            "architectures": args.equal_archs, "traces": traces["mirrored"],
            "wpl": "alpha 60, proximal, 2 batches per architecture, WPL on from the second",
            "augment": False, "onednn": EQUAL_ENV["TF_ENABLE_ONEDNN_OPTS"] == "1"}


def _paper_child(args) -> dict:
    """In a fresh process: wall time of the ``paper`` preset task's first training step
    (trace, graph optimisation and one step of batch 160) on random CIFAR-shaped images."""
    import numpy as np

    from wpl_keras.data.cifar10 import SearchSplits
    from wpl_keras.experiments.enas_cnn import preset
    from wpl_keras.nas.spaces.cnn.space import MicroCellSpace
    from wpl_keras.nas.spaces.cnn.task import CNNSearchTask

    config = preset("paper").task
    rng = np.random.default_rng(args.seed)
    n = 2 * config.batch_size
    x = rng.integers(0, 256, (n + 200, 32, 32, 3), dtype=np.uint8)
    y = rng.integers(0, 10, n + 200).astype(np.int32)
    splits = SearchSplits(x[:n], y[:n], x[n:], y[n:])
    task = CNNSearchTask(MicroCellSpace(config.num_nodes), config, splits, seed=args.seed)
    task.wpl_state.strength.assign(60.0)
    arch = task.space.sample(rng)
    start = time.perf_counter()
    task.train_architecture(arch, 1, wpl_active=False)
    compile_s = time.perf_counter() - start
    start = time.perf_counter()
    task.train_architecture(arch, 1, wpl_active=False)
    return {"compile_s": compile_s, "step_s": time.perf_counter() - start,
            "traces": task.train_traces, "variables": len(task.variables),
            "sizes": {"num_nodes": config.num_nodes, **{
                k: getattr(config.supernet, k) for k in ("num_cells", "num_stages", "filters")},
                "batch_size": config.batch_size}}


def _run_child(flag: str, argv, env_extra=None) -> dict:
    """Runs this script with ``flag`` in a subprocess; its last JSON line, or
    ``{"error": stderr tail}``."""
    child = subprocess.run(
        [sys.executable, __file__, flag, *argv], capture_output=True, text=True, timeout=1800,
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", **(env_extra or {})),
    )
    lines = [line for line in child.stdout.splitlines() if line.startswith("{")]
    if child.returncode == 0 and lines:
        return json.loads(lines[-1])
    return {"error": child.stderr[-500:]}


def _mirrored_fields(argv) -> dict:
    """``mirrored_2cpu_ratio``, ``mirrored_2cpu_equal`` and their details (two children)."""
    out = {"mirrored_2cpu_ratio": None, "mirrored_2cpu_equal": None}
    timing = _run_child("--mirrored-child", argv)
    if "error" in timing:
        out["mirrored_error"] = timing["error"]
    else:
        out["mirrored_2cpu_ratio"] = round(timing["ratio"], 3)
        out["mirrored_2cpu"] = {k: round(timing[k], 2)
                                for k in ("default_step_ms", "mirrored_step_ms")}
        out["mirrored_2cpu"]["train_graph"] = timing["train_graph"]
    check = _run_child("--equality-child", argv, EQUAL_ENV)
    if "error" in check:
        out["mirrored_equal_error"] = check["error"]
    else:
        out["mirrored_2cpu_equal"] = check.pop("equal")
        out["mirrored_2cpu_check"] = check
    return out


def _paper_fields(argv) -> dict:
    """``paper_compile_s`` and its details (one child process)."""
    paper = _run_child("--paper-child", argv)
    if "error" in paper:
        return {"paper_compile_s": None, "paper_error": paper["error"]}
    return {"paper_compile_s": round(paper["compile_s"], 2),
            "paper": {"step_s": round(paper["step_s"], 2), "traces": paper["traces"],
                      "variables": paper["variables"], "sizes": paper["sizes"]}}


def main(argv=None) -> dict:
    """Runs the benchmark; ``argv`` as for the command line (None: ``sys.argv[1:]``)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = _parser().parse_args(argv)
    children = {"mirrored_child": _mirrored_child, "equality_child": _equality_child,
                "paper_child": _paper_child}
    child = next((fn for flag, fn in children.items() if getattr(args, flag)), None)
    if child is not None:
        result = child(args)
        print(json.dumps(result))
        return result
    import numpy as np

    if args.grappler_off:
        import tensorflow as tf

        tf.config.optimizer.set_experimental_options({"disable_meta_optimizer": True})
    load_start = os.getloadavg()[0]
    splits, data_name = _data(args)
    task = _task(args, splits)
    rng = np.random.default_rng(args.seed)
    archs = [task.space.sample(rng) for _ in range(args.archs)]
    start = time.perf_counter()
    task.train_architecture(archs[0], 1, wpl_active=False)
    compile_s = time.perf_counter() - start
    task.train_architecture(archs[0], 1, wpl_active=True)  # warm up the anchor snapshot
    image_size = int(splits.x_train.shape[1])
    keys = sorted({key for arch in archs for key in
                   chosen_conv_flops(task.supernet, arch, args.batch_size, image_size)})
    rate_samples = [conv_rates(keys, args.batch_size)]
    plain, wpl = [], []
    for k, arch in enumerate(archs):
        # alternate the order so that drifts in machine load hit both modes alike
        for mode in ((False, True) if k % 2 == 0 else (True, False)):
            t0 = time.perf_counter()
            task.train_architecture(arch, args.batches_per_arch, wpl_active=mode)
            (wpl if mode else plain).append((time.perf_counter() - t0) / args.batches_per_arch)
        print(f"arch {k + 1}/{len(archs)}: {task.space.to_string(arch)}", file=sys.stderr)
    rate_samples.append(conv_rates(keys, args.batch_size))
    rates = {key: float(np.median([r[key] for r in rate_samples])) for key in keys}
    step = float(np.median(plain))
    step_wpl = float(np.median(wpl))
    result = {
        "benchmark": "supernet_step_cnn",
        "space": task.space.name,
        "traces": task.train_traces,
        "architectures": len(archs),
        "train_graph": _graph_size(task),
        "compile_s": round(compile_s, 2),
        "step_ms": round(1e3 * step, 2),
        "images_per_s": round(args.batch_size / step, 1),
        "wpl_step_ms": round(1e3 * step_wpl, 2),
        "wpl_ratio": round(step_wpl / step, 3),
        **_floor_fields(task, archs, plain, args.batch_size, image_size, rates),
        "mirrored_2cpu_ratio": None,
        "mirrored_2cpu_equal": None,
        "sizes": {"num_nodes": args.num_nodes, "normal_cells_per_stage": args.num_cells,
                  "stages": args.num_stages, "filters": args.filters,
                  "batch_size": args.batch_size, "image": [32, 32, 3],
                  "batches_per_arch": args.batches_per_arch,
                  "variables": len(task.variables),
                  "parameters": int(sum(np.prod(v.shape) for v in task.variables))},
        "data": data_name,
        "grappler": "off" if args.grappler_off else "on",
        "onednn": os.environ.get("TF_ENABLE_ONEDNN_OPTS", "default"),
        "load_average_1min": [round(load_start, 2), round(os.getloadavg()[0], 2)],
        "timing": "median per-step wall time over the architectures, 2 shared CPU cores, "
                  "TensorFlow " + __import__("tensorflow").__version__,
    }
    if not args.no_mirrored:
        result.update(_mirrored_fields(argv))
    if not args.no_paper_compile:
        result.update(_paper_fields(argv))
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
