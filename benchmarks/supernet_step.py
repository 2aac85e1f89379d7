"""Benchmark: one traced supernet training step over many architectures (issue 3).

RNN (default, ``--space rnn``): ENAS recurrent supernet on real PTB (``--data-dir``), at the
cpu-small size (hidden 256) and the paper size (embedding = hidden = 1000, 12 nodes, batch 64,
BPTT 35, vocab 10k). Measures

* ``traces``: traces of the training step over ``--archs`` (50) different sampled
  architectures (must be 1), ``compile_s``: the first call (trace + graph build + one step);
* median ``step_ms`` and ``tokens_per_s`` (``batch · bptt / step``) per size; the timed steps
  alternate WPL on/off, ``wpl_ratio`` = median step with WPL / median step without;
* ``floor_ratio`` (paper) and ``floor_ratio_small``: median step time over the matmul floor,
  ``floor = 3 · forward matmul FLOPs / R`` with ``R`` the float32 rate of a 2048×2048 matmul
  measured in the same run (median of 10 samples taken just before and 10 just after that
  size's steps; the start-of-run median of 10 is ``matmul_gflops``); ``*_paired`` variants
  pair every step with a rate sample taken right after it (median of ``step / floor``), which
  is steadier on a shared machine. Forward FLOPs are counted analytically:
  ``2 · B · T · (E·2H + H·2H + (N−1)·H·2H + H·V)`` (input projection, hidden matrix, node
  matrices, tied softmax).

``--jit-compile`` times the same steps with the task's XLA step (``jit_compile=True``) at
both sizes: one trace and, since every step reads the next data window, ``step_ms`` near
``compile_s`` would mean a compilation per step.

Two logical CPU devices (a subprocess, since logical devices must be configured before
TensorFlow starts; ``--no-mirrored`` skips it), at the small size without XLA, for
``--equal-archs`` (5) architectures:

* ``mirrored_2cpu_equal``: 1 when ``MirroredStrategy`` over the two equals one device with
  WPL on (α 1e6, the cpu-small preset's, proximal mode; 2 batches per architecture, WPL from
  the second architecture; dropout on): the loss and penalty of every architecture, its err1
  (fixed-batch perplexity) and reward, and each final weight, Fisher, anchor and carried
  hidden state tensor, every value within ``‖two − one‖₂ <= 1e-3 · max(‖one‖₂, ‖two‖₂) +
  1e-6`` (:func:`wpl_keras.experiments.device_equality.compare_runs`), else 0; ``mirrored_2cpu.max_rel_diff``
  gives the largest relative difference of each kind;
* ``mirrored_2cpu_ratio``: median step time (WPL off, ``--mirrored-steps`` steps) under
  mirrored over one device; information only: both share the same physical cores.

``--space cnn`` runs ``benchmarks/supernet_step_cnn.py`` with the other arguments, whose
``floor_ratio`` is the analogue of the above for convolutions: the step time over the FLOPs of
the chosen ops' convs (×3) at conv and depthwise-conv rates measured in the same run.
The last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import pathlib
import statistics
import subprocess
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from wpl_keras.experiments.device_equality import compare_runs, equality_values  # noqa: E402
from wpl_keras.experiments.presets import cpu_small_rnn_task, paper_rnn_task  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parents[1]


def matmul_rate(n: int = 2048, repeats: int = 10) -> float:
    """Median float32 FLOP/s of an ``n × n`` matmul (``2 n³`` FLOPs)."""
    return statistics.median(matmul_rate_samples(n, repeats))


def matmul_rate_samples(n: int = 2048, repeats: int = 10) -> list:
    """``repeats`` float32 FLOP/s samples of an ``n × n`` matmul."""
    import tensorflow as tf

    a = tf.random.normal([n, n])
    b = tf.random.normal([n, n])
    mm = tf.function(lambda x, y: tf.matmul(x, y))
    mm(a, b).numpy()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        mm(a, b).numpy()
        times.append(time.perf_counter() - start)
    return [2.0 * n**3 / t for t in times]


def forward_matmul_flops(cfg) -> float:
    """``2 · B · T · (E·2H + H·2H + (N−1)·H·2H + H·V)``."""
    m = cfg.model
    b, t, e, h, n, v = (cfg.batch_size, cfg.bptt, m.embedding_size, m.hidden_size,
                        m.num_nodes, m.vocab_size)
    return 2.0 * b * t * (e * 2 * h + h * 2 * h + (n - 1) * h * 2 * h + h * v)


def time_size(corpus, cfg, num_archs: int, seed: int = 0, flops: float = 0.0) -> dict:
    """Compiles the step, runs it over ``num_archs`` sampled architectures (alternating WPL
    off/on), returns traces, compile time and median step times.

    After every step one 2048×2048 matmul rate sample is taken, so each step has its own
    floor ``flops / rate`` measured under the same machine load (the machine may be shared);
    ``floor_ratio_paired`` is the median over steps of ``step / floor``."""
    import numpy as np
    import tensorflow as tf

    from wpl_keras.nas.spaces.rnn.task import RNNSearchTask

    task = RNNSearchTask(corpus, cfg, seed=seed)
    rng = np.random.default_rng(seed)
    archs = []
    while len(archs) < num_archs + 1:
        arch = task.space.sample(rng)
        if arch not in archs:
            archs.append(arch)
    false, true = tf.constant(False), tf.constant(True)
    start = time.perf_counter()
    float(task._train_step(tf.constant(archs[0], tf.int32), true, true)[0])
    compile_s = time.perf_counter() - start
    plain, wpl, paired = [], [], []
    for k, arch in enumerate(archs[1:]):
        active = k % 2 == 1
        a = tf.constant(arch, tf.int32)
        start = time.perf_counter()
        loss = float(task._train_step(a, true if active else false, false)[0])
        seconds = time.perf_counter() - start
        (wpl if active else plain).append(seconds)
        if not np.isfinite(loss):
            raise FloatingPointError(f"loss {loss} at step {k}")
        if flops:
            paired.append(seconds * matmul_rate_samples(repeats=1)[0] / flops)
    step = statistics.median(plain + wpl)
    return {
        "traces": task.trace_count,
        "compile_s": round(compile_s, 2),
        "step_ms": round(1000 * step, 1),
        "step_ms_plain": round(1000 * statistics.median(plain), 1),
        "step_ms_wpl": round(1000 * statistics.median(wpl), 1),
        "tokens_per_s": round(cfg.batch_size * cfg.bptt / step, 1),
        "timed_steps": len(plain) + len(wpl),
        "wpl_ratio": round(statistics.median(wpl) / statistics.median(plain), 3),
        "final_loss": round(loss, 3),
        "floor_ratio_paired": round(statistics.median(paired), 3) if paired else None,
    }


def run_rnn(args) -> dict:
    import tensorflow as tf

    from wpl_keras.data.ptb import load_ptb

    corpus = load_ptb(args.data_dir)
    rate = matmul_rate()
    print(f"matmul 2048x2048 float32: {rate / 1e9:.1f} GFLOP/s (median of 10)", flush=True)
    result = {
        "benchmark": "supernet_step",
        "space": "enas_rnn",
        "data": f"PTB from {args.data_dir} (train split, BPTT windows)",
        "device": "CPU",
        "cpu_threads": os.cpu_count(),
        "tensorflow": tf.__version__,
        "matmul_gflops": round(rate / 1e9, 2),
    }
    jit = {"jit_compile": True} if args.jit_compile else {}
    sizes = [("small", cpu_small_rnn_task(**jit), args.archs)]
    if not args.skip_paper:
        sizes.append(("paper", dataclasses.replace(paper_rnn_task(), **jit), args.paper_steps))
    for label, cfg, steps in sizes:
        flops = 3.0 * forward_matmul_flops(cfg)
        m = cfg.model
        print(f"[{label}] hidden={m.hidden_size} batch={cfg.batch_size} bptt={cfg.bptt} "
              f"nodes={m.num_nodes} vocab={m.vocab_size}: fwd+bwd matmul FLOPs "
              f"{flops / 1e9:.1f} G, floor {1000 * flops / rate:.0f} ms", flush=True)
        # The machine may be shared: measure the rate again around each size's timing and
        # use the median of all samples so the floor sees the same conditions as the steps.
        before = matmul_rate_samples()
        timing = time_size(corpus, cfg, steps, flops=flops)
        samples = before + matmul_rate_samples()
        rate_here = statistics.median(samples)
        timing["matmul_gflops_around"] = round(rate_here / 1e9, 2)
        floor_ms = 1000.0 * flops / rate_here
        timing["step_gflop"] = round(flops / 1e9, 2)
        timing["floor_ms"] = round(floor_ms, 1)
        timing["floor_ratio"] = round(timing["step_ms"] / floor_ms, 3)
        timing["config"] = {
            **{k: getattr(m, k) for k in ("hidden_size", "embedding_size", "num_nodes",
                                          "vocab_size")},
            **{k: getattr(cfg, k) for k in ("batch_size", "bptt", "jit_compile")}}
        print(f"[{label}] {json.dumps(timing)}", flush=True)
        result[label] = timing
    small = result["small"]
    result["traces"] = small["traces"]
    result["traces_over_archs"] = small["timed_steps"] + 1
    result["compile_s"] = small["compile_s"]
    result["wpl_ratio"] = small["wpl_ratio"]
    result["floor_ratio_small"] = small["floor_ratio"]
    result["floor_ratio_small_paired"] = small["floor_ratio_paired"]
    if "paper" in result:
        result["floor_ratio"] = result["paper"]["floor_ratio"]
        result["floor_ratio_paired"] = result["paper"]["floor_ratio_paired"]
        result["wpl_ratio_paper"] = result["paper"]["wpl_ratio"]
        result["traces"] = max(result["traces"], result["paper"]["traces"])
    return result


# α of the equality check: the cpu-small preset's (proximal mode, stable for any α).
EQUAL_STRENGTH = 1e6


def _rnn_equality_values(task, archs) -> dict:
    """:func:`~wpl_keras.experiments.device_equality.equality_values` for the RNN task at α
    ``EQUAL_STRENGTH``: the supernet's weights, plus both carried hidden states."""
    task.wpl_state.strength.assign(EQUAL_STRENGTH)
    hidden = {"hidden_states": lambda: [task.train_state.numpy(), task.reward_state.numpy()]}
    return equality_values(task, archs, task.supernet.trainable_variables, hidden)


def rnn_mirrored_child(args) -> dict:
    """In a fresh process with 2 logical CPUs: the small size (XLA off) under one device and
    under ``MirroredStrategy``; the equality check over ``args.equal_archs`` architectures
    (:func:`_rnn_equality_values`), then ``args.mirrored_steps`` timed steps (WPL off) on
    the same tasks."""
    from wpl_keras.nas.search.distribute import make_strategy, split_cpu

    split_cpu(2)
    import dataclasses

    import numpy as np
    import tensorflow as tf

    from wpl_keras.data.ptb import load_ptb
    from wpl_keras.nas.spaces.rnn.task import RNNSearchTask

    corpus = load_ptb(args.data_dir)
    cfg = dataclasses.replace(cpu_small_rnn_task(), jit_compile=False)
    values, times, traces = {}, {}, {}
    for kind in ("default", "mirrored"):
        task = RNNSearchTask(corpus, cfg, seed=0, strategy=make_strategy(kind))
        rng = np.random.default_rng(1)
        archs = [task.space.sample(rng) for _ in range(args.equal_archs + 1)]
        values[kind] = _rnn_equality_values(task, archs[:-1])
        a, off = tf.constant(archs[-1], tf.int32), tf.constant(False)
        steps = []
        for _ in range(args.mirrored_steps):
            start = time.perf_counter()
            float(task._train_step(a, off, off)[0])
            steps.append(time.perf_counter() - start)
        times[kind] = statistics.median(steps)
        traces[kind] = [task.trace_count, task.eval_trace_count]
    check = compare_runs(values["default"], values["mirrored"])
    m = cfg.model
    return {
        "equal": check["equal"], "ratio": times["mirrored"] / times["default"],
        "default_step_ms": round(1e3 * times["default"], 1),
        "mirrored_step_ms": round(1e3 * times["mirrored"], 1),
        "max_rel_diff": check["max_rel_diff"], "rtol": check["rtol"], "atol": check["atol"],
        "architectures": args.equal_archs, "timed_steps": args.mirrored_steps,
        "traces": traces["mirrored"],
        "wpl": f"alpha {EQUAL_STRENGTH:g}, {cfg.wpl.mode}, 2 batches per architecture, "
               "WPL on from the second",
        "size": {"label": "small", "hidden_size": m.hidden_size, "batch_size": cfg.batch_size,
                 "bptt": cfg.bptt, "num_nodes": m.num_nodes, "jit_compile": False},
        "onednn": os.environ.get("TF_ENABLE_ONEDNN_OPTS", "1") != "0",
    }


def run_rnn_mirrored(argv) -> dict:
    """Runs :func:`rnn_mirrored_child` in a subprocess; returns the result's fields."""
    child = subprocess.run(
        [sys.executable, __file__, *argv, "--mirrored-child"], capture_output=True, text=True,
        timeout=1800, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"),
    )
    lines = [line for line in child.stdout.splitlines() if line.startswith("{")]
    if child.returncode != 0 or not lines:
        return {"mirrored_2cpu_equal": None, "mirrored_2cpu_ratio": None,
                "mirrored_error": child.stderr[-500:]}
    mirrored = json.loads(lines[-1])
    return {"mirrored_2cpu_equal": mirrored["equal"],
            "mirrored_2cpu_ratio": round(mirrored["ratio"], 3),
            "mirrored_2cpu": {k: v for k, v in mirrored.items() if k not in ("equal", "ratio")}}


def main(argv=None) -> dict:
    argv = list(sys.argv[1:] if argv is None else argv)
    space_parser = argparse.ArgumentParser(add_help=False)
    space_parser.add_argument("--space", choices=("rnn", "cnn"), default="rnn")
    space_args, rest = space_parser.parse_known_args(argv)
    if space_args.space == "cnn":
        # Everything but --space goes to the CNN benchmark unchanged (its own --archs,
        # --data-dir), run as its own program; its output (last line: the JSON) passes through.
        cnn = pathlib.Path(__file__).with_name("supernet_step_cnn.py")
        raise SystemExit(subprocess.run([sys.executable, str(cnn), *rest]).returncode)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--space", choices=("rnn", "cnn"), default="rnn")
    parser.add_argument("--data-dir", default=str(ROOT.parent / "shared" / "data" / "ptb"))
    parser.add_argument("--archs", type=int, default=50,
                        help="sampled architectures timed at the small size (traces over them)")
    parser.add_argument("--paper-steps", type=int, default=4,
                        help="timed steps at the paper size (alternating WPL off/on)")
    parser.add_argument("--skip-paper", action="store_true")
    parser.add_argument("--equal-archs", type=int, default=5,
                        help="architectures of the two-logical-CPU equality check (WPL on)")
    parser.add_argument("--mirrored-steps", type=int, default=2,
                        help="timed steps per device count for mirrored_2cpu_ratio")
    parser.add_argument("--no-mirrored", action="store_true",
                        help="skip the two-logical-CPU check (mirrored_2cpu_* are null)")
    parser.add_argument("--mirrored-only", action="store_true",
                        help="run only the two-logical-CPU check")
    parser.add_argument("--jit-compile", action="store_true",
                        help="time the XLA-compiled step (one device; the two-logical-CPU "
                             "check stays without XLA)")
    parser.add_argument("--mirrored-child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.mirrored_child:
        result = rnn_mirrored_child(args)
    else:
        result = ({"benchmark": "supernet_step", "space": "enas_rnn"} if args.mirrored_only
                  else run_rnn(args))
        if args.no_mirrored:
            result.update({"mirrored_2cpu_equal": None, "mirrored_2cpu_ratio": None})
        else:
            result.update(run_rnn_mirrored([a for a in argv if a != "--mirrored-only"]))
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
