"""Ranking fidelity of the ENAS and the uniform (random search with weight sharing) supernets,
each without and with WPL: Kendall's τ and Spearman's ρ between the supernet's ranking of M
fixed architectures and their ranking after training from scratch; see
:mod:`wpl_keras.experiments.ranking` for the protocol.

    python benchmarks/ranking.py --space rnn --preset cpu-small \
        --data-dir ../shared/data/ptb --seeds 0,1,2 --out /tmp/sq --train-epochs 1 \
        --train-max-batches 400

Give it the ``--out`` and budget of ``benchmarks/search_quality.py`` to reuse that
benchmark's searches and trained cells (the ground truth is cached in ``cells.json``).

The last line of output is one JSON object: ``kendall_tau_<supernet>_<without|with>`` and
``spearman_<supernet>_<without|with>`` for the supernets ``enas`` and ``uniform_ws`` (means
over the seeds), their ``*_per_seed`` lists and ``*_std``, ``<supernet>_with_minus_without_tau``,
the architectures with their from-scratch results, every supernet score, and the settings.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time

from wpl_keras.experiments import enas
from wpl_keras.experiments import ranking
from wpl_keras.experiments.protocol_options import add_protocol_arguments, experiment_from_arguments
from wpl_keras.utils.strict_json import finite_or_null, write_json_atomic


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add_protocol_arguments(parser)
    parser.add_argument("--num-architectures", type=int, default=20,
                        help="M fixed architectures (8-12 in the literature's protocol)")
    parser.add_argument("--architecture-seed", type=int, default=ranking.ARCHITECTURE_SEED)
    return parser


def main(argv=None) -> dict:
    parser = _parser()
    args = parser.parse_args(argv)
    config, budget = experiment_from_arguments(parser, args)
    out = args.out or tempfile.mkdtemp(prefix="ranking_")
    started = time.time()
    data, config = enas.prepare(config, args.data_dir, verify=args.verify)
    protocol = ranking.RankingConfig(
        experiment=config, seeds=args.seeds, budget=budget,
        num_architectures=args.num_architectures, architecture_seed=args.architecture_seed)
    result = {"benchmark": "ranking",
              **ranking.run_ranking(protocol, data, out, resume=args.resume,
                                    progress=lambda m: print(m, flush=True))}
    result.update(space=args.space, preset=args.preset, data_dir=args.data_dir,
                  budget=budget.to_json(), num_architectures=args.num_architectures,
                  architecture_seed=args.architecture_seed, out=out,
                  truth="from-scratch validation " + ("perplexity" if args.space == "rnn"
                                                      else "error %"),
                  supernet_score="task.validation_error on the fixed validation batch",
                  seconds=round(time.time() - started, 1))
    write_json_atomic(os.path.join(out, "ranking.json"), result)
    print(json.dumps(finite_or_null(result), allow_nan=False))
    return result


if __name__ == "__main__":
    main()
