"""Seeded, stateless image augmentation and shuffling for ``tf.data`` training pipelines.

Every random choice is a pure function of ``(seed, epoch, element index)``, drawn with
stateless random ops:

* the epoch key is ``k_e = fold_in([seed, 0], e)`` (:func:`epoch_key`);
* the order of epoch ``e`` is ``stateless_shuffle(range(n), fold_in(k_e, 0))``;
* element ``i`` of epoch ``e`` gets row ``i`` of ``n``-long stateless draws under
  ``fold_in(k_e, 1..5)`` (:func:`draw_augmentation`): crop offsets ``o_y, o_x`` uniform in
  ``0..2p``, a flip with probability 1/2, a cutout centre ``c_y, c_x`` uniform in
  ``0..H−1`` and ``0..W−1``.

So two pipelines built with the same seed yield identical batches, the draws of an image do
not depend on the batch size, the number of replicas or the position of its batch, and they
change from epoch to epoch and from element to element.

:func:`augment_batch` applies the draws to a batch: pad ``p`` zeros on each side, crop
``H × W`` at ``(o_y, o_x)``, mirror left-right where ``flip``, then zero the ``s × s`` square
with rows ``c_y − ⌊s/2⌋ .. c_y − ⌊s/2⌋ + s − 1`` and columns likewise (clipped at the border;
DeVries & Taylor, 2017).
"""

from __future__ import annotations

from typing import NamedTuple, Optional, Union

import numpy as np
import tensorflow as tf

from wpl_keras.utils.validation import check_number

IntOrTensor = Union[int, tf.Tensor]


class AugmentDraws(NamedTuple):
    """Per-image random choices (int32 / bool tensors of one shape, ``[N]`` or ``[B]``)."""

    offset_y: tf.Tensor
    offset_x: tf.Tensor
    flip: tf.Tensor
    centre_y: tf.Tensor
    centre_x: tf.Tensor


def check_seed(seed: Optional[int]) -> int:
    """The integer ``seed`` in ``[0, 2**63)``; ``None`` draws one from OS entropy (then the
    pipeline is not reproducible).

    Raises:
        ValueError: for a seed outside that range.
        TypeError: for a seed that is not an integer.
    """
    if seed is None:
        return int(np.random.SeedSequence().entropy % (2**63))
    return check_number("seed", seed, integer=True, minimum=0, maximum=2**63 - 1)


def epoch_key(seed: int, epoch: IntOrTensor) -> tf.Tensor:
    """The stateless key of one epoch, ``fold_in([seed, 0], epoch)`` (int64 ``[2]``)."""
    base = tf.constant([check_seed(seed), 0], tf.int64)
    return tf.random.experimental.stateless_fold_in(base, tf.cast(epoch, tf.int64))


def shuffled_order(key: tf.Tensor, num_elements: int) -> tf.Tensor:
    """The epoch's order, a permutation of ``0..n−1``: ``stateless_shuffle(range(n),
    fold_in(key, 0))`` (int32 ``[n]``)."""
    order_key = tf.random.experimental.stateless_fold_in(key, 0)
    return tf.random.experimental.stateless_shuffle(tf.range(num_elements), seed=order_key)


def draw_augmentation(key: tf.Tensor, num_elements: int, *, height: IntOrTensor,
                      width: IntOrTensor, pad: int) -> AugmentDraws:
    """The draws of all ``n`` elements of one epoch; row ``i`` belongs to element ``i``.

    ``o_y, o_x ~ U{0..2p}``, ``flip ~ Bernoulli(1/2)``, ``c_y ~ U{0..H−1}``,
    ``c_x ~ U{0..W−1}``, each from ``stateless_uniform([n], fold_in(key, j))``, ``j = 1..5``.
    """

    def uniform_int(j: int, high: int) -> tf.Tensor:
        sub = tf.random.experimental.stateless_fold_in(key, j)
        return tf.random.stateless_uniform([num_elements], sub, minval=0, maxval=high,
                                           dtype=tf.int32)

    return AugmentDraws(
        offset_y=uniform_int(1, 2 * pad + 1),
        offset_x=uniform_int(2, 2 * pad + 1),
        flip=uniform_int(3, 2) > 0,
        centre_y=uniform_int(4, height),
        centre_x=uniform_int(5, width),
    )


def augment_batch(images: tf.Tensor, draws: AugmentDraws, *, pad: int,
                  cutout_size: int) -> tf.Tensor:
    """Padded crop, flip and cutout of a batch ``[B, H, W, C]`` with per-image ``draws``.

    ``out[b, y, x] = P[b, o_y + y, o_x + x']`` with ``P`` the batch padded with ``pad`` zeros
    and ``x' = W − 1 − x`` where ``flip[b]`` (else ``x``); then, when ``cutout_size = s > 0``,
    ``out[b, y, x] = 0`` for ``t_y ≤ y < t_y + s`` and ``t_x ≤ x < t_x + s`` with
    ``t = c − ⌊s/2⌋`` (the square clipped at the border).
    """
    shape = tf.shape(images)
    h, w = shape[1], shape[2]
    padded = tf.pad(images, [[0, 0], [pad, pad], [pad, pad], [0, 0]])
    rows = draws.offset_y[:, None] + tf.range(h)[None, :]
    xs = tf.where(draws.flip[:, None], (w - 1) - tf.range(w)[None, :], tf.range(w)[None, :])
    cols = draws.offset_x[:, None] + xs
    out = tf.gather(padded, rows, axis=1, batch_dims=1)
    out = tf.gather(out, cols, axis=2, batch_dims=1)
    if cutout_size > 0:
        top = (draws.centre_y - cutout_size // 2)[:, None, None]
        left = (draws.centre_x - cutout_size // 2)[:, None, None]
        ys = tf.range(h)[None, :, None]
        xs = tf.range(w)[None, None, :]
        inside = (ys >= top) & (ys < top + cutout_size) & (xs >= left) & (
            xs < left + cutout_size)
        out = out * tf.cast(~inside, out.dtype)[..., None]
    return out


def _image_draws(image: tf.Tensor, seed: int, pad: int) -> AugmentDraws:
    shape = tf.shape(image)
    return draw_augmentation(epoch_key(seed, 0), 1, height=shape[0], width=shape[1], pad=pad)


def random_crop_flip(image: tf.Tensor, *, seed: int, pad: int = 4) -> tf.Tensor:
    """Padded random crop and flip of one image ``[H, W, C]`` (:func:`augment_batch` without
    cutout), with the draws of element 0 of epoch 0 under ``seed``."""
    draws = _image_draws(image, seed, pad)
    return augment_batch(image[None], draws, pad=pad, cutout_size=0)[0]


def cutout(image: tf.Tensor, size: int, *, seed: int) -> tf.Tensor:
    """Zeroes a ``size × size`` square (clipped at the border) of one image ``[H, W, C]`` at the
    centre drawn for element 0 of epoch 0 under ``seed``; no crop or flip."""
    draws = _image_draws(image, seed, 0)._replace(flip=tf.zeros([1], tf.bool))
    return augment_batch(image[None], draws, pad=0, cutout_size=size)[0]


def training_elements(num_elements: int, *, seed: int, height: int, width: int, pad: int,
                      repeat: bool, start_element: int = 0) -> tf.data.Dataset:
    """The stream of ``(index, AugmentDraws)`` of a training pipeline, one per element.

    With ``repeat``: epochs ``0, 1, 2, …`` one after the other, each in its
    :func:`shuffled_order` with its :func:`draw_augmentation` rows, starting at element
    ``start_element`` of that endless stream (epoch ``⌊start/n⌋``, offset ``start mod n``).
    Without ``repeat``: one epoch per iteration of the returned dataset, its key
    ``fold_in([seed, 0], r)`` with ``r`` the next value of ``tf.data.Dataset.random(seed,
    rerandomize_each_iteration=True)``, so each iteration has a new order and new draws and
    two datasets built with the same seed (under the same TF global seed, which that op
    also reads) give the same sequence of epochs.

    Raises:
        ValueError: for ``start_element`` < 0, or > 0 without ``repeat``.
    """
    if start_element < 0 or (start_element and not repeat):
        raise ValueError(
            f"start_element must be 0, or >= 0 with repeat=True; got {start_element} "
            f"with repeat={repeat}."
        )
    seed = check_seed(seed)

    def epoch_elements(epoch: tf.Tensor) -> tf.data.Dataset:
        key = epoch_key(seed, epoch)
        order = shuffled_order(key, num_elements)
        draws = draw_augmentation(key, num_elements, height=height, width=width, pad=pad)
        picked = AugmentDraws(*(tf.gather(d, order) for d in draws))
        return tf.data.Dataset.from_tensor_slices((order, picked))

    if repeat:
        first_epoch, offset = divmod(int(start_element), num_elements)
        epochs = tf.data.Dataset.counter(start=first_epoch, dtype=tf.int64)
        return epochs.flat_map(epoch_elements).skip(offset)
    epochs = tf.data.Dataset.random(seed=seed % 2**31, rerandomize_each_iteration=True)
    return epochs.take(1).flat_map(epoch_elements)
