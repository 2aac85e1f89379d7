"""Does WPL find better architectures, and does ENAS beat random search with weight sharing? Per
seed, five arms with the same K and budget (ENAS search without and with WPL, random search with
weight sharing without and with WPL, and uniform draws scored by the ENAS supernet), each arm's
derived cell trained from scratch with one fixed budget and recipe; see
:mod:`wpl_keras.experiments.search_quality` for the protocol.

    python benchmarks/search_quality.py --space rnn --preset cpu-small \
        --data-dir ../shared/data/ptb --seeds 0,1,2 --out /tmp/sq --train-epochs 1 \
        --train-max-batches 400

``--measure-spread`` first trains two random cells with two initialisation seeds each at the
budget and prints how far apart the cells are against the seed noise (the budget's sizing
check), then stops. A full run measures the same spread after the arms (the four cells are
cached in ``cells.json``, so a run after ``--measure-spread`` trains none of them again) and
reports its ``gap_over_noise``. ``--resume`` continues a killed run in ``--out`` (finished
searches, derived cells and trained cells are kept; the protocol must be the same).

The last line of output is one JSON object: ``arms`` (per arm ``enas``, ``enas_wpl``,
``uniform_ws``, ``uniform_ws_wpl``, ``random_on_enas``: ``test_per_seed``, ``test_mean``,
``test_std`` and the same for ``valid``; perplexity for the RNN, error % for the CNN),
``enas_wpl_minus_enas``, ``uniform_ws_wpl_minus_uniform_ws``, ``uniform_ws_minus_enas`` and
``random_on_enas_minus_enas`` (paired per-seed test differences, their mean and
``better_seeds``; negative: the first arm's cell is better), ``gap_over_noise`` (the budget's
separation power: the gap between two random cells over the seed noise, with the measurement
under ``spread``), every cell, and the settings.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time

from wpl_keras.experiments import enas
from wpl_keras.experiments import ranking
from wpl_keras.experiments import search_quality as sq
from wpl_keras.experiments.from_scratch import CellCache
from wpl_keras.experiments.protocol_options import add_protocol_arguments, experiment_from_arguments
from wpl_keras.utils.strict_json import finite_or_null, write_json_atomic


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add_protocol_arguments(parser)
    parser.add_argument("--derive-samples", type=int, default=None,
                        help="K architectures each arm scores (default: the preset's)")
    parser.add_argument("--measure-spread", action="store_true",
                        help="only train two random cells with two seeds each and report "
                             "their gap against the seed noise")
    return parser


def _say(message: str) -> None:
    print(message, flush=True)


def main(argv=None) -> dict:
    parser = _parser()
    args = parser.parse_args(argv)
    config, budget = experiment_from_arguments(parser, args)
    out = args.out or tempfile.mkdtemp(prefix="search_quality_")
    started = time.time()
    data, config = enas.prepare(config, args.data_dir, verify=args.verify)
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
                                          progress=_say),
                  "derive_samples": protocol.derive_samples}
        spread = ranking.measure_spread(config, data, budget,
                                        CellCache(os.path.join(out, sq.CELLS_FILE)),
                                        progress=_say)
        result.update(gap_over_noise=spread["gap_over_noise"], spread=spread)
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
