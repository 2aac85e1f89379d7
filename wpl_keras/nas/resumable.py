"""Resumable training of one model: checkpoints as it goes, and a resumed run equals an
uninterrupted one.

:class:`ResumableTraining` keeps a ``tf.train.CheckpointManager`` in a folder. It holds the
model's variables (seed-generator states included, so every random draw of training restarts
where it was), the optimizer's (slots and step count), any extra state the loop carries
(e.g. an RNN's hidden state between windows) and :class:`TrainingProgress`: the epoch, the
batches done in it, the epoch's loss sum and count, and the training seconds so far. A
training loop calls :meth:`~ResumableTraining.batch_done` after each batch and
:meth:`~ResumableTraining.epoch_done` after each epoch. The state is saved every ``every``
batches (counted over the whole run), at every epoch end, and on SIGINT/SIGTERM. A signal is
deferred to the end of the current batch; then the state is saved and
:class:`TrainingInterrupted` is raised.

A loop whose batch ``s`` of epoch ``e`` is a pure function of ``(seed, e, s)`` and that starts
at :attr:`~ResumableTraining.epoch`, batch :attr:`~ResumableTraining.step` continues exactly
where the saved run stopped. A kill, even ``kill -9``, loses only the batches since the last
save, and they are trained again the same way.

Without a folder nothing is written and the object only counts.
"""

from __future__ import annotations

import time
from typing import Optional

import keras
import tensorflow as tf

from wpl_keras.nas.search.driver import SignalCatcher
from wpl_keras.utils.checkpoint import check_checkpoint_covers, checkpoint_for
from wpl_keras.utils.validation import check_number


class TrainingProgress(tf.Module):
    """Where a training run is, as checkpointable variables: ``epoch`` (0-based, the one in
    progress), ``step`` (batches done in it), ``loss_sum`` / ``loss_count`` (its batches'
    losses so far), ``last_loss`` (the mean loss of the last finished epoch, NaN before one)
    and ``seconds`` (training time over every process of the run)."""

    def __init__(self):
        super().__init__(name="training_progress")
        self.epoch = tf.Variable(0, dtype=tf.int64, trainable=False, name="epoch")
        self.step = tf.Variable(0, dtype=tf.int64, trainable=False, name="step")
        self.loss_sum = tf.Variable(0.0, dtype=tf.float64, trainable=False, name="loss_sum")
        self.loss_count = tf.Variable(0, dtype=tf.int64, trainable=False, name="loss_count")
        self.last_loss = tf.Variable(float("nan"), dtype=tf.float64, trainable=False,
                                     name="last_epoch_loss")
        self.seconds = tf.Variable(0.0, dtype=tf.float64, trainable=False, name="seconds")


class TrainingInterrupted(KeyboardInterrupt):
    """Raised after the state was checkpointed on SIGINT/SIGTERM; ``signum`` says which."""

    def __init__(self, signum: int, checkpoint: Optional[str]):
        super().__init__(f"training interrupted by signal {signum}; state saved to "
                         f"{checkpoint} (continue with --resume / resume=True)")
        self.signum = signum
        self.checkpoint = checkpoint


class ResumableTraining:
    """Checkpoints of one training run (see the module docstring).

    Args:
        directory: the checkpoint folder; None keeps nothing (the object only counts).
        every: also save every this many batches (0: at epoch ends and on signals only).
        resume: restore the folder's latest checkpoint; without it a folder that holds one
            is refused.
        handle_signals: defer SIGINT/SIGTERM to the end of a batch, save, then raise
            :class:`TrainingInterrupted` (main thread only).

    Raises:
        ValueError: ``every`` < 0.
        TypeError: ``every`` not an integer.
    """

    def __init__(self, directory: Optional[str] = None, *, every: int = 0,
                 resume: bool = False, handle_signals: bool = True):
        # 0: save at epoch ends only
        every = check_number("ResumableTraining every", every, integer=True, minimum=0)
        self.directory, self.every, self.resume = directory, every, bool(resume)
        self.handle_signals = handle_signals
        self.progress = TrainingProgress()
        self.manager: Optional[tf.train.CheckpointManager] = None
        self._objects: tuple = ()
        self._batches = 0
        self._clock = time.time()
        self._catcher: Optional[SignalCatcher] = None

    @property
    def epoch(self) -> int:
        """The epoch in progress (0-based)."""
        return int(self.progress.epoch.numpy())

    @property
    def step(self) -> int:
        """Batches done in the epoch in progress."""
        return int(self.progress.step.numpy())

    @property
    def last_epoch_loss(self) -> float:
        """Mean loss of the last finished epoch (NaN before the first)."""
        return float(self.progress.last_loss.numpy())

    @property
    def seconds(self) -> float:
        """Training seconds of the whole run so far."""
        return float(self.progress.seconds.numpy()) + time.time() - self._clock

    def start(self, **objects) -> bool:
        """Checkpoints ``objects`` (Keras models and optimizers, built, are wrapped in
        :class:`~wpl_keras.utils.checkpoint.VariableBundle`; ``tf.Variable`` objects and
        modules as they are) with the progress; restores the latest checkpoint when resuming.

        Returns:
            Whether a checkpoint was restored.

        Raises:
            FileExistsError: the folder holds a checkpoint and ``resume`` is False.
        """
        self._objects = tuple(objects.values())
        self._clock = time.time()
        if self.directory is None:
            return False
        checkpoint = checkpoint_for(progress=self.progress, **objects)
        self.manager = tf.train.CheckpointManager(checkpoint, self.directory, max_to_keep=1)
        latest = self.manager.latest_checkpoint
        if latest is None:
            return False
        if not self.resume:
            raise FileExistsError(f"{self.directory} holds a training checkpoint; resume it or "
                                  "choose another folder.")
        checkpoint.restore(latest).assert_existing_objects_matched()
        self._clock = time.time()
        return True

    def __enter__(self) -> "ResumableTraining":
        self._catcher = SignalCatcher(self.handle_signals).__enter__()
        return self

    def __exit__(self, *exc) -> bool:
        if self._catcher is not None:
            self._catcher.__exit__(*exc)
            self._catcher = None
        return False

    def batch_done(self, loss: float) -> None:
        """Counts one finished batch of loss ``loss``; saves when ``every`` batches have
        passed, and saves and raises :class:`TrainingInterrupted` when a signal is pending."""
        self.progress.step.assign_add(1)
        self.progress.loss_sum.assign_add(float(loss))
        self.progress.loss_count.assign_add(1)
        self._batches += 1
        if self.every and self._batches % self.every == 0:
            self.save()
        self._check_signal()

    def epoch_mean_loss(self) -> float:
        """Mean loss of the batches of the epoch in progress (NaN before the first)."""
        count = int(self.progress.loss_count.numpy())
        return float(self.progress.loss_sum.numpy()) / count if count else float("nan")

    def epoch_done(self) -> float:
        """Closes the epoch in progress (the next one starts at batch 0), saves, and returns
        the closed epoch's mean loss."""
        mean = self.epoch_mean_loss()
        self.progress.last_loss.assign(mean)
        self.progress.epoch.assign_add(1)
        self.progress.step.assign(0)
        self.progress.loss_sum.assign(0.0)
        self.progress.loss_count.assign(0)
        self.save()
        self._check_signal()
        return mean

    def save(self) -> Optional[str]:
        """Checkpoints the state now (nothing without a folder); returns the path."""
        now = time.time()
        self.progress.seconds.assign_add(now - self._clock)
        self._clock = now
        if self.manager is None:
            return None
        # Optimizer slots appear at the first step, so coverage is checked at each save.
        check_checkpoint_covers(self.manager.checkpoint, self._objects)
        return self.manager.save()

    def _check_signal(self) -> None:
        if self._catcher is not None and self._catcher.pending is not None:
            raise TrainingInterrupted(self._catcher.pending, self.save())

    def keras_callback(self) -> keras.callbacks.Callback:
        """A callback for ``model.fit`` that calls :meth:`batch_done` after each batch with
        that batch's loss (recovered from the running mean Keras reports)."""
        return _BatchDone(self)


class _BatchDone(keras.callbacks.Callback):
    def __init__(self, run: ResumableTraining):
        super().__init__()
        self.run = run
        self._total = 0.0

    def on_epoch_begin(self, epoch, logs=None):
        self._total = 0.0

    def on_train_batch_end(self, batch, logs=None):
        total = float(logs["loss"]) * (batch + 1)
        loss, self._total = total - self._total, total
        self.run.batch_done(loss)

