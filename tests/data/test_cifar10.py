"""Tests for the CIFAR-10 loaders and pipelines, on tiny files made under tmp_path."""

import io
import itertools
import json
import pathlib
import pickle
import subprocess
import sys
import tarfile

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from wpl_keras.data import cifar10, cifar10_pipeline
from wpl_keras.data.augment import cutout
from wpl_keras.data.cifar10 import CLASSES, load_cifar10, search_splits
from wpl_keras.data.cifar10_pipeline import make_dataset


def _images(n, seed):
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)
    return images, rng.integers(0, 10, n).astype(np.int32)


def _write_python_batches(folder, per_batch=4, protocol=pickle.DEFAULT_PROTOCOL):
    folder.mkdir(parents=True)
    xs, ys = [], []
    for k, name in enumerate([f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]):
        x, y = _images(per_batch, k)
        data = x.transpose(0, 3, 1, 2).reshape(per_batch, -1)
        with open(folder / name, "wb") as f:
            pickle.dump({b"data": data, b"labels": y.tolist()}, f, protocol=protocol)
        xs.append(x)
        ys.append(y)
    return xs, ys


def _png(array):
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.mark.parametrize("protocol", [2, pickle.DEFAULT_PROTOCOL])
def test_python_batches(tmp_path, protocol):
    xs, ys = _write_python_batches(tmp_path / "cifar-10-batches-py", protocol=protocol)
    arrays = load_cifar10(str(tmp_path), verify=False)
    assert arrays.x_train.shape == (20, 32, 32, 3) and arrays.x_test.shape == (4, 32, 32, 3)
    np.testing.assert_array_equal(arrays.x_train, np.concatenate(xs[:5]))
    np.testing.assert_array_equal(arrays.y_test, ys[5])
    assert arrays.source == "python-batches" and not arrays.lossy_jpeg


def test_official_python_tar(tmp_path):
    xs, ys = _write_python_batches(tmp_path / "src" / "cifar-10-batches-py")
    data = tmp_path / "data"
    data.mkdir()
    with tarfile.open(data / "cifar-10-python.tar.gz", "w:gz") as tar:
        tar.add(tmp_path / "src" / "cifar-10-batches-py", arcname="cifar-10-batches-py")
    arrays = load_cifar10(str(data), verify=False)
    np.testing.assert_array_equal(arrays.x_train[4:8], xs[1])
    np.testing.assert_array_equal(arrays.y_train, np.concatenate(ys[:5]))


def test_image_folder_png_is_lossless_and_cached(tmp_path):
    root = tmp_path / "folder"
    x, y = _images(6, 0)
    for split in ("train", "test"):
        for i in range(6):
            d = root / split / CLASSES[y[i]]
            d.mkdir(parents=True, exist_ok=True)
            (d / f"{i:04d}.png").write_bytes(_png(x[i]))
    cache = tmp_path / "cache"
    arrays = load_cifar10(str(root), cache_dir=str(cache))
    order = sorted(range(6), key=lambda i: (CLASSES[y[i]], i))
    np.testing.assert_array_equal(arrays.x_train, x[order])
    np.testing.assert_array_equal(arrays.y_train, y[order])
    assert arrays.source == "image-folder"
    assert len(list(cache.glob("*.npy"))) == 4
    again = load_cifar10(str(root), cache_dir=str(cache))
    np.testing.assert_array_equal(again.x_test, arrays.x_test)


def test_jpeg_archives(tmp_path):
    x, y = _images(5, 1)
    x[:] = 128  # flat images survive JPEG almost exactly
    for split, name in cifar10.JPEG_ARCHIVES.items():
        with tarfile.open(tmp_path / name, "w:gz") as tar:
            for i in range(5):
                buffer = io.BytesIO()
                Image.fromarray(x[i]).save(buffer, format="JPEG", quality=75)
                info = tarfile.TarInfo(f"{split}/{CLASSES[y[i]]}/{i:04d}.jpg")
                info.size = len(buffer.getvalue())
                tar.addfile(info, io.BytesIO(buffer.getvalue()))
    arrays = load_cifar10(str(tmp_path), cache_dir=str(tmp_path / "cache"), verify=False)
    assert arrays.x_train.shape == (5, 32, 32, 3) and arrays.lossy_jpeg
    assert np.abs(arrays.x_train.astype(int) - 128).max() <= 2
    assert sorted(arrays.y_test.tolist()) == sorted(y.tolist())


def test_missing_and_bad_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_cifar10(str(tmp_path / "nope"))
    with pytest.raises(FileNotFoundError, match="cifar-10-batches-py.*cifar10-jpeg-train.tar.gz"):
        load_cifar10(str(tmp_path))
    (tmp_path / "train" / "cat").mkdir(parents=True)
    (tmp_path / "test" / "unicorn").mkdir(parents=True)
    (tmp_path / "train" / "cat" / "0.png").write_bytes(_png(_images(1, 0)[0][0]))
    (tmp_path / "test" / "unicorn" / "0.png").write_bytes(_png(_images(1, 0)[0][0]))
    with pytest.raises(ValueError, match="class folder"):
        load_cifar10(str(tmp_path), cache_dir=str(tmp_path / "cache"))


def test_search_splits_hold_out_train_only():
    x, y = _images(50, 0)
    xt, yt = _images(10, 9)
    arrays = cifar10.CIFAR10Arrays(x, y, xt, yt, "synthetic")
    splits = search_splits(arrays, num_valid=10, seed=3)
    assert len(splits.x_train) == 40 and len(splits.x_valid) == 10
    train_set = {a.tobytes() for a in splits.x_train}
    valid_set = {a.tobytes() for a in splits.x_valid}
    assert not train_set & valid_set
    assert valid_set <= {a.tobytes() for a in x}
    assert not valid_set & {a.tobytes() for a in xt}
    with pytest.raises(ValueError, match="num_valid"):
        search_splits(arrays, num_valid=50)


def test_pipeline_normalises_and_augments(seed):
    x, y = _images(8, 0)
    ds = make_dataset(x, y, 4, training=False)
    images, labels = next(iter(ds))
    expected = (x[:4] / 255.0 - cifar10_pipeline.MEAN) / cifar10_pipeline.STD
    np.testing.assert_allclose(images.numpy(), expected, atol=1e-5)
    np.testing.assert_array_equal(labels.numpy(), y[:4])
    aug = make_dataset(x, y, 8, training=True, cutout_size=8, seed=seed, drop_remainder=True)
    images, _ = next(iter(aug))
    assert images.shape == (8, 32, 32, 3)
    # cutout leaves an exact zero square in (almost) every image
    zeros = np.sum(images.numpy() == 0.0, axis=(1, 2, 3))
    assert np.all(zeros >= 3 * 4 * 4)
    with pytest.raises(ValueError, match="batch_size"):
        make_dataset(x, y, 0, training=False)
    with pytest.raises(ValueError, match="labels"):
        make_dataset(x, y[:3], 2, training=False)


def test_cutout_square():
    image = tf.ones([10, 10, 1])
    out = cutout(image, 4, seed=0).numpy()[:, :, 0]
    zero = np.argwhere(out == 0)
    assert 4 <= len(zero) <= 16
    assert np.ptp(zero[:, 0]) < 4 and np.ptp(zero[:, 1]) < 4


def _train(x, y, batch_size, seed, count, **kwargs):
    ds = make_dataset(x, y, batch_size, training=True, seed=seed, **kwargs)
    return list(itertools.islice(ds.as_numpy_iterator(), count))


def _assert_same(batches, others):
    assert len(batches) == len(others)
    for (images, labels), (images2, labels2) in zip(batches, others):
        np.testing.assert_array_equal(images, images2)
        np.testing.assert_array_equal(labels, labels2)


def test_training_pipeline_is_a_function_of_the_seed():
    x, y = _images(20, 0)
    kwargs = dict(cutout_size=8, repeat=True, drop_remainder=True)
    first, same, other = (_train(x, y, 8, s, 6, **kwargs) for s in (5, 5, 6))  # 2.4 epochs
    _assert_same(first, same)
    assert all(not np.array_equal(a[0], b[0]) for a, b in zip(first, other))
    assert any(not np.array_equal(a[1], b[1]) for a, b in zip(first, other))
    # without repeat each iteration (a Keras epoch) is a new epoch, equal for equal seeds
    one, two = (make_dataset(x, y, 8, training=True, cutout_size=8, seed=5) for _ in range(2))
    epochs = [list(one.as_numpy_iterator()) for _ in range(3)]
    _assert_same([b for e in epochs for b in e],
                 [b for _ in range(3) for b in two.as_numpy_iterator()])
    assert [len(b[1]) for b in epochs[0]] == [8, 8, 4]
    assert not np.array_equal(epochs[0][0][0], epochs[1][0][0])


def test_augmentation_varies_over_epochs_and_elements():
    n = 10
    x = np.repeat(_images(1, 3)[0], n, axis=0)  # one image n times, told apart by label
    y = np.arange(n, dtype=np.int32)
    for cutout_size in (0, 8):
        epochs = _train(x, y, n, 0, 3, cutout_size=cutout_size, repeat=True)  # batch = epoch
        for images, labels in epochs:
            assert sorted(labels) == list(range(n))  # each element once per epoch
            assert len({image.tobytes() for image in images}) >= n - 1
        by_label = [dict(zip(labels, images)) for images, labels in epochs]
        for a, b in [(0, 1), (1, 2)]:
            changed = [not np.array_equal(by_label[a][k], by_label[b][k]) for k in range(n)]
            assert sum(changed) >= n - 1
        assert not np.array_equal(epochs[0][1], epochs[1][1])  # the order changes too


def test_labels_stay_with_their_images():
    n = 10
    fills = 20 * np.arange(n) + 30
    x = np.broadcast_to(fills[:, None, None, None], (n, 32, 32, 3)).astype(np.uint8)
    y = (7 * np.arange(n) % n).astype(np.int32)  # label k belongs to image 3k mod 10
    owner = {int(label): i for i, label in enumerate(y)}
    expected = (fills[:, None] / 255.0 - cifar10_pipeline.MEAN) / cifar10_pipeline.STD
    for batch_size, cut in [(4, 12), (3, 0), (10, 16)]:
        for images, labels in _train(x, y, batch_size, 2, 8, cutout_size=cut, repeat=True):
            for image, label in zip(images, labels):
                kept = np.any(image != 0, axis=-1)
                np.testing.assert_allclose(image[kept], np.broadcast_to(
                    expected[owner[int(label)]], image[kept].shape), atol=1e-5)
                assert np.all(image[~kept] == 0)
                assert kept.sum() >= 28 * 28 - cut * cut


def test_training_stream_independent_of_batch_size_and_resumable():
    x, y = _images(12, 1)
    kwargs = dict(cutout_size=8, repeat=True)
    by4 = _train(x, y, 4, 3, 9, **kwargs)
    by6 = _train(x, y, 6, 3, 6, **kwargs)
    for k in (0, 1):
        np.testing.assert_array_equal(np.concatenate([b[k] for b in by4]),
                                      np.concatenate([b[k] for b in by6]))
    for start in (1, 3, 5):  # inside epoch 0, at the epoch boundary, inside epoch 1
        _assert_same(_train(x, y, 4, 3, 4 - start % 2, start_batch=start, **kwargs),
                     by4[start:start + 4 - start % 2])
    with pytest.raises(ValueError, match="start_batch"):
        make_dataset(x, y, 4, training=True, seed=3, start_batch=2)
    with pytest.raises(ValueError, match="start_batch"):
        make_dataset(x, y, 4, training=False, repeat=True, start_batch=2)
    with pytest.raises(ValueError, match="start_batch"):
        make_dataset(x, y, 4, training=True, repeat=True, seed=3, start_batch=-1)
    with pytest.raises(ValueError, match="cutout_size"):
        make_dataset(x, y, 4, training=True, seed=3, cutout_size=-1)
    with pytest.raises(ValueError, match="seed must be an integer"):
        make_dataset(x, y, 4, training=True, seed=-2)


def test_eval_pipeline_is_ordered_and_unaugmented():
    x, y = _images(10, 4)
    expected = (x / 255.0 - cifar10_pipeline.MEAN) / cifar10_pipeline.STD
    for repeat, drop, count in [(False, False, 3), (True, False, 5), (False, True, 2)]:
        ds = make_dataset(x, y, 4, training=False, repeat=repeat, drop_remainder=drop, seed=7)
        batches = list(itertools.islice(ds.as_numpy_iterator(), count + 1))
        assert len(batches) == count + (1 if repeat else 0)
        images = np.concatenate([b[0] for b in batches])
        labels = np.concatenate([b[1] for b in batches])
        idx = np.arange(len(labels)) % 10
        np.testing.assert_allclose(images, expected[idx], atol=1e-5)
        np.testing.assert_array_equal(labels, y[idx])
        assert labels.dtype == np.int32 and images.dtype == np.float32


def test_training_and_eval_pipelines_state_their_length():
    x, y = _images(10, 2)
    for drop, batches in [(False, 3), (True, 2)]:
        for training in (False, True):
            ds = make_dataset(x, y, 4, training=training, drop_remainder=drop, seed=1)
            assert int(ds.cardinality()) == batches == len(list(ds)), (training, drop)
    for training in (False, True):
        ds = make_dataset(x, y, 4, training=training, repeat=True, seed=1)
        assert int(ds.cardinality()) == int(tf.data.INFINITE_CARDINALITY)


_TWO_REPLICAS = """
import json, numpy as np, tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
from wpl_keras.data.cifar10_pipeline import make_dataset
rng = np.random.default_rng(0)
x = rng.integers(0, 256, (12, 32, 32, 3), dtype=np.uint8)
y = rng.integers(0, 10, 12).astype(np.int32)
strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
out = {}
for repeat in (True, False):
    build = lambda: make_dataset(x, y, 8, training=True, cutout_size=8, seed=4, repeat=repeat,
                                 drop_remainder=True)
    dist = strategy.experimental_distribute_dataset(build())
    if repeat:
        single = [b for _, b in zip(range(4), build())]
        it = iter(dist)
        got = [next(it) for _ in range(4)]
    else:
        one = build()
        single = [b for _ in range(3) for b in one]
        got = [b for _ in range(3) for b in dist]
    got = [[np.concatenate([t.numpy() for t in strategy.experimental_local_results(part)])
            for part in batch] for batch in got]
    out[str(repeat)] = len(got) == len(single) and all(
        np.array_equal(g[0], s[0].numpy()) and np.array_equal(g[1], s[1].numpy())
        for g, s in zip(got, single))
print(json.dumps(out))
"""


@pytest.mark.slow
def test_two_replicas_see_the_one_device_batches():
    root = pathlib.Path(__file__).resolve().parents[2]
    proc = subprocess.run([sys.executable, "-c", _TWO_REPLICAS], cwd=str(root), text=True,
                          capture_output=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == {"True": True, "False": True}


def test_real_jpeg_archives(shared_data):
    arrays = load_cifar10(str(shared_data / "cifar10"))
    assert arrays.x_train.shape == (50000, 32, 32, 3) and arrays.x_test.shape == (10000, 32, 32, 3)
    assert arrays.lossy_jpeg  # lossy JPEG re-encodings of the real images
    np.testing.assert_array_equal(np.bincount(arrays.y_train), [5000] * 10)
    assert 110 < arrays.x_train[::50].mean() < 130  # CIFAR-10 mean pixel is about 121
