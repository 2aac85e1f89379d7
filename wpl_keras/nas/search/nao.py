"""Weight-sharing NAO search with the Weight Plasticity Loss (paper Appendix A, Figure 4).

NAO with weight sharing (Luo et al. 2018) keeps a *pool* of architectures. The search starts
with ``seed_archs`` random architectures of the space and runs epochs through the search driver
(:mod:`wpl_keras.nas.search.driver`), to which it supplies its phases as :class:`NAOStrategy`; each
epoch ``e``:

1. ``SHARED``: ``shared_steps_per_epoch`` times, draw an architecture ``a`` uniformly from the
   pool, train its shared weights on the next ``batches_per_arch`` batches
   (``task.train_architecture(a, B, wpl_active=...)``), then record
   ``err1(a) = task.validation_error(a)`` on the task's fixed validation batch.
2. ``CONTROLLER`` (one unit every ``controller_every`` epochs and in the last epoch, NAO's
   iteration): score every pool architecture on the fixed validation batch, train the NAO
   controller (:class:`~wpl_keras.nas.controllers.nao.NAOController`) on ``(a, y)`` with min-max
   normalised scores ``y``, take the ``top_k_seeds`` best pool architectures as seeds, move
   their embeddings by gradient ascent on the predicted score (``z' = z + η ∇f(z)``, ``η``
   growing until enough are new) and add up to ``new_archs`` decoded, new architectures to the
   pool. A pool over ``max_pool`` keeps its best scored architectures plus all new ones. The
   phase trains no shared weight, so the ``err2`` of step 3 is the error right after step 1.
3. ``EPOCH_END``: ``err2(a)`` for every architecture of step 1 and the forgetting metrics of
   :mod:`wpl_keras.nas.analysis.metrics` (mean / best-5 / max of ``err2 − err1``).

WPL runs exactly as in the ENAS search: the driver applies the schedule
(:class:`~wpl_keras.wpl.schedule.ScheduleConfig`) before each epoch and passes ``wpl_active`` to
the task, which adds ``(α/2) Σ F (θ − θ*)²`` over the trained architecture's weights, updates
``F ← (1 − η)F + η g²`` from the last gradient and sets ``θ* ← θ``.

Output dropout and random path dropping (Bender et al. 2018) are properties of the task's
supernet; :func:`with_regularization` sets them on a task config (``model.output_dropout`` /
``model.path_keep`` of the RNN task, ``dropout`` / ``drop_path_keep`` of the CNN supernet)
before the task is built.

State and resumption: the driver's checkpoint under ``out_dir/ckpt`` holds, besides the loop
and the task, the NAO controller's weights, Adam state and shuffling stream (``nao_*``), and
the pool, its scores and the pool-sampling generator (``nao_state``). It saves after every
epoch, every ``checkpoint_every`` units of work (architectures trained or NAO iterations), and
on SIGINT/SIGTERM (deferred to the end of the current unit), so a resumed run equals an
uninterrupted one. The Figure-4 analysis of finished runs is in :mod:`wpl_keras.nas.analysis.metrics`
(:func:`~wpl_keras.nas.analysis.metrics.forgetting_by_rate`, :func:`~wpl_keras.nas.analysis.metrics.plot_figure4`).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import tensorflow as tf

from wpl_keras.nas.search.driver import (
    LoopState,
    SearchResult,
    SearchStrategy,
    checkpoint_items,
    json_var,
    run_driver,
)
from wpl_keras.nas.search.schedule import LoopConfig
from wpl_keras.nas.controllers.nao import NAOController, normalize_scores
from wpl_keras.utils.config_fields import find_field, replace_fields
from wpl_keras.utils.validation import check_fields

Architecture = Tuple[int, ...]


@dataclasses.dataclass(frozen=True)
class NAOSearchConfig(LoopConfig):
    """Settings of the NAO weight-sharing search: the loop and WPL schedule of
    :class:`~wpl_keras.nas.search.schedule.LoopConfig` (``epochs``, ``shared_steps_per_epoch``,
    ``batches_per_arch``, ``best_k``, ``checkpoint_every`` — counting architectures trained and
    NAO iterations —, ``max_to_keep``, ``verbose``, and the
    :class:`~wpl_keras.wpl.schedule.ScheduleConfig` fields ``wpl``, ``wpl_start_epoch``,
    ``strength``, ``strength_decay``, ``strength_decay_start``, ``strength_decay_rate``,
    ``strength_floor``, ``flush_every``) with sizes for a CPU run, plus

    Args:
        seed_archs: random architectures in the initial pool (NAO release, weight sharing:
            1000; a CPU run uses tens).
        controller_every: a controller phase (score pool, train NAO, grow pool) after every
            this many epochs.
        new_archs: new architectures added per controller phase (at most).
        top_k_seeds: best pool architectures used as gradient-ascent seeds (NAO: 100).
        max_pool: pool size cap (best scored + new architectures are kept).
        controller_epochs: NAO training epochs per controller phase (``None``: the
            controller's own ``NAOConfig.epochs``).
    """

    epochs: int = 8
    shared_steps_per_epoch: int = 12
    batches_per_arch: int = 4
    wpl_start_epoch: int = 2
    strength_decay: Optional[str] = None
    seed_archs: int = 20
    controller_every: int = 2
    new_archs: int = 10
    top_k_seeds: int = 10
    max_pool: int = 100
    controller_epochs: Optional[int] = None

    def __post_init__(self):
        super().__post_init__()
        positive = dict(integer=True, minimum=1)
        check_fields(self, {
            "seed_archs": positive, "controller_every": positive, "top_k_seeds": positive,
            "max_pool": positive, "new_archs": dict(integer=True, minimum=0),
            "controller_epochs": dict(integer=True, minimum=1, optional=True),
        })
        if self.max_pool < self.seed_archs:
            raise ValueError(
                f"NAOSearchConfig.max_pool ({self.max_pool}) must be >= seed_archs "
                f"({self.seed_archs})."
            )


# ---------------------------------------------------------------------------------------------
# Pure helpers.


def with_regularization(
    task_config, *, output_dropout: Optional[float] = None, path_keep: Optional[float] = None
):
    """``task_config`` with its output-dropout rate and path-drop keep probability replaced.

    The field names of the spaces' configs are looked up, not branched on the space, in the
    config and then in its nested configs: output dropout is ``output_dropout`` (RNN:
    ``model.output_dropout``) or ``dropout`` (CNN supernet); path dropping is ``path_keep``
    (RNN: ``model.path_keep``) or ``drop_path_keep`` (CNN supernet). ``None`` leaves a setting
    unchanged.

    Raises:
        ValueError: when the config has no field for a requested setting.
    """
    if output_dropout is not None:
        path = find_field(task_config, ("output_dropout", "dropout"))
        if path is None:
            raise ValueError(f"{type(task_config).__name__} has no output-dropout field.")
        task_config = replace_fields(task_config, {".".join(path): float(output_dropout)},
                                     where="output_dropout")
    if path_keep is not None:
        path = find_field(task_config, ("path_keep", "drop_path_keep"))
        if path is None:
            raise ValueError(
                f"{type(task_config).__name__} has no path-dropping field (path_keep or "
                "drop_path_keep); "
                "random path dropping is not available for this space's supernet."
            )
        task_config = replace_fields(task_config, {".".join(path): float(path_keep)},
                                     where="path_keep")
    return task_config


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


# ---------------------------------------------------------------------------------------------
# State, checkpoint and the NAO strategy.


class _NAOState(tf.Module):
    """The pool, its scores and the pool-sampling generator's state, as string variables."""

    def __init__(self):
        super().__init__(name="nao_state")
        self.pool = tf.Variable("[]", dtype=tf.string, trainable=False, name="pool")
        self.scores = tf.Variable("[]", dtype=tf.string, trainable=False, name="pool_errors")
        self.rng = tf.Variable("", dtype=tf.string, trainable=False, name="pool_rng")


def _strategy_items(nao: NAOController, state: _NAOState) -> Dict[str, Any]:
    items: Dict[str, Any] = {"nao_state": state}
    items.update({f"nao_{k}": v for k, v in nao.checkpoint_items().items()})
    return items


def make_checkpoint_manager(task, nao: NAOController, directory: str, max_to_keep: int = 2):
    """A ``CheckpointManager`` over the whole NAO search state, with the same keys as the one
    :func:`run_nao_search` writes.

    Returns:
        ``(manager, loop_state, nao_state)``.
    """
    loop, state = LoopState(), _NAOState()
    ckpt = tf.train.Checkpoint(**checkpoint_items(task, loop, _strategy_items(nao, state)))
    return tf.train.CheckpointManager(ckpt, directory, max_to_keep=max_to_keep), loop, state


@dataclasses.dataclass
class NAOSearchResult(SearchResult):
    """:class:`~wpl_keras.nas.search.driver.SearchResult` plus the final pool and its errors."""

    pool: List[Architecture] = dataclasses.field(default_factory=list)
    pool_errors: List[float] = dataclasses.field(default_factory=list)

    def best_architecture(self) -> Tuple[Architecture, float]:
        """The pool architecture with the lowest last-scored validation error."""
        errors = np.asarray(self.pool_errors, dtype=np.float64)
        if errors.size == 0 or not np.isfinite(errors).any():
            raise ValueError("the pool was never scored (no controller phase ran).")
        k = int(np.nanargmin(errors))
        return self.pool[k], float(self.pool_errors[k])


def score_pool(task, pool: Sequence[Architecture]) -> List[float]:
    """``task.validation_error(a)`` of every pool architecture; a non-finite error is replaced
    by the largest finite one (the architecture counts as the worst, not as missing).

    Raises:
        FloatingPointError: when no error is finite.
    """
    errors = np.asarray([float(task.validation_error(a)) for a in pool], dtype=np.float64)
    finite = np.isfinite(errors)
    if not finite.any():
        raise FloatingPointError(
            "every pool architecture has a non-finite validation error; the shared weights "
            "diverged (lower the task's learning rate or WPL strength)."
        )
    return [float(e) if f else float(errors[finite].max()) for e, f in zip(errors, finite)]


class NAOStrategy(SearchStrategy):
    """NAO's phases: shared training draws architectures uniformly from the pool; a
    ``CONTROLLER`` unit is one NAO iteration (score the pool, train the controller, grow the
    pool by gradient ascent in its embedding space)."""

    progress_keys = ("controller_loss", "pool_best_error")

    def __init__(self, task, nao: NAOController, config: NAOSearchConfig, seed: int):
        self.task, self.nao, self.config, self.seed = task, nao, config, int(seed)
        self.state = _NAOState()
        self.rng: Optional[np.random.Generator] = None

    def checkpoint_items(self) -> Dict[str, Any]:
        return _strategy_items(self.nao, self.state)

    def config_json(self) -> Dict[str, Any]:
        return {"nao_search": self.config.to_json(), "nao": self.nao.get_config()}

    def start(self, restored: bool) -> None:
        """Restores the pool-sampling generator, or seeds it and the initial pool of
        ``seed_archs`` distinct random architectures (as NAO)."""
        if restored:
            self.rng = np.random.default_rng()
            self.rng.bit_generator.state = json.loads(self.state.rng.numpy().decode())
            return
        self.rng = np.random.default_rng(self.seed)
        pool: List[Architecture] = []
        while len(pool) < self.config.seed_archs:
            arch = self.task.space.sample(self.rng)
            if arch not in pool:
                pool.append(arch)
        self.state.pool.assign(json.dumps([list(a) for a in pool]))

    def before_save(self) -> None:
        self.state.rng.assign(json.dumps(self.rng.bit_generator.state))

    def pool(self) -> List[Architecture]:
        """The current pool."""
        return [tuple(a) for a in json_var(self.state.pool, [])]

    def next_architecture(self) -> Architecture:
        pool = self.pool()
        return pool[int(self.rng.integers(len(pool)))]

    def controller_units(self, epoch: int) -> int:
        last = epoch + 1 == self.config.epochs
        return int((epoch + 1) % self.config.controller_every == 0 or last)

    def controller_unit(self, epoch: int) -> Dict[str, Any]:
        """One NAO iteration; no new architectures in the last epoch (none would be trained)."""
        config, pool = self.config, self.pool()
        errors = score_pool(self.task, pool)
        targets = normalize_scores(errors, lower_is_better=True)
        losses = self.nao.fit(pool, targets, epochs=config.controller_epochs)
        new: List[Architecture] = []
        if epoch + 1 < config.epochs and config.new_archs:
            order = np.argsort(errors, kind="stable")[: config.top_k_seeds]
            seeds = [pool[int(i)] for i in order]
            new = self.nao.generate(seeds, config.new_archs, exclude=pool)
        grown = grow_pool(pool, targets, new, config.max_pool)
        scored = dict(zip(pool, errors))
        self.state.pool.assign(json.dumps([list(a) for a in grown]))
        self.state.scores.assign(json.dumps([scored.get(a, math.nan) for a in grown]))
        best = int(np.argmin(errors))
        return {
            "pool_size": len(pool),
            "controller_loss": float(losses.get("loss", math.nan)),
            "controller_mse": float(losses.get("mse", math.nan)),
            "controller_ce": float(losses.get("ce", math.nan)),
            "pool_mean_error": float(np.mean(errors)),
            "pool_best_error": float(errors[best]),
            "pool_best_arch": list(pool[best]),
            "new_archs": len(new),
            "pool_size_after": len(grown),
        }

    def epoch_fields(self, entries: List[Dict[str, Any]]) -> Dict[str, Any]:
        """``pool_size`` (the pool shared training drew from) and the NAO iteration's fields."""
        fields: Dict[str, Any] = {"pool_size": len(self.pool())}
        for entry in entries:
            fields.update(entry)
        return fields

    def summary(self, record: Dict[str, Any]) -> str:
        pool = record.get("pool_size_after", record["pool_size"])
        return f"mean err1 {record['mean_err1']:.4g}; pool {pool}"

    def result(self, base: SearchResult) -> NAOSearchResult:
        """``base`` plus the final pool and its last scores; writes ``pool.json``."""
        pool, scores = self.pool(), json_var(self.state.scores, [])
        with open(os.path.join(base.out_dir, "pool.json"), "w") as f:
            json.dump([{"arch": list(a), "error": e, "string": self.task.space.to_string(a)}
                       for a, e in zip(pool, scores or [None] * len(pool))], f, indent=1)
        errors = [float(s) if s is not None else math.nan for s in scores]
        return NAOSearchResult(history=base.history, out_dir=base.out_dir,
                               checkpoint=base.checkpoint, pool=pool, pool_errors=errors)


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
        nao: a :class:`~wpl_keras.nas.controllers.nao.NAOController` over ``task.space.decision_sizes``.
        config: the :class:`NAOSearchConfig`.
        out_dir: logs (``history.json``/``.csv``, ``pool.json``, ``tb/``) and checkpoints
            (``ckpt/``); a worker of a multi-worker task other than the chief writes its
            private folder :func:`~wpl_keras.nas.search.distribute.worker_out_dir` instead (the
            result's ``out_dir``; see :mod:`wpl_keras.nas.search.driver`).
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
    if tuple(nao.decision_sizes) != tuple(task.space.decision_sizes):
        raise ValueError(
            f"the NAO controller has decision sizes {nao.decision_sizes}, the space "
            f"{tuple(task.space.decision_sizes)}; build the controller over "
            "task.space.decision_sizes."
        )
    strategy = NAOStrategy(task, nao, config, seed)
    base = run_driver(task, strategy, config, out_dir, resume=resume,
                      handle_signals=handle_signals, on_epoch_end=on_epoch_end)
    return strategy.result(base)
