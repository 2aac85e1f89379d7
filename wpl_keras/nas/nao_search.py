"""Weight-sharing NAO search with the Weight Plasticity Loss (paper Appendix A, Figure 4).

NAO with weight sharing (Luo et al. 2018) keeps a *pool* of architectures. The search starts
with ``seed_archs`` random architectures of the space and runs epochs; each epoch ``e``:

1. **Shared phase**: ``shared_steps_per_epoch`` times, draw an architecture ``a`` uniformly
   from the pool, train its shared weights on the next ``batches_per_arch`` batches
   (``task.train_architecture(a, B, wpl_active=...)``), then record
   ``err1(a) = task.validation_error(a)`` on the task's fixed validation batch.
2. **Epoch end**: ``err2(a)`` for every architecture of step 1 and the forgetting metrics of
   :mod:`wpl_keras.nas.metrics` (mean / best-5 / max of ``err2 − err1``).
3. **Controller phase** (every ``controller_every`` epochs, NAO's iteration): score every pool
   architecture on the fixed validation batch, train the NAO controller
   (:class:`~wpl_keras.nas.nao.NAOController`) on ``(a, y)`` with min-max normalised scores
   ``y``, take the ``top_k_seeds`` best pool architectures as seeds, move their embeddings by
   gradient ascent on the predicted score (``z' = z + η ∇f(z)``, ``η`` growing until enough are
   new) and add up to ``new_archs`` decoded, new architectures to the pool. A pool over
   ``max_pool`` keeps its best scored architectures plus all new ones.

WPL runs exactly as in the ENAS loop (:mod:`wpl_keras.nas.search`, whose schedule functions
this module uses): off for the first ``wpl_start_epoch`` epochs, then ``α(e)`` from the
schedule is written into ``task.wpl_state.strength`` at the start of each epoch, the Fisher is
flushed every ``flush_every`` epochs, and ``wpl_active`` is passed to the task, which adds
``(α/2) Σ F (θ − θ*)²`` over the trained architecture's weights, updates
``F ← (1 − η)F + η g²`` from the last gradient and sets ``θ* ← θ``.

Output dropout and random path dropping (Bender et al. 2018) are properties of the task's
supernet; :func:`with_regularization` sets them on a task config (``output_dropout`` of the
RNN task, ``dropout`` / ``drop_path_keep`` of the CNN supernet) before the task is built.

State and resumption: a ``tf.train.CheckpointManager`` under ``out_dir/ckpt`` holds the task's
:meth:`~wpl_keras.nas.base.SharedWeightsTask.checkpoint_items`, the NAO controller's weights,
Adam state and shuffling stream, the pool and its scores, the pool-sampling generator, the loop
counters and partial epoch, the history and the global RNG states. It saves after every epoch,
every ``checkpoint_every`` units of work, and on SIGINT/SIGTERM (deferred to the end of the
current unit), so a resumed run equals an uninterrupted one.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import tensorflow as tf

from wpl_keras.utils.config import JsonConfig
from wpl_keras.nas import metrics as forgetting
from wpl_keras.nas import search as enas_search
from wpl_keras.nas.nao import NAOConfig, NAOController, normalize_scores
from wpl_keras.nas.search import SearchInterrupted, SearchResult

Architecture = Tuple[int, ...]

# Phases of an epoch, as stored in the checkpoint.
SHARED, EPOCH_END, CONTROLLER = 0, 1, 2


@dataclasses.dataclass(frozen=True)
class NAOSearchConfig(JsonConfig):
    """Settings of the NAO weight-sharing search and its WPL schedule.

    Args:
        epochs: search epochs.
        shared_steps_per_epoch: pool architectures trained per epoch.
        batches_per_arch: training batches per architecture (``B``).
        seed_archs: random architectures in the initial pool (NAO release, weight sharing:
            1000; a CPU run uses tens).
        controller_every: a controller phase (score pool, train NAO, grow pool) after every
            this many epochs.
        new_archs: new architectures added per controller phase (at most).
        top_k_seeds: best pool architectures used as gradient-ascent seeds (NAO: 100).
        max_pool: pool size cap (best scored + new architectures are kept).
        controller_epochs: NAO training epochs per controller phase (``None``: the
            controller's own ``NAOConfig.epochs``).
        wpl, wpl_start_epoch, strength, strength_decay, strength_decay_start,
        strength_decay_rate, strength_floor, flush_every: the WPL schedule, as in
            :class:`wpl_keras.nas.search.SearchConfig`.
        best_k: architectures averaged by the "best-5" metric.
        checkpoint_every: also checkpoint every this many units (architectures trained or
            controller phases); 0 only at epoch ends and on signals.
        max_to_keep: checkpoints kept.
        verbose: 1 prints one line per epoch, 0 is silent.
    """

    epochs: int = 8
    shared_steps_per_epoch: int = 12
    batches_per_arch: int = 4
    seed_archs: int = 20
    controller_every: int = 2
    new_archs: int = 10
    top_k_seeds: int = 10
    max_pool: int = 100
    controller_epochs: Optional[int] = None
    wpl: bool = True
    wpl_start_epoch: int = 2
    strength: float = 60.0
    strength_decay: Optional[str] = None
    strength_decay_start: int = 15
    strength_decay_rate: float = 1.0
    strength_floor: float = 0.0
    flush_every: int = 2
    best_k: int = 5
    checkpoint_every: int = 0
    max_to_keep: int = 2
    verbose: int = 1

    def __post_init__(self):
        for name in ("epochs", "shared_steps_per_epoch", "batches_per_arch", "seed_archs",
                     "controller_every", "top_k_seeds", "max_pool", "best_k", "max_to_keep"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"NAOSearchConfig.{name} must be >= 1, got {getattr(self, name)}.")
        if self.new_archs < 0:
            raise ValueError(f"NAOSearchConfig.new_archs must be >= 0, got {self.new_archs}.")
        if self.controller_epochs is not None and self.controller_epochs < 1:
            raise ValueError("NAOSearchConfig.controller_epochs must be >= 1 or None.")
        if self.max_pool < self.seed_archs:
            raise ValueError(
                f"NAOSearchConfig.max_pool ({self.max_pool}) must be >= seed_archs "
                f"({self.seed_archs})."
            )
        self.schedule()  # validates the WPL schedule fields

    def schedule(self) -> enas_search.SearchConfig:
        """The WPL schedule as a :class:`~wpl_keras.nas.search.SearchConfig` (for
        :func:`~wpl_keras.nas.search.wpl_active_at`, ``strength_at`` and ``flush_at``)."""
        return enas_search.SearchConfig(
            epochs=self.epochs, wpl=self.wpl, wpl_start_epoch=self.wpl_start_epoch,
            strength=self.strength, strength_decay=self.strength_decay,
            strength_decay_start=self.strength_decay_start,
            strength_decay_rate=self.strength_decay_rate, strength_floor=self.strength_floor,
            flush_every=self.flush_every, best_k=self.best_k, verbose=0,
        )

    @classmethod
    def cpu_small(cls, **overrides) -> "NAOSearchConfig":
        """Minutes on 2 CPU cores: 6 epochs of 10 pool architectures × 3 batches, a pool of
        16 random seeds growing by 6 every 2 epochs; WPL from epoch 2, α 60, flush every 2."""
        base = cls(
            epochs=6, shared_steps_per_epoch=10, batches_per_arch=3, seed_archs=16,
            controller_every=2, new_archs=6, top_k_seeds=6, max_pool=40, wpl_start_epoch=2,
        )
        return dataclasses.replace(base, **overrides)



# ---------------------------------------------------------------------------------------------
# Pure helpers.


def with_regularization(
    task_config, *, output_dropout: Optional[float] = None, path_keep: Optional[float] = None
):
    """``task_config`` with its output-dropout rate and path-drop keep probability replaced.

    The field names of the spaces' configs are looked up, not branched on the space: output
    dropout is ``output_dropout`` (RNN) or ``dropout`` (CNN); path dropping is
    ``drop_path_keep`` (CNN supernet). ``None`` leaves a setting unchanged.

    Raises:
        ValueError: when the config has no field for a requested setting.
    """
    names = {f.name for f in dataclasses.fields(task_config)}
    changes: Dict[str, float] = {}
    if output_dropout is not None:
        field = next((n for n in ("output_dropout", "dropout") if n in names), None)
        if field is None:
            raise ValueError(f"{type(task_config).__name__} has no output-dropout field.")
        changes[field] = float(output_dropout)
    if path_keep is not None:
        if "drop_path_keep" not in names:
            raise ValueError(
                f"{type(task_config).__name__} has no path-dropping field (drop_path_keep); "
                "random path dropping is not available for this space's supernet."
            )
        changes["drop_path_keep"] = float(path_keep)
    return dataclasses.replace(task_config, **changes) if changes else task_config


def grow_pool(
    pool: Sequence[Architecture],
    scores: Sequence[float],
    new: Sequence[Architecture],
    max_pool: int,
) -> List[Architecture]:
    """``pool + new`` (duplicates dropped), cut to ``max_pool`` by keeping every new
    architecture and the highest-scored old ones (old order kept)."""
    pool = [tuple(a) for a in pool]
    fresh = [tuple(a) for a in dict.fromkeys(tuple(a) for a in new) if tuple(a) not in set(pool)]
    room = max(0, max_pool - len(fresh))
    if len(pool) > room:
        keep = set(np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable")[:room].tolist())
        pool = [a for i, a in enumerate(pool) if i in keep]
    return (pool + fresh)[: max(max_pool, len(fresh))]


def epochs_after_start(history: Sequence[Dict[str, Any]], start: int) -> List[Dict[str, Any]]:
    """The records of ``history`` with ``epoch >= start`` (all of them if none qualify)."""
    kept = [r for r in history if int(r["epoch"]) >= start]
    return kept or list(history)


def forgetting_by_rate(
    runs: Dict[Tuple[float, bool], Sequence[Dict[str, Any]]], wpl_start_epoch: int
) -> Dict[str, Any]:
    """Figure-4 numbers from NAO runs keyed by ``(output_dropout, wpl)``.

    For each rate: ``best5_without`` / ``best5_with`` are the mean best-5 ``err2 − err1`` over
    the epochs from ``wpl_start_epoch`` on (before it both runs are plain NAO), likewise
    ``mean_ppl_*`` the mean ``err1`` (validation perplexity) over all epochs, and
    ``wpl_lower`` whether WPL's best-5 difference is lower. ``wpl_lower_at_all_rates`` is 1
    when it is at every rate.
    """
    rates = sorted({rate for rate, _ in runs})
    per_rate: Dict[str, Dict[str, float]] = {}
    lower = []
    for rate in rates:
        if (rate, False) not in runs or (rate, True) not in runs:
            raise ValueError(f"rate {rate} needs a run with and a run without WPL.")
        row: Dict[str, float] = {}
        for wpl, tag in ((False, "without"), (True, "with")):
            hist = runs[(rate, wpl)]
            after = epochs_after_start(hist, wpl_start_epoch)
            row[f"best5_{tag}"] = float(np.mean([r["best5_diff"] for r in after]))
            row[f"mean_diff_{tag}"] = float(np.mean([r["mean_diff"] for r in after]))
            row[f"mean_ppl_{tag}"] = float(np.mean([r["mean_err1"] for r in hist]))
        row["best5_reduction"] = forgetting.reduction(row["best5_without"], row["best5_with"])
        row["wpl_lower"] = int(row["best5_with"] < row["best5_without"])
        lower.append(row["wpl_lower"])
        per_rate[f"{rate:g}"] = row
    return {"rates": per_rate, "wpl_lower_at_all_rates": int(bool(lower) and all(lower))}


def plot_figure4(
    runs: Dict[Tuple[float, bool], Sequence[Dict[str, Any]]],
    path: str,
    *,
    extra: Optional[Dict[str, Sequence[Dict[str, Any]]]] = None,
    error_name: str = "perplexity",
) -> str:
    """Figure-4-like PNG: per output-dropout rate (columns), mean validation error per epoch
    (top) and best-5 ``err2 − err1`` (bottom), with and without WPL.

    Args:
        runs: ``(rate, wpl) → history``.
        path: PNG to write.
        extra: label → history drawn in every column (e.g. ``"NAO + path dropping"``).
        error_name: the error's name for the y labels.
    """
    from wpl_keras.utils.plotting import new_figure

    rates = sorted({rate for rate, _ in runs})
    if not rates:
        raise ValueError("plot_figure4 needs at least one run.")
    fig, axes = new_figure(2, len(rates), figsize=(3.6 * len(rates), 6.0), squeeze=False)
    for col, rate in enumerate(rates):
        lines = {f"NAO{' + WPL' if wpl else ''}": runs[(rate, wpl)]
                 for wpl in (False, True) if (rate, wpl) in runs}
        lines.update(extra or {})
        for label, hist in lines.items():
            epochs = [int(r["epoch"]) for r in hist]
            axes[0, col].plot(epochs, [r["mean_err1"] for r in hist], marker=".", label=label)
            axes[1, col].plot(epochs, [r["best5_diff"] for r in hist], marker=".", label=label)
        axes[0, col].set_title(f"Dropout = {rate:.2f}")
        axes[0, col].set_ylabel(f"mean validation {error_name}")
        axes[0, col].set_yscale("log")
        axes[1, col].set_ylabel("best-5 err2 − err1")
        axes[1, col].axhline(0.0, color="0.6", lw=0.8)
        for row in (0, 1):
            axes[row, col].set_xlabel("epoch")
            axes[row, col].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    return path


# ---------------------------------------------------------------------------------------------
# Loop state.


class _NAOState(tf.Module):
    """The pool, its scores and the pool-sampling generator's state, as string variables."""

    def __init__(self):
        super().__init__(name="nao_state")
        self.pool = tf.Variable("[]", dtype=tf.string, trainable=False, name="pool")
        self.scores = tf.Variable("[]", dtype=tf.string, trainable=False, name="pool_errors")
        self.rng = tf.Variable("", dtype=tf.string, trainable=False, name="pool_rng")


def make_checkpoint_manager(task, nao: NAOController, directory: str, max_to_keep: int = 2):
    """A ``CheckpointManager`` over the whole NAO search state.

    Returns:
        ``(manager, loop_state, nao_state)``.
    """
    loop = enas_search.LoopState()
    state = _NAOState()
    items: Dict[str, Any] = {"loop": loop, "nao_state": state}
    items.update({f"nao_{k}": v for k, v in nao.checkpoint_items().items()})
    items.update({f"task_{k}": v for k, v in task.checkpoint_items().items()})
    ckpt = tf.train.Checkpoint(**items)
    return tf.train.CheckpointManager(ckpt, directory, max_to_keep=max_to_keep), loop, state


def _load_json(var: tf.Variable, default):
    text = var.numpy().decode()
    return json.loads(text) if text else default


@dataclasses.dataclass
class NAOSearchResult(SearchResult):
    """:class:`~wpl_keras.nas.search.SearchResult` plus the final pool and its errors."""

    pool: List[Architecture] = dataclasses.field(default_factory=list)
    pool_errors: List[float] = dataclasses.field(default_factory=list)

    def best_architecture(self) -> Tuple[Architecture, float]:
        """The pool architecture with the lowest last-scored validation error."""
        errors = np.asarray(self.pool_errors, dtype=np.float64)
        if errors.size == 0 or not np.isfinite(errors).any():
            raise ValueError("the pool was never scored (no controller phase ran).")
        k = int(np.nanargmin(errors))
        return self.pool[k], float(self.pool_errors[k])


def run_nao_search(
    task,
    nao: NAOController,
    config: NAOSearchConfig,
    out_dir: str,
    *,
    seed: int = 0,
    resume: bool = False,
    handle_signals: bool = True,
    on_epoch_end: Optional[Callable[[Dict[str, Any]], None]] = None,
) -> NAOSearchResult:
    """Runs (or resumes) a NAO weight-sharing search with WPL; see the module docstring.

    Args:
        task: a :class:`~wpl_keras.nas.base.SharedWeightsTask` (with ``wpl_state`` when
            ``config.wpl``).
        nao: a :class:`~wpl_keras.nas.nao.NAOController` over ``task.space.decision_sizes``.
        config: the :class:`NAOSearchConfig`.
        out_dir: logs (``history.json``/``.csv``, ``pool.json``) and checkpoints (``ckpt/``).
        seed: seeds the initial pool and the pool-sampling generator.
        resume: continue from the latest checkpoint in ``out_dir`` (else one there is an error).
        handle_signals: defer SIGINT/SIGTERM to the end of the current unit and save.
        on_epoch_end: called with each finished epoch's record.

    Raises:
        FileExistsError: a checkpoint exists and ``resume`` is False.
        SearchInterrupted: after saving, when SIGINT/SIGTERM arrived.
        ValueError: mismatched controller/space, or WPL asked of a task without WPL state.
    """
    if not isinstance(config, NAOSearchConfig):
        raise TypeError(f"config must be a NAOSearchConfig, got {type(config).__name__}.")
    space = task.space
    if tuple(nao.decision_sizes) != tuple(space.decision_sizes):
        raise ValueError(
            f"the NAO controller has decision sizes {nao.decision_sizes}, the space "
            f"{tuple(space.decision_sizes)}."
        )
    if config.wpl and getattr(task, "wpl_state", None) is None:
        raise ValueError("config.wpl is True but the task has no wpl_state.")
    schedule = config.schedule()
    os.makedirs(out_dir, exist_ok=True)
    ckpt_dir = os.path.join(out_dir, "ckpt")
    manager, loop, state = make_checkpoint_manager(task, nao, ckpt_dir, config.max_to_keep)
    if manager.latest_checkpoint is not None:
        if not resume:
            raise FileExistsError(
                f"{out_dir} already holds a NAO search checkpoint; pass resume=True to continue "
                "it or choose another output directory."
            )
        manager.checkpoint.restore(manager.latest_checkpoint).assert_existing_objects_matched()
        loop.restore_rngs()
        if config.wpl:
            task.wpl_state.strength.assign(float(loop.alpha.numpy()))
        rng = np.random.default_rng()
        rng.bit_generator.state = json.loads(state.rng.numpy().decode())
    else:
        rng = np.random.default_rng(seed)
        pool: List[Architecture] = []
        while len(pool) < config.seed_archs:  # distinct random seeds (as NAO)
            arch = space.sample(rng)
            if arch not in pool:
                pool.append(arch)
        state.pool.assign(json.dumps([list(a) for a in pool]))
    with open(os.path.join(out_dir, "search_config.json"), "w") as f:
        json.dump({"nao_search": config.to_json(), "nao": nao.get_config()}, f, indent=1)
    with open(os.path.join(out_dir, "task_config.json"), "w") as f:
        json.dump(task.config(), f, indent=1, default=str)

    history: List[Dict[str, Any]] = _load_json(loop.history, [])

    def pool_now() -> List[Architecture]:
        return [tuple(a) for a in _load_json(state.pool, [])]

    def save() -> str:
        loop.capture_rngs()
        state.rng.assign(json.dumps(rng.bit_generator.state))
        return manager.save()

    S = config.shared_steps_per_epoch
    with enas_search.SignalCatcher(handle_signals) as catcher:

        def unit_done() -> None:
            loop.units.assign_add(1)
            if catcher.pending is not None:
                raise SearchInterrupted(catcher.pending, save())
            if config.checkpoint_every and int(loop.units.numpy()) % config.checkpoint_every == 0:
                save()

        try:
            while int(loop.epoch.numpy()) < config.epochs:
                epoch = int(loop.epoch.numpy())
                active = enas_search.wpl_active_at(epoch, schedule)
                partial = _load_json(loop.partial, None)
                if partial is None:
                    flushed = enas_search.flush_at(epoch, schedule)
                    alpha = enas_search.strength_at(epoch, schedule)
                    wpl_state = getattr(task, "wpl_state", None)
                    if wpl_state is not None:
                        if flushed:
                            wpl_state.reset_fisher()
                        wpl_state.strength.assign(alpha)
                    loop.alpha.assign(alpha)
                    task.start_epoch(epoch)
                    partial = {"archs": [], "err1": [], "train": [], "flushed": bool(flushed),
                               "elapsed": 0.0, "record": None}
                    loop.phase.assign(SHARED)
                    loop.step.assign(0)
                    loop.partial.assign(json.dumps(partial))
                alpha = float(loop.alpha.numpy())
                t0 = time.time()

                def commit(partial=partial) -> None:
                    partial["elapsed"] += time.time() - commit.t
                    commit.t = time.time()
                    loop.partial.assign(json.dumps(partial))

                commit.t = t0

                # 1. Shared phase: train pool architectures drawn uniformly.
                pool = pool_now()
                while int(loop.phase.numpy()) == SHARED and int(loop.step.numpy()) < S:
                    arch = pool[int(rng.integers(len(pool)))]
                    stats = enas_search.numeric_values(
                        task.train_architecture(arch, config.batches_per_arch, wpl_active=active)
                    )
                    partial["archs"].append(list(arch))
                    partial["err1"].append(float(task.validation_error(arch)))
                    partial["train"].append(stats)
                    loop.step.assign_add(1)
                    commit()
                    unit_done()
                if int(loop.phase.numpy()) == SHARED:
                    loop.phase.assign(EPOCH_END)

                # 2. Epoch end: err2 and the forgetting metrics.
                if int(loop.phase.numpy()) == EPOCH_END:
                    archs = [tuple(a) for a in partial["archs"]]
                    err2 = [float(task.validation_error(a)) for a in archs]
                    record: Dict[str, Any] = {"epoch": epoch, "wpl_active": active,
                                              "alpha": alpha, "flushed": partial["flushed"]}
                    record.update(forgetting.forgetting_summary(
                        partial["err1"], err2, best_k=config.best_k))
                    record.update(enas_search.mean_of_dicts(partial["train"], "train_"))
                    wpl_state = getattr(task, "wpl_state", None)
                    if wpl_state is not None:
                        record["fisher_norm"] = float(wpl_state.fisher_norm().numpy())
                    record["pool_size"] = len(pool)
                    record["archs"] = [list(a) for a in archs]
                    record["err1"] = partial["err1"]
                    record["err2"] = err2
                    partial["record"] = record
                    loop.phase.assign(CONTROLLER)
                    commit()

                # 3. Controller phase (NAO iteration): score pool, train, grow pool.
                record = partial["record"]
                if (epoch + 1) % config.controller_every == 0 or epoch + 1 == config.epochs:
                    errors = [float(task.validation_error(a)) for a in pool]
                    finite = np.isfinite(errors)
                    if not finite.any():
                        raise FloatingPointError("every pool architecture has a non-finite error.")
                    errors = [e if math.isfinite(e) else float(np.max(np.asarray(errors)[finite]))
                              for e in errors]
                    targets = normalize_scores(errors, lower_is_better=True)
                    losses = nao.fit(pool, targets, epochs=config.controller_epochs)
                    new: List[Architecture] = []
                    if epoch + 1 < config.epochs and config.new_archs:
                        order = np.argsort(errors, kind="stable")[: config.top_k_seeds]
                        seeds = [pool[int(i)] for i in order]
                        new = nao.generate(seeds, config.new_archs, exclude=pool)
                    grown = grow_pool(pool, targets, new, config.max_pool)
                    kept = {a: e for a, e in zip(pool, errors)}
                    state.pool.assign(json.dumps([list(a) for a in grown]))
                    state.scores.assign(json.dumps(
                        [kept.get(a, float("nan")) for a in grown]))
                    best = int(np.argmin(errors))
                    record.update({
                        "controller_loss": losses.get("loss", math.nan),
                        "controller_mse": losses.get("mse", math.nan),
                        "controller_ce": losses.get("ce", math.nan),
                        "pool_mean_error": float(np.mean(errors)),
                        "pool_best_error": float(errors[best]),
                        "pool_best_arch": list(pool[best]),
                        "new_archs": len(new),
                        "pool_size_after": len(grown),
                    })
                record["epoch_seconds"] = partial["elapsed"] + (time.time() - commit.t)
                history.append(record)
                enas_search.write_logs(out_dir, history)
                if config.verbose:
                    print(
                        f"NAO epoch {epoch + 1}/{config.epochs} (WPL {'on' if active else 'off'}, "
                        f"α {alpha:g}): mean err1 {record['mean_err1']:.4g}, err2-err1 mean "
                        f"{record['mean_diff']:.4g} best-{config.best_k} "
                        f"{record['best5_diff']:.4g} max {record['max_diff']:.4g}; pool "
                        f"{record.get('pool_size_after', record['pool_size'])}"
                    )
                enas_search.end_epoch(loop, history, record, save=save, catcher=catcher,
                                      on_epoch_end=on_epoch_end)
        except SearchInterrupted:
            raise
        except KeyboardInterrupt:
            save()
            raise
    pool = pool_now()
    scores = _load_json(state.scores, [])
    with open(os.path.join(out_dir, "pool.json"), "w") as f:
        json.dump([{"arch": list(a), "error": e, "string": space.to_string(a)}
                   for a, e in zip(pool, scores or [None] * len(pool))], f, indent=1)
    return NAOSearchResult(
        history=history, out_dir=out_dir, checkpoint=manager.latest_checkpoint,
        pool=pool, pool_errors=[float(s) if s is not None else math.nan for s in scores],
    )
