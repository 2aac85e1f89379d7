"""Figure 4 (paper Appendix A): multi-model forgetting in NAO weight-sharing search, with and
without WPL, at output-dropout rates 0, 0.25, 0.5 and 0.75 (ENAS RNN cell on PTB).

For every rate, two NAO searches from the same seed (identical until WPL turns on), one with
WPL and one without, record per epoch the mean validation perplexity (err1) of the trained
pool architectures and the best-5 ``err2 − err1``. The measured number per rate is the mean
best-5 difference over the epochs with WPL on (from ``wpl_start_epoch``); the paper's claim
is that WPL gives the lower one at every rate (``wpl_lower_at_all_rates = 1``).

    python benchmarks/nao_forgetting.py --preset cpu-small --data-dir ../shared/data/ptb

Writes ``figure4.png`` and ``results.json`` under ``--out``; the last line printed is one
JSON object with the numbers and the settings.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="cpu-small", choices=("cpu-small", "tiny", "paper"))
    parser.add_argument("--data-dir", default="../shared/data/ptb",
                        help="PTB folder (train.txt, valid.txt, test.txt)")
    parser.add_argument("--out", default="/tmp/wpl_nao_forgetting")
    parser.add_argument("--rates", default="0,0.25,0.5,0.75",
                        help="comma-separated output-dropout rates")
    parser.add_argument("--epochs", type=int, default=None, help="override search epochs")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    from wpl_keras.nas import nao_search

    rates = [float(r) for r in args.rates.split(",") if r.strip()]
    config = nao_search.nao_preset("rnn", args.preset)
    config = dataclasses.replace(config, base=dataclasses.replace(config.base, seed=args.seed))
    search_over = {"verbose": 0}
    if args.epochs is not None:
        search_over["epochs"] = args.epochs
    config = config.replace(search=search_over)
    start = time.time()
    data, config = nao_search.prepare_nao(config, args.data_dir)
    runs, seconds = {}, {}
    for rate in rates:
        for wpl in (False, True):
            run_cfg = config.replace(output_dropout=rate, search={"wpl": wpl})
            out = os.path.join(args.out, f"dropout_{rate:g}", "wpl" if wpl else "no_wpl")
            if os.path.isdir(out):
                import shutil

                shutil.rmtree(out)
            t0 = time.time()
            result = nao_search.run_nao_experiment(run_cfg, None, out, data=data)
            seconds[f"{rate:g}/{'wpl' if wpl else 'no_wpl'}"] = round(time.time() - t0, 1)
            runs[(rate, wpl)] = result.history
            last = result.history[-1]
            print(f"dropout {rate:g} WPL {wpl}: best5 diffs "
                  f"{[round(r['best5_diff'], 2) for r in result.history]}, mean err1 "
                  f"{[round(r['mean_err1'], 1) for r in result.history]}, "
                  f"{seconds[f'{rate:g}/' + ('wpl' if wpl else 'no_wpl')]} s", flush=True)
            del last
    summary = nao_search.forgetting_by_rate(runs, config.search.wpl_start_epoch)
    os.makedirs(args.out, exist_ok=True)
    png = nao_search.plot_figure4(runs, os.path.join(args.out, "figure4.png"))
    with open(os.path.join(args.out, "results.json"), "w") as f:
        json.dump({f"{r:g}/{w}": h for (r, w), h in runs.items()}, f)
    task = config.base.task
    line = {
        "benchmark": "nao_forgetting (Figure 4)",
        "data": f"PTB ({args.data_dir}), fixed validation batch = first "
                f"{task.eval_bptt}-step window of valid split, {task.eval_batch_size} rows",
        "preset": args.preset,
        "best5_diff_by_rate": {k: {"without_wpl": round(v["best5_without"], 3),
                                   "with_wpl": round(v["best5_with"], 3),
                                   "reduction": round(v["best5_reduction"], 3)}
                               for k, v in summary["rates"].items()},
        "mean_valid_ppl_by_rate": {k: {"without_wpl": round(v["mean_ppl_without"], 1),
                                       "with_wpl": round(v["mean_ppl_with"], 1)}
                                   for k, v in summary["rates"].items()},
        "wpl_lower_at_all_rates": summary["wpl_lower_at_all_rates"],
        "best5_averaged_over_epochs": f">= {config.search.wpl_start_epoch}",
        "settings": {
            "search": {k: v for k, v in config.search.to_json().items()
                       if k not in ("verbose", "max_to_keep", "checkpoint_every", "wpl")},
            "nao": config.nao.to_json(),
            "task": {k: getattr(task, k) for k in ("num_nodes", "hidden_size", "batch_size",
                                                   "bptt", "learning_rate", "wpl_clip_norm")},
            "seed": config.base.seed,
            "path_dropping": "not run: the RNN supernet has no path-dropping option",
        },
        "seconds": round(time.time() - start, 1),
        "seconds_per_run": seconds,
        "figure": png,
    }
    print(json.dumps(line))
    return 0


if __name__ == "__main__":
    sys.exit(main())
