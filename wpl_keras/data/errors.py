"""Errors shared by the data loaders, and the md5 check of standard files.

Every loader raises its dataset's subclass of these types, so that a caller can catch one
dataset (``MnistDataError``) or all of them (:class:`DataError`):

* :class:`DataError` (a ``ValueError``): a file is unreadable or not what the loader expects;
  the message names the file and what is wrong with it.
* :class:`DataMissingError` (also a ``FileNotFoundError``): expected files are absent; the
  message lists the files the folder must hold.
* :class:`DataChecksumError`: a file with a standard name does not have the standard file's
  md5; the message names the file and both sums.
* :class:`DataDownloadError` (a ``RuntimeError``): a download failed; the message says what
  failed and which files to put in a folder for ``--data-dir`` instead.
"""

from __future__ import annotations

import hashlib
import os
from typing import Iterable, Type


class DataError(ValueError):
    """A data file is unreadable or not what the loader expects (the message names it)."""


class DataMissingError(DataError, FileNotFoundError):
    """Expected data files or folders are absent (the message lists what is expected)."""


class DataChecksumError(DataError):
    """A file named like a standard file does not have the standard file's md5.

    Attributes:
        path: the file that was checked.
        expected: md5 of the standard file.
        actual: md5 of ``path``.
    """

    def __init__(self, path: str, expected: str, actual: str):
        self.path, self.expected, self.actual = str(path), expected, actual
        super().__init__(
            f"{path}: md5 {actual} differs from the md5 of the standard file of that name "
            f"({expected}); the file is truncated, corrupt or a different version. Replace it "
            "with the standard file, or skip the check for your own variant with verify=False "
            "(--no-verify in the apps)."
        )


class DataDownloadError(RuntimeError):
    """A download failed; the message names what failed and the files ``--data-dir`` needs."""


def file_md5(path: str, chunk_size: int = 1 << 20) -> str:
    """Hex md5 of the bytes of ``path``, read in chunks of ``chunk_size`` bytes."""
    digest = hashlib.md5()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(chunk_size), b""):
            digest.update(block)
    return digest.hexdigest()


def verify_md5(
    path: str, expected: str, *, error_type: Type[DataChecksumError] = DataChecksumError
) -> None:
    """Checks ``md5(bytes of path) == expected``.

    Raises:
        DataChecksumError: (as ``error_type``) naming the file and both sums on a mismatch.
    """
    actual = file_md5(path)
    if actual != expected:
        raise error_type(path, expected, actual)


def verify_standard_files(
    paths: Iterable[str],
    standard_md5: dict,
    *,
    error_type: Type[DataChecksumError] = DataChecksumError,
) -> None:
    """Verifies every path whose file name is a key of ``standard_md5`` against its md5.

    Files with other names (a user's own subsets) are not checked.

    Raises:
        DataChecksumError: (as ``error_type``) for the first file whose md5 differs.
    """
    for path in paths:
        expected = standard_md5.get(os.path.basename(str(path)))
        if expected is not None:
            verify_md5(str(path), expected, error_type=error_type)


def download_failure_message(what: str, error: BaseException, needed: str) -> str:
    """The text of a :class:`DataDownloadError`: what failed, why, and the offline fix.

    Args:
        what: what was being downloaded, e.g. ``"PTB file ptb.train.txt from https://..."``.
        error: the underlying exception.
        needed: the files a ``--data-dir`` folder must hold instead.
    """
    if isinstance(error, ImportError):
        return (
            f"could not download {what}: a module the download needs is missing "
            f"({type(error).__name__}: {error}); reinstall the project with "
            "`pip install -e .`, or pass --data-dir DIR (or set WPL_DATA_DIR) with " + needed
        )
    return (
        f"could not download {what} ({type(error).__name__}: {error}). Without internet "
        "access, pass --data-dir DIR (or set WPL_DATA_DIR) with " + needed
    )
