"""``tf.data`` options of the library's input pipelines."""

from __future__ import annotations

import tensorflow as tf


def without_autotune_thread(dataset: tf.data.Dataset) -> tf.data.Dataset:
    """``dataset`` with ``tf.data``'s autotuning model turned off.

    With autotuning on, every iterator starts a thread that re-optimises the pipeline's
    parameters after waiting an optimization period that doubles up to 60 s, and the
    iterator's destructor waits for that thread to wake: dropping an iterator (each
    ``model.fit`` epoch, a task restored from a checkpoint, a finished trial) stalls for
    up to that period with the CPU idle. The library's pipelines read in-memory arrays;
    without the model, a parallel ``map`` with ``num_parallel_calls=tf.data.AUTOTUNE``
    runs at TensorFlow's default parallelism (the core count, at most 16) and
    ``prefetch(tf.data.AUTOTUNE)`` grows its buffer while the consumer waits (the prefetch
    autotuner, which needs no thread).
    """
    options = tf.data.Options()
    options.autotune.enabled = False
    return dataset.with_options(options)
