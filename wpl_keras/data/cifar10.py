"""CIFAR-10 as arrays and ``tf.data`` pipelines (search split, augmentation, cutout).

The ``tf.data`` pipelines (``make_dataset``, ``normalize``, ``MEAN``, ``STD``) are in
:mod:`wpl_keras.data.cifar10_pipeline`; the augmentations (``cutout``, ``random_crop_flip``)
in :mod:`wpl_keras.data.augment`.

Sources, in :func:`load_cifar10`:

* ``data_dir=None``: tensorflow-datasets ``cifar10`` (downloads on a machine with internet);
* ``data_dir`` holding the official python batches (``cifar-10-batches-py/data_batch_1..5``,
  ``test_batch``) or the official ``cifar-10-python.tar.gz``;
* ``data_dir`` holding an image-folder layout ``train/<class>/*`` and ``test/<class>/*``
  (PNG or JPEG), as a folder or as the archives ``cifar10-jpeg-train.tar.gz`` /
  ``cifar10-jpeg-test.tar.gz``. The archives of this project's shared data are real CIFAR-10
  images re-encoded as lossy JPEG (quality ≈ 75): accuracies on them are close to, not
  equal to, accuracies on the official files.

Everything read is validated (uint8 images ``[N, 32, 32, 3]``, as many labels as images,
labels in ``0..9``); errors name the file or archive member. With ``verify=True`` (the default)
files with a standard name are first checked against the standard md5 (:data:`CIFAR10_MD5`).
Python batches are unpickled with an allow-list of numpy globals only.

Decoded image folders/archives are cached as ``.npy`` under a user cache directory
(``$WPL_KERAS_CACHE`` or ``~/.cache/wpl_keras``), keyed by the source path, size and mtime.

The architecture search validates on a split held out from train (:func:`search_splits`),
never on test. Pipelines normalise with the CIFAR-10 channel mean/std,
``x = (x / 255 − mean) / std``, and augment with a 4-pixel padded random crop and a
horizontal flip; cutout (a zeroed ``s × s`` square at a random centre) for final training.
Training order and augmentation are stateless functions of ``(seed, epoch, element index)``
(:mod:`wpl_keras.data.augment`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import io
import os
import pathlib
import pickle
import tarfile
import zlib
from typing import Dict, Optional, Tuple

import numpy as np

from wpl_keras.data.errors import (
    DataChecksumError,
    DataDownloadError,
    DataError,
    DataMissingError,
    download_failure_message,
    verify_standard_files,
)

CLASSES: Tuple[str, ...] = (
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
)
JPEG_ARCHIVES = {"train": "cifar10-jpeg-train.tar.gz", "test": "cifar10-jpeg-test.tar.gz"}
PYTHON_TAR = "cifar-10-python.tar.gz"
_IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
# md5 of the standard files by name: the official python archive and its batches (the values
# torchvision lists), and this project's shared JPEG archives (../shared/data/README.md).
CIFAR10_MD5 = {
    PYTHON_TAR: "c58f30108f718f92721af3b95e74349a",
    "data_batch_1": "c99cafc152244af753f735de768cd75f",
    "data_batch_2": "d4bba439e000b95fd0a9bffe97cbabec",
    "data_batch_3": "54ebc095f3ab1f0389bbae665268c751",
    "data_batch_4": "634d18415352ddfa80567beed471001a",
    "data_batch_5": "482c414d41f54cd18b22e5b47cb7c3cb",
    "test_batch": "40351d587109b95175f43aff81a1287e",
    JPEG_ARCHIVES["train"]: "31b376ceac4ee609a376deb80d4abd34",
    JPEG_ARCHIVES["test"]: "4aae93b47bfcb99b6321c69e84e3d3b4",
}
# The globals a CIFAR-10 python batch pickle may name (numpy arrays, dtypes, py2 bytes).
_PICKLE_GLOBALS = frozenset(
    [(m, "_reconstruct") for m in ("numpy.core.multiarray", "numpy._core.multiarray")]
    + [(m, "scalar") for m in ("numpy.core.multiarray", "numpy._core.multiarray")]
    + [(m, "_frombuffer") for m in ("numpy.core.numeric", "numpy._core.numeric")]
    + [("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode"), ("codecs", "encode")]
)
_NEEDED = (
    f"one of: {PYTHON_TAR}; its extracted cifar-10-batches-py/ (data_batch_1..5 and "
    "test_batch); train/<class>/*.jpg|png with test/<class>/*.jpg|png; or "
    f"{JPEG_ARCHIVES['train']} with {JPEG_ARCHIVES['test']}."
)


class CIFAR10DataError(DataError):
    """A CIFAR-10 file is unreadable or not CIFAR-10 (the message names the file)."""


class CIFAR10MissingError(CIFAR10DataError, DataMissingError):
    """No supported CIFAR-10 layout or an expected file is absent (the message lists them)."""


class CIFAR10ChecksumError(CIFAR10DataError, DataChecksumError):
    """A standard-named CIFAR-10 file does not have the standard file's md5."""


class CIFAR10DownloadError(DataDownloadError):
    """tensorflow-datasets could not download CIFAR-10 (usually: no internet)."""


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
    data_dir: Optional[str] = None,
    *,
    cache_dir: Optional[str] = None,
    verify: bool = True,
    tfds_dir: Optional[str] = None,
) -> CIFAR10Arrays:
    """Loads CIFAR-10 train and test as uint8 arrays, validated.

    Args:
        data_dir: None for tensorflow-datasets; otherwise a folder with the official python
            batches (or their ``.tar.gz``), an image-folder layout, or the JPEG archives.
        cache_dir: where decoded image folders/archives are cached as ``.npy``
            (default :func:`default_cache_dir`).
        verify: check files with a standard name (:data:`CIFAR10_MD5`: the official
            ``cifar-10-python.tar.gz``, its batches, the shared JPEG archives) against the
            standard md5 before reading them; ``False`` loads your own variants under these
            names. Image folders have no standard checksum.
        tfds_dir: tensorflow-datasets data directory (only when ``data_dir`` is None).

    Raises:
        CIFAR10MissingError: ``data_dir`` holds none of the supported layouts (the message
            lists what is expected).
        CIFAR10ChecksumError: a standard-named file is not the standard file (with ``verify``).
        CIFAR10DataError: naming the file (or archive member) that is truncated, corrupt, not
            an image or a python batch, of the wrong size, or has labels outside 0..9 or
            counts that differ.
        CIFAR10DownloadError: tensorflow-datasets could not download (names the files
            ``--data-dir`` needs).
    """
    if data_dir is None:
        return _load_tfds(tfds_dir)
    root = pathlib.Path(data_dir).expanduser()
    if not root.is_dir():
        raise CIFAR10MissingError(
            f"CIFAR-10 data_dir {str(root)!r} does not exist; expected a folder with {_NEEDED}"
        )
    batches = _find_python_batches(root)
    if batches is not None:
        return _load_python_batches(batches, verify)
    official_tar = root / PYTHON_TAR
    if official_tar.is_file():
        return _load_python_tar(official_tar, verify)
    if (root / "train").is_dir() and (root / "test").is_dir():
        return _cached(root, cache_dir, "folder", lambda: _load_folder(root))
    archives = {k: root / v for k, v in JPEG_ARCHIVES.items()}
    if all(p.is_file() for p in archives.values()):
        if verify:
            verify_standard_files(archives.values(), CIFAR10_MD5, error_type=CIFAR10ChecksumError)
        return _cached(root, cache_dir, "jpeg", lambda: _load_archives(archives))
    raise CIFAR10MissingError(f"No CIFAR-10 data found in {str(root)!r}. Expected {_NEEDED}")


def check_arrays(
    images: np.ndarray, labels: np.ndarray, where: str
) -> Tuple[np.ndarray, np.ndarray]:
    """Checks one split: uint8 images ``[N, 32, 32, 3]``, ``N > 0``, and ``N`` integer labels
    in ``0..9``.

    Returns:
        ``(images, labels)`` as uint8 and int32 arrays.

    Raises:
        CIFAR10DataError: naming ``where`` and what is wrong.
    """
    images, labels = np.asarray(images), np.asarray(labels)
    if images.dtype != np.uint8 or images.ndim != 4 or tuple(images.shape[1:]) != (32, 32, 3):
        raise CIFAR10DataError(
            f"{where}: images of dtype {images.dtype} and shape {tuple(images.shape)}; "
            "CIFAR-10 images are uint8 [N, 32, 32, 3]."
        )
    if len(images) == 0:
        raise CIFAR10DataError(f"{where}: holds no images.")
    if labels.ndim != 1 or labels.dtype.kind not in "iu":
        raise CIFAR10DataError(
            f"{where}: labels of dtype {labels.dtype} and shape {tuple(labels.shape)}; "
            "CIFAR-10 labels are integers of shape [N]."
        )
    if len(labels) != len(images):
        raise CIFAR10DataError(
            f"{where}: {len(images)} images but {len(labels)} labels; the counts must be equal."
        )
    if labels.min() < 0 or labels.max() >= len(CLASSES):
        bad = labels[(labels < 0) | (labels >= len(CLASSES))]
        raise CIFAR10DataError(
            f"{where}: label {int(bad[0])} is outside 0..{len(CLASSES) - 1} "
            f"(CIFAR-10 has {len(CLASSES)} classes)."
        )
    return images, labels.astype(np.int32)


def _arrays(x_train, y_train, x_test, y_test, source: str, where: str) -> CIFAR10Arrays:
    x_train, y_train = check_arrays(x_train, y_train, f"{where} (train)")
    x_test, y_test = check_arrays(x_test, y_test, f"{where} (test)")
    return CIFAR10Arrays(x_train, y_train, x_test, y_test, source)


def _tfds_load_cifar10(tfds_dir: Optional[str]):
    import tensorflow_datasets as tfds

    train, test = tfds.load(
        "cifar10", split=["train", "test"], batch_size=-1, as_supervised=True, data_dir=tfds_dir
    )
    return tfds.as_numpy(train), tfds.as_numpy(test)


def _load_tfds(tfds_dir: Optional[str]) -> CIFAR10Arrays:
    """CIFAR-10 from tensorflow-datasets (downloads into ``tfds_dir`` on first use).

    Raises:
        CIFAR10DownloadError: naming the failure and the files ``--data-dir`` needs.
    """
    try:
        (xtr, ytr), (xte, yte) = _tfds_load_cifar10(tfds_dir)
    except Exception as error:  # tfds raises many kinds of import, download and IO errors
        raise CIFAR10DownloadError(
            download_failure_message("CIFAR-10 with tensorflow-datasets", error, _NEEDED)
        ) from error
    return _arrays(xtr, ytr, xte, yte, "tfds", "tensorflow-datasets cifar10")


def _find_python_batches(root: pathlib.Path) -> Optional[pathlib.Path]:
    for candidate in (root, root / "cifar-10-batches-py"):
        if (candidate / "data_batch_1").is_file() and (candidate / "test_batch").is_file():
            return candidate
    return None


class _BatchUnpickler(pickle.Unpickler):
    """Unpickles a CIFAR-10 python batch, resolving only the globals a batch uses (numpy
    arrays and dtypes), so that a foreign pickle cannot run code."""

    def find_class(self, module: str, name: str):
        if (module, name) not in _PICKLE_GLOBALS:
            raise pickle.UnpicklingError(
                f"global {module}.{name} is not part of a CIFAR-10 python batch"
            )
        if module.startswith("numpy.core") and hasattr(np, "_core"):
            module = "numpy._core" + module[len("numpy.core"):]
        return super().find_class(module, name)


def _unpickle(handle, where: str) -> dict:
    try:
        obj = _BatchUnpickler(handle, encoding="bytes").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError,
            ImportError, IndexError, KeyError, MemoryError, OverflowError, OSError) as error:
        raise CIFAR10DataError(
            f"{where}: not a CIFAR-10 python batch; the pickle is truncated or corrupt "
            f"({type(error).__name__}: {error})."
        ) from error
    if not isinstance(obj, dict):
        raise CIFAR10DataError(
            f"{where}: not a CIFAR-10 python batch (holds a {type(obj).__name__}, not a dict)."
        )
    return obj


def _decode_batch(obj: dict, where: str) -> Tuple[np.ndarray, np.ndarray]:
    """Images ``[N, 32, 32, 3]`` and labels of one batch: ``data`` is ``[N, 3072]`` bytes in
    channel-major order (1024 red, 1024 green, 1024 blue values per row)."""
    data = obj.get(b"data", obj.get("data"))
    labels = obj.get(b"labels", obj.get("labels"))
    if data is None or labels is None:
        raise CIFAR10DataError(f"{where}: python batch without 'data'/'labels' entries.")
    data, labels = np.asarray(data), np.asarray(labels)
    if data.ndim != 2 or data.shape[1] != 3072:
        raise CIFAR10DataError(
            f"{where}: 'data' has shape {data.shape}; a CIFAR-10 batch holds rows of "
            "3072 = 3 x 32 x 32 bytes."
        )
    if data.dtype != np.uint8:
        if data.dtype.kind not in "iu" or (data.size and (data.min() < 0 or data.max() > 255)):
            raise CIFAR10DataError(
                f"{where}: 'data' of dtype {data.dtype} is not pixel bytes 0..255."
            )
        data = data.astype(np.uint8)
    images = data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    return check_arrays(images, labels, where)


def _load_python_batches(folder: pathlib.Path, verify: bool) -> CIFAR10Arrays:
    paths = [folder / f"data_batch_{k}" for k in range(1, 6)] + [folder / "test_batch"]
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise CIFAR10MissingError(f"missing CIFAR-10 python batches {missing}.")
    if verify:
        verify_standard_files(paths, CIFAR10_MD5, error_type=CIFAR10ChecksumError)
    parts = []
    for path in paths:
        with open(path, "rb") as handle:
            parts.append(_decode_batch(_unpickle(handle, str(path)), str(path)))
    return _arrays(
        np.concatenate([p[0] for p in parts[:5]]), np.concatenate([p[1] for p in parts[:5]]),
        parts[5][0], parts[5][1], "python-batches", str(folder),
    )


def _load_python_tar(path: pathlib.Path, verify: bool) -> CIFAR10Arrays:
    if verify:
        verify_standard_files([path], CIFAR10_MD5, error_type=CIFAR10ChecksumError)
    found: Dict[str, Tuple[np.ndarray, np.ndarray]] = {}
    with _reading_archive(path):
        with tarfile.open(path, "r:gz") as tar:
            for member in tar:
                name = os.path.basename(member.name)
                if member.isfile() and (name.startswith("data_batch_") or name == "test_batch"):
                    where = f"{path}:{member.name}"
                    found[name] = _decode_batch(_unpickle(tar.extractfile(member), where), where)
    names = [f"data_batch_{k}" for k in range(1, 6)]
    missing = [n for n in names + ["test_batch"] if n not in found]
    if missing:
        raise CIFAR10DataError(f"{str(path)!r} lacks CIFAR-10 batches {missing}.")
    return _arrays(
        np.concatenate([found[n][0] for n in names]),
        np.concatenate([found[n][1] for n in names]),
        found["test_batch"][0], found["test_batch"][1], "python-batches", str(path),
    )


@contextlib.contextmanager
def _reading_archive(path: pathlib.Path):
    """Turns the errors of reading a (gzip) tar archive into a CIFAR10DataError naming it."""
    try:
        yield
    except (tarfile.TarError, EOFError, zlib.error, OSError) as error:
        raise CIFAR10DataError(
            f"{path}: cannot read the archive; it is truncated or corrupt "
            f"({type(error).__name__}: {error})."
        ) from error


def _decode_image(data: bytes, where: str) -> np.ndarray:
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as image:
            array = np.asarray(image.convert("RGB"), np.uint8)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as error:
        raise CIFAR10DataError(
            f"{where}: not a readable image; truncated or corrupt ({type(error).__name__}: "
            f"{error})."
        ) from error
    if array.shape != (32, 32, 3):
        raise CIFAR10DataError(f"{where}: expected a 32x32 RGB image, got shape {array.shape}.")
    return array


def _class_of(path_parts, where: str) -> int:
    if len(path_parts) < 2 or path_parts[-2] not in CLASSES:
        raise CIFAR10DataError(
            f"{where}: image not under a class folder; expected <split>/<class>/<file> with "
            f"class in {', '.join(CLASSES)}."
        )
    return CLASSES.index(path_parts[-2])


def _stack(items, where: str) -> Tuple[np.ndarray, np.ndarray]:
    if not items:
        raise CIFAR10MissingError(f"{where}: no images (*.jpg, *.jpeg, *.png) found.")
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
        with _reading_archive(archives[split]), tarfile.open(archives[split], "r:*") as tar:
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
    """Decodes with ``load`` once and keeps the arrays as ``.npy`` files keyed by the folder's
    path and its files' names, sizes and mtimes; an unreadable cache is rebuilt."""
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
    if kind == "folder" and next(iter((root / "train").rglob("*.jp*g")), None) is not None:
        source = "image-folder-jpeg"
    if all(f.is_file() for f in files):
        try:
            cached = [np.load(f, allow_pickle=False) for f in files]
            return _arrays(*cached, source=source, where=f"cache {files[0].parent}")
        except (OSError, ValueError):  # an unreadable or inconsistent cache is rebuilt
            pass
    arrays = load()
    folder.mkdir(parents=True, exist_ok=True)
    for f, a in zip(files, arrays):
        tmp = f.with_suffix(".tmp.npy")
        np.save(tmp, a)
        os.replace(tmp, f)
    return _arrays(*arrays, source=source, where=str(root))


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
