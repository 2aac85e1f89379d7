"""CIFAR-10: every broken file gives an error that names it, wrong data never loads, and files
with a standard name are checked against the standard md5."""

import hashlib
import io
import os
import pickle
import tarfile

import numpy as np
import pytest
from PIL import Image

from wpl_keras.data import cifar10
from wpl_keras.data.cifar10 import CLASSES, CIFAR10ChecksumError, CIFAR10DataError, load_cifar10

BATCHES = [f"data_batch_{k}" for k in range(1, 6)] + ["test_batch"]


def _batch(n=4, seed=0, row=3072, labels=None):
    rng = np.random.default_rng(seed)
    data = rng.integers(0, 256, (n, row), dtype=np.uint8)
    labels = rng.integers(0, 10, n).tolist() if labels is None else labels
    return {b"batch_label": b"tiny", b"data": data, b"labels": labels}


def _write_batches(folder, replace=None):
    """The six python batches in ``folder``; ``replace`` maps a batch name to its raw bytes."""
    folder.mkdir(parents=True, exist_ok=True)
    for k, name in enumerate(BATCHES):
        raw = pickle.dumps(_batch(seed=k))
        (folder / name).write_bytes((replace or {}).get(name, raw))
    return folder


def _tar_gz(path, members):
    """A gzip tar archive of ``{member name: bytes}``."""
    with tarfile.open(path, "w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def _image_bytes(value=128, size=32, fmt="JPEG"):
    buffer = io.BytesIO()
    Image.fromarray(np.full((size, size, 3), value, np.uint8)).save(buffer, format=fmt)
    return buffer.getvalue()


def _jpeg_archives(folder, extra=None):
    """The two JPEG archives with two images each; ``extra`` adds members to the train one."""
    folder.mkdir(parents=True, exist_ok=True)
    for split, name in cifar10.JPEG_ARCHIVES.items():
        members = {f"{split}/{CLASSES[i]}/{i:04d}.jpg": _image_bytes(40 * i) for i in range(2)}
        if split == "train":
            members.update(extra or {})
        _tar_gz(folder / name, members)


def _load(folder, tmp_path, **kwargs):
    return load_cifar10(str(folder), cache_dir=str(tmp_path / "cache"), **kwargs)


def _expect(folder, tmp_path, where, pattern):
    with pytest.raises(CIFAR10DataError, match=pattern) as info:
        _load(folder, tmp_path, verify=False)
    assert str(where) in str(info.value)
    return info.value


# --------------------------------------------------------------------------- python batches
@pytest.mark.parametrize(
    "raw,pattern",
    [
        # seeded noise: every pytest-xdist worker collects the same parameters
        (np.random.default_rng(0).bytes(3000), "not a CIFAR-10 python batch"),
        (pickle.dumps(_batch())[:500], "truncated or corrupt"),
        (b"", "truncated or corrupt"),
        (pickle.dumps([1, 2, 3]), "holds a list, not a dict"),
        (pickle.dumps({b"labels": [1]}), "without 'data'/'labels'"),
    ],
    ids=["noise", "truncated", "empty", "list", "no-data"],
)
def test_corrupt_pickle_names_the_batch(tmp_path, raw, pattern):
    folder = _write_batches(tmp_path / "cifar-10-batches-py", {"data_batch_3": raw})
    _expect(tmp_path, tmp_path, folder / "data_batch_3", pattern)


@pytest.mark.parametrize(
    "batch,pattern",
    [
        (_batch(row=3000), r"rows of 3072"),
        (_batch(row=3073), r"rows of 3072"),
        ({b"data": np.zeros(3072 * 2, np.uint8), b"labels": [1, 2]}, r"rows of 3072"),
        (_batch(n=5, labels=[1, 2, 3]), "5 images but 3 labels"),
        (_batch(n=2, labels=[1, 2, 3]), "2 images but 3 labels"),
        (_batch(n=3, labels=[1, 10, 2]), "label 10 is outside 0..9"),
        (_batch(n=3, labels=[1, -1, 2]), "label -1 is outside 0..9"),
        (_batch(n=2, labels=[0.5, 1.0]), "labels are integers"),
        ({b"data": np.full((2, 3072), 300, np.int32), b"labels": [1, 2]}, "not pixel bytes"),
        ({b"data": np.zeros((2, 3072), np.float32), b"labels": [1, 2]}, "not pixel bytes"),
        (_batch(n=0, labels=[]), "holds no images"),
    ],
)
def test_wrong_batch_contents_never_load(tmp_path, batch, pattern):
    raw = pickle.dumps(batch)
    folder = _write_batches(tmp_path / "cifar-10-batches-py", {"test_batch": raw})
    _expect(tmp_path, tmp_path, folder / "test_batch", pattern)


def test_foreign_pickle_runs_no_code(tmp_path):
    marker = tmp_path / "ran"

    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    folder = _write_batches(tmp_path / "b", {"data_batch_1": pickle.dumps({b"data": Payload()})})
    _expect(folder, tmp_path, folder / "data_batch_1", "global .*open is not part of a CIFAR-10")
    assert not marker.exists()


def test_integer_batch_data_in_byte_range_loads(tmp_path):
    batch = _batch(n=3)
    batch[b"data"] = batch[b"data"].astype(np.int64)
    folder = _write_batches(tmp_path / "b", {"data_batch_2": pickle.dumps(batch)})
    arrays = _load(folder, tmp_path, verify=False)
    assert arrays.x_train.dtype == np.uint8 and len(arrays.x_train) == 4 * 4 + 3


# --------------------------------------------------------------------------- archives
def _python_tar(tmp_path, replace=None):
    src = _write_batches(tmp_path / "src" / "cifar-10-batches-py", replace)
    data = tmp_path / "data"
    data.mkdir()
    with tarfile.open(data / cifar10.PYTHON_TAR, "w:gz") as tar:
        tar.add(src, arcname="cifar-10-batches-py")
    return data


@pytest.mark.parametrize("keep", [0.5, 0.1, 30])
def test_truncated_python_archive_names_the_archive(tmp_path, keep):
    data = _python_tar(tmp_path)
    path = data / cifar10.PYTHON_TAR
    raw = path.read_bytes()
    path.write_bytes(raw[: int(len(raw) * keep) if keep < 1 else keep])
    _expect(data, tmp_path, path, "truncated or corrupt")


def test_random_bytes_as_archives(tmp_path):
    python = tmp_path / "python"
    python.mkdir()
    (python / cifar10.PYTHON_TAR).write_bytes(os.urandom(5000))
    _expect(python, tmp_path, python / cifar10.PYTHON_TAR, "cannot read the archive")
    jpeg = tmp_path / "jpeg"
    jpeg.mkdir()
    for name in cifar10.JPEG_ARCHIVES.values():
        (jpeg / name).write_bytes(os.urandom(5000))
    _expect(jpeg, tmp_path, jpeg / cifar10.JPEG_ARCHIVES["train"], "cannot read the archive")


def test_bad_batch_inside_the_python_archive_names_the_member(tmp_path):
    data = _python_tar(tmp_path, {"data_batch_4": pickle.dumps(_batch(n=3, labels=[0, 11, 2]))})
    error = _expect(data, tmp_path, data / cifar10.PYTHON_TAR, "label 11 is outside 0..9")
    assert "cifar-10-batches-py/data_batch_4" in str(error)


def test_python_archive_without_all_batches(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    _tar_gz(data / cifar10.PYTHON_TAR, {"cifar-10-batches-py/data_batch_1": pickle.dumps(_batch())})
    _expect(data, tmp_path, cifar10.PYTHON_TAR, r"lacks CIFAR-10 batches .*data_batch_2")


def test_truncated_jpeg_archive(tmp_path):
    _jpeg_archives(tmp_path, {f"train/cat/{i:04d}.jpg": _image_bytes(i) for i in range(2, 60)})
    path = tmp_path / cifar10.JPEG_ARCHIVES["train"]
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2])
    _expect(tmp_path, tmp_path, path, "truncated or corrupt")


@pytest.mark.parametrize(
    "member,data,pattern",
    [
        ("train/cat/junk.jpg", b"this is not an image", "not a readable image"),
        ("train/cat/cut.jpg", _image_bytes(7)[:300], "not a readable image"),
        ("train/cat/big.jpg", _image_bytes(size=64), "expected a 32x32 RGB image"),
        ("train/unicorn/0001.jpg", _image_bytes(), "not under a class folder"),
    ],
)
def test_bad_image_member_names_archive_and_member(tmp_path, member, data, pattern):
    _jpeg_archives(tmp_path, {member: data})
    where = f"{tmp_path / cifar10.JPEG_ARCHIVES['train']}:{member}"
    _expect(tmp_path, tmp_path, where, pattern)


def test_junk_image_in_a_folder_names_the_file(tmp_path):
    for split in ("train", "test"):
        (tmp_path / split / "dog").mkdir(parents=True)
        (tmp_path / split / "dog" / "0.png").write_bytes(_image_bytes(fmt="PNG"))
    (tmp_path / "test" / "dog" / "1.png").write_bytes(os.urandom(200))
    _expect(tmp_path, tmp_path, tmp_path / "test" / "dog" / "1.png", "not a readable image")


def test_unreadable_cache_is_rebuilt(tmp_path):
    _jpeg_archives(tmp_path / "data")
    first = _load(tmp_path / "data", tmp_path, verify=False)
    for path in (tmp_path / "cache").glob("*-x_train.npy"):
        path.write_bytes(b"garbage")
    again = _load(tmp_path / "data", tmp_path, verify=False)
    np.testing.assert_array_equal(again.x_train, first.x_train)


def test_tfds_arrays_are_validated(monkeypatch):
    x = np.zeros((3, 32, 32, 3), np.uint8)
    cases = [
        ((x, np.array([0, 1, 12])), "label 12 is outside 0..9"),
        ((x[:, :28], np.array([0, 1, 2])), r"uint8 \[N, 32, 32, 3\]"),
        ((x, np.array([0, 1])), "3 images but 2 labels"),
    ]
    for bad, pattern in cases:
        monkeypatch.setattr(cifar10, "_tfds_load_cifar10", lambda tfds_dir, bad=bad: (bad, bad))
        with pytest.raises(CIFAR10DataError, match="tensorflow-datasets cifar10.*" + pattern):
            load_cifar10(None)


# --------------------------------------------------------------------------- checksums
def _assert_checksum_error(info, path):
    actual = hashlib.md5(open(path, "rb").read()).hexdigest()
    message = str(info.value)
    assert str(path) in message and actual in message
    assert cifar10.CIFAR10_MD5[os.path.basename(path)] in message
    assert info.value.actual == actual and isinstance(info.value, CIFAR10DataError)


def test_standard_names_are_verified_by_default(tmp_path):
    folder = _write_batches(tmp_path / "batches")
    with pytest.raises(CIFAR10ChecksumError) as info:
        _load(folder, tmp_path)
    _assert_checksum_error(info, folder / "data_batch_1")
    assert len(_load(folder, tmp_path, verify=False).x_train) == 20

    data = _python_tar(tmp_path)
    with pytest.raises(CIFAR10ChecksumError) as info:
        _load(data, tmp_path)
    _assert_checksum_error(info, data / cifar10.PYTHON_TAR)
    assert info.value.expected == "c58f30108f718f92721af3b95e74349a"

    _jpeg_archives(tmp_path / "jpeg")
    with pytest.raises(CIFAR10ChecksumError) as info:
        _load(tmp_path / "jpeg", tmp_path)
    _assert_checksum_error(info, tmp_path / "jpeg" / cifar10.JPEG_ARCHIVES["train"])


def test_folder_of_images_has_no_checksum(tmp_path):
    for split in ("train", "test"):
        (tmp_path / split / "ship").mkdir(parents=True)
        (tmp_path / split / "ship" / "0.png").write_bytes(_image_bytes(fmt="PNG"))
    arrays = _load(tmp_path, tmp_path)
    assert arrays.y_train.tolist() == [CLASSES.index("ship")]


def test_truncated_real_archive(shared_data, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    train, test = (cifar10.JPEG_ARCHIVES[k] for k in ("train", "test"))
    os.symlink(shared_data / "cifar10" / test, data / test)
    raw = (shared_data / "cifar10" / train).read_bytes()
    (data / train).write_bytes(raw[: len(raw) // 16])
    with pytest.raises(CIFAR10ChecksumError, match=f"{train}: md5 .* differs"):
        _load(data, tmp_path)
    _expect(data, tmp_path, data / train, "truncated or corrupt")
