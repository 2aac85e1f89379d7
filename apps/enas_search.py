"""``wpl-enas-search``: ENAS architecture search with (or without) the Weight Plasticity Loss.

Stages, as subcommands (``search`` is the default when none is given):

    wpl-enas-search [search] --space rnn --preset cpu-small --wpl --data-dir DATA --out DIR
    wpl-enas-search search --out DIR --resume          # continue an interrupted search
    wpl-enas-search search --sampler uniform --out DIR  # random search with weight sharing
    wpl-enas-search derive --out DIR --samples 100      # best of K sampled architectures
    wpl-enas-search train-best --out DIR --train-epochs 1   # checkpoints as it trains
    wpl-enas-search train-best --out DIR --resume           # continue an interrupted train-best
    wpl-enas-search export --out DIR                        # DIR/export/<n>/, never trains

On several devices (``--strategy``, either space; the batch sizes must divide by the replicas):

    wpl-enas-search search --strategy mirrored --out DIR     # the GPUs of this machine
    # several machines: the same command on each, with its own TF_CONFIG, e.g. on machine I
    TF_CONFIG='{"cluster": {"worker": ["host0:2222", "host1:2222"]},
                "task": {"type": "worker", "index": I}}' \\
        wpl-enas-search search --strategy multi_worker --out DIR

Worker 0 writes ``DIR``; every other worker writes ``DIR/workers/worker_<I>`` on its machine.

``--sampler uniform`` (either space) replaces the ENAS controller by uniform draws (random
search with weight sharing, :mod:`wpl_keras.nas.search.uniform`): no controller phase, the
rest of the search as with ENAS; its ``derive`` ranks ``K`` uniform draws by the supernet. The
sampler is saved in ``DIR/experiment.json``; a ``--resume`` with another ``--sampler`` is
refused (exit status 2).

The app only parses arguments into an :class:`~wpl_keras.experiments.enas.ENASExperimentConfig`
and calls a runner of :mod:`wpl_keras.experiments.enas`. The config is saved as
``DIR/experiment.json``; later stages reload it from there unless ``--preset``/``--config``
say otherwise. The search records its data folder and ``--verify`` choice as
``DIR/data_source.json``; later stages load the same data unless ``--data-dir``/``--verify``
say otherwise. A data error (a failed download, missing or bad files) is reported in one
paragraph, with exit status 2. train-best keeps the trained model in ``DIR``
(``train_best.weights.h5``, named by ``train_best.json`` with the metrics); export exports that
model and never trains; without one it stops with exit status 2 and says to run train-best.
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
    default_data_dir,
    load_config,
    run_stage,
    search_overrides,
    stage_data,
    train_best_or_export,
    with_task_strategy,
)
from apps.tf_startup import start_tensorflow

COMMANDS = ("search", "derive", "train-best", "export")
# The values of ENASExperimentConfig.sampler (`wpl_keras.experiments.enas.SAMPLERS`, not
# imported here: the app parses its arguments before TensorFlow loads).
SAMPLERS = ("enas", "uniform")

_SEARCH_OVERRIDES = LOOP_OVERRIDES + (
    # (flag, SearchConfig field, type, help)
    ("--controller-steps", "controller_steps", int, "REINFORCE updates per epoch"),
    ("--alpha-decay-start", "strength_decay_start", int, "first epoch whose alpha decays"),
    ("--alpha-decay-rate", "strength_decay_rate", float,
     "alpha decay per epoch (amount if linear, factor if exponential)"),
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
    add_search_app_arguments(parser, commands=COMMANDS, config_name="experiment.json",
                             plain="ENAS", overrides=_SEARCH_OVERRIDES)
    parser.add_argument("--sampler", default=None, choices=SAMPLERS,
                        help="search: what proposes the architectures: enas (the controller, "
                             "trained by REINFORCE) or uniform (random search with weight "
                             "sharing, no controller phase); default: the preset's/config's "
                             "(enas)")
    parser.add_argument("--samples", type=int, default=None,
                        help="derive: architectures sampled from the controller, or uniformly "
                             "for a uniform search (K)")
    parser.add_argument("--train-epochs", type=int, default=None,
                        help="train-best: epochs of training from scratch")
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
    if args.sampler is not None:
        top["sampler"] = args.sampler
    top["task"] = with_task_strategy(config.task, args)
    return config.replace(search=search, **top)


def main(argv: Optional[Sequence[str]] = None) -> int:
    start_tensorflow()
    args = build_parser().parse_args(argv)
    from wpl_keras.experiments import enas

    config = make_config(args)
    spec = enas.get_space(config.space)
    return run_stage("wpl-enas-search", spec, lambda: _run(args, config, spec))


def _run(args, config, spec) -> int:
    from wpl_keras.experiments import enas

    source = stage_data(args, spec)
    os.makedirs(args.out, exist_ok=True)
    if args.command == "search" and args.resume:
        try:
            enas.check_resume_sampler(config, args.out)
        except ValueError as error:
            print(f"wpl-enas-search: {error}", file=sys.stderr)
            return 2
    if args.command == "search":
        result = enas.run_search_experiment(config, source.data_dir, args.out,
                                            resume=args.resume, verify=source.verify)
        last = result.history[-1] if result.history else {}
        summary = {k: last.get(k) for k in ("epoch", "mean_diff", "best5_diff", "max_diff",
                                             "mean_reward", "wpl_strength")}
        # result.out_dir: --out, or this worker's private folder under several workers
        print(json.dumps({"command": "search", "sampler": config.sampler, "out": result.out_dir,
                          "epochs": len(result.history),
                          "last_epoch": summary}))
    elif args.command == "derive":
        derived = enas.run_derive(config, source.data_dir, args.out, verify=source.verify)
        print(json.dumps({"command": "derive", "sampler": config.sampler,
                          "arch": list(derived.arch),
                          "error": derived.error, "num_samples": derived.num_samples,
                          "json": os.path.join(args.out, "derived.json")}))
    else:
        train_best_or_export(args, config, source)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
