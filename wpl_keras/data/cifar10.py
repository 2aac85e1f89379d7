"""CIFAR-10 as arrays and ``tf.data`` pipelines (search split, augmentation, cutout).

Sources, in :func:`load_cifar10`:

* ``data_dir=None``: tensorflow-datasets ``cifar10`` (downloads on a machine with internet);
* ``data_dir`` holding the official python batches (``cifar-10-batches-py/data_batch_1..5``,
  ``test_batch``) or the official ``cifar-10-python.tar.gz``;
* ``data_dir`` holding an image-folder layout ``train/<class>/*`` and ``test/<class>/*``
  (PNG or JPEG), as a folder or as the archives ``cifar10-jpeg-train.tar.gz`` /
  ``cifar10-jpeg-test.tar.gz``. The archives of this project's shared data are real CIFAR-10
  images re-encoded as lossy JPEG (quality ≈ 75): accuracies on them are close to, not
  equal to, accuracies on the official files.

Decoded image folders/archives are cached as ``.npy`` under a user cache directory
(``$WPL_KERAS_CACHE`` or ``~/.cache/wpl_keras``), keyed by the source path, size and mtime.

The architecture search validates on a split held out from train (:func:`search_splits`),
never on test. Pipelines normalise with the CIFAR-10 channel mean/std,
``x = (x / 255 − mean) / std``, and augment with a 4-pixel padded random crop and a
horizontal flip; cutout (a zeroed ``s × s`` square at a random centre) for final training.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import os
import pathlib
import pickle
import tarfile
from typing import Dict, Optional, Tuple

import numpy as np
import tensorflow as tf

CLASSES: Tuple[str, ...] = (
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
)
MEAN = np.array([0.4914, 0.4822, 0.4465], np.float32)
STD = np.array([0.2470, 0.2435, 0.2616], np.float32)
JPEG_ARCHIVES = {"train": "cifar10-jpeg-train.tar.gz", "test": "cifar10-jpeg-test.tar.gz"}
_IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


@dataclasses.dataclass(frozen=True)
class CIFAR10Arrays:
    """uint8 images ``[N, 32, 32, 3]`` and int32 labels ``[N]`` of train and test."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    source: str

    @property
    def lossy_jpeg(self) -> bool:
        """True when the images come from lossy JPEG re-encodings (say so with any number)."""
        return "jpeg" in self.source


# --------------------------------------------------------------------------- loading
def default_cache_dir() -> pathlib.Path:
    """``$WPL_KERAS_CACHE/cifar10`` or ``~/.cache/wpl_keras/cifar10`` (outside the repo)."""
    root = os.environ.get("WPL_KERAS_CACHE") or os.path.join(
        os.path.expanduser("~"), ".cache", "wpl_keras"
    )
    return pathlib.Path(root) / "cifar10"


def load_cifar10(
    data_dir: Optional[str] = None, *, cache_dir: Optional[str] = None
) -> CIFAR10Arrays:
    """Loads CIFAR-10 train and test as uint8 arrays.

    Args:
        data_dir: None for tensorflow-datasets; otherwise a folder with the official python
            batches (or their ``.tar.gz``), an image-folder layout, or the JPEG archives.
        cache_dir: where decoded image folders/archives are cached as ``.npy``
            (default :func:`default_cache_dir`).

    Raises:
        FileNotFoundError: if ``data_dir`` holds none of the supported layouts (the message
            lists what is expected).
    """
    if data_dir is None:
        return _load_tfds()
    root = pathlib.Path(data_dir).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"CIFAR-10 data_dir {str(root)!r} does not exist.")
    batches = _find_python_batches(root)
    if batches is not None:
        return _load_python_batches(batches)
    official_tar = root / "cifar-10-python.tar.gz"
    if official_tar.is_file():
        return _load_python_tar(official_tar)
    if (root / "train").is_dir() and (root / "test").is_dir():
        return _cached(root, cache_dir, "folder", lambda: _load_folder(root))
    archives = {k: root / v for k, v in JPEG_ARCHIVES.items()}
    if all(p.is_file() for p in archives.values()):
        return _cached(root, cache_dir, "jpeg", lambda: _load_archives(archives))
    raise FileNotFoundError(
        f"No CIFAR-10 data found in {str(root)!r}. Expected one of: "
        "cifar-10-batches-py/ (data_batch_1..5 and test_batch), cifar-10-python.tar.gz, "
        "train/<class>/*.jpg|png with test/<class>/*.jpg|png, or "
        f"{JPEG_ARCHIVES['train']} with {JPEG_ARCHIVES['test']}."
    )


def _load_tfds() -> CIFAR10Arrays:
    import tensorflow_datasets as tfds

    train, test = tfds.load("cifar10", split=["train", "test"], batch_size=-1, as_supervised=True)
    (xtr, ytr), (xte, yte) = tfds.as_numpy(train), tfds.as_numpy(test)
    return CIFAR10Arrays(
        xtr.astype(np.uint8), ytr.astype(np.int32), xte.astype(np.uint8), yte.astype(np.int32),
        "tfds",
    )


def _find_python_batches(root: pathlib.Path) -> Optional[pathlib.Path]:
    for candidate in (root, root / "cifar-10-batches-py"):
        if (candidate / "data_batch_1").is_file() and (candidate / "test_batch").is_file():
            return candidate
    return None


def _decode_batch(obj: dict) -> Tuple[np.ndarray, np.ndarray]:
    data = obj.get(b"data", obj.get("data"))
    labels = obj.get(b"labels", obj.get("labels"))
    if data is None or labels is None:
        raise ValueError("CIFAR-10 python batch without 'data'/'labels' entries.")
    images = np.asarray(data, np.uint8).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    return images, np.asarray(labels, np.int32)


def _load_python_batches(folder: pathlib.Path) -> CIFAR10Arrays:
    parts = []
    for k in range(1, 6):
        path = folder / f"data_batch_{k}"
        if not path.is_file():
            raise FileNotFoundError(f"missing CIFAR-10 python batch {str(path)!r}.")
        with open(path, "rb") as handle:
            parts.append(_decode_batch(pickle.load(handle, encoding="bytes")))
    with open(folder / "test_batch", "rb") as handle:
        x_test, y_test = _decode_batch(pickle.load(handle, encoding="bytes"))
    x_train = np.concatenate([p[0] for p in parts])
    y_train = np.concatenate([p[1] for p in parts])
    return CIFAR10Arrays(x_train, y_train, x_test, y_test, "python-batches")


def _load_python_tar(path: pathlib.Path) -> CIFAR10Arrays:
    found: Dict[str, Tuple[np.ndarray, np.ndarray]] = {}
    with tarfile.open(path, "r:gz") as tar:
        for member in tar:
            name = os.path.basename(member.name)
            if member.isfile() and (name.startswith("data_batch_") or name == "test_batch"):
                found[name] = _decode_batch(
                    pickle.load(tar.extractfile(member), encoding="bytes")
                )
    names = [f"data_batch_{k}" for k in range(1, 6)]
    missing = [n for n in names + ["test_batch"] if n not in found]
    if missing:
        raise FileNotFoundError(f"{str(path)!r} lacks CIFAR-10 batches {missing}.")
    return CIFAR10Arrays(
        np.concatenate([found[n][0] for n in names]),
        np.concatenate([found[n][1] for n in names]),
        found["test_batch"][0], found["test_batch"][1], "python-batches",
    )


def _decode_image(data: bytes, where: str) -> np.ndarray:
    from PIL import Image

    with Image.open(io.BytesIO(data)) as image:
        array = np.asarray(image.convert("RGB"), np.uint8)
    if array.shape != (32, 32, 3):
        raise ValueError(f"{where}: expected a 32x32 RGB image, got shape {array.shape}.")
    return array


def _class_of(path_parts, where: str) -> int:
    if len(path_parts) < 2 or path_parts[-2] not in CLASSES:
        raise ValueError(
            f"{where}: image not under a class folder; expected <split>/<class>/<file> with "
            f"class in {', '.join(CLASSES)}."
        )
    return CLASSES.index(path_parts[-2])


def _stack(items, where: str) -> Tuple[np.ndarray, np.ndarray]:
    if not items:
        raise FileNotFoundError(f"{where}: no images (*.jpg, *.jpeg, *.png) found.")
    items.sort(key=lambda t: t[0])
    return (
        np.stack([t[2] for t in items]).astype(np.uint8),
        np.asarray([t[1] for t in items], np.int32),
    )


def _load_folder(root: pathlib.Path) -> Tuple[np.ndarray, ...]:
    out = []
    for split in ("train", "test"):
        items = []
        for path in (root / split).rglob("*"):
            if path.suffix.lower() in _IMAGE_SUFFIXES and path.is_file():
                rel = path.relative_to(root).parts
                image = _decode_image(path.read_bytes(), str(path))
                items.append((rel, _class_of(rel, str(path)), image))
        out.extend(_stack(items, str(root / split)))
    return tuple(out)


def _load_archives(archives: Dict[str, pathlib.Path]) -> Tuple[np.ndarray, ...]:
    out = []
    for split in ("train", "test"):
        items = []
        with tarfile.open(archives[split], "r:*") as tar:
            for member in tar:
                if not member.isfile() or not member.name.lower().endswith(_IMAGE_SUFFIXES):
                    continue
                where = f"{archives[split]}:{member.name}"
                parts = tuple(p for p in member.name.split("/") if p not in ("", "."))
                image = _decode_image(tar.extractfile(member).read(), where)
                items.append((parts, _class_of(parts, where), image))
        out.extend(_stack(items, str(archives[split])))
    return tuple(out)


def _cached(root: pathlib.Path, cache_dir, kind: str, load) -> CIFAR10Arrays:
    stats = []
    for path in sorted(root.iterdir()):
        st = path.stat()
        stats.append(f"{path.name}:{st.st_size}:{st.st_mtime_ns}")
    text = str(root.resolve()) + "|" + kind + "|" + ";".join(stats)
    key = hashlib.sha1(text.encode()).hexdigest()[:16]
    folder = pathlib.Path(cache_dir) if cache_dir is not None else default_cache_dir()
    names = ("x_train", "y_train", "x_test", "y_test")
    files = [folder / f"{kind}-{key}-{n}.npy" for n in names]
    source = "jpeg-archives" if kind == "jpeg" else "image-folder"
    if all(f.is_file() for f in files):
        arrays = [np.load(f) for f in files]
    else:
        arrays = load()
        folder.mkdir(parents=True, exist_ok=True)
        for f, a in zip(files, arrays):
            tmp = f.with_suffix(".tmp.npy")
            np.save(tmp, a)
            os.replace(tmp, f)
    if kind == "folder" and next(iter((root / "train").rglob("*.jp*g")), None) is not None:
        source = "image-folder-jpeg"
    return CIFAR10Arrays(*arrays, source=source)


# --------------------------------------------------------------------------- splits
@dataclasses.dataclass(frozen=True)
class SearchSplits:
    """Train minus a held-out part (``train``) and that part (``valid``); test stays apart."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_valid: np.ndarray
    y_valid: np.ndarray


def search_splits(arrays: CIFAR10Arrays, num_valid: int = 5000, seed: int = 0) -> SearchSplits:
    """Holds ``num_valid`` random train images out for validation (never the test split).

    Raises:
        ValueError: if ``num_valid`` is not in ``[1, len(train) − 1]``.
    """
    n = len(arrays.x_train)
    if not 0 < num_valid < n:
        raise ValueError(f"num_valid must be in [1, {n - 1}], got {num_valid}.")
    order = np.random.default_rng(seed).permutation(n)
    valid, train = order[:num_valid], order[num_valid:]
    return SearchSplits(
        arrays.x_train[train], arrays.y_train[train], arrays.x_train[valid], arrays.y_train[valid]
    )


def subsample(x: np.ndarray, y: np.ndarray, size: Optional[int], seed: int = 0):
    """At most ``size`` random examples of ``(x, y)`` (all when ``size`` is None)."""
    if size is None or size >= len(x):
        return x, y
    idx = np.random.default_rng(seed).permutation(len(x))[:size]
    return x[idx], y[idx]


# --------------------------------------------------------------------------- pipelines
def normalize(images: tf.Tensor) -> tf.Tensor:
    """``(images / 255 − mean) / std`` per channel, float32."""
    return (tf.cast(images, tf.float32) / 255.0 - MEAN) / STD


def random_crop_flip(image: tf.Tensor, pad: int = 4) -> tf.Tensor:
    """Pads ``pad`` zeros on each side, crops back at a random offset, flips left-right at
    random (one image ``[H, W, C]``)."""
    shape = tf.shape(image)
    padded = tf.pad(image, [[pad, pad], [pad, pad], [0, 0]])
    image = tf.image.random_crop(padded, shape)
    return tf.image.random_flip_left_right(image)


def cutout(image: tf.Tensor, size: int) -> tf.Tensor:
    """Zeroes a ``size × size`` square (clipped at the border) at a random centre
    (DeVries & Taylor, 2017) of one image ``[H, W, C]``."""
    h, w = tf.shape(image)[0], tf.shape(image)[1]
    cy = tf.random.uniform([], 0, h, tf.int32)
    cx = tf.random.uniform([], 0, w, tf.int32)
    ys = tf.range(h)[:, None]
    xs = tf.range(w)[None, :]
    half = size // 2
    top, left = cy - half, cx - half
    inside = (ys >= top) & (ys < top + size) & (xs >= left) & (xs < left + size)
    return image * tf.cast(~inside, image.dtype)[:, :, None]


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
) -> tf.data.Dataset:
    """A batched ``tf.data`` pipeline of normalised images and int32 labels.

    With ``training``: shuffle, padded random crop and horizontal flip, then cutout of
    ``cutout_size`` (0 disables it). ``repeat`` makes it endless.

    Raises:
        ValueError: for an empty split, mismatched lengths or a non-positive batch size.
    """
    if batch_size <= 0:
        raise ValueError(f"batch_size must be positive, got {batch_size}.")
    if len(x) == 0 or len(x) != len(y):
        raise ValueError(f"need as many labels as images (>0), got {len(x)} and {len(y)}.")
    ds = tf.data.Dataset.from_tensor_slices((x, np.asarray(y, np.int32)))
    if training:
        ds = ds.shuffle(min(len(x), 10000), seed=seed, reshuffle_each_iteration=True)
    if repeat:
        ds = ds.repeat()

    def prepare(image, label):
        image = normalize(image)
        if training:
            image = random_crop_flip(image)
            if cutout_size > 0:
                image = cutout(image, cutout_size)
        return image, label

    ds = ds.map(prepare, num_parallel_calls=tf.data.AUTOTUNE)
    return ds.batch(batch_size, drop_remainder=drop_remainder).prefetch(tf.data.AUTOTUNE)
