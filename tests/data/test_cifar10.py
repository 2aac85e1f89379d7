"""Tests for the CIFAR-10 loaders and pipelines, on tiny files made under tmp_path."""

import io
import pickle
import tarfile

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from wpl_keras.data import cifar10
from wpl_keras.data.cifar10 import (
    CLASSES,
    cutout,
    load_cifar10,
    make_dataset,
    search_splits,
)


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
    expected = (x[:4] / 255.0 - cifar10.MEAN) / cifar10.STD
    np.testing.assert_allclose(images.numpy(), expected, atol=1e-5)
    np.testing.assert_array_equal(labels.numpy(), y[:4])
    aug = make_dataset(x, y, 8, training=True, cutout_size=8, seed=1, drop_remainder=True)
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
    out = cutout(image, 4).numpy()[:, :, 0]
    zero = np.argwhere(out == 0)
    assert 4 <= len(zero) <= 16
    assert np.ptp(zero[:, 0]) < 4 and np.ptp(zero[:, 1]) < 4


def test_real_jpeg_archives(shared_data):
    arrays = load_cifar10(str(shared_data / "cifar10"))
    assert arrays.x_train.shape == (50000, 32, 32, 3) and arrays.x_test.shape == (10000, 32, 32, 3)
    assert arrays.lossy_jpeg  # lossy JPEG re-encodings of the real images
    np.testing.assert_array_equal(np.bincount(arrays.y_train), [5000] * 10)
    assert 110 < arrays.x_train[::50].mean() < 130  # CIFAR-10 mean pixel is about 121
