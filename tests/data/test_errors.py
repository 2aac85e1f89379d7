"""The shared data errors and the md5 check of standard-named files."""

import hashlib

import pytest

from wpl_keras.data import cifar10, mnist, ptb
from wpl_keras.data.errors import (
    DataChecksumError,
    DataError,
    DataMissingError,
    download_failure_message,
    file_md5,
    verify_md5,
    verify_standard_files,
)


def test_file_md5_reads_in_chunks(tmp_path):
    path = tmp_path / "blob"
    data = bytes(range(256)) * 1000
    path.write_bytes(data)
    assert file_md5(str(path), chunk_size=1000) == hashlib.md5(data).hexdigest()
    path.write_bytes(b"")
    assert file_md5(str(path)) == "d41d8cd98f00b204e9800998ecf8427e"  # md5 of no bytes


def test_verify_md5_names_file_and_both_sums(tmp_path):
    path = tmp_path / "train.txt"
    path.write_bytes(b"a b\n")
    actual = hashlib.md5(b"a b\n").hexdigest()
    verify_md5(str(path), actual)
    with pytest.raises(DataChecksumError) as info:
        verify_md5(str(path), "0" * 32)
    error = info.value
    assert (error.path, error.expected, error.actual) == (str(path), "0" * 32, actual)
    assert str(path) in str(error) and actual in str(error) and "0" * 32 in str(error)


def test_only_standard_names_are_verified(tmp_path):
    standard, own = tmp_path / "train.txt", tmp_path / "my_subset.txt"
    standard.write_bytes(b"x\n")
    own.write_bytes(b"y\n")
    verify_standard_files([str(own)], ptb.PTB_MD5)  # not a standard name: not checked
    with pytest.raises(ptb.PTBChecksumError, match="train.txt"):
        verify_standard_files([str(own), str(standard)], ptb.PTB_MD5,
                              error_type=ptb.PTBChecksumError)


def test_every_dataset_error_is_a_data_error():
    for module, prefix in ((mnist, "Mnist"), (ptb, "PTB"), (cifar10, "CIFAR10")):
        data = getattr(module, f"{prefix}DataError")
        assert issubclass(data, DataError) and issubclass(data, ValueError)
        assert issubclass(getattr(module, f"{prefix}MissingError"), DataMissingError)
        assert issubclass(getattr(module, f"{prefix}MissingError"), FileNotFoundError)
        checksum = getattr(module, f"{prefix}ChecksumError")
        assert issubclass(checksum, data) and issubclass(checksum, DataChecksumError)


def test_download_failure_message_tells_module_from_network():
    network = download_failure_message("X", ConnectionError("no route"), "a.txt.")
    assert "could not download X (ConnectionError: no route)" in network
    assert "--data-dir" in network and network.endswith("a.txt.")
    module = download_failure_message("X", ModuleNotFoundError("No module named 'm'"), "a.txt.")
    assert "module the download needs is missing" in module and "pip install -e ." in module
