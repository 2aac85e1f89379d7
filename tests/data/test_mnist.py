"""MNIST loader: real idx parsing on tiny files, validation split, errors, tfds failure path."""

import gzip
import os

import numpy as np
import pytest

from wpl_keras.data import mnist


def _write_dir(path, n_train=12, n_test=5, rows=4, cols=3, seed=0):
    rng = np.random.default_rng(seed)
    arrays = {
        "train_images": rng.integers(0, 256, (n_train, rows, cols), dtype=np.uint8),
        "train_labels": rng.integers(0, 10, (n_train,), dtype=np.uint8),
        "test_images": rng.integers(0, 256, (n_test, rows, cols), dtype=np.uint8),
        "test_labels": rng.integers(0, 10, (n_test,), dtype=np.uint8),
    }
    for key, filename in mnist.MNIST_FILES.items():
        mnist.write_idx(os.path.join(path, filename), arrays[key])
    return arrays


def test_parse_idx_hand_written_header():
    raw = bytes([0, 0, 8, 2, 0, 0, 0, 2, 0, 0, 0, 3]) + bytes(range(6))
    array = mnist.parse_idx(raw)
    assert array.shape == (2, 3)
    np.testing.assert_array_equal(array, [[0, 1, 2], [3, 4, 5]])


def test_roundtrip_and_scaling(tmp_path):
    arrays = _write_dir(tmp_path)
    splits = mnist.load_mnist(str(tmp_path), validation_size=4, seed=3)
    assert splits.sizes() == {"train": 8, "val": 4, "test": 5}
    assert splits.x_train.dtype == np.float32 and splits.y_train.dtype == np.int32
    np.testing.assert_allclose(splits.x_test, arrays["test_images"] / 255.0, rtol=1e-6)
    np.testing.assert_array_equal(splits.y_test, arrays["test_labels"])
    # train + val is a permutation of the original training set, pairs kept together
    x_all = np.concatenate([splits.x_train, splits.x_val])
    y_all = np.concatenate([splits.y_train, splits.y_val])
    original = {(arrays["train_images"][i] / 255.0).astype(np.float32).tobytes(): arrays["train_labels"][i]
                for i in range(12)}
    assert len(x_all) == 12
    for x, y in zip(x_all, y_all):
        assert original[x.tobytes()] == y
    assert splits.source.startswith("idx:")


def test_validation_split_is_seeded():
    x = np.arange(20)
    y = np.arange(20)
    a = mnist.split_validation(x, y, 5, seed=1)
    b = mnist.split_validation(x, y, 5, seed=1)
    c = mnist.split_validation(x, y, 5, seed=2)
    np.testing.assert_array_equal(a[2], b[2])
    assert not np.array_equal(a[2], c[2])
    assert set(a[0]).isdisjoint(a[2])
    with pytest.raises(ValueError, match="validation_size"):
        mnist.split_validation(x, y, 20)


def test_missing_file_names_expected_files(tmp_path):
    _write_dir(tmp_path)
    os.remove(tmp_path / "t10k-labels-idx1-ubyte.gz")
    with pytest.raises(mnist.MnistDataError, match="t10k-labels-idx1-ubyte.gz") as info:
        mnist.load_mnist(str(tmp_path))
    for filename in mnist.MNIST_FILES.values():
        assert filename in str(info.value)


def test_missing_directory(tmp_path):
    with pytest.raises(mnist.MnistDataError, match="train-images-idx3-ubyte.gz"):
        mnist.load_mnist(str(tmp_path / "nope"))


def test_corrupt_gzip(tmp_path):
    _write_dir(tmp_path)
    (tmp_path / "train-images-idx3-ubyte.gz").write_bytes(b"this is not gzip")
    with pytest.raises(mnist.MnistDataError, match="corrupt"):
        mnist.load_mnist(str(tmp_path))


def test_truncated_payload(tmp_path):
    _write_dir(tmp_path)
    path = tmp_path / "train-labels-idx1-ubyte.gz"
    with gzip.open(path, "rb") as handle:
        raw = handle.read()
    with gzip.open(path, "wb") as handle:
        handle.write(raw[:-3])
    with pytest.raises(mnist.MnistDataError, match="truncated or corrupt"):
        mnist.load_mnist(str(tmp_path))


def test_bad_magic(tmp_path):
    _write_dir(tmp_path)
    with gzip.open(tmp_path / "t10k-images-idx3-ubyte.gz", "wb") as handle:
        handle.write(b"\x12\x34\x08\x03" + bytes(20))
    with pytest.raises(mnist.MnistDataError, match="not an idx file"):
        mnist.load_mnist(str(tmp_path))


def test_label_image_count_mismatch(tmp_path):
    _write_dir(tmp_path)
    mnist.write_idx(str(tmp_path / "train-labels-idx1-ubyte.gz"), np.zeros((7,), np.uint8))
    with pytest.raises(mnist.MnistDataError, match="do not match"):
        mnist.load_mnist(str(tmp_path), validation_size=2)


def test_failed_download_points_to_data_dir(monkeypatch):
    import tensorflow_datasets as tfds

    def offline(*args, **kwargs):
        raise ConnectionError("Temporary failure in name resolution")

    monkeypatch.setattr(tfds, "load", offline)
    with pytest.raises(mnist.MnistDownloadError) as info:
        mnist.load_mnist(None)
    message = str(info.value)
    assert "download" in message and "--data-dir" in message and "WPL_DATA_DIR" in message


def test_tfds_path_uses_tfds_arrays(monkeypatch):
    import tensorflow_datasets as tfds

    rng = np.random.default_rng(0)
    train = (rng.integers(0, 256, (10, 28, 28, 1), dtype=np.uint8), rng.integers(0, 10, 10))
    test = (rng.integers(0, 256, (4, 28, 28, 1), dtype=np.uint8), rng.integers(0, 10, 4))
    monkeypatch.setattr(tfds, "load", lambda *a, **k: [train, test])
    monkeypatch.setattr(tfds, "as_numpy", lambda x: x)
    splits = mnist.load_mnist(None, validation_size=3)
    assert splits.sizes() == {"train": 7, "val": 3, "test": 4}
    assert splits.x_test.shape == (4, 28, 28)
    assert splits.source == "tensorflow-datasets:mnist"


def test_make_dataset_batches(tmp_path):
    _write_dir(tmp_path)
    splits = mnist.load_mnist(str(tmp_path), validation_size=2)
    ds = mnist.mnist_datasets(splits, batch_size=4, seed=0)
    x, y = next(iter(ds["train"]))
    assert tuple(x.shape) == (4, 4, 3) and tuple(y.shape) == (4,)
    sizes = [int(b[1].shape[0]) for b in ds["test"]]
    assert sizes == [4, 1]
    with pytest.raises(ValueError, match="differ in length"):
        mnist.make_dataset(splits.x_train, splits.y_test, batch_size=2)
