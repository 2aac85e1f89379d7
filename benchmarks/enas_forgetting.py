"""Figure 3 of the paper: multi-model forgetting in ENAS search, with and without WPL.

Runs the same search twice (same seed, same budget, same data): once plain ENAS (``--no-wpl``)
and once with WPL from ``wpl_start_epoch``. The epochs before ``wpl_start_epoch`` are plain
ENAS in both runs, so they run once (``warmup/``) and both runs continue from that checkpoint
(``--no-fork`` runs them twice); the runs are then identical until WPL turns on. For each epoch it reports, over the architectures
sampled in that epoch, the mean, best-5 (lowest err1) and max of ``err2 − err1`` (validation
perplexity on a fixed validation batch right after an architecture's training, and at the end of
the epoch). The headline reductions are the paper's ratio of forgetting amounts over the epochs
``E`` where WPL is active: ``mean_reduction = 1 − Σ_{e∈E} d_with[e] / Σ_{e∈E} d_without[e]``
with ``d`` the mean difference, likewise ``best5_reduction`` and ``max_reduction`` (null, with
a reason under ``reduction_nan_reasons``, when ``Σ d_without <= 0``). With several seeds they
are computed on the seed-averaged per-epoch differences; ``<name>_reduction_per_seed`` gives
each seed's own pooled reduction, ``<name>_reduction_seed_mean`` and ``<name>_reduction_std``
(population std) their mean and spread. ``<name>_reduction_per_epoch`` is the mean of the
per-epoch ratios ``(d_without[e] − d_with[e]) / d_without[e]`` over the epochs with
``d_without[e] > 0``; an epoch with a tiny positive ``d_without`` dominates it, so it is not
the headline. ``forgetting_is_real`` says whether the mean difference without WPL is positive
over the WPL epochs; when it is not, the reductions are not evidence. These fields are computed
by :func:`wpl_keras.experiments.forgetting_summary.reduction_fields`.

    python benchmarks/enas_forgetting.py --space rnn --preset cpu-small \
        --data-dir ../shared/data/ptb

``--sampler uniform`` measures the same on random search with weight sharing (the supernet
trained on uniformly drawn architectures, :mod:`wpl_keras.nas.search.uniform`; no controller
phase), without and with WPL; the default is the preset's ENAS search.

The last line of output is one JSON object with what was measured, on what, with what settings.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import tempfile
import time

from wpl_keras.experiments import enas
from wpl_keras.experiments.forgetting_summary import reduction_fields
from wpl_keras.nas.analysis import metrics
from wpl_keras.utils.config_fields import parse_assignments, replace_fields
from wpl_keras.utils.strict_json import finite_or_null


def run_pair(config, *, space: str, data_dir, data, out: str, resume: bool, fork: bool,
             deterministic: bool):
    """Runs the search of ``config`` without and with WPL into ``out``.

    With ``fork``, the epochs before ``wpl_start_epoch`` run once (``out/warmup``) and both
    runs continue from that checkpoint. Returns ``({"without": history, "with": history},
    seconds)``.
    """
    if deterministic:
        import tensorflow as tf

        tf.config.experimental.enable_op_determinism()
        # Determinism forbids the implicit global generator; give it an explicit seeded one.
        tf.random.set_global_generator(tf.random.Generator.from_seed(config.seed))
    os.makedirs(out, exist_ok=True)
    runs, seconds = {}, {}
    # The run with WPL is named by its strength, so that runs with several strengths can share
    # one run without WPL in the same out (with --resume).
    dirs = {"without": "without_wpl", "with": f"with_wpl_strength{config.search.strength:g}"}
    legacy = os.path.join(out, f"with_wpl_alpha{config.search.strength:g}")
    if resume and os.path.isdir(legacy) and not os.path.isdir(os.path.join(out, dirs["with"])):
        raise SystemExit(f"--resume: {legacy} is a WPL run under its former folder name; rename "
                         f"it to {os.path.join(out, dirs['with'])} to continue it")
    start_epoch = config.search.wpl_start_epoch
    if fork:
        # Both runs are plain ENAS until WPL turns on: run those epochs once and start both
        # runs from that checkpoint, so they are identical up to the first WPL epoch.
        t = time.time()
        warm_dir = os.path.join(out, "warmup")
        print(f"=== {space} shared warm-up: epochs 0-{start_epoch - 1} without WPL "
              f"({config.preset}, seed {config.seed}) ===", flush=True)
        enas.run_search_experiment(
            config.with_wpl(False).replace(search={"epochs": start_epoch}), data_dir,
            warm_dir, resume=resume, data=data,
        )
        seconds["warmup"] = round(time.time() - t, 1)
        for name in dirs.values():
            target = os.path.join(out, name)
            if not os.path.isdir(os.path.join(target, "ckpt")):
                shutil.copytree(warm_dir, target, dirs_exist_ok=True)
    for label, wpl in (("without", False), ("with", True)):
        t = time.time()
        print(f"=== {space} search {label} WPL ({config.preset}, seed {config.seed}) ===",
              flush=True)
        result = enas.run_search_experiment(
            config.with_wpl(wpl), data_dir, os.path.join(out, dirs[label]),
            resume=resume or fork, data=data,
        )
        runs[label] = result.history
        seconds[label] = round(time.time() - t, 1)
    return runs, seconds


def _parser() -> argparse.ArgumentParser:
    """The command line of :func:`main`."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--space", default="rnn", help="registered search space")
    parser.add_argument("--preset", default="cpu-small", help="experiment preset")
    parser.add_argument("--data-dir", default=None, help="the space's data folder")
    parser.add_argument("--out", default=None,
                        help="results folder (default: a new temporary folder)")
    parser.add_argument("--resume", action="store_true",
                        help="continue runs already in --out (same settings)")
    parser.add_argument("--seed", type=int, default=None, help="seed of both runs")
    parser.add_argument("--seeds", default=None,
                        help="comma-separated seeds, e.g. 0,1,2: one pair of runs per seed "
                             "(under --out/seed<N>); the figures are computed on the per-epoch "
                             "differences averaged over the seeds, and each seed's own "
                             "figures are listed under per_seed")
    parser.add_argument("--epochs", type=int, default=None, help="override: search epochs")
    parser.add_argument("--shared-steps", type=int, default=None,
                        help="override: architectures per epoch")
    parser.add_argument("--batches-per-arch", type=int, default=None,
                        help="override: batches per architecture")
    parser.add_argument("--controller-steps", type=int, default=None,
                        help="override: controller updates per epoch")
    parser.add_argument("--sampler", default=None, choices=enas.SAMPLERS,
                        help="what proposes the architectures: enas (the controller) or "
                             "uniform (random search with weight sharing, no controller "
                             "phase); default: the preset's (enas)")
    parser.add_argument("--wpl-start-epoch", type=int, default=None,
                        help="override: first epoch with WPL")
    parser.add_argument("--strength", "--alpha", dest="strength", type=float, default=None,
                        help="override: WPL strength α0 (--alpha is an alias)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    parser.add_argument("--nondeterministic", action="store_true",
                        help="allow nondeterministic TensorFlow ops (faster); by default ops are "
                             "deterministic so that both runs match exactly until WPL turns on")
    parser.add_argument("--task-set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a task config field (JSON value); a dotted KEY reaches "
                             "into a nested config, e.g. optimizer.learning_rate=10 (RNN), or "
                             "wpl='{\"mode\": \"gradient\"}' (a nested config keeps the "
                             "fields not given); repeatable")
    parser.add_argument("--no-fork", action="store_true",
                        help="run the epochs before WPL turns on twice (once per run) instead of "
                             "once, shared by both runs through a checkpoint")
    return parser


def _print_table(per_epoch: dict, active: list, error_name: str) -> None:
    """The per-epoch differences without / with WPL, one row per epoch (``*``: WPL active)."""
    print(f"{'epoch':>5} | {'mean w/o':>9} {'mean w':>9} | {'best5 w/o':>9} {'best5 w':>9} | "
          f"{'max w/o':>9} {'max w':>9} | {'err1 w/o':>9} {'err1 w':>9}")
    for a, b in zip(per_epoch["without"], per_epoch["with"]):
        mark = "*" if a["epoch"] in active else " "
        print(f"{a['epoch']:>4}{mark} | {a['mean']:9.3f} {b['mean']:9.3f} | {a['best5']:9.3f} "
              f"{b['best5']:9.3f} | {a['max']:9.3f} {b['max']:9.3f} | {a['mean_err1']:9.2f} "
              f"{b['mean_err1']:9.2f}")
    print("(* = WPL active in the WPL run; differences are in", error_name, "units)")


def _config_and_seeds(args: argparse.Namespace):
    """The preset with the command line's overrides, and the seeds to run."""
    if args.seeds and args.seed is not None:
        raise SystemExit("give --seed or --seeds, not both")
    config = enas.get_preset(args.space, args.preset)
    overrides = {
        "epochs": args.epochs, "shared_steps_per_epoch": args.shared_steps,
        "batches_per_arch": args.batches_per_arch, "controller_steps": args.controller_steps,
        "wpl_start_epoch": args.wpl_start_epoch, "strength": args.strength,
    }
    search = {k: v for k, v in overrides.items() if v is not None}
    if args.quiet:
        search["verbose"] = 0
    top = {"seed": args.seed} if args.seed is not None else {}
    if args.sampler is not None:
        top["sampler"] = args.sampler
    config = config.replace(search=search, **top)
    try:  # --task-set KEY=VALUE: a (dotted) task config field, VALUE as JSON
        task = replace_fields(config.task, parse_assignments(args.task_set, flag="--task-set"),
                              where="--task-set")
    except ValueError as err:
        raise SystemExit(str(err))
    config = dataclasses.replace(config, task=task)
    if args.seeds:
        try:
            seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
        except ValueError:
            raise SystemExit(f"--seeds expects comma-separated integers, got {args.seeds!r}")
        if len(set(seeds)) != len(seeds) or not seeds:
            raise SystemExit(f"--seeds needs distinct seeds, got {args.seeds!r}")
    else:
        seeds = [config.seed]
    return config, seeds


def main(argv=None) -> dict:
    args = _parser().parse_args(argv)
    config, seeds = _config_and_seeds(args)
    out = args.out or tempfile.mkdtemp(prefix="enas_forgetting_")
    os.makedirs(out, exist_ok=True)

    start = time.time()
    data, config = enas.prepare(config, args.data_dir)
    start_epoch = config.search.wpl_start_epoch
    fork = not args.no_fork and 0 < start_epoch < config.search.epochs
    by_seed, seconds = {}, {}
    for seed in seeds:
        seed_out = out if len(seeds) == 1 else os.path.join(out, f"seed{seed}")
        by_seed[seed], seconds[seed] = run_pair(
            config.replace(seed=seed), space=args.space, data_dir=args.data_dir, data=data,
            out=seed_out, resume=args.resume, fork=fork,
            deterministic=not args.nondeterministic,
        )
    runs = {label: metrics.average_histories([by_seed[s][label] for s in seeds])
            for label in ("without", "with")}

    active = [e for e in range(config.search.epochs) if e >= start_epoch]
    if not active:
        raise SystemExit("WPL never turns on: wpl_start_epoch >= epochs.")
    error_name = enas.get_space(args.space).error_name
    plot = metrics.plot_forgetting(
        {"without WPL": runs["without"], "with WPL": runs["with"]},
        os.path.join(out, "figure3_forgetting.png"),
        wpl_start_epoch=start_epoch, error_name=error_name,
        first_epoch=max(0, start_epoch - 10),
        title=(f"{'ENAS' if config.sampler == 'enas' else 'Uniform WS'} {args.space} "
               f"({config.preset}): err2 − err1 per epoch"),
    )
    per_epoch = {
        label: [
            {"epoch": r["epoch"], "mean": round(r["mean_diff"], 4),
             "best5": round(r["best5_diff"], 4), "max": round(r["max_diff"], 4),
             "mean_err1": round(r["mean_err1"], 3), "wpl_strength": r["wpl_strength"]}
            for r in history
        ]
        for label, history in runs.items()
    }
    _print_table(per_epoch, active, error_name)
    result = {
        "benchmark": "enas_forgetting",
        "figure": "paper Figure 3 (err2 - err1: mean / best-5 / max per epoch)",
        "space": args.space,
        "sampler": config.sampler,
        "preset": config.preset,
        "data_dir": args.data_dir,
        "error": error_name,
        "seeds": seeds,
        "figures_over": ("the single seed's run" if len(seeds) == 1 else
                         f"per-epoch differences averaged over {len(seeds)} seeds"),
        "deterministic_ops": not args.nondeterministic,
        "shared_warmup": fork,
        "wpl_active_epochs": active,
        **reduction_fields(runs, by_seed, active),
        "per_epoch": per_epoch,
        # Wall time of this invocation, and the searches' own time summed over their epochs
        # (the latter survives interruption and --resume).
        "seconds": {**{f"seed{k}": v for k, v in seconds.items()},
                    "total": round(time.time() - start, 1)},
        "search_seconds": {label: round(sum(r["epoch_seconds"] for s in seeds
                                            for r in by_seed[s][label]), 1)
                           for label in ("without", "with")},
        "out": out,
        "plot": plot,
        "settings": config.to_json(),
    }
    print(json.dumps(finite_or_null(result), allow_nan=False))
    return result


if __name__ == "__main__":
    main()
