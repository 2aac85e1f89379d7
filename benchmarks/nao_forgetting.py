"""Figure 4 (paper Appendix A): multi-model forgetting in NAO weight-sharing search, with and
without WPL, at output-dropout rates 0, 0.25, 0.5 and 0.75 (ENAS RNN cell on PTB).

For every rate, two NAO searches from the same seed, one with WPL and one without, record per
epoch the mean validation perplexity (err1) of the trained pool architectures and the best-5
``err2 − err1``. The epochs before ``wpl_start_epoch`` are plain NAO in both, so they run once
per rate (``dropout_<rate>/warmup``) and both searches continue from that checkpoint
(``--no-fork`` runs them twice). One difference from an unforked search: the warm-up's last
controller phase is its final one, which scores and trains but adds no new architectures, so
the forked pool grows once less (identically in both searches). The measured number per rate
is the mean best-5 difference over the epochs ``E`` with WPL on; with ``--seeds 0,1,2`` the
per-epoch differences are first averaged over the seeds. The paper's claim is that WPL gives the lower one at every rate
(``wpl_lower_at_all_rates = 1``; ``wpl_lower_at_all_rates_per_seed`` says it for each seed).
Per rate, ``reduction = 1 − Σ_E best5_with / Σ_E best5_without`` is the paper's ratio of
forgetting amounts (null when the sum without WPL is ``<= 0``), with each seed's own
``reduction_per_seed``, their ``reduction_seed_mean`` and ``reduction_std`` (population std),
and ``reduction_per_epoch``, the mean of per-epoch ratios (dominated by epochs with a tiny
positive difference without WPL; not the headline).

The paper's other remedy, random path dropping, runs with ``--path-keep 0.9`` (a comma list of
keep probabilities): per rate and keep, one more NAO search without WPL whose RNN supernet
drops each node's input with probability ``1 − keep`` in training
(``RNNModelConfig.path_keep``), from the first epoch (it does not fork from the warm-up,
which has no path dropping). ``path_dropping`` in the JSON gives, per keep and rate, its
mean best-5 ``err2 − err1`` over the same epochs ``E``, its pooled reduction against plain
NAO, and whether WPL forgets less than it (``wpl_lower_than_path_dropping_at_all_rates``).

    python benchmarks/nao_forgetting.py --preset cpu-small --data-dir ../shared/data/ptb
    python benchmarks/nao_forgetting.py --preset tiny --path-keep 0.9 --data-dir ...

Writes ``figure4.png`` and ``results.json`` under ``--out``; the last line printed is one
JSON object with the numbers and the settings.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def run_rate(config, rate: float, out: str, data, *, fork: bool):
    """The searches without and with WPL at output dropout ``rate`` into ``out``; with
    ``fork`` the epochs before WPL turns on run once (``out/warmup``) and both continue from
    there. Returns ``({False: history, True: history}, seconds)``."""
    from wpl_keras.experiments import nao as nao_experiment

    runs, seconds = {}, {}
    start_epoch = config.search.wpl_start_epoch
    if os.path.isdir(out):
        shutil.rmtree(out)
    if fork:
        t0 = time.time()
        warm = os.path.join(out, "warmup")
        nao_experiment.run_nao_experiment(
            config.replace(output_dropout=rate, search={"wpl": False, "epochs": start_epoch}),
            None, warm, data=data)
        seconds["warmup"] = round(time.time() - t0, 1)
        for name in ("no_wpl", "wpl"):
            shutil.copytree(warm, os.path.join(out, name))
    for wpl in (False, True):
        name = "wpl" if wpl else "no_wpl"
        t0 = time.time()
        result = nao_experiment.run_nao_experiment(
            config.replace(output_dropout=rate, search={"wpl": wpl}), None,
            os.path.join(out, name), data=data, resume=fork)
        seconds[name] = round(time.time() - t0, 1)
        runs[wpl] = result.history
        print(f"dropout {rate:g} WPL {wpl} (seed {config.base.seed}): best5 diffs "
              f"{[round(r['best5_diff'], 2) for r in result.history]}, mean err1 "
              f"{[round(r['mean_err1'], 1) for r in result.history]}, {seconds[name]} s",
              flush=True)
    return runs, seconds


def run_path_arm(config, rate: float, keep: float, out: str, data):
    """The search without WPL at output dropout ``rate`` whose RNN supernet drops paths with
    keep probability ``keep`` (``RNNModelConfig.path_keep``) in every epoch, into ``out``.
    Returns ``(history, seconds)``."""
    from wpl_keras.experiments import nao as nao_experiment
    from wpl_keras.utils.config_fields import replace_fields

    if os.path.isdir(out):
        shutil.rmtree(out)
    base = replace_fields(config.base, {"task.model.path_keep": float(keep)})
    t0 = time.time()
    result = nao_experiment.run_nao_experiment(
        config.replace(base=base, output_dropout=rate, search={"wpl": False}), None, out,
        data=data)
    seconds = round(time.time() - t0, 1)
    print(f"dropout {rate:g} path keep {keep:g} (seed {config.base.seed}): best5 diffs "
          f"{[round(r['best5_diff'], 2) for r in result.history]}, {seconds} s", flush=True)
    return result.history, seconds


def _parser() -> argparse.ArgumentParser:
    """The command line of :func:`main`."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="cpu-small", choices=("cpu-small", "tiny", "paper"))
    parser.add_argument("--data-dir", default="../shared/data/ptb",
                        help="PTB folder (train.txt, valid.txt, test.txt)")
    parser.add_argument("--out", default="/tmp/wpl_nao_forgetting")
    parser.add_argument("--rates", default="0,0.25,0.5,0.75",
                        help="comma-separated output-dropout rates")
    parser.add_argument("--epochs", type=int, default=None, help="override search epochs")
    parser.add_argument("--wpl-start-epoch", type=int, default=None,
                        help="override the first epoch with WPL")
    parser.add_argument("--strength", "--alpha", dest="strength", type=float, default=None,
                        help="override WPL strength α (--alpha is an alias)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--seeds", default=None,
                        help="comma-separated seeds (overrides --seed); per-epoch differences "
                             "are averaged over them before the per-rate means")
    parser.add_argument("--no-fork", action="store_true",
                        help="run the epochs before WPL turns on twice per rate instead of once")
    parser.add_argument("--path-keep", default="",
                        help="comma-separated path-dropping keep probabilities in (0, 1): per "
                             "rate and keep, one more search without WPL with random path "
                             "dropping (reported under path_dropping)")
    return parser


def _path_figures(path_by_seed, runs, seeds, rates, keeps, out: str) -> list:
    """One Figure-4 PNG per rate with the path-dropping arms (seed-averaged) drawn beside NAO
    with and without WPL; none without path arms."""
    from wpl_keras.experiments.forgetting_summary import HISTORY_KEYS
    from wpl_keras.nas.analysis import metrics

    pngs = []
    for rate in rates if keeps else []:
        extra = {f"NAO + path dropping (keep {k:g})": metrics.average_histories(
            [path_by_seed[(s, rate, k)] for s in seeds],
            keys=HISTORY_KEYS) for k in keeps}
        pngs.append(metrics.plot_figure4(
            {(rate, w): runs[(rate, w)] for w in (False, True)},
            os.path.join(out, f"figure4_path_dropping_{rate:g}.png"), extra=extra))
    return pngs


def run_arms(config, seeds: list, rates: list, keeps: list, out: str, data, *, fork: bool):
    """Every search: per seed and rate, without and with WPL (:func:`run_rate`) and one per
    path-dropping keep (:func:`run_path_arm`). Returns ``(by_seed, path_by_seed, seconds)``
    keyed ``(seed, rate, wpl)`` and ``(seed, rate, keep)``."""
    by_seed, path_by_seed, seconds = {}, {}, {}
    for seed in seeds:
        seed_config = dataclasses.replace(
            config, base=dataclasses.replace(config.base, seed=seed))
        root = out if len(seeds) == 1 else os.path.join(out, f"seed{seed}")
        for rate in rates:
            rate_runs, rate_seconds = run_rate(
                seed_config, rate, os.path.join(root, f"dropout_{rate:g}"), data, fork=fork)
            for wpl, history in rate_runs.items():
                by_seed[(seed, rate, wpl)] = history
            for name, sec in rate_seconds.items():
                seconds[f"seed{seed}/{rate:g}/{name}"] = sec
            for keep in keeps:
                history, sec = run_path_arm(
                    seed_config, rate, keep,
                    os.path.join(root, f"dropout_{rate:g}", f"path_keep_{keep:g}"), data)
                path_by_seed[(seed, rate, keep)] = history
                seconds[f"seed{seed}/{rate:g}/path_keep_{keep:g}"] = sec
    return by_seed, path_by_seed, seconds


def main(argv=None) -> int:
    args = _parser().parse_args(argv)

    from wpl_keras.experiments import nao as nao_experiment
    from wpl_keras.experiments.forgetting_summary import path_dropping_fields, summary_fields
    from wpl_keras.nas.analysis import metrics

    rates = [float(r) for r in args.rates.split(",") if r.strip()]
    keeps = [float(k) for k in args.path_keep.split(",") if k.strip()]
    for keep in keeps:
        if not 0.0 < keep < 1.0:
            raise SystemExit(f"--path-keep {keep:g} must be in (0, 1) (1 is no path dropping).")
    seeds = ([int(s) for s in args.seeds.split(",") if s.strip()] if args.seeds
             else [args.seed])
    config = nao_experiment.nao_preset("rnn", args.preset)
    search_over = {"verbose": 0}
    for key, value in (("epochs", args.epochs), ("wpl_start_epoch", args.wpl_start_epoch),
                       ("strength", args.strength)):
        if value is not None:
            search_over[key] = value
    config = config.replace(search=search_over)
    start = time.time()
    data, config = nao_experiment.prepare_nao(config, args.data_dir)
    start_epoch = config.search.wpl_start_epoch
    fork = not args.no_fork and 0 < start_epoch < config.search.epochs
    by_seed, path_by_seed, seconds = run_arms(config, seeds, rates, keeps, args.out, data,
                                              fork=fork)
    runs, fields = summary_fields(by_seed, seeds, rates, start_epoch)
    if keeps:
        fields["path_dropping"] = path_dropping_fields(path_by_seed, runs, seeds, rates, keeps,
                                                       start_epoch)
    os.makedirs(args.out, exist_ok=True)
    png = metrics.plot_figure4(runs, os.path.join(args.out, "figure4.png"))
    path_pngs = _path_figures(path_by_seed, runs, seeds, rates, keeps, args.out)
    with open(os.path.join(args.out, "results.json"), "w") as f:
        json.dump({**{f"{s}/{r:g}/{w}": h for (s, r, w), h in by_seed.items()},
                   **{f"{s}/{r:g}/path_keep_{k:g}": h
                      for (s, r, k), h in path_by_seed.items()}}, f)
    task = config.base.task
    line = {
        "benchmark": "nao_forgetting (Figure 4)",
        "data": f"PTB ({args.data_dir}), fixed validation batch = first "
                f"{task.eval_bptt}-step window of valid split, {task.eval_batch_size} rows",
        "preset": args.preset,
        "seeds": seeds,
        "figures_over": ("one seed" if len(seeds) == 1 else
                         f"per-epoch differences averaged over {len(seeds)} seeds"),
        "shared_warmup": fork,
        **fields,
        "settings": {
            "search": {k: v for k, v in config.search.to_json().items()
                       if k not in ("verbose", "max_to_keep", "checkpoint_every", "wpl")},
            "nao": config.nao.to_json(),
            "task": {"num_nodes": task.model.num_nodes, "hidden_size": task.model.hidden_size,
                     "batch_size": task.batch_size, "bptt": task.bptt,
                     "learning_rate": task.optimizer.learning_rate,
                     "wpl_scope": task.wpl_scope, "wpl": task.wpl.to_json()},
            "path_keep": keeps,
        },
        "seconds": round(time.time() - start, 1),
        "seconds_per_run": seconds,
        "figure": png,
        "path_dropping_figures": path_pngs,
    }
    print(json.dumps(line))
    return 0


if __name__ == "__main__":
    sys.exit(main())
