"""``wpl-enas-search``: ENAS architecture search with (or without) the Weight Plasticity Loss.

Stages, as subcommands (``search`` is the default when none is given):

    wpl-enas-search [search] --space rnn --preset cpu-small --wpl --data-dir DATA --out DIR
    wpl-enas-search search --out DIR --resume          # continue an interrupted search
    wpl-enas-search derive --out DIR --samples 100      # best of K sampled architectures
    wpl-enas-search train-best --out DIR --train-epochs 1
    wpl-enas-search export --out DIR --export-dir DIR/export

The app only parses arguments into an :class:`~wpl_keras.experiments.enas.ENASExperimentConfig`
and calls a runner of :mod:`wpl_keras.experiments.enas`. The config is saved as
``DIR/experiment.json``; later stages reload it from there unless ``--preset``/``--config``
say otherwise. The search records its data folder and ``--verify`` choice as
``DIR/data_source.json``; later stages load the same data unless ``--data-dir``/``--verify``
say otherwise. A data error (a failed download, missing or bad files) is reported in one
paragraph, with exit status 2.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Optional, Sequence

from apps._common import (
    add_data_arguments,
    add_override_arguments,
    default_data_dir,
    load_config,
    run_stage,
    search_overrides,
    stage_data,
    train_best_or_export,
)

COMMANDS = ("search", "derive", "train-best", "export")

_SEARCH_OVERRIDES = (
    # (flag, SearchConfig field, type, help)
    ("--epochs", "epochs", int, "search epochs"),
    ("--shared-steps", "shared_steps_per_epoch", int,
     "architectures sampled and trained per epoch (each on --batches-per-arch batches)"),
    ("--batches-per-arch", "batches_per_arch", int, "training batches per sampled architecture"),
    ("--controller-steps", "controller_steps", int, "REINFORCE updates per epoch"),
    ("--wpl-start-epoch", "wpl_start_epoch", int, "first epoch (0-based) with WPL on"),
    ("--alpha", "strength", float, "WPL strength alpha0"),
    ("--alpha-decay-start", "strength_decay_start", int, "first epoch whose alpha decays"),
    ("--alpha-decay-rate", "strength_decay_rate", float,
     "alpha decay per epoch (amount if linear, factor if exponential)"),
    ("--flush-every", "flush_every", int,
     "reset the Fisher every this many epochs after WPL turns on (0: never)"),
    ("--checkpoint-every", "checkpoint_every", int,
     "also checkpoint every this many units of work (0: each epoch and on signals only)"),
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="wpl-enas-search",
        description=(
            "ENAS weight-sharing architecture search with the Weight Plasticity Loss (WPL). "
            "Subcommands: search (default), derive, train-best, export. Results, logs "
            "(history.csv/json, TensorBoard under tb/), checkpoints and experiment.json go to "
            "--out."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("command", nargs="?", default="search", choices=COMMANDS,
                        help="stage to run")
    parser.add_argument("--space", default=None,
                        help="search space: rnn (PTB, ENAS recurrent cell) or cnn (CIFAR-10, "
                             "micro cell); default rnn, or the one in DIR/experiment.json")
    parser.add_argument("--preset", default=None,
                        help="preset: paper (reference sizes, for a GPU), cpu-small (minutes on "
                             "2 CPU cores) or tiny (tests); default cpu-small, or the config in "
                             "DIR/experiment.json for later stages")
    parser.add_argument("--config", default=None,
                        help="an experiment.json to use instead of a preset")
    add_data_arguments(parser)
    parser.add_argument("--out", required=True, help="output directory of the experiment")
    parser.add_argument("--wpl", action=argparse.BooleanOptionalAction, default=None,
                        help="use the Weight Plasticity Loss (--no-wpl: plain ENAS); default "
                             "from the preset/config (on)")
    parser.add_argument("--resume", action="store_true",
                        help="search: continue from the latest checkpoint in --out")
    parser.add_argument("--seed", type=int, default=None, help="random seed (default: preset's)")
    add_override_arguments(parser, _SEARCH_OVERRIDES)
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    parser.add_argument("--samples", type=int, default=None,
                        help="derive: architectures sampled from the controller (K)")
    parser.add_argument("--arch", default=None,
                        help="train-best/export: architecture string (space.to_string form) "
                             "instead of DIR/derived.json")
    parser.add_argument("--train-epochs", type=int, default=None,
                        help="train-best/export: epochs of training from scratch")
    parser.add_argument("--export-dir", default=None,
                        help="export: destination (default DIR/export)")
    return parser


_data_dir = default_data_dir


def make_config(args):
    """The experiment config from the arguments (preset / config file / saved one + overrides)."""
    from wpl_keras.experiments import enas

    config = load_config(args, enas.ENASExperimentConfig, "experiment.json", enas.get_preset)
    if args.space and args.space != config.space:
        raise SystemExit(f"--space {args.space} does not match the config's space {config.space}.")
    search = search_overrides(args, _SEARCH_OVERRIDES)
    top = {}
    if args.seed is not None:
        top["seed"] = args.seed
    if args.samples is not None:
        top["derive_samples"] = args.samples
    if args.train_epochs is not None:
        top["train_epochs"] = args.train_epochs
    return config.replace(search=search, **top)


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    from wpl_keras.experiments import enas

    config = make_config(args)
    spec = enas.get_space(config.space)
    return run_stage("wpl-enas-search", spec, lambda: _run(args, config, spec))


def _run(args, config, spec) -> int:
    from wpl_keras.experiments import enas

    source = stage_data(args, spec)
    os.makedirs(args.out, exist_ok=True)
    if args.command == "search":
        result = enas.run_search_experiment(config, source.data_dir, args.out,
                                            resume=args.resume, verify=source.verify)
        last = result.history[-1] if result.history else {}
        summary = {k: last.get(k) for k in ("epoch", "mean_diff", "best5_diff", "max_diff",
                                             "mean_reward", "alpha")}
        print(json.dumps({"command": "search", "out": args.out, "epochs": len(result.history),
                          "last_epoch": summary}))
    elif args.command == "derive":
        derived = enas.run_derive(config, source.data_dir, args.out, verify=source.verify)
        print(json.dumps({"command": "derive", "arch": list(derived.arch),
                          "error": derived.error, "num_samples": derived.num_samples,
                          "json": os.path.join(args.out, "derived.json")}))
    else:
        train_best_or_export(args, config, source)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
