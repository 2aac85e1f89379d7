"""Tests for the stateless augmentation: NumPy references of crop, flip and cutout, the
per-epoch draws and orders, and the element stream of a training pipeline."""

import itertools

import numpy as np
import pytest
import tensorflow as tf

from wpl_keras.data import augment
from wpl_keras.data.augment import (
    AugmentDraws,
    augment_batch,
    check_seed,
    draw_augmentation,
    epoch_key,
    shuffled_order,
    training_elements,
)


def _reference(image, oy, ox, flip, cy, cx, pad, size):
    """Pad, crop at (oy, ox), mirror, zero the clipped size x size square from c - size//2."""
    h, w = image.shape[:2]
    out = np.pad(image, [(pad, pad), (pad, pad), (0, 0)])[oy:oy + h, ox:ox + w]
    if flip:
        out = out[:, ::-1]
    out = out.copy()
    if size > 0:
        top, left = cy - size // 2, cx - size // 2
        out[max(top, 0):max(top + size, 0), max(left, 0):max(left + size, 0)] = 0
    return out


def _draws(rows):
    cols = list(zip(*rows))
    return AugmentDraws(*(tf.constant(c, tf.bool if k == 2 else tf.int32)
                          for k, c in enumerate(cols)))


@pytest.mark.parametrize("pad,size", [(1, 0), (2, 0), (2, 3), (1, 4), (0, 2)])
def test_augment_batch_equals_numpy_reference(pad, size):
    rng = np.random.default_rng(pad * 10 + size)
    h, w = 5, 6
    rows = [(oy, ox, flip, cy, cx)
            for (oy, ox, flip), (cy, cx) in zip(
                itertools.product(range(2 * pad + 1), range(2 * pad + 1), (False, True)),
                itertools.cycle([(0, 0), (h - 1, w - 1), (2, 3), (0, w - 1), (h - 1, 1)]))]
    images = rng.normal(size=(len(rows), h, w, 2)).astype(np.float32) + 5.0
    out = augment_batch(tf.constant(images), _draws(rows), pad=pad, cutout_size=size).numpy()
    for b, row in enumerate(rows):
        np.testing.assert_array_equal(out[b], _reference(images[b], *row, pad, size), err_msg=row)


def test_augment_batch_hand_values():
    image = np.arange(1, 10, dtype=np.float32).reshape(1, 3, 3, 1)
    rows = [(0, 0, False, 0, 0), (2, 2, False, 0, 0), (0, 2, True, 0, 0), (1, 1, False, 1, 1)]
    out = augment_batch(tf.constant(np.repeat(image, 4, 0)), _draws(rows), pad=1,
                        cutout_size=0).numpy()[..., 0]
    np.testing.assert_array_equal(out[0], [[0, 0, 0], [0, 1, 2], [0, 4, 5]])
    np.testing.assert_array_equal(out[1], [[5, 6, 0], [8, 9, 0], [0, 0, 0]])
    np.testing.assert_array_equal(out[2], [[0, 0, 0], [0, 3, 2], [0, 6, 5]])
    np.testing.assert_array_equal(out[3], image[0, ..., 0])
    cut = augment_batch(tf.constant(image), _draws(rows[3:]), pad=1, cutout_size=2).numpy()
    np.testing.assert_array_equal(cut[0, ..., 0], [[0, 0, 3], [0, 0, 6], [7, 8, 9]])


def test_draws_cover_their_ranges_and_are_pure():
    n, h, w, pad = 4000, 7, 9, 3
    key = epoch_key(5, 2)
    draws = draw_augmentation(key, n, height=h, width=w, pad=pad)
    for values, high in [(draws.offset_y, 2 * pad), (draws.offset_x, 2 * pad),
                         (draws.centre_y, h - 1), (draws.centre_x, w - 1)]:
        counts = np.bincount(values.numpy(), minlength=high + 1)
        assert len(counts) == high + 1 and counts.min() > 0.6 * n / (high + 1)
    assert 0.45 < np.mean(draws.flip.numpy()) < 0.55
    again = draw_augmentation(epoch_key(5, 2), n, height=h, width=w, pad=pad)
    for a, b in zip(draws, again):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    for other in (epoch_key(5, 3), epoch_key(6, 2)):
        moved = draw_augmentation(other, n, height=h, width=w, pad=pad)
        assert np.mean(moved.offset_y.numpy() != draws.offset_y.numpy()) > 0.5
    # independent of each other: offset_y and offset_x are not the same sequence
    assert np.mean(draws.offset_y.numpy() != draws.offset_x.numpy()) > 0.5


def test_shuffled_order_is_a_seeded_permutation():
    orders = {(s, e): shuffled_order(epoch_key(s, e), 50).numpy()
              for s in (0, 1) for e in (0, 1)}
    for order in orders.values():
        np.testing.assert_array_equal(np.sort(order), np.arange(50))
    keys = list(orders)
    for a, b in itertools.combinations(keys, 2):
        assert not np.array_equal(orders[a], orders[b]), (a, b)
    np.testing.assert_array_equal(shuffled_order(epoch_key(1, 1), 50), orders[(1, 1)])


def _stream(dataset, count):
    rows = list(itertools.islice(dataset.as_numpy_iterator(), count))
    return np.array([r[0] for r in rows]), [np.array([r[1][k] for r in rows]) for k in range(5)]


def test_training_elements_are_epochs_of_orders_and_draws():
    n, seed = 12, 9
    index, draws = _stream(training_elements(n, seed=seed, height=6, width=6, pad=2,
                                             repeat=True), 3 * n)
    for epoch in range(3):
        key = epoch_key(seed, epoch)
        order = shuffled_order(key, n).numpy()
        part = slice(epoch * n, (epoch + 1) * n)
        np.testing.assert_array_equal(index[part], order)
        expected = draw_augmentation(key, n, height=6, width=6, pad=2)
        for got, want in zip(draws, expected):  # element i keeps its own draw row
            np.testing.assert_array_equal(got[part], want.numpy()[order])
    for start in (0, 5, n, 2 * n + 7):
        late, late_draws = _stream(training_elements(
            n, seed=seed, height=6, width=6, pad=2, repeat=True, start_element=start), 5)
        np.testing.assert_array_equal(late, index[start:start + 5])
        np.testing.assert_array_equal(late_draws[0], draws[0][start:start + 5])


def test_training_elements_without_repeat_new_epoch_each_iteration():
    def epochs(seed):
        ds = training_elements(20, seed=seed, height=4, width=4, pad=1, repeat=False)
        return [_stream(ds, 100) for _ in range(3)]

    first, same, other = epochs(3), epochs(3), epochs(4)
    for (index, draws), (index2, draws2) in zip(first, same):
        np.testing.assert_array_equal(index, index2)
        for a, b in zip(draws, draws2):
            np.testing.assert_array_equal(a, b)
    assert all(len(index) == 20 and sorted(index) == list(range(20)) for index, _ in first)
    assert not np.array_equal(first[0][0], first[1][0])
    assert not np.array_equal(first[1][0], first[2][0])
    assert not np.array_equal(first[0][0], other[0][0])


def test_single_image_functions_are_seeded():
    image = tf.ones([10, 10, 1])
    for seed in range(6):
        out = augment.cutout(image, 4, seed=seed).numpy()[:, :, 0]
        zero = np.argwhere(out == 0)
        assert 4 <= len(zero) <= 16
        assert np.ptp(zero[:, 0]) < 4 and np.ptp(zero[:, 1]) < 4
        np.testing.assert_array_equal(out, augment.cutout(image, 4, seed=seed)[:, :, 0])
    crops = [augment.random_crop_flip(image, seed=s, pad=2).numpy() for s in range(8)]
    np.testing.assert_array_equal(crops[3], augment.random_crop_flip(image, seed=3, pad=2))
    assert len({c.tobytes() for c in crops}) > 3
    assert all(c.sum() >= 64 for c in crops)  # at most 2 of 10 rows and columns shifted out


@pytest.mark.parametrize("bad, error", [(-1, ValueError), (2**63, ValueError), (1.5, TypeError),
                                        (True, TypeError), ("3", TypeError),
                                        (np.float64(3), TypeError)])
def test_bad_seeds_and_start(bad, error):
    with pytest.raises(error, match="seed must be an integer"):
        check_seed(bad)
    assert check_seed(np.uint32(5)) == 5 and type(check_seed(np.int64(5))) is int
    assert isinstance(check_seed(None), int) and check_seed(7) == 7
    with pytest.raises(ValueError, match="start_element"):
        training_elements(5, seed=0, height=4, width=4, pad=1, repeat=False, start_element=2)
    with pytest.raises(ValueError, match="start_element"):
        training_elements(5, seed=0, height=4, width=4, pad=1, repeat=True, start_element=-1)
