"""MNIST loader: real idx parsing on tiny files, validation split, errors, tfds failure path."""

import gzip
import hashlib
import os

import numpy as np
import pytest

from wpl_keras.data import mnist


def _write_dir(path, n_train=12, n_test=5, rows=28, cols=28, seed=0):
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
    splits = mnist.load_mnist(str(tmp_path), validation_size=4, seed=3, verify=False)
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
    with pytest.raises(mnist.MnistDataError, match="train-images-idx3-ubyte.gz.*corrupt"):
        mnist.load_mnist(str(tmp_path), verify=False)


def test_truncated_payload(tmp_path):
    _write_dir(tmp_path)
    path = tmp_path / "train-labels-idx1-ubyte.gz"
    with gzip.open(path, "rb") as handle:
        raw = handle.read()
    with gzip.open(path, "wb") as handle:
        handle.write(raw[:-3])
    pattern = "train-labels-idx1-ubyte.gz.*truncated or corrupt"
    with pytest.raises(mnist.MnistDataError, match=pattern):
        mnist.load_mnist(str(tmp_path), verify=False)


def test_bad_magic(tmp_path):
    _write_dir(tmp_path)
    with gzip.open(tmp_path / "t10k-images-idx3-ubyte.gz", "wb") as handle:
        handle.write(b"\x12\x34\x08\x03" + bytes(20))
    with pytest.raises(mnist.MnistDataError, match="t10k-images-idx3-ubyte.gz.*not an idx file"):
        mnist.load_mnist(str(tmp_path), verify=False)


def test_label_image_count_mismatch(tmp_path):
    _write_dir(tmp_path)
    mnist.write_idx(str(tmp_path / "train-labels-idx1-ubyte.gz"), np.zeros((7,), np.uint8))
    pattern = "12 images but .*train-labels-idx1-ubyte.gz holds 7 labels"
    with pytest.raises(mnist.MnistDataError, match=pattern):
        mnist.load_mnist(str(tmp_path), validation_size=2, verify=False)


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
    splits = mnist.load_mnist(str(tmp_path), validation_size=2, verify=False)
    ds = mnist.mnist_datasets(splits, batch_size=4, seed=0)
    x, y = next(iter(ds["train"]))
    assert tuple(x.shape) == (4, 28, 28) and tuple(y.shape) == (4,)
    sizes = [int(b[1].shape[0]) for b in ds["test"]]
    assert sizes == [4, 1]
    with pytest.raises(ValueError, match="differ in length"):
        mnist.make_dataset(splits.x_train, splits.y_test, batch_size=2)


# --------------------------------------------------------------------------- validation
def _write_raw_idx(path, code, shape, payload):
    header = bytes([0, 0, code, len(shape)]) + b"".join(s.to_bytes(4, "big") for s in shape)
    with gzip.open(path, "wb") as handle:
        handle.write(header + payload)


def _expect_error(tmp_path, filename, pattern):
    with pytest.raises(mnist.MnistDataError, match=pattern) as info:
        mnist.load_mnist(str(tmp_path), validation_size=2, verify=False)
    assert filename in str(info.value)


@pytest.mark.parametrize("shape", [(12, 32, 32), (12, 28, 27), (12, 1, 784), (12, 28, 28, 1)])
def test_images_of_another_size_are_rejected(tmp_path, shape):
    _write_dir(tmp_path)
    mnist.write_idx(str(tmp_path / "train-images-idx3-ubyte.gz"), np.zeros(shape, np.uint8))
    _expect_error(tmp_path, "train-images-idx3-ubyte.gz", r"\[N, 28, 28\]")


def test_flat_images_are_rejected(tmp_path):
    _write_dir(tmp_path)
    mnist.write_idx(str(tmp_path / "t10k-images-idx3-ubyte.gz"), np.zeros((5, 784), np.uint8))
    _expect_error(tmp_path, "t10k-images-idx3-ubyte.gz", r"shape \(5, 784\)")


@pytest.mark.parametrize("code,dtype", [(0x0D, ">f4"), (0x0E, ">f8"), (0x09, ">i1"), (0x0C, ">i4")])
def test_images_that_are_not_bytes_are_rejected(tmp_path, code, dtype):
    _write_dir(tmp_path)
    payload = np.full((12, 28, 28), 0.5).astype(dtype).tobytes()
    _write_raw_idx(tmp_path / "train-images-idx3-ubyte.gz", code, (12, 28, 28), payload)
    _expect_error(tmp_path, "train-images-idx3-ubyte.gz", "unsigned bytes")


def test_float_labels_are_rejected(tmp_path):
    _write_dir(tmp_path)
    payload = np.arange(5, dtype=">f4").tobytes()
    _write_raw_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", 0x0D, (5,), payload)
    _expect_error(tmp_path, "t10k-labels-idx1-ubyte.gz", "labels have dtype float32")


@pytest.mark.parametrize("bad", [10, 255])
def test_labels_outside_0_to_9_are_rejected(tmp_path, bad):
    arrays = _write_dir(tmp_path)
    labels = arrays["test_labels"].copy()
    labels[2] = bad
    mnist.write_idx(str(tmp_path / "t10k-labels-idx1-ubyte.gz"), labels)
    _expect_error(tmp_path, "t10k-labels-idx1-ubyte.gz", f"label {bad} is outside 0..9")


def test_labels_file_with_images_inside_is_rejected(tmp_path):
    _write_dir(tmp_path)
    mnist.write_idx(str(tmp_path / "train-labels-idx1-ubyte.gz"), np.zeros((12, 28, 28), np.uint8))
    _expect_error(tmp_path, "train-labels-idx1-ubyte.gz", r"shape \[N\]")


def test_more_labels_than_images_and_empty_files(tmp_path):
    _write_dir(tmp_path)
    mnist.write_idx(str(tmp_path / "t10k-labels-idx1-ubyte.gz"), np.zeros((9,), np.uint8))
    _expect_error(tmp_path, "t10k-labels-idx1-ubyte.gz", "5 images but .* 9 labels")
    _write_dir(tmp_path)
    mnist.write_idx(str(tmp_path / "t10k-images-idx3-ubyte.gz"), np.zeros((0, 28, 28), np.uint8))
    _expect_error(tmp_path, "t10k-images-idx3-ubyte.gz", "holds no images")


def test_tfds_arrays_are_validated(monkeypatch):
    import tensorflow_datasets as tfds

    rng = np.random.default_rng(0)
    good = (rng.integers(0, 256, (6, 28, 28, 1), dtype=np.uint8), rng.integers(0, 10, 6))
    cases = [
        ((np.zeros((6, 32, 32, 1), np.uint8), good[1]), r"\[N, 28, 28\]"),
        ((good[0].astype(np.float32), good[1]), "unsigned bytes"),
        ((good[0], np.full(6, 10)), "outside 0..9"),
        ((good[0], np.zeros(4, np.int64)), "6 images but .* 4 labels"),
    ]
    monkeypatch.setattr(tfds, "as_numpy", lambda x: x)
    for bad, pattern in cases:
        monkeypatch.setattr(tfds, "load", lambda *a, bad=bad, **k: [good, bad])
        where = "tensorflow-datasets mnist test split.*"
        with pytest.raises(mnist.MnistDataError, match=where + pattern):
            mnist.load_mnist(None, validation_size=2)


# --------------------------------------------------------------------------- checksums
def test_standard_names_are_verified_by_default(tmp_path):
    _write_dir(tmp_path)
    with pytest.raises(mnist.MnistChecksumError) as info:
        mnist.load_mnist(str(tmp_path), validation_size=2)
    error = info.value
    path = str(tmp_path / "train-images-idx3-ubyte.gz")
    actual = hashlib.md5(open(path, "rb").read()).hexdigest()
    assert error.path == path and error.actual == actual
    assert error.expected == mnist.MNIST_MD5["train-images-idx3-ubyte.gz"]
    assert path in str(error) and actual in str(error) and error.expected in str(error)
    assert "verify=False" in str(error)
    assert isinstance(error, mnist.MnistDataError)  # callers catching MnistDataError see it
    splits = mnist.load_mnist(str(tmp_path), validation_size=2, verify=False)
    assert splits.sizes() == {"train": 10, "val": 2, "test": 5}


def _real_copy(shared_data, tmp_path):
    for filename in mnist.MNIST_FILES.values():
        os.symlink(shared_data / "mnist" / filename, tmp_path / filename)


def test_real_files_load_verified(shared_data):
    splits = mnist.load_mnist(str(shared_data / "mnist"))
    assert splits.sizes() == {"train": 55000, "val": 5000, "test": 10000}
    assert splits.x_train.shape[1:] == (28, 28)
    assert 0.0 <= splits.x_test.min() < splits.x_test.max() <= 1.0
    np.testing.assert_array_equal(np.unique(splits.y_test), np.arange(10))


def test_truncated_real_file_fails_the_checksum(shared_data, tmp_path):
    _real_copy(shared_data, tmp_path)
    name = "t10k-labels-idx1-ubyte.gz"
    os.remove(tmp_path / name)
    raw = (shared_data / "mnist" / name).read_bytes()
    (tmp_path / name).write_bytes(raw[:-100])
    with pytest.raises(mnist.MnistChecksumError, match=name):
        mnist.load_mnist(str(tmp_path))
    with pytest.raises(mnist.MnistDataError, match=f"{name}.*corrupt"):
        mnist.load_mnist(str(tmp_path), verify=False)


@pytest.mark.parametrize("call, error, match", [
    (lambda x, y: mnist.split_validation(x, y, 10), ValueError,
     r"split_validation: validation_size \(10 training examples\) must be an integer in \[0, 10\)"),
    (lambda x, y: mnist.split_validation(x, y, -1), ValueError, "validation_size"),
    (lambda x, y: mnist.split_validation(x, y, 2.0), TypeError, "validation_size"),
    (lambda x, y: mnist.make_dataset(x, y, batch_size=0), ValueError,
     "make_dataset: batch_size must be an integer >= 1"),
    (lambda x, y: mnist.make_dataset(x, y, batch_size="4"), TypeError, "make_dataset: batch_size"),
])
def test_sizes_are_checked_naming_argument_and_range(call, error, match):
    x, y = np.zeros((10, 28, 28), np.float32), np.arange(10, dtype=np.int32)
    with pytest.raises(error, match=match):
        call(x, y)
    assert len(mnist.split_validation(x, y, np.int64(3))[3]) == 3
