"""The weight-sharing search loop with the Weight Plasticity Loss (ENAS + WPL, paper §3.2).

Each epoch ``e`` of :func:`run_search` does, as ENAS does:

1. **Shared phase**: ``shared_steps_per_epoch`` times, sample an architecture ``a`` from the
   controller and train its shared weights on the next ``batches_per_arch`` batches
   (``task.train_architecture``), then record ``err1(a) = task.validation_error(a)`` on the
   task's fixed validation batch.
2. **Controller phase**: ``controller_steps`` REINFORCE updates, each on a freshly sampled
   architecture and its reward ``task.reward(a)``.
3. **Epoch end**: ``err2(a)`` for every architecture of step 1, and the forgetting metrics of
   :mod:`wpl_keras.nas.metrics` (mean / best-5 / max of ``err2 − err1``).

With WPL on, the first ``wpl_start_epoch`` epochs are plain ENAS; from then on shared training
runs with ``wpl_active=True`` (penalty ``(α/2) Σ F (θ − θ*)²`` over the sampled architecture's
weights, Fisher ``F ← (1 − η)F + η g²`` and anchors ``θ* ← θ`` after each architecture). At the
start of each epoch ``α(e)`` from :func:`~wpl_keras.wpl.strength_schedule` is written into
``task.wpl_state.strength``, and every ``flush_every`` epochs after WPL turned on the Fisher is
reset to zero. Without WPL, ``α = 0`` and ``wpl_active=False`` throughout.

State and resumption: a ``tf.train.CheckpointManager`` under ``out_dir/ckpt`` saves the task
(``task.checkpoint_items()``: supernet, optimizer, WPL state, data positions), the controller
and REINFORCE (``reinforce.checkpoint_items()``), the loop counters (epoch, phase, step), the
partial epoch (architectures and err1 so far), the history, the current ``α``, and the RNG
states (TensorFlow's global generator, NumPy's and Python's global states). It saves at the
end of every epoch, every ``checkpoint_every`` units of work if set, and when SIGINT/SIGTERM
arrive (the signal is deferred to the end of the current unit, the state is saved, then
:class:`SearchInterrupted` is raised). Resuming restores everything and continues at the
unit after the last one saved, so an interrupted then resumed run equals an uninterrupted one.

Outputs in ``out_dir``: ``search_config.json``, ``task_config.json``, ``history.csv`` (one row
per epoch), ``history.json`` (per-epoch records with per-architecture err1/err2), TensorBoard
scalars under ``tb/`` and checkpoints under ``ckpt/``.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import os
import random
import signal
import threading
import time
from typing import Any, Callable, Dict, List, Optional

import keras
import numpy as np
import tensorflow as tf

from wpl_keras.utils.config import JsonConfig
from wpl_keras.nas import metrics as forgetting
from wpl_keras.wpl.callbacks import strength_schedule

# Phases of an epoch, as stored in the checkpoint.
SHARED, CONTROLLER, EPOCH_END = 0, 1, 2


class SearchInterrupted(KeyboardInterrupt):
    """Raised after the state was checkpointed on SIGINT/SIGTERM; ``signum`` says which."""

    def __init__(self, signum: int, checkpoint: Optional[str]):
        super().__init__(f"search interrupted by signal {signum}; state saved to {checkpoint}")
        self.signum = signum
        self.checkpoint = checkpoint


@dataclasses.dataclass(frozen=True)
class SearchConfig(JsonConfig):
    """Settings of the search loop (ENAS schedule + WPL schedule).

    Args:
        epochs: search epochs.
        shared_steps_per_epoch: architectures sampled and trained per epoch (each one a
            "shared step"; WPL release: 60, which with 7 batches each is about one PTB epoch).
        batches_per_arch: training batches per sampled architecture (``B``; WPL release: 7).
        controller_steps: REINFORCE updates per epoch.
        wpl: whether WPL is used at all.
        wpl_start_epoch: first epoch (0-based) with WPL on (paper: 5 RNN, 3 CNN).
        strength: ``α0`` (WPL release: 60).
        strength_decay: ``None``, ``"linear"`` or ``"exponential"`` (see
            :func:`~wpl_keras.wpl.strength_schedule`).
        strength_decay_start: first epoch whose ``α`` decays (WPL release RNN: 15).
        strength_decay_rate: amount (linear) or factor (exponential) per epoch (RNN: 1).
        strength_floor: ``α`` never goes below this.
        flush_every: reset the Fisher every this many epochs after WPL turned on (WPL release
            RNN: 2; paper: 3). 0 never flushes.
        best_k: how many lowest-err1 architectures the "best-5" metric averages.
        checkpoint_every: also checkpoint every this many units of work (an architecture
            trained or a controller update); 0 checkpoints only at epoch end and on signals.
        max_to_keep: checkpoints kept by the manager.
        verbose: 1 shows a progress bar per epoch, 0 is silent.
    """

    epochs: int = 150
    shared_steps_per_epoch: int = 60
    batches_per_arch: int = 7
    controller_steps: int = 2000
    wpl: bool = True
    wpl_start_epoch: int = 5
    strength: float = 60.0
    strength_decay: Optional[str] = "linear"
    strength_decay_start: int = 15
    strength_decay_rate: float = 1.0
    strength_floor: float = 0.0
    flush_every: int = 2
    best_k: int = 5
    checkpoint_every: int = 0
    max_to_keep: int = 2
    verbose: int = 1

    def __post_init__(self):
        positive = ("epochs", "shared_steps_per_epoch", "batches_per_arch", "best_k", "max_to_keep")
        for name in positive:
            if int(getattr(self, name)) < 1:
                raise ValueError(f"SearchConfig.{name} must be >= 1, got {getattr(self, name)}.")
        for name in ("controller_steps", "wpl_start_epoch", "flush_every", "checkpoint_every"):
            if int(getattr(self, name)) < 0:
                raise ValueError(f"SearchConfig.{name} must be >= 0, got {getattr(self, name)}.")
        if self.strength < 0 or self.strength_floor < 0:
            raise ValueError("SearchConfig.strength and strength_floor must be >= 0.")
        if self.strength_decay not in (None, "linear", "exponential"):
            raise ValueError(
                "SearchConfig.strength_decay must be None, 'linear' or 'exponential', "
                f"got {self.strength_decay!r}."
            )
        # Fails early on a bad exponential rate.
        strength_at(self.strength_decay_start + 1, self)

    @classmethod
    def paper(cls, **overrides) -> "SearchConfig":
        """The WPL release's RNN run command (150 epochs, 60 architectures × 7 batches, WPL
        from epoch 5, α 60 decaying by 1 per epoch after epoch 15, flush every 2 epochs) with
        ENAS-PyTorch's 2000 controller steps per epoch. Sized for a GPU."""
        return dataclasses.replace(cls(), **overrides)

    @classmethod
    def cpu_small(cls, **overrides) -> "SearchConfig":
        """Minutes on 2 CPU cores: 10 epochs of 10 architectures × 5 batches and 10 controller
        steps; WPL from epoch 3, α 60 constant, flush every 2 epochs."""
        base = cls(
            epochs=10,
            shared_steps_per_epoch=10,
            batches_per_arch=5,
            controller_steps=10,
            wpl_start_epoch=3,
            strength_decay=None,
            flush_every=2,
        )
        return dataclasses.replace(base, **overrides)



# ---------------------------------------------------------------------------------------------
# The schedule, as pure functions of the epoch.


def wpl_active_at(epoch: int, config: SearchConfig) -> bool:
    """WPL is on at ``epoch`` iff ``config.wpl`` and ``epoch >= wpl_start_epoch``."""
    return bool(config.wpl) and epoch >= config.wpl_start_epoch


def strength_at(epoch: int, config: SearchConfig) -> float:
    """``α(epoch)``: 0 while WPL is off, else :func:`strength_schedule` of the config."""
    if not wpl_active_at(epoch, config):
        return 0.0
    return strength_schedule(
        epoch,
        initial=config.strength,
        decay=config.strength_decay,
        start_epoch=config.strength_decay_start,
        rate=config.strength_decay_rate,
        floor=config.strength_floor,
    )


def flush_at(epoch: int, config: SearchConfig) -> bool:
    """The Fisher is reset at the start of ``epoch`` iff WPL is on and ``epoch`` is a positive
    multiple of ``flush_every`` epochs after ``wpl_start_epoch``."""
    if not wpl_active_at(epoch, config) or config.flush_every == 0:
        return False
    since = epoch - config.wpl_start_epoch
    return since > 0 and since % config.flush_every == 0


# ---------------------------------------------------------------------------------------------
# Loop state kept in the checkpoint.


class LoopState(tf.Module):
    """Counters, partial epoch, history, α and RNG states as checkpointable variables."""

    def __init__(self):
        super().__init__(name="search_loop")
        self.epoch = tf.Variable(0, dtype=tf.int64, trainable=False, name="epoch")
        self.phase = tf.Variable(SHARED, dtype=tf.int64, trainable=False, name="phase")
        self.step = tf.Variable(0, dtype=tf.int64, trainable=False, name="step")
        self.units = tf.Variable(0, dtype=tf.int64, trainable=False, name="units_done")
        self.alpha = tf.Variable(0.0, dtype=tf.float32, trainable=False, name="alpha")
        self.partial = tf.Variable("", dtype=tf.string, trainable=False, name="partial_epoch")
        self.history = tf.Variable("[]", dtype=tf.string, trainable=False, name="history")
        self.numpy_rng = tf.Variable("", dtype=tf.string, trainable=False, name="numpy_rng")
        self.python_rng = tf.Variable("", dtype=tf.string, trainable=False, name="python_rng")
        self.tf_rng = tf.random.get_global_generator()

    def close_epoch(self, history: List[Dict[str, Any]]) -> None:
        """Commits a finished epoch: its history, no partial epoch, and the counters at the next
        epoch's first shared-training step (phase ``SHARED`` = 0 in every search loop)."""
        self.history.assign(json.dumps(history))
        self.partial.assign("")
        self.phase.assign(SHARED)
        self.step.assign(0)
        self.epoch.assign_add(1)

    def capture_rngs(self) -> None:
        name, keys, pos, has_gauss, cached = np.random.get_state()
        self.numpy_rng.assign(
            json.dumps([name, keys.tolist(), int(pos), int(has_gauss), float(cached)])
        )
        version, internal, gauss = random.getstate()
        self.python_rng.assign(json.dumps([version, list(internal), gauss]))

    def restore_rngs(self) -> None:
        text = self.numpy_rng.numpy().decode()
        if text:
            name, keys, pos, has_gauss, cached = json.loads(text)
            np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
        text = self.python_rng.numpy().decode()
        if text:
            version, internal, gauss = json.loads(text)
            random.setstate((version, tuple(internal), gauss))


def _json_var(var: tf.Variable, default):
    text = var.numpy().decode()
    return json.loads(text) if text else default


@dataclasses.dataclass
class SearchResult:
    """What :func:`run_search` returns: the per-epoch history and where things were written."""

    history: List[Dict[str, Any]]
    out_dir: str
    checkpoint: Optional[str]


class SignalCatcher:
    """Defers SIGINT/SIGTERM to the end of the current unit (main thread only).

    A second SIGINT while one is pending raises ``KeyboardInterrupt`` at once.
    """

    def __init__(self, enabled: bool):
        self.enabled = enabled and threading.current_thread() is threading.main_thread()
        self.pending: Optional[int] = None
        self._previous = {}

    def _handle(self, signum, frame):
        if self.pending is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.pending = signum

    def __enter__(self):
        if self.enabled:
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        return False


def _checkpoint_items(task, controller, reinforce, loop: LoopState) -> Dict[str, Any]:
    items: Dict[str, Any] = {"loop": loop, "controller": controller}
    for prefix, source in (("task", task), ("reinforce", reinforce)):
        for key, value in source.checkpoint_items().items():
            items[f"{prefix}_{key}"] = value
    return items


def make_checkpoint_manager(
    task, controller, reinforce, directory: str, max_to_keep: int = 2
) -> "tuple[tf.train.CheckpointManager, LoopState]":
    """A ``CheckpointManager`` over the whole search state (task, controller, REINFORCE, loop).

    Used by :func:`run_search` and by :mod:`wpl_keras.nas.derive` to reload a finished search.
    """
    loop = LoopState()
    ckpt = tf.train.Checkpoint(**_checkpoint_items(task, controller, reinforce, loop))
    return tf.train.CheckpointManager(ckpt, directory, max_to_keep=max_to_keep), loop


def restore_latest(task, controller, reinforce, out_dir: str) -> Dict[str, Any]:
    """Restores the latest search checkpoint under ``out_dir/ckpt`` into the given objects.

    Returns:
        ``{"checkpoint": path, "epoch": completed epochs, "history": [...]}``.

    Raises:
        FileNotFoundError: if there is no checkpoint.
    """
    manager, loop = make_checkpoint_manager(task, controller, reinforce, _ckpt_dir(out_dir))
    if manager.latest_checkpoint is None:
        raise FileNotFoundError(f"no search checkpoint under {_ckpt_dir(out_dir)}.")
    manager.checkpoint.restore(manager.latest_checkpoint).expect_partial()
    return {
        "checkpoint": manager.latest_checkpoint,
        "epoch": int(loop.epoch.numpy()),
        "history": _json_var(loop.history, []),
    }


def _ckpt_dir(out_dir: str) -> str:
    return os.path.join(out_dir, "ckpt")


def mean_of_dicts(dicts: List[Dict[str, float]], prefix: str) -> Dict[str, float]:
    """``{prefix + key: mean over dicts of d[key]}`` for every key seen (shared by the NAO loop)."""
    keys = sorted({k for d in dicts for k in d})
    out = {}
    for k in keys:
        values = [float(d[k]) for d in dicts if k in d]
        out[f"{prefix}{k}"] = float(np.mean(values)) if values else math.nan
    return out


def numeric_values(d: Dict[str, Any]) -> Dict[str, float]:
    """The entries of ``d`` that convert to float, as floats."""
    out = {}
    for k, v in (d or {}).items():
        try:
            out[k] = float(np.asarray(v).reshape(()))
        except (TypeError, ValueError):
            continue
    return out


def write_logs(out_dir: str, history: List[Dict[str, Any]]) -> None:
    """Writes ``history.json`` (full records) and ``history.csv`` (one row per epoch)."""
    with open(os.path.join(out_dir, "history.json"), "w") as f:
        json.dump(history, f, indent=1)
    rows = forgetting.history_to_rows(history)
    if rows:
        fields = list(dict.fromkeys(k for row in rows for k in row))
        with open(os.path.join(out_dir, "history.csv"), "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=fields)
            writer.writeheader()
            writer.writerows(rows)


def end_epoch(loop: "LoopState", history: List[Dict[str, Any]], record: Dict[str, Any], *,
              save: Callable[[], str], catcher: "SignalCatcher",
              on_epoch_end: Optional[Callable[[Dict[str, Any]], None]] = None) -> None:
    """Ends a search epoch the same way in every loop: commit it (:meth:`LoopState.close_epoch`),
    checkpoint, call ``on_epoch_end(record)``, then raise :class:`SearchInterrupted` if a
    signal arrived during the epoch (the checkpoint just written holds everything)."""
    loop.close_epoch(history)
    path = save()
    if on_epoch_end is not None:
        on_epoch_end(record)
    if catcher.pending is not None:
        raise SearchInterrupted(catcher.pending, path)


def run_search(
    task,
    controller,
    reinforce,
    config: SearchConfig,
    out_dir: str,
    *,
    resume: bool = False,
    handle_signals: bool = True,
    on_epoch_end: Optional[Callable[[Dict[str, Any]], None]] = None,
) -> SearchResult:
    """Runs (or resumes) an ENAS search with WPL on ``task``; see the module docstring.

    Args:
        task: a :class:`~wpl_keras.nas.base.SharedWeightsTask` with a ``wpl_state``.
        controller: proposes architectures (``sample_architecture() -> tuple``).
        reinforce: trains the controller (``update(arch, reward) -> dict``,
            ``checkpoint_items() -> dict``).
        config: the loop's :class:`SearchConfig`.
        out_dir: where logs, TensorBoard scalars and checkpoints go.
        resume: restore the latest checkpoint in ``out_dir`` and continue from it. Without
            it, an existing checkpoint there is an error (no silent overwrite).
        handle_signals: defer SIGINT/SIGTERM to a clean save point (main thread only).
        on_epoch_end: called with each finished epoch's record.

    Returns:
        A :class:`SearchResult` with the per-epoch history.

    Raises:
        FileExistsError: ``out_dir`` holds a checkpoint and ``resume`` is False.
        SearchInterrupted: after saving, when SIGINT/SIGTERM arrived.
    """
    if not isinstance(config, SearchConfig):
        raise TypeError(f"config must be a SearchConfig, got {type(config).__name__}.")
    if getattr(task, "wpl_state", None) is None and config.wpl:
        raise ValueError("config.wpl is True but the task has no wpl_state.")
    os.makedirs(out_dir, exist_ok=True)
    manager, loop = make_checkpoint_manager(
        task, controller, reinforce, _ckpt_dir(out_dir), config.max_to_keep
    )
    if manager.latest_checkpoint is not None:
        if not resume:
            raise FileExistsError(
                f"{out_dir} already holds a search checkpoint; pass resume=True to continue it "
                "or choose another output directory."
            )
        manager.checkpoint.restore(manager.latest_checkpoint).assert_existing_objects_matched()
        loop.restore_rngs()
        if config.wpl:
            task.wpl_state.strength.assign(float(loop.alpha.numpy()))
    with open(os.path.join(out_dir, "search_config.json"), "w") as f:
        json.dump(config.to_json(), f, indent=1)
    with open(os.path.join(out_dir, "task_config.json"), "w") as f:
        json.dump(task.config(), f, indent=1, default=str)

    history: List[Dict[str, Any]] = _json_var(loop.history, [])
    write_logs(out_dir, history)
    writer = tf.summary.create_file_writer(os.path.join(out_dir, "tb"))

    def save() -> str:
        loop.capture_rngs()
        return manager.save()

    S, C = config.shared_steps_per_epoch, config.controller_steps
    with SignalCatcher(handle_signals) as catcher:

        def unit_done() -> None:
            loop.units.assign_add(1)
            if catcher.pending is not None:
                path = save()
                raise SearchInterrupted(catcher.pending, path)
            if config.checkpoint_every and int(loop.units.numpy()) % config.checkpoint_every == 0:
                save()

        try:
            while int(loop.epoch.numpy()) < config.epochs:
                epoch = int(loop.epoch.numpy())
                active = wpl_active_at(epoch, config)
                partial = _json_var(loop.partial, None)
                if partial is None:
                    # A fresh epoch: schedule first, then the task's hook.
                    flushed = flush_at(epoch, config)
                    alpha = strength_at(epoch, config)
                    task_state = getattr(task, "wpl_state", None)
                    if task_state is not None:
                        if flushed:
                            task_state.reset_fisher()
                        task_state.strength.assign(alpha)
                    loop.alpha.assign(alpha)
                    task.start_epoch(epoch)
                    partial = {
                        "archs": [], "err1": [], "train": [], "rewards": [], "controller": [],
                        "flushed": bool(flushed), "start_time": time.time(), "elapsed": 0.0,
                    }
                    loop.phase.assign(SHARED)
                    loop.step.assign(0)
                    loop.partial.assign(json.dumps(partial))
                alpha = float(loop.alpha.numpy())
                resumed_at = time.time()
                bar = None
                if config.verbose:
                    print(f"Epoch {epoch + 1}/{config.epochs} (WPL {'on' if active else 'off'})")
                    bar = keras.utils.Progbar(
                        S + C, stateful_metrics=["alpha", "err1", "reward"], verbose=1
                    )
                    done = int(loop.step.numpy()) + (S if int(loop.phase.numpy()) > SHARED else 0)
                    if done:
                        bar.update(done)

                def commit(partial=partial) -> None:
                    partial["elapsed"] += time.time() - commit.t
                    commit.t = time.time()
                    loop.partial.assign(json.dumps(partial))

                commit.t = resumed_at

                # 1. Shared phase.
                while int(loop.phase.numpy()) == SHARED and int(loop.step.numpy()) < S:
                    arch = tuple(int(a) for a in controller.sample_architecture())
                    stats = numeric_values(
                        task.train_architecture(arch, config.batches_per_arch, wpl_active=active)
                    )
                    err1 = float(task.validation_error(arch))
                    partial["archs"].append(list(arch))
                    partial["err1"].append(err1)
                    partial["train"].append(stats)
                    loop.step.assign_add(1)
                    commit()
                    if bar is not None:
                        shown = [(k, v) for k, v in stats.items()]
                        bar.update(
                            int(loop.step.numpy()), shown + [("err1", err1), ("alpha", alpha)]
                        )
                    unit_done()
                if int(loop.phase.numpy()) == SHARED:
                    loop.phase.assign(CONTROLLER)
                    loop.step.assign(0)

                # 2. Controller phase.
                while int(loop.phase.numpy()) == CONTROLLER and int(loop.step.numpy()) < C:
                    arch = tuple(int(a) for a in controller.sample_architecture())
                    reward = float(task.reward(arch))
                    stats = numeric_values(reinforce.update(arch, reward))
                    partial["rewards"].append(reward)
                    partial["controller"].append(stats)
                    loop.step.assign_add(1)
                    commit()
                    if bar is not None:
                        bar.update(
                            S + int(loop.step.numpy()), [("reward", reward), ("alpha", alpha)]
                        )
                    unit_done()
                loop.phase.assign(EPOCH_END)

                # 3. Epoch end: err2 and the forgetting metrics.
                archs = [tuple(a) for a in partial["archs"]]
                err2 = [float(task.validation_error(a)) for a in archs]
                record: Dict[str, Any] = {"epoch": epoch, "wpl_active": active, "alpha": alpha,
                                          "flushed": partial["flushed"]}
                record.update(
                    forgetting.forgetting_summary(partial["err1"], err2, best_k=config.best_k)
                )
                rewards = partial["rewards"]
                record["mean_reward"] = float(np.mean(rewards)) if rewards else math.nan
                record.update(mean_of_dicts(partial["train"], "train_"))
                record.update(mean_of_dicts(partial["controller"], "controller_"))
                state = getattr(task, "wpl_state", None)
                if state is not None:
                    record["fisher_norm"] = float(state.fisher_norm().numpy())
                record["epoch_seconds"] = partial["elapsed"] + (time.time() - commit.t)
                record["archs"] = [list(a) for a in archs]
                record["err1"] = partial["err1"]
                record["err2"] = err2
                history.append(record)
                with writer.as_default(step=epoch):
                    for key, value in forgetting.history_to_rows([record])[0].items():
                        if isinstance(value, (int, float)) and not isinstance(value, bool):
                            tf.summary.scalar(key, value)
                writer.flush()
                write_logs(out_dir, history)
                if bar is not None:
                    print(
                        f"  err2-err1: mean {record['mean_diff']:.4g}, "
                        f"best-{config.best_k} {record['best5_diff']:.4g}, "
                        f"max {record['max_diff']:.4g}; mean reward {record['mean_reward']:.4g}"
                    )
                end_epoch(loop, history, record, save=save, catcher=catcher,
                          on_epoch_end=on_epoch_end)
        except SearchInterrupted:
            raise
        except KeyboardInterrupt:
            # Arrived without the deferring handler (not the main thread, or a second ^C):
            # save what there is, counters at the last finished unit, then re-raise.
            save()
            raise
    writer.close()
    return SearchResult(history=history, out_dir=out_dir, checkpoint=manager.latest_checkpoint)
