"""The options shared by the from-scratch protocol benchmarks (``benchmarks/search_quality.py``
and ``benchmarks/ranking.py``): space and preset, seeds, output folder and the from-scratch
training budget, so that the two benchmarks given the same ``--out`` and budget share their
searches and trained cells.
"""

from __future__ import annotations

import argparse
from typing import Optional, Tuple

from wpl_keras.experiments import enas
from wpl_keras.experiments.from_scratch import TrainBudget


def parse_seeds(text: str) -> Tuple[int, ...]:
    """``"0,1,2"`` → ``(0, 1, 2)``: comma-separated, distinct integers, at least one.

    Raises:
        argparse.ArgumentTypeError: naming the text, for anything else.
    """
    try:
        seeds = tuple(int(s) for s in text.split(",") if s.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integers, got {text!r}") from None
    if not seeds or len(set(seeds)) != len(seeds):
        raise argparse.ArgumentTypeError(f"expected distinct seeds, got {text!r}")
    return seeds


def add_protocol_arguments(parser: argparse.ArgumentParser) -> None:
    """Adds the shared options: ``--space --preset --data-dir --no-verify --seeds --out
    --resume --train-epochs --train-max-batches --train-size --quiet``."""
    parser.add_argument("--space", default="rnn", choices=["rnn", "cnn"])
    parser.add_argument("--preset", default="cpu-small", help="experiment preset")
    parser.add_argument("--data-dir", default=None, help="the space's data folder")
    parser.add_argument("--no-verify", dest="verify", action="store_false",
                        help="skip the data files' checksums")
    parser.add_argument("--seeds", type=parse_seeds, default=(0, 1, 2))
    parser.add_argument("--out", default=None,
                        help="results folder (default: a new temporary folder); the same "
                             "folder for both benchmarks shares searches and trained cells")
    parser.add_argument("--resume", action="store_true", help="continue a run in --out")
    parser.add_argument("--train-epochs", type=int, default=None,
                        help="from-scratch epochs per cell (default: the preset's)")
    parser.add_argument("--train-max-batches", type=int, default=None,
                        help="RNN: training windows per epoch (default: the preset's cap)")
    parser.add_argument("--train-size", type=int, default=None,
                        help="CNN: training images (default: the preset's final_train_size)")
    parser.add_argument("--quiet", action="store_true", help="no search progress bars")


def experiment_and_budget(space: str, preset: str, *, quiet: bool = False,
                          epochs: Optional[int] = None, max_batches: Optional[int] = None,
                          train_size: Optional[int] = None
                          ) -> Tuple[enas.ENASExperimentConfig, TrainBudget]:
    """The experiment preset (search progress bars off with ``quiet``) and the from-scratch
    budget: the preset's own (:meth:`TrainBudget.of_preset`) with each given override.

    Raises:
        ValueError: an override the space does not use (``max_batches`` is RNN only,
            ``train_size`` CNN only), or a value :class:`TrainBudget` refuses.
    """
    config = enas.get_preset(space, preset)
    if quiet:
        config = config.replace(search={"verbose": 0})
    own = TrainBudget.of_preset(config)
    budget = TrainBudget(
        epochs=own.epochs if epochs is None else epochs,
        max_batches=own.max_batches if max_batches is None else max_batches,
        train_size=own.train_size if train_size is None else train_size)
    budget.check_space(config.space)
    return config, budget


def experiment_from_arguments(parser: argparse.ArgumentParser, args: argparse.Namespace
                              ) -> Tuple[enas.ENASExperimentConfig, TrainBudget]:
    """:func:`experiment_and_budget` of the options :func:`add_protocol_arguments` parsed into
    ``args``; an override the space does not use exits through ``parser.error`` (status 2)."""
    try:
        return experiment_and_budget(
            args.space, args.preset, quiet=args.quiet, epochs=args.train_epochs,
            max_batches=args.train_max_batches, train_size=args.train_size)
    except ValueError as error:
        parser.error(str(error))
