"""One resumable driver for the weight-sharing searches with the Weight Plasticity Loss.

ENAS (:mod:`wpl_keras.nas.search.enas`) and NAO (:mod:`wpl_keras.nas.search.nao`) differ only in
where architectures come from and what their controller does; they supply that as a
:class:`SearchStrategy`. :class:`SearchDriver` owns everything else: the WPL schedule,
restoring, SIGINT/SIGTERM, checkpoint commits, the epoch record and the logs.

Each epoch ``e`` runs three phases, numbered as stored in the checkpoint (``LoopState.phase``):

0. ``SHARED``: ``shared_steps_per_epoch`` units. A unit takes the strategy's next architecture
   ``a`` (ENAS: sampled by the controller; NAO: drawn from the pool), trains its shared weights
   on ``batches_per_arch`` batches (``task.train_architecture(a, B, wpl_active=...)``) and
   records ``err1(a) = task.validation_error(a)`` on the task's fixed validation batch.
1. ``CONTROLLER``: ``strategy.controller_units(e)`` units of controller work (ENAS: one
   REINFORCE update each; NAO: one NAO iteration that scores, trains and grows the pool).
2. ``EPOCH_END``: ``err2(a)`` for every architecture of phase 0, the forgetting metrics of
   :mod:`wpl_keras.nas.analysis.metrics` (mean / best-k / max of ``err2 − err1``), the strategy's
   fields, the record appended to the history, logs, and a checkpoint.

The WPL schedule (:class:`~wpl_keras.wpl.schedule.ScheduleConfig`) is applied here and nowhere
else: WPL is off for the first ``wpl_start_epoch`` epochs; before an epoch's first unit the
Fisher is reset when :func:`flush_at` says so and ``α(e) = strength_at(e)`` is written into
``task.wpl_state.strength``, the one variable that holds ``α`` during a search (saved with the
task's checkpoint items; the logs' ``wpl_strength`` is read from it); ``wpl_active_at(e)`` is
passed to the task, which then adds ``(α/2) Σ F (θ − θ*)²`` over the trained architecture's
weights, updates ``F ← (1 − η)F + η g²`` and sets ``θ* ← θ``.

State and resumption: a ``tf.train.CheckpointManager`` under ``out_dir/ckpt`` holds the task's
``checkpoint_items()`` (prefixed ``task_``), the strategy's ``checkpoint_items()``, and the
:class:`LoopState` (epoch, phase, step, units done, the partial epoch as JSON, the
history, NumPy's and Python's global RNG states; TensorFlow's global generator is tracked
directly). It saves at every epoch end, every ``checkpoint_every`` units if set, and on
SIGINT/SIGTERM, which are deferred to the end of the current unit, then raise
:class:`SearchInterrupted`. Every unit commits its result to the partial epoch before the next
one starts, so a resumed run continues at the unit after the last saved one and equals an
uninterrupted run.

Outputs in ``out_dir``: ``search_config.json`` (the strategy's), ``task_config.json``,
``history.json`` (full records), ``history.csv`` (scalars, one row per epoch), TensorBoard
scalars under ``tb/`` and checkpoints under ``ckpt/``.

Several workers (the task's ``strategy`` a ``MultiWorkerMirroredStrategy``): every worker runs
this same loop, unit for unit (the task all-reduces losses, errors and rewards, so every
worker's controller sees the same values and proposes the same architectures), and every
worker saves at the same points (a save may read distributed variables collectively). Only the
chief writes ``out_dir``; every other worker writes the same files into its private folder
:func:`~wpl_keras.nas.search.distribute.worker_out_dir` (``out_dir/workers/worker_<i>``) and resumes
from there. A SIGINT/SIGTERM that reaches some of the workers stops all of them at the same
point: after each unit and at each epoch end the workers all-reduce whether a signal is
pending (:func:`~wpl_keras.nas.search.distribute.agreed_signal`), and all save and raise
:class:`SearchInterrupted` together.
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
from typing import Any, Callable, Dict, List, Optional, Tuple

import keras
import numpy as np
import tensorflow as tf

from wpl_keras.nas.analysis import metrics
from wpl_keras.nas.search.distribute import agreed_signal, task_strategy, worker_out_dir
from wpl_keras.utils.checkpoint import check_checkpoint_covers
from wpl_keras.nas.search.schedule import LoopConfig
from wpl_keras.wpl.schedule import flush_at, strength_at, wpl_active_at

Architecture = Tuple[int, ...]
Record = Dict[str, Any]

# The phases of an epoch, as stored in LoopState.phase (one numbering for every strategy).
SHARED, CONTROLLER, EPOCH_END = 0, 1, 2

# The layout of the partial epoch saved in LoopState.partial; a checkpoint written mid-epoch
# with another layout is refused (one written at an epoch end has no partial epoch).
PARTIAL_FORMAT = 2


# ---------------------------------------------------------------------------------------------
# Loop state kept in the checkpoint, and small helpers.


class LoopState(tf.Module):
    """Counters, partial epoch, history and RNG states as checkpointable variables.

    ``α`` is not here: its one variable is the task's ``wpl_state.strength``, saved with the
    task. A checkpoint written before (with ``loop/alpha``, always equal to it) still
    restores; that old key is ignored."""

    def __init__(self):
        super().__init__(name="search_loop")
        self.epoch = tf.Variable(0, dtype=tf.int64, trainable=False, name="epoch")
        self.phase = tf.Variable(SHARED, dtype=tf.int64, trainable=False, name="phase")
        self.step = tf.Variable(0, dtype=tf.int64, trainable=False, name="step")
        self.units = tf.Variable(0, dtype=tf.int64, trainable=False, name="units_done")
        self.partial = tf.Variable("", dtype=tf.string, trainable=False, name="partial_epoch")
        self.history = tf.Variable("[]", dtype=tf.string, trainable=False, name="history")
        self.numpy_rng = tf.Variable("", dtype=tf.string, trainable=False, name="numpy_rng")
        self.python_rng = tf.Variable("", dtype=tf.string, trainable=False, name="python_rng")
        self.tf_rng = tf.random.get_global_generator()

    def close_epoch(self, history: List[Record]) -> None:
        """Commits a finished epoch: its history, no partial epoch, and the counters at the next
        epoch's first ``SHARED`` unit."""
        self.history.assign(json.dumps(history))
        self.partial.assign("")
        self.phase.assign(SHARED)
        self.step.assign(0)
        self.epoch.assign_add(1)

    def capture_rngs(self) -> None:
        """Copies NumPy's and Python's global RNG states into the string variables."""
        name, keys, pos, has_gauss, cached = np.random.get_state()
        self.numpy_rng.assign(
            json.dumps([name, keys.tolist(), int(pos), int(has_gauss), float(cached)])
        )
        version, internal, gauss = random.getstate()
        self.python_rng.assign(json.dumps([version, list(internal), gauss]))

    def restore_rngs(self) -> None:
        """Sets NumPy's and Python's global RNG states from the string variables."""
        text = self.numpy_rng.numpy().decode()
        if text:
            name, keys, pos, has_gauss, cached = json.loads(text)
            np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
        text = self.python_rng.numpy().decode()
        if text:
            version, internal, gauss = json.loads(text)
            random.setstate((version, tuple(internal), gauss))


def json_var(var: tf.Variable, default):
    """The JSON value held by a string variable, or ``default`` when it is empty."""
    text = var.numpy().decode()
    return json.loads(text) if text else default


def mean_of_dicts(dicts: List[Dict[str, float]], prefix: str) -> Dict[str, float]:
    """``{prefix + key: mean over dicts of d[key]}`` for every key seen."""
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


def write_logs(out_dir: str, history: List[Record]) -> None:
    """Writes ``history.json`` (full records) and ``history.csv`` (one row per epoch)."""
    with open(os.path.join(out_dir, "history.json"), "w") as f:
        json.dump(history, f, indent=1)
    rows = metrics.history_to_rows(history)
    if rows:
        fields = list(dict.fromkeys(k for row in rows for k in row))
        with open(os.path.join(out_dir, "history.csv"), "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=fields)
            writer.writeheader()
            writer.writerows(rows)


def checkpoint_items(task, loop: LoopState, strategy_items: Dict[str, Any]) -> Dict[str, Any]:
    """The checkpoint's objects: ``loop``, the strategy's items, and the task's items prefixed
    ``task_``."""
    items: Dict[str, Any] = {"loop": loop, **strategy_items}
    items.update({f"task_{k}": v for k, v in task.checkpoint_items().items()})
    return items


def checkpoint_dir(out_dir: str) -> str:
    """Where a search under ``out_dir`` keeps its checkpoints."""
    return os.path.join(out_dir, "ckpt")


def restore_checkpoint(task, strategy_items: Dict[str, Any], out_dir: str) -> Dict[str, Any]:
    """Restores the latest search checkpoint under ``out_dir/ckpt`` into ``task`` and the
    strategy's objects ``strategy_items`` (the keys its :meth:`SearchStrategy.checkpoint_items`
    gives); on a worker of a multi-worker task other than the chief, from its private folder
    :func:`~wpl_keras.nas.search.distribute.worker_out_dir`, where the driver wrote.

    Returns:
        ``{"checkpoint": path, "epoch": completed epochs, "history": [...]}``.

    Raises:
        FileNotFoundError: if there is no checkpoint.
    """
    directory = checkpoint_dir(worker_out_dir(out_dir, task_strategy(task)))
    loop = LoopState()
    checkpoint = tf.train.Checkpoint(**checkpoint_items(task, loop, strategy_items))
    latest = tf.train.latest_checkpoint(directory)
    if latest is None:
        raise FileNotFoundError(f"no search checkpoint under {directory}.")
    checkpoint.restore(latest).expect_partial()
    return {"checkpoint": latest, "epoch": int(loop.epoch.numpy()),
            "history": json_var(loop.history, [])}


class SearchInterrupted(KeyboardInterrupt):
    """Raised after the state was checkpointed on SIGINT/SIGTERM; ``signum`` says which."""

    def __init__(self, signum: int, checkpoint: Optional[str]):
        super().__init__(f"search interrupted by signal {signum}; state saved to {checkpoint}")
        self.signum = signum
        self.checkpoint = checkpoint


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


@dataclasses.dataclass
class SearchResult:
    """What a search returns: the per-epoch history and where things were written."""

    history: List[Record]
    out_dir: str
    checkpoint: Optional[str]


# ---------------------------------------------------------------------------------------------
# The strategy interface and the driver.


class SearchStrategy:
    """What one search algorithm supplies to :class:`SearchDriver`.

    Every method that changes state must keep that state in :meth:`checkpoint_items` (or
    copy it there in :meth:`before_save`), so that a resumed search equals an uninterrupted
    one. ``progress_keys`` name the controller entries shown in the progress bar.
    """

    progress_keys: Tuple[str, ...] = ()

    def checkpoint_items(self) -> Dict[str, Any]:
        """Trackable objects of the strategy, by checkpoint key."""
        return {}

    def config_json(self) -> Dict[str, Any]:
        """What ``search_config.json`` holds."""
        raise NotImplementedError

    def start(self, restored: bool) -> None:
        """Called once before the first unit, after a restore (``restored``) or on a fresh run."""

    def before_save(self) -> None:
        """Called before every checkpoint save (copy Python-side state into variables)."""

    def next_architecture(self) -> Architecture:
        """The architecture the next ``SHARED`` unit trains."""
        raise NotImplementedError

    def controller_units(self, epoch: int) -> int:
        """How many ``CONTROLLER`` units epoch ``epoch`` runs."""
        return 0

    def controller_unit(self, epoch: int) -> Record:
        """One unit of controller work; returns a JSON-serialisable entry for the epoch."""
        raise NotImplementedError

    def epoch_fields(self, entries: List[Record]) -> Record:
        """The strategy's fields of the epoch record, from its controller entries."""
        return {}

    def summary(self, record: Record) -> str:
        """The strategy's part of the printed epoch summary line."""
        return ""


class SearchDriver:
    """Runs the epochs of a search: schedule, phases, commits, records, logs, signals.

    Args:
        task: a :class:`~wpl_keras.nas.base.SharedWeightsTask` (with ``wpl_state`` when
            ``config.wpl``).
        strategy: the search algorithm's :class:`SearchStrategy`.
        config: the loop settings (a :class:`LoopConfig`).
        out_dir: logs, TensorBoard scalars and checkpoints go here (on the chief; another
            worker of a multi-worker strategy writes its private folder
            :func:`~wpl_keras.nas.search.distribute.worker_out_dir`, kept as ``self.out_dir``).
        handle_signals: defer SIGINT/SIGTERM to a clean save point (main thread only).
        on_epoch_end: called with each finished epoch's record, after its checkpoint.
    """

    def __init__(self, task, strategy: SearchStrategy, config: LoopConfig, out_dir: str, *,
                 handle_signals: bool = True,
                 on_epoch_end: Optional[Callable[[Record], None]] = None):
        if not isinstance(config, LoopConfig):
            raise TypeError(f"config must be a LoopConfig, got {type(config).__name__}.")
        if config.wpl and getattr(task, "wpl_state", None) is None:
            raise ValueError("config.wpl is True but the task has no wpl_state; build the task "
                             "with WPL or set wpl=False.")
        self.task, self.strategy, self.config = task, strategy, config
        self.out_dir = worker_out_dir(out_dir, task_strategy(task))
        self.handle_signals = handle_signals
        self.on_epoch_end = on_epoch_end
        self.loop = LoopState()
        items = checkpoint_items(task, self.loop, strategy.checkpoint_items())
        self._checkpointed = tuple(items.values())
        self.manager = tf.train.CheckpointManager(
            tf.train.Checkpoint(**items), checkpoint_dir(self.out_dir),
            max_to_keep=config.max_to_keep)
        self.history: List[Record] = []
        self.catcher: Optional[SignalCatcher] = None
        self.writer = None
        self._clock = time.time()

    # -- run -------------------------------------------------------------------------------

    def run(self, *, resume: bool = False) -> SearchResult:
        """Runs (or, with ``resume``, continues) the search to ``config.epochs`` epochs.

        Raises:
            FileExistsError: ``out_dir`` holds a checkpoint and ``resume`` is False.
            SearchInterrupted: after saving, when SIGINT/SIGTERM arrived.
        """
        os.makedirs(self.out_dir, exist_ok=True)
        self._restore(resume)
        self._write_configs()
        self.history = json_var(self.loop.history, [])
        write_logs(self.out_dir, self.history)
        self.writer = tf.summary.create_file_writer(os.path.join(self.out_dir, "tb"))
        with SignalCatcher(self.handle_signals) as catcher:
            self.catcher = catcher
            try:
                self._run_epochs()
            finally:
                self.writer.close()
        return SearchResult(history=self.history, out_dir=self.out_dir,
                            checkpoint=self.manager.latest_checkpoint)

    def _run_epochs(self) -> None:
        try:
            while int(self.loop.epoch.numpy()) < self.config.epochs:
                self._run_epoch()
        except SearchInterrupted:
            raise
        except KeyboardInterrupt:
            # Arrived without the deferring handler (not the main thread, or a second ^C):
            # save what there is, counters at the last finished unit, then re-raise.
            self.save()
            raise

    def save(self) -> str:
        """Checkpoints the whole search state; returns the checkpoint's path."""
        self.loop.capture_rngs()
        self.strategy.before_save()
        # Optimizer slots appear at the first step, so coverage is checked at each save.
        check_checkpoint_covers(self.manager.checkpoint, self._checkpointed)
        return self.manager.save()

    def _restore(self, resume: bool) -> None:
        latest = self.manager.latest_checkpoint
        if latest is None:
            self.strategy.start(restored=False)
            return
        if not resume:
            raise FileExistsError(
                f"{self.out_dir} already holds a search checkpoint; pass resume=True to "
                "continue it or choose another output directory."
            )
        self.manager.checkpoint.restore(latest).assert_existing_objects_matched()
        self.loop.restore_rngs()
        self.strategy.start(restored=True)

    def _write_configs(self) -> None:
        with open(os.path.join(self.out_dir, "search_config.json"), "w") as f:
            json.dump(self.strategy.config_json(), f, indent=1)
        with open(os.path.join(self.out_dir, "task_config.json"), "w") as f:
            json.dump(self.task.config(), f, indent=1, default=str)

    # -- one epoch -------------------------------------------------------------------------

    def _run_epoch(self) -> None:
        loop, config = self.loop, self.config
        epoch = int(loop.epoch.numpy())
        partial = json_var(loop.partial, None)
        if partial is None:
            partial = self._begin_epoch(epoch)
        _check_partial(partial)
        active, strength = wpl_active_at(epoch, config), self._strength()
        self._clock = time.time()
        shared, units = config.shared_steps_per_epoch, self.strategy.controller_units(epoch)
        bar = self._progress_bar(epoch, active, shared + units)

        def train() -> List[Tuple[str, float]]:
            return self._train_unit(partial, active) + [("wpl_strength", strength)]

        def control() -> List[Tuple[str, float]]:
            entry = self.strategy.controller_unit(epoch)
            partial["controller"].append(entry)
            shown = [(k, float(entry[k])) for k in self.strategy.progress_keys if k in entry]
            return shown + [("wpl_strength", strength)]

        self._run_phase(SHARED, shared, train, partial, bar, offset=0)
        self._run_phase(CONTROLLER, units, control, partial, bar, offset=shared)
        self._end_epoch(epoch, partial, active, strength)

    def _begin_epoch(self, epoch: int) -> Record:
        """The schedule's flush and ``α`` (the one place both are applied: ``α`` goes into
        its one variable, ``task.wpl_state.strength``), then the task's ``start_epoch`` hook;
        returns the new partial epoch, committed."""
        flushed = flush_at(epoch, self.config)
        state = getattr(self.task, "wpl_state", None)
        if state is not None:
            if flushed:
                state.reset_fisher()
            state.strength.assign(strength_at(epoch, self.config))
        self.task.start_epoch(epoch)
        partial = {"archs": [], "err1": [], "train": [], "controller": [],
                   "flushed": bool(flushed), "elapsed": 0.0, "format": PARTIAL_FORMAT}
        self.loop.phase.assign(SHARED)
        self.loop.step.assign(0)
        self.loop.partial.assign(json.dumps(partial))
        return partial

    def _train_unit(self, partial: Record, active: bool) -> List[Tuple[str, float]]:
        arch = tuple(int(a) for a in self.strategy.next_architecture())
        stats = numeric_values(
            self.task.train_architecture(arch, self.config.batches_per_arch, wpl_active=active)
        )
        err1 = float(self.task.validation_error(arch))
        partial["archs"].append(list(arch))
        partial["err1"].append(err1)
        partial["train"].append(stats)
        return list(stats.items()) + [("err1", err1)]

    def _run_phase(self, phase: int, units: int, work: Callable[[], List[Tuple[str, float]]],
                   partial: Record, bar, *, offset: int) -> None:
        """Runs the remaining units of ``phase`` (none when the saved phase is past it); each
        unit's result is committed before the next unit starts."""
        loop = self.loop
        if int(loop.phase.numpy()) > phase:
            return
        while int(loop.step.numpy()) < units:
            shown = work()
            loop.step.assign_add(1)
            self._commit(partial)
            if bar is not None:
                bar.update(offset + int(loop.step.numpy()), shown)
            self._unit_done()
        loop.phase.assign(phase + 1)
        loop.step.assign(0)

    def _commit(self, partial: Record) -> None:
        now = time.time()
        partial["elapsed"] += now - self._clock
        self._clock = now
        self.loop.partial.assign(json.dumps(partial))

    def _pending_signal(self) -> Optional[int]:
        """The signal pending on this worker or, under several workers, on any of them."""
        return agreed_signal(task_strategy(self.task), self.catcher.pending)

    def _unit_done(self) -> None:
        self.loop.units.assign_add(1)
        pending = self._pending_signal()
        if pending is not None:
            raise SearchInterrupted(pending, self.save())
        every = self.config.checkpoint_every
        if every and int(self.loop.units.numpy()) % every == 0:
            self.save()

    def _strength(self) -> float:
        """``α`` now, read from its one variable ``task.wpl_state.strength`` (0 for a task
        without a WPL state)."""
        state = getattr(self.task, "wpl_state", None)
        return 0.0 if state is None else float(state.strength.numpy())

    def _end_epoch(self, epoch: int, partial: Record, active: bool, strength: float) -> None:
        """``EPOCH_END``: the record, logs and the epoch's commit and checkpoint; then
        ``on_epoch_end`` and, if a signal arrived, :class:`SearchInterrupted`."""
        record = self._epoch_record(epoch, partial, active, strength)
        self.history.append(record)
        self._log(record)
        self.loop.close_epoch(self.history)
        path = self.save()
        if self.on_epoch_end is not None:
            self.on_epoch_end(record)
        pending = self._pending_signal()
        if pending is not None:
            raise SearchInterrupted(pending, path)

    def _epoch_record(self, epoch: int, partial: Record, active: bool,
                      strength: float) -> Record:
        archs = [tuple(a) for a in partial["archs"]]
        err2 = [float(self.task.validation_error(a)) for a in archs]
        record: Record = {"epoch": epoch, "wpl_active": active, "wpl_strength": strength,
                          "flushed": partial["flushed"]}
        record.update(metrics.forgetting_summary(partial["err1"], err2, best_k=self.config.best_k))
        record.update(mean_of_dicts(partial["train"], "train_"))
        record.update(self.strategy.epoch_fields(partial["controller"]))
        state = getattr(self.task, "wpl_state", None)
        if state is not None:
            record["fisher_norm"] = float(state.fisher_norm().numpy())
        record["epoch_seconds"] = partial["elapsed"] + (time.time() - self._clock)
        record["archs"] = [list(a) for a in archs]
        record["err1"] = partial["err1"]
        record["err2"] = err2
        return record

    # -- logs ------------------------------------------------------------------------------

    def _progress_bar(self, epoch: int, active: bool, total: int):
        if not self.config.verbose:
            return None
        print(f"Epoch {epoch + 1}/{self.config.epochs} (WPL {'on' if active else 'off'})")
        stateful = ["wpl_strength", "err1", *self.strategy.progress_keys]
        bar = keras.utils.Progbar(max(total, 1), stateful_metrics=stateful, verbose=1)
        done = int(self.loop.step.numpy())
        if int(self.loop.phase.numpy()) > SHARED:
            done += self.config.shared_steps_per_epoch
        if done:
            bar.update(done)
        return bar

    def _log(self, record: Record) -> None:
        """TensorBoard scalars, ``history.json``/``.csv`` and (verbose) the summary line."""
        with self.writer.as_default(step=int(record["epoch"])):
            for key, value in metrics.history_to_rows([record])[0].items():
                if isinstance(value, (int, float)) and not isinstance(value, bool):
                    tf.summary.scalar(key, value)
        self.writer.flush()
        write_logs(self.out_dir, self.history)
        if self.config.verbose:
            line = (f"  err2-err1: mean {record['mean_diff']:.4g}, "
                    f"best-{self.config.best_k} {record['best5_diff']:.4g}, "
                    f"max {record['max_diff']:.4g}")
            extra = self.strategy.summary(record)
            print(f"{line}; {extra}" if extra else line)


def _check_partial(partial: Record) -> None:
    found = partial.get("format")
    if found != PARTIAL_FORMAT:
        raise ValueError(
            f"the checkpoint's partial epoch has format {found}, this search loop reads "
            f"format {PARTIAL_FORMAT}: it was written mid-epoch by an older version of the "
            "loop; resume it with that version, or start the search anew in another output "
            "directory."
        )


def run_driver(task, strategy: SearchStrategy, config: LoopConfig, out_dir: str, *,
               resume: bool = False, handle_signals: bool = True,
               on_epoch_end: Optional[Callable[[Record], None]] = None) -> SearchResult:
    """Runs (or resumes) a search of ``strategy`` on ``task``; see :class:`SearchDriver`."""
    driver = SearchDriver(task, strategy, config, out_dir, handle_signals=handle_signals,
                          on_epoch_end=on_epoch_end)
    return driver.run(resume=resume)


__all__ = [
    "SHARED", "CONTROLLER", "EPOCH_END", "LoopState", "SearchInterrupted", "SignalCatcher",
    "SearchResult", "SearchStrategy", "SearchDriver", "run_driver", "checkpoint_items",
    "checkpoint_dir", "restore_checkpoint", "json_var", "mean_of_dicts", "numeric_values",
    "write_logs",
]
