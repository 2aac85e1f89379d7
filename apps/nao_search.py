"""``wpl-nao-search``: NAO weight-sharing architecture search with (or without) WPL.

Stages, as subcommands (``search`` is the default when none is given):

    wpl-nao-search [search] --space rnn --preset cpu-small --wpl --output-dropout 0.25 \\
        --data-dir DATA --out DIR
    wpl-nao-search search --out DIR --resume       # continue an interrupted search
    wpl-nao-search derive --out DIR                # best scored pool architecture
    wpl-nao-search train-best --out DIR --train-epochs 1   # checkpoints as it trains
    wpl-nao-search train-best --out DIR --resume           # continue an interrupted train-best
    wpl-nao-search export --out DIR                        # DIR/export/<n>/, never trains

On several devices (``--strategy``, either space; the batch sizes must divide by the replicas):

    wpl-nao-search search --strategy mirrored --out DIR     # the GPUs of this machine
    # several machines: the same command on each, with its own TF_CONFIG, e.g. on machine I
    TF_CONFIG='{"cluster": {"worker": ["host0:2222", "host1:2222"]},
                "task": {"type": "worker", "index": I}}' \\
        wpl-nao-search search --strategy multi_worker --out DIR

Worker 0 writes ``DIR``; every other worker writes ``DIR/workers/worker_<I>`` on its machine.

The app parses arguments into a :class:`~wpl_keras.experiments.nao.NAOExperimentConfig` and
calls a runner: :func:`~wpl_keras.experiments.nao.run_nao_experiment` for the search (it
writes ``DIR/derived.json``, the best pool architecture), and the ENAS runners
(:func:`~wpl_keras.experiments.enas.run_train_best`, ``run_export``) for training the derived
cell from scratch and exporting it. The config is saved as ``DIR/nao_experiment.json``; later
stages reload it from there unless ``--preset``/``--config`` say otherwise. The search records
its data folder and ``--verify`` choice as ``DIR/data_source.json``; later stages load the same
data unless ``--data-dir``/``--verify`` say otherwise. A data error (a failed download, missing
or bad files) is reported in one paragraph, with exit status 2. train-best keeps the trained
model in ``DIR`` (``train_best.weights.h5``, named by ``train_best.json`` with the metrics);
export exports that model and never trains; without one it stops with exit status 2 and says
to run train-best.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Optional, Sequence

from apps._common import (
    LOOP_OVERRIDES,
    add_search_app_arguments,
    load_config,
    run_stage,
    search_overrides,
    stage_data,
    train_best_or_export,
    with_task_strategy,
)
from apps.tf_startup import start_tensorflow

COMMANDS = ("search", "derive", "train-best", "export")

_SEARCH_OVERRIDES = LOOP_OVERRIDES + (
    # (flag, NAOSearchConfig field, type, help)
    ("--seed-archs", "seed_archs", int, "random architectures in the initial pool"),
    ("--controller-every", "controller_every", int,
     "score the pool, train NAO and grow the pool every this many epochs"),
    ("--new-archs", "new_archs", int, "new architectures per controller phase"),
    ("--top-k-seeds", "top_k_seeds", int, "best pool architectures used as ascent seeds"),
    ("--max-pool", "max_pool", int, "pool size cap"),
    ("--controller-epochs", "controller_epochs", int, "NAO training epochs per controller phase"),
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="wpl-nao-search",
        description=(
            "NAO (Neural Architecture Optimization) weight-sharing search with the Weight "
            "Plasticity Loss. Subcommands: search (default), derive, train-best, export. Logs "
            "(history.csv/json, pool.json), checkpoints and nao_experiment.json go to --out."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    add_search_app_arguments(parser, commands=COMMANDS, config_name="nao_experiment.json",
                             plain="NAO", overrides=_SEARCH_OVERRIDES)
    parser.add_argument("--output-dropout", type=float, default=None,
                        help="output dropout rate of the supernet (Figure 4: 0, .25, .5, .75)")
    parser.add_argument("--path-keep", type=float, default=None,
                        help="random path dropping: keep probability of each path (spaces "
                             "whose supernet supports it)")
    parser.add_argument("--train-epochs", type=int, default=None,
                        help="train-best: epochs of training from scratch")
    return parser


def make_config(args):
    """The experiment config from the arguments (preset / config file / saved + overrides)."""
    from wpl_keras.experiments.nao import NAOExperimentConfig, nao_preset
    from wpl_keras.utils.config_fields import nested_changes, replace_fields

    config = load_config(args, NAOExperimentConfig, "nao_experiment.json", nao_preset)
    if args.space and args.space != config.base.space:
        raise SystemExit(f"--space {args.space} does not match the config's {config.base.space}.")
    search = search_overrides(args, _SEARCH_OVERRIDES)
    top = {}
    if args.output_dropout is not None:
        top["output_dropout"] = args.output_dropout
    if args.path_keep is not None:
        top["path_keep"] = args.path_keep
    base = {}
    if args.seed is not None:
        base["seed"] = args.seed
    if args.train_epochs is not None:
        base["train_epochs"] = args.train_epochs
    if args.strategy is not None:
        base["task"] = with_task_strategy(config.base.task, args)
    return replace_fields(config, nested_changes(top, search=search, base=base),
                          where="wpl-nao-search")


def main(argv: Optional[Sequence[str]] = None) -> int:
    start_tensorflow()
    args = build_parser().parse_args(argv)
    from wpl_keras.experiments import enas

    config = make_config(args)
    spec = enas.get_space(config.base.space)
    return run_stage("wpl-nao-search", spec, lambda: _run(args, config, spec))


def _run(args, config, spec) -> int:
    from wpl_keras.experiments import nao as nao_experiment

    source = stage_data(args, spec)
    os.makedirs(args.out, exist_ok=True)
    if args.command == "search":
        result = nao_experiment.run_nao_experiment(config, source.data_dir, args.out,
                                                   resume=args.resume, verify=source.verify)
        last = result.history[-1] if result.history else {}
        summary = {k: last.get(k) for k in ("epoch", "mean_err1", "mean_diff", "best5_diff",
                                             "max_diff", "wpl_strength", "pool_best_error")}
        # result.out_dir: --out, or this worker's private folder under several workers
        print(json.dumps({"command": "search", "out": result.out_dir,
                          "epochs": len(result.history),
                          "pool_size": len(result.pool), "last_epoch": summary}))
    elif args.command == "derive":
        path = os.path.join(args.out, "derived.json")
        if not os.path.exists(path):
            raise SystemExit(f"{path} is missing: run the search (it writes it at the end).")
        with open(path) as f:
            derived = json.load(f)
        print(json.dumps({"command": "derive", "arch": derived["arch"],
                          "error": derived["error"], "json": path}))
    else:
        train_best_or_export(args, config.enas_config(), source)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
