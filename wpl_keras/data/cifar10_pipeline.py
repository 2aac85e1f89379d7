"""CIFAR-10 ``tf.data`` pipelines: normalisation, and seeded augmentation for training.

Images are normalised with the CIFAR-10 channel mean/std, ``x = (x / 255 − mean) / std``.
Training pipelines shuffle each epoch and augment with a 4-pixel padded random crop, a
horizontal flip and optional cutout, all stateless functions of ``(seed, epoch, element
index)`` (:mod:`wpl_keras.data.augment`).
"""

from __future__ import annotations

from typing import Optional

import numpy as np
import tensorflow as tf

from wpl_keras.data.augment import augment_batch, check_seed, training_elements
from wpl_keras.data.options import without_autotune_thread
from wpl_keras.utils.validation import check_number

MEAN = np.array([0.4914, 0.4822, 0.4465], np.float32)
STD = np.array([0.2470, 0.2435, 0.2616], np.float32)
CROP_PAD = 4  # zeros padded on each side before the random crop


def normalize(images: tf.Tensor) -> tf.Tensor:
    """``(images / 255 − mean) / std`` per channel, float32."""
    return (tf.cast(images, tf.float32) / 255.0 - MEAN) / STD


def make_dataset(
    x: np.ndarray,
    y: np.ndarray,
    batch_size: int,
    *,
    training: bool,
    cutout_size: int = 0,
    repeat: bool = False,
    seed: Optional[int] = None,
    drop_remainder: bool = False,
    start_batch: int = 0,
) -> tf.data.Dataset:
    """A batched ``tf.data`` pipeline of normalised images and int32 labels.

    Without ``training``: the images in order, normalised. With ``training``: each epoch in a
    seeded order, normalised, then a 4-pixel padded random crop, a horizontal flip and cutout
    of ``cutout_size`` (0 disables it), every choice a pure function of ``(seed, epoch,
    element index)`` (:mod:`wpl_keras.data.augment`): two pipelines with the same ``seed``
    yield identical batches, on any number of replicas. ``repeat`` makes it endless (epochs
    ``0, 1, …`` in one stream, batches may span two epochs); without it each iteration of the
    dataset (e.g. each Keras epoch) is a new seeded epoch (its key also reads TF's global seed
    when one is set: :func:`wpl_keras.data.augment.training_elements`).

    Args:
        seed: seeds order and augmentation; None draws one (not reproducible).
        start_batch: with ``training`` and ``repeat``, start at batch ``start_batch`` of the
            stream (a resumed run continues where it stopped).

    Raises:
        ValueError: for an empty split, mismatched lengths, a non-positive batch size, a
            negative ``cutout_size``, a negative ``start_batch`` or one without ``training``
            and ``repeat``, or a seed that is not an integer in ``[0, 2**63)``.
    """
    batch_size = check_number("make_dataset: batch_size", batch_size, integer=True, minimum=1)
    if len(x) == 0 or len(x) != len(y):
        raise ValueError(f"need as many labels as images (>0), got {len(x)} and {len(y)}.")
    # 0 disables cutout
    cutout_size = check_number("make_dataset: cutout_size", cutout_size, integer=True, minimum=0)
    if start_batch < 0 or (start_batch and not (training and repeat)):
        raise ValueError(
            f"start_batch={start_batch} must be >= 0 and needs training=True and repeat=True; "
            "use 0 otherwise."
        )
    if not training:
        ds = tf.data.Dataset.from_tensor_slices((x, np.asarray(y, np.int32)))
        if repeat:
            ds = ds.repeat()
        ds = ds.map(lambda image, label: (normalize(image), label),
                    num_parallel_calls=tf.data.AUTOTUNE)
        return without_autotune_thread(
            ds.batch(batch_size, drop_remainder=drop_remainder).prefetch(tf.data.AUTOTUNE))
    return _training_batches(x, y, batch_size, cutout_size=cutout_size, repeat=repeat,
                             seed=seed, drop_remainder=drop_remainder,
                             start_element=int(start_batch) * batch_size)


def epoch_batches(x: np.ndarray, y: np.ndarray, batch_size: int, *, epoch: int,
                  start_step: int = 0, cutout_size: int = 0, seed: int) -> tf.data.Dataset:
    """Training batches ``start_step, …, ⌊N / batch_size⌋ − 1`` of epoch ``epoch`` (the last
    partial batch dropped), augmented as :func:`make_dataset` does.

    The elements are those of epoch ``epoch`` of the endless training stream
    (:func:`~wpl_keras.data.augment.training_elements` with ``repeat``), so batch ``s`` of
    epoch ``e`` is a pure function of ``(seed, e, s)``: a resumed training starts at any
    batch and sees what the uninterrupted one saw.

    Raises:
        ValueError: for fewer images than ``batch_size``, or ``start_step`` outside
            ``[0, ⌊N / batch_size⌋)``, or ``epoch`` < 0.
    """
    steps = len(x) // int(batch_size) if batch_size > 0 else 0
    if steps < 1:
        raise ValueError(f"epoch_batches needs at least batch_size={batch_size} images, got "
                         f"{len(x)}; lower the batch size or use more images.")
    if not 0 <= int(start_step) < steps or int(epoch) < 0:
        raise ValueError(f"start_step must be in [0, {steps}) and epoch >= 0, got "
                         f"start_step={start_step}, epoch={epoch}.")
    return _training_batches(x, y, batch_size, cutout_size=cutout_size, repeat=True,
                             seed=seed, drop_remainder=True,
                             start_element=int(epoch) * len(x) + int(start_step) * batch_size,
                             num_batches=steps - int(start_step))


def _training_batches(x, y, batch_size: int, *, cutout_size: int, repeat: bool,
                      seed: Optional[int], drop_remainder: bool, start_element: int,
                      num_batches: Optional[int] = None) -> tf.data.Dataset:
    """Batches of element indices and their draws, then gather, normalise and augment per
    batch (one vectorised map call per batch); ``num_batches`` of them when given."""
    x = np.asarray(x)
    images = tf.constant(x)
    labels = tf.constant(np.asarray(y, np.int32))
    elements = training_elements(
        len(x), seed=check_seed(seed), height=int(x.shape[1]), width=int(x.shape[2]),
        pad=CROP_PAD, repeat=repeat, start_element=start_element)
    if num_batches is not None:
        elements = elements.take(int(num_batches) * batch_size)

    def prepare(index, draws):
        batch = normalize(tf.gather(images, index))
        batch = augment_batch(batch, draws, pad=CROP_PAD, cutout_size=cutout_size)
        return batch, tf.gather(labels, index)

    ds = elements.batch(batch_size, drop_remainder=drop_remainder)
    # flat_map hides the length; state it (endless, or the batches of one epoch) for Keras
    if num_batches is not None:
        count = int(num_batches)
    elif repeat:
        count = tf.data.INFINITE_CARDINALITY
    else:
        count = len(x) // batch_size if drop_remainder else -(-len(x) // batch_size)
    ds = ds.apply(tf.data.experimental.assert_cardinality(count))
    return without_autotune_thread(
        ds.map(prepare, num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE))
