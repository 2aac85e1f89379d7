"""MNIST as NumPy arrays and ``tf.data`` pipelines, from tensorflow-datasets or idx files.

Two sources, one result:

* ``data_dir=None``: ``tensorflow_datasets.load("mnist")`` (downloads on first use into
  ``tfds_dir`` or tfds' default cache). Without internet the download fails and
  :class:`MnistDownloadError` says so and asks for a directory of idx files instead.
* ``data_dir=DIR``: the four standard idx files, gzip-compressed, read by :func:`read_idx`:
  ``train-images-idx3-ubyte.gz``, ``train-labels-idx1-ubyte.gz``,
  ``t10k-images-idx3-ubyte.gz``, ``t10k-labels-idx1-ubyte.gz``.

The idx format (LeCun & Cortes) is a big-endian header ``0x00 0x00 <dtype> <ndim>`` followed by
``ndim`` big-endian uint32 sizes and the data; MNIST uses dtype ``0x08`` (unsigned byte).
Images are scaled to ``x = pixel / 255`` (float32, shape ``[N, 28, 28]``), labels are int32.

Every source is validated before use: images must be uint8 ``[N, 28, 28]``, labels uint8 in
``0..9``, with as many labels as images; errors name the file and what is wrong. With
``verify=True`` (the default) the idx files are first checked against the official md5s.

A validation split of ``validation_size`` examples is held out from the training set with a
seeded permutation; the test set is never touched for model selection.

This module reads no environment variables: applications resolve ``WPL_DATA_DIR`` themselves.
"""

from __future__ import annotations

import dataclasses
import gzip
import os
import struct
from typing import Optional

import numpy as np
import tensorflow as tf

from wpl_keras.data.errors import (
    DataChecksumError,
    DataDownloadError,
    DataError,
    DataMissingError,
    download_failure_message,
    verify_standard_files,
)
from wpl_keras.data.options import without_autotune_thread
from wpl_keras.utils.validation import check_number

MNIST_FILES = {
    "train_images": "train-images-idx3-ubyte.gz",
    "train_labels": "train-labels-idx1-ubyte.gz",
    "test_images": "t10k-images-idx3-ubyte.gz",
    "test_labels": "t10k-labels-idx1-ubyte.gz",
}

_IDX_DTYPES = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


# md5 of the official gzip-compressed idx files (as in ../shared/data/README.md).
MNIST_MD5 = {
    "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
    "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
    "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
    "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
}
IMAGE_SHAPE = (28, 28)
NUM_CLASSES = 10


class MnistDataError(DataError):
    """MNIST idx files are missing, unreadable or inconsistent (the message names the file)."""


class MnistMissingError(MnistDataError, DataMissingError):
    """MNIST idx files or their folder are absent (the message lists the four files)."""


class MnistChecksumError(MnistDataError, DataChecksumError):
    """A standard-named MNIST file does not have the official file's md5."""


class MnistDownloadError(DataDownloadError):
    """tensorflow-datasets could not download or prepare MNIST (usually: no internet)."""


@dataclasses.dataclass(frozen=True)
class MnistSplits:
    """MNIST as arrays: images ``float32 [N, 28, 28]`` in ``[0, 1]``, labels ``int32 [N]``."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    source: str

    def sizes(self) -> dict:
        """Number of examples per split."""
        return {"train": len(self.y_train), "val": len(self.y_val), "test": len(self.y_test)}


# --------------------------------------------------------------------------- idx parsing
def parse_idx(raw: bytes, *, name: str = "<bytes>") -> np.ndarray:
    """Parses the bytes of one (decompressed) idx file into an array.

    Header: two zero bytes, a dtype code, the number of dimensions ``d``, then ``d`` big-endian
    uint32 sizes; the payload must hold exactly ``prod(sizes)`` items.

    Raises:
        MnistDataError: for a bad magic number, unknown dtype or a payload of the wrong size.
    """
    if len(raw) < 4:
        raise MnistDataError(f"{name}: too short for an idx header ({len(raw)} bytes).")
    zero1, zero2, code, ndim = struct.unpack(">BBBB", raw[:4])
    if zero1 != 0 or zero2 != 0 or code not in _IDX_DTYPES or ndim == 0:
        raise MnistDataError(
            f"{name}: not an idx file (magic bytes {raw[:4].hex()}; expected 0000 08 01 for "
            "labels or 0000 08 03 for images)."
        )
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise MnistDataError(f"{name}: truncated idx header.")
    shape = struct.unpack(">" + "I" * ndim, raw[4:header])
    dtype = _IDX_DTYPES[code]
    expected = int(np.prod(shape)) * dtype.itemsize
    payload = len(raw) - header
    if payload != expected:
        raise MnistDataError(
            f"{name}: header says shape {shape} ({expected} bytes) but the file holds "
            f"{payload} bytes of data (truncated or corrupt)."
        )
    return np.frombuffer(raw, dtype=dtype, offset=header).reshape(shape).astype(dtype.newbyteorder("="))


def read_idx(path: str) -> np.ndarray:
    """Reads one gzip-compressed idx file (see :func:`parse_idx`).

    Raises:
        MnistDataError: if the file is missing, not gzip, or not a valid idx file.
    """
    if not os.path.isfile(path):
        raise MnistMissingError(f"missing MNIST file {path}.")
    try:
        with gzip.open(path, "rb") as handle:
            raw = handle.read()
    except (OSError, EOFError) as error:
        raise MnistDataError(f"{path}: cannot decompress ({error}); the file is corrupt.") from error
    return parse_idx(raw, name=path)


def write_idx(path: str, array: np.ndarray) -> None:
    """Writes a uint8 array as a gzip-compressed idx file (for tests and small fixtures)."""
    array = np.asarray(array)
    if array.dtype != np.uint8:
        raise ValueError(f"write_idx writes uint8 arrays, got {array.dtype}.")
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(
        ">" + "I" * array.ndim, *array.shape
    )
    with gzip.open(path, "wb") as handle:
        handle.write(header + array.tobytes())


def _expected_files_message(data_dir: str) -> str:
    return (
        f"MNIST directory {data_dir!r} must contain the four standard idx files: "
        + ", ".join(MNIST_FILES.values())
        + "."
    )


def check_images(images: np.ndarray, where: str) -> None:
    """Checks MNIST images: uint8 ``[N, 28, 28]`` with ``N > 0``.

    Raises:
        MnistDataError: naming ``where`` and the wrong dtype, rank, size or count.
    """
    if images.dtype != np.uint8:
        raise MnistDataError(
            f"{where}: images have dtype {images.dtype}; MNIST images are unsigned bytes "
            "(idx type 0x08, pixel values 0..255)."
        )
    if images.ndim != 3 or tuple(images.shape[1:]) != IMAGE_SHAPE:
        raise MnistDataError(
            f"{where}: images have shape {tuple(images.shape)}; MNIST images are "
            f"[N, {IMAGE_SHAPE[0]}, {IMAGE_SHAPE[1]}]."
        )
    if len(images) == 0:
        raise MnistDataError(f"{where}: holds no images.")


def check_labels(labels: np.ndarray, where: str) -> None:
    """Checks MNIST labels: unsigned bytes ``[N]`` with values in ``0..9``.

    Raises:
        MnistDataError: naming ``where`` and the wrong dtype, rank or label value.
    """
    if labels.dtype != np.uint8 or labels.ndim != 1:
        raise MnistDataError(
            f"{where}: labels have dtype {labels.dtype} and shape {tuple(labels.shape)}; MNIST "
            "labels are unsigned bytes of shape [N] (idx type 0x08, one dimension)."
        )
    if labels.size and int(labels.max()) >= NUM_CLASSES:
        raise MnistDataError(
            f"{where}: label {int(labels.max())} is outside 0..{NUM_CLASSES - 1} "
            f"(MNIST has {NUM_CLASSES} classes)."
        )


def check_split(images: np.ndarray, labels: np.ndarray, images_at: str, labels_at: str) -> None:
    """Checks one split: valid images, valid labels, and as many labels as images.

    Raises:
        MnistDataError: naming the file (``images_at``/``labels_at``) that is wrong.
    """
    check_images(images, images_at)
    check_labels(labels, labels_at)
    if len(images) != len(labels):
        raise MnistDataError(
            f"{images_at} holds {len(images)} images but {labels_at} holds {len(labels)} "
            "labels; the counts must be equal."
        )


def read_mnist_idx_dir(data_dir: str, *, verify: bool = True):
    """Reads and validates the four MNIST idx files of ``data_dir``.

    Args:
        data_dir: folder with the four files of :data:`MNIST_FILES`.
        verify: check each file against the official md5 of :data:`MNIST_MD5` before reading
            it; ``False`` loads variants (e.g. your own subsets) under the standard names.

    Returns:
        ``(x_train, y_train, x_test, y_test)`` as uint8 arrays (images ``[N, 28, 28]``).

    Raises:
        MnistMissingError: naming every expected file when one is missing.
        MnistChecksumError: a file's md5 differs from the official one (with ``verify``).
        MnistDataError: naming the file that is corrupt, of the wrong type or size, has labels
            outside 0..9, or whose count differs from its partner's.
    """
    if not os.path.isdir(data_dir):
        raise MnistMissingError(
            f"no such directory {data_dir!r}. " + _expected_files_message(data_dir)
        )
    paths = {key: os.path.join(data_dir, name) for key, name in MNIST_FILES.items()}
    missing = [MNIST_FILES[key] for key, path in paths.items() if not os.path.isfile(path)]
    if missing:
        raise MnistMissingError(
            f"missing {', '.join(missing)}. " + _expected_files_message(data_dir)
        )
    if verify:
        verify_standard_files(paths.values(), MNIST_MD5, error_type=MnistChecksumError)
    arrays = {}
    for key, path in paths.items():
        try:
            arrays[key] = read_idx(path)
        except MnistDataError as error:
            raise MnistDataError(f"{error} " + _expected_files_message(data_dir)) from error
    for split in ("train", "test"):
        check_split(
            arrays[f"{split}_images"], arrays[f"{split}_labels"],
            paths[f"{split}_images"], paths[f"{split}_labels"],
        )
    keys = ("train_images", "train_labels", "test_images", "test_labels")
    return tuple(arrays[key] for key in keys)


def _tfds_load_mnist(tfds_dir: Optional[str]):
    import tensorflow_datasets as tfds

    return tfds.as_numpy(
        tfds.load(
            "mnist", split=["train", "test"], batch_size=-1, as_supervised=True, data_dir=tfds_dir
        )
    )


def _load_tfds(tfds_dir: Optional[str]):
    """MNIST from tensorflow-datasets (downloads into ``tfds_dir`` on first use), validated.

    Raises:
        MnistDownloadError: naming the failure (a missing module or the download) and the idx
            files that ``--data-dir`` needs instead.
        MnistDataError: if tfds returns arrays that are not MNIST's.
    """
    try:
        (x_train, y_train), (x_test, y_test) = _tfds_load_mnist(tfds_dir)
    except Exception as error:  # tfds raises many kinds of import, download and IO errors
        raise MnistDownloadError(
            download_failure_message(
                "MNIST with tensorflow-datasets", error,
                "the four MNIST idx files: " + ", ".join(MNIST_FILES.values()) + ".",
            )
        ) from error
    out = []
    for split, images, labels in (("train", x_train, y_train), ("test", x_test, y_test)):
        where = f"tensorflow-datasets mnist {split} split"
        images, labels = np.asarray(images), np.asarray(labels)
        if images.ndim == 4 and images.shape[-1] == 1:
            images = images[..., 0]
        if labels.dtype.kind not in "iu" or labels.ndim != 1:
            raise MnistDataError(
                f"{where}: labels of dtype {labels.dtype} and shape {labels.shape}; expected "
                "integer class ids of shape [N]."
            )
        bad = labels[(labels < 0) | (labels >= NUM_CLASSES)]
        if bad.size:
            raise MnistDataError(
                f"{where}: label {int(bad[0])} is outside 0..{NUM_CLASSES - 1} "
                f"(MNIST has {NUM_CLASSES} classes)."
            )
        labels = labels.astype(np.uint8)
        check_split(images, labels, where, where)
        out.extend([images, labels])
    return tuple(out)


# --------------------------------------------------------------------------- public loaders
def split_validation(x: np.ndarray, y: np.ndarray, validation_size: int, seed: int = 0):
    """Holds out ``validation_size`` examples chosen by a seeded permutation.

    Returns:
        ``(x_train, y_train, x_val, y_val)``.
    """
    validation_size = check_number(
        f"split_validation: validation_size ({len(y)} training examples)", validation_size,
        integer=True, minimum=0, maximum=len(y), exclusive_maximum=True)
    order = np.random.default_rng(seed).permutation(len(y))
    val, train = order[:validation_size], order[validation_size:]
    return x[train], y[train], x[val], y[val]


def load_mnist(
    data_dir: Optional[str] = None,
    *,
    validation_size: int = 5000,
    seed: int = 0,
    tfds_dir: Optional[str] = None,
    verify: bool = True,
) -> MnistSplits:
    """Loads MNIST as float arrays with a held-out validation split.

    ``x = pixel / 255`` as float32 ``[N, 28, 28]``; labels int32.

    Args:
        data_dir: directory with the four idx ``.gz`` files; None downloads with
            tensorflow-datasets.
        validation_size: training examples held out as validation (taken before any training).
        seed: seed of the validation permutation.
        tfds_dir: tensorflow-datasets cache directory (only when ``data_dir`` is None).
        verify: check the idx files of ``data_dir`` against the official md5s
            (:data:`MNIST_MD5`); ``False`` loads your own variants under the standard names.
            tensorflow-datasets verifies its downloads itself.

    Raises:
        MnistMissingError: missing idx files (the message lists the expected names).
        MnistChecksumError: an idx file is not the official one (with ``verify``).
        MnistDataError: a corrupt idx file, images not uint8 ``[N, 28, 28]``, labels outside
            0..9 or counts that differ (the message names the file).
        MnistDownloadError: tfds could not download (points to ``--data-dir``/``WPL_DATA_DIR``).
    """
    if data_dir is None:
        x_train, y_train, x_test, y_test = _load_tfds(tfds_dir)
        source = "tensorflow-datasets:mnist"
    else:
        x_train, y_train, x_test, y_test = read_mnist_idx_dir(str(data_dir), verify=verify)
        source = f"idx:{os.path.abspath(str(data_dir))}"
    x_train, y_train, x_val, y_val = split_validation(x_train, y_train, validation_size, seed)

    def images(a):
        return (np.asarray(a, np.float32) / 255.0).astype(np.float32)

    def labels(a):
        return np.asarray(a, np.int32)

    return MnistSplits(
        images(x_train), labels(y_train), images(x_val), labels(y_val),
        images(x_test), labels(y_test), source,
    )


def make_dataset(
    x: np.ndarray,
    y: np.ndarray,
    *,
    batch_size: int,
    shuffle: bool = False,
    repeat: bool = False,
    seed: Optional[int] = None,
    drop_remainder: bool = False,
) -> tf.data.Dataset:
    """``tf.data`` pipeline over arrays: (shuffle) → (repeat) → batch → prefetch.

    Args:
        x, y: images and labels with the same leading size.
        batch_size: examples per batch (> 0).
        shuffle: reshuffle each pass with a buffer of the whole array.
        repeat: repeat forever (for step-counted training).
        seed: shuffle seed.
        drop_remainder: drop the last incomplete batch.
    """
    if len(x) != len(y):
        raise ValueError(f"x and y differ in length: {len(x)} vs {len(y)}.")
    batch_size = check_number("make_dataset: batch_size", batch_size, integer=True, minimum=1)
    dataset = tf.data.Dataset.from_tensor_slices((x, y))
    if shuffle:
        dataset = dataset.shuffle(len(y), seed=seed, reshuffle_each_iteration=True)
    if repeat:
        dataset = dataset.repeat()
    return without_autotune_thread(
        dataset.batch(batch_size, drop_remainder=drop_remainder).prefetch(tf.data.AUTOTUNE))


def mnist_datasets(
    splits: MnistSplits, *, batch_size: int = 64, seed: Optional[int] = None
) -> dict:
    """``{"train": shuffled+repeated, "val": ..., "test": ...}`` ``tf.data`` pipelines."""
    return {
        "train": make_dataset(
            splits.x_train, splits.y_train, batch_size=batch_size, shuffle=True, repeat=True, seed=seed
        ),
        "val": make_dataset(splits.x_val, splits.y_val, batch_size=batch_size),
        "test": make_dataset(splits.x_test, splits.y_test, batch_size=batch_size),
    }
