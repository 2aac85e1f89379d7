"""Does WPL find better architectures? Per seed, three arms with the same budget (an ENAS search
without WPL, the same search with WPL, and random search scored by the ENAS supernet), each
arm's derived cell trained from scratch with one fixed budget and recipe; see
:mod:`wpl_keras.experiments.search_quality` for the protocol.

    python benchmarks/search_quality.py --space rnn --preset cpu-small \
        --data-dir ../shared/data/ptb --seeds 0,1,2 --out /tmp/sq --train-epochs 1 \
        --train-max-batches 400

``--measure-spread`` first trains two random cells with two initialisation seeds each at the
budget and prints how far apart the cells are against the seed noise (the budget's sizing
check), then stops. ``--resume`` continues a killed run in ``--out`` (finished searches,
derived cells and trained cells are kept; the protocol must be the same).

The last line of output is one JSON object: ``arms`` (per arm ``test_per_seed``,
``test_mean``, ``test_std`` and the same for ``valid``; perplexity for the RNN, error % for
the CNN), ``wpl_minus_enas`` (paired per-seed test differences and their mean; negative: WPL's
cell is better), ``wpl_better_seeds``, ``random_minus_enas``, every cell, and the settings.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from wpl_keras.experiments import enas  # noqa: E402
from wpl_keras.experiments import ranking  # noqa: E402
from wpl_keras.experiments import search_quality as sq  # noqa: E402
from wpl_keras.experiments.from_scratch import CellCache, TrainBudget  # noqa: E402
from wpl_keras.utils.strict_json import finite_or_null, write_json_atomic  # noqa: E402


def parse_seeds(text: str):
    try:
        seeds = tuple(int(s) for s in text.split(",") if s.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}")
    if not seeds or len(set(seeds)) != len(seeds):
        raise argparse.ArgumentTypeError(f"expected distinct seeds, got {text!r}")
    return seeds


def add_common_arguments(parser: argparse.ArgumentParser) -> None:
    """Options shared with benchmarks/ranking.py (the same searches and budget)."""
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


def experiment_and_budget(args):
    """The preset (progress bars off with --quiet) and the from-scratch budget."""
    config = enas.get_preset(args.space, args.preset)
    if args.quiet:
        config = config.replace(search={"verbose": 0})
    preset = TrainBudget.of_preset(config)
    budget = TrainBudget(
        epochs=args.train_epochs or preset.epochs,
        max_batches=(args.train_max_batches if args.train_max_batches is not None
                     else preset.max_batches) if args.space == "rnn" else None,
        train_size=(args.train_size if args.train_size is not None
                    else preset.train_size) if args.space == "cnn" else None)
    return config, budget


def start_run(args, prefix: str):
    """``(data, config, budget, out, started)`` of a run: the preset and budget of the
    options, the data loaded (and the config fitted to it), the output folder (a new temporary
    one without ``--out``) and the start time."""
    config, budget = experiment_and_budget(args)
    out = args.out or tempfile.mkdtemp(prefix=prefix)
    started = time.time()
    data, config = enas.prepare(config, args.data_dir, verify=args.verify)
    return data, config, budget, out, started


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add_common_arguments(parser)
    parser.add_argument("--derive-samples", type=int, default=None,
                        help="K architectures each arm scores (default: the preset's)")
    parser.add_argument("--measure-spread", action="store_true",
                        help="only train two random cells with two seeds each and report "
                             "their gap against the seed noise")
    return parser


def main(argv=None) -> dict:
    args = _parser().parse_args(argv)
    data, config, budget, out, started = start_run(args, "search_quality_")
    if args.measure_spread:
        cells = CellCache(os.path.join(out, sq.CELLS_FILE))
        result = {"benchmark": "search_quality.spread",
                  **ranking.measure_spread(config, data, budget, cells, progress=print)}
    else:
        protocol = sq.SearchQualityConfig(
            experiment=config, seeds=args.seeds, budget=budget,
            derive_samples=args.derive_samples or config.derive_samples)
        result = {"benchmark": "search_quality",
                  **sq.run_search_quality(protocol, data, out, resume=args.resume,
                                          progress=lambda m: print(m, flush=True)),
                  "derive_samples": protocol.derive_samples}
    result.update(space=args.space, preset=args.preset, data_dir=args.data_dir,
                  budget=budget.to_json(), out=out,
                  unit="perplexity" if args.space == "rnn" else "error_percent",
                  seconds=round(time.time() - started, 1))
    write_json_atomic(os.path.join(out, "spread.json" if args.measure_spread
                                   else "search_quality.json"), result)
    print(json.dumps(finite_or_null(result), allow_nan=False))
    return result


if __name__ == "__main__":
    main()
