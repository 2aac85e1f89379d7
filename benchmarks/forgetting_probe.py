"""Where ENAS-RNN forgetting comes from, and how strong WPL must be: two probes from a search
checkpoint (e.g. the ``warmup/`` folder that ``benchmarks/enas_forgetting.py`` leaves).

Both restore the supernet, its optimizer and the controller from ``--from`` (its WPL state is
not restored: the probes start with ``F = 0``), sample ``--archs`` architectures per epoch from
the controller (the same ones for every setting) and train each for the preset's
``batches_per_arch`` batches, for ``--epochs`` epochs starting at the checkpoint's epoch.
``err1``/``err2`` are the fixed-validation-batch perplexities right after an architecture's
training and at the end of its epoch, as in the search.

* ``attribution`` (no WPL): at each epoch end, for every architecture, also the error with the
  weights all architectures share (embedding = tied decoder, ``w_x``, ``w_h``, decoder bias)
  put back to their values right after its training (``dense_restored``: what is left is
  forgetting through its node-matrix rows), and with its node-matrix rows put back
  (``nodes_restored``: what is left came through the shared dense weights).
* ``strength-scan``: the same epochs with WPL at each WPL strength α of ``--strengths``
  (``0`` = without), ``--scope`` ``cell`` or ``all`` and ``--mode`` ``proximal`` or
  ``gradient``; per epoch mean / best-5 / max of ``err2 − err1``, the mean err1 and the mean
  penalty; each result is keyed by ``strength``. ``alpha-scan`` and ``--alphas`` (the names
  before α was called ``strength`` everywhere) are accepted as aliases of ``strength-scan``
  and ``--strengths``.

    python benchmarks/forgetting_probe.py attribution --from OUT/warmup \\
        --data-dir ../shared/data/ptb
    python benchmarks/forgetting_probe.py strength-scan --from OUT/warmup \\
        --data-dir ../shared/data/ptb --strengths 0,1e5,1e6 --scope all

The last line printed is one JSON object. Single runs of a few epochs: differences of a few
perplexity points are within the epoch-to-epoch noise.
"""

from __future__ import annotations

import argparse
import json
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import numpy as np  # noqa: E402


def _load(args, scope=None, mode=None):
    """The search of ``--preset`` restored from ``--from``; ``scope`` / ``mode`` (strength-scan)
    set the task's ``wpl_scope`` and ``wpl.mode``."""
    import dataclasses

    import tensorflow as tf

    from wpl_keras.experiments import enas
    from wpl_keras.nas.search import enas as search

    config = enas.get_preset("rnn", args.preset)
    if scope is not None:
        wpl = dataclasses.replace(config.task.wpl, mode=mode)
        config = config.replace(task={"wpl_scope": scope, "wpl": wpl})
    data, config = enas.prepare(config, args.data_dir)
    task, controller, reinforce = enas.build_search(config, data)
    loop = search.LoopState()
    items = search._checkpoint_items(task, controller, reinforce, loop)
    items.pop("task_wpl_state")  # its layout depends on wpl_scope; start from F = 0
    latest = tf.train.latest_checkpoint(os.path.join(args.from_dir, "ckpt"))
    if latest is None:
        raise SystemExit(f"no search checkpoint under {args.from_dir}/ckpt")
    tf.train.Checkpoint(**items).restore(latest).expect_partial()
    return config, task, controller, int(loop.epoch.numpy()), latest


def _summary(err1, err2, best_k=5):
    from wpl_keras.nas.analysis import metrics

    s = metrics.forgetting_summary(err1, err2, best_k=best_k)
    return {k: round(s[k], 3) for k in ("mean_diff", "best5_diff", "max_diff", "mean_err1")}


def attribution(args) -> dict:
    config, task, controller, epoch, ckpt = _load(args)
    net = task.supernet
    dense = [net.embedding, net.w_x, net.w_h, net.decoder_bias]
    per_epoch = []
    for e in range(epoch, epoch + args.epochs):
        task.start_epoch(e)
        archs, err1, snaps = [], [], []
        for _ in range(args.archs):
            arch = controller.sample_architecture()
            task.train_architecture(arch, config.search.batches_per_arch, wpl_active=False)
            archs.append(arch)
            err1.append(task.validation_error(arch))
            snaps.append(([v.numpy() for v in dense], net.w_nodes.numpy()))
        now_dense, now_nodes = [v.numpy() for v in dense], net.w_nodes.numpy()
        err2, dense_back, nodes_back = [], [], []
        for arch, (d, n) in zip(archs, snaps):
            err2.append(task.validation_error(arch))
            for v, x in zip(dense, d):
                v.assign(x)
            dense_back.append(task.validation_error(arch))
            for v, x in zip(dense, now_dense):
                v.assign(x)
            rows = net.wpl_rows(arch).numpy()
            w = now_nodes.copy()
            w[rows] = n[rows]
            net.w_nodes.assign(w)
            nodes_back.append(task.validation_error(arch))
            net.w_nodes.assign(now_nodes)
        e1 = np.array(err1)
        record = {"epoch": e, **_summary(err1, err2),
                  "mean_dense_restored_minus_err1": round(float(np.mean(dense_back - e1)), 3),
                  "mean_nodes_restored_minus_err1": round(float(np.mean(nodes_back - e1)), 3)}
        per_epoch.append(record)
        print(json.dumps(record), flush=True)
    return {"probe": "attribution", "from": ckpt, "per_epoch": per_epoch,
            "mean_diff": float(np.mean([r["mean_diff"] for r in per_epoch])),
            "mean_left_with_dense_restored": float(np.mean(
                [r["mean_dense_restored_minus_err1"] for r in per_epoch])),
            "mean_left_with_nodes_restored": float(np.mean(
                [r["mean_nodes_restored_minus_err1"] for r in per_epoch]))}


def strength_scan(args) -> dict:
    strengths = [float(a) for a in args.strengths.split(",") if a.strip()]
    config, task, controller, epoch, ckpt = _load(args, scope=args.scope, mode=args.mode)
    net, state = task.supernet, task.wpl_state
    start = [v.numpy() for v in net.weights]
    opt_start = [v.numpy() for v in task.optimizer.variables]
    position = task.train_position.numpy()
    archs = [[controller.sample_architecture() for _ in range(args.archs)]
             for _ in range(args.epochs)]
    results = []
    for strength in strengths:
        for v, x in zip(net.weights, start):
            v.assign(x)
        for v, x in zip(task.optimizer.variables, opt_start):
            v.assign(x)
        task.train_position.assign(position)
        state.reset_fisher()
        state.strength.assign(strength)
        per_epoch = []
        t = time.time()
        for k, epoch_archs in enumerate(archs):
            task.start_epoch(epoch + k)
            err1, penalties = [], []
            for arch in epoch_archs:
                out = task.train_architecture(arch, config.search.batches_per_arch,
                                              wpl_active=strength > 0)
                penalties.append(out["penalty"])
                err1.append(task.validation_error(arch))
            err2 = [task.validation_error(a) for a in epoch_archs]
            per_epoch.append({"epoch": epoch + k, **_summary(err1, err2),
                              "mean_penalty": round(float(np.mean(penalties)), 5),
                              "max_fisher": float(state.max_fisher().numpy())})
        record = {"strength": strength, "per_epoch": per_epoch,
                  "mean_diff": round(float(np.mean([r["mean_diff"] for r in per_epoch])), 3),
                  "best5_diff": round(float(np.mean([r["best5_diff"] for r in per_epoch])), 3),
                  "max_diff": round(float(np.mean([r["max_diff"] for r in per_epoch])), 3),
                  "mean_err1": round(float(np.mean([r["mean_err1"] for r in per_epoch])), 2),
                  "seconds": round(time.time() - t, 1)}
        results.append(record)
        print(json.dumps(record), flush=True)
    return {"probe": "strength-scan", "from": ckpt, "scope": args.scope, "mode": args.mode,
            "results": results}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("probe", choices=("attribution", "strength-scan", "alpha-scan"),
                        help="alpha-scan: alias of strength-scan")
    parser.add_argument("--from", dest="from_dir", required=True,
                        help="a search output folder with ckpt/ (e.g. OUT/warmup)")
    parser.add_argument("--data-dir", default="../shared/data/ptb", help="PTB folder")
    parser.add_argument("--preset", default="cpu-small",
                        help="the preset the checkpoint was trained with")
    parser.add_argument("--epochs", type=int, default=2, help="epochs to probe")
    parser.add_argument("--archs", type=int, default=10, help="architectures per epoch")
    parser.add_argument("--strengths", "--alphas", dest="strengths", default="0,1e5,1e6",
                        help="strength-scan: comma-separated WPL strengths α (0 = without "
                             "WPL); --alphas is an alias")
    parser.add_argument("--scope", default="all", choices=("cell", "all"),
                        help="strength-scan: RNNSupernetConfig.wpl_scope")
    parser.add_argument("--mode", default="proximal", choices=("proximal", "gradient"),
                        help="strength-scan: RNNSupernetConfig.wpl.mode")
    args = parser.parse_args(argv)
    start = time.time()
    result = attribution(args) if args.probe == "attribution" else strength_scan(args)
    result.update({"benchmark": "forgetting_probe", "preset": args.preset,
                   "data_dir": args.data_dir, "epochs": args.epochs, "archs": args.archs,
                   "seconds": round(time.time() - start, 1)})
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
