import hashlib
import os

import numpy as np
import pytest

from wpl_keras.data import ptb


def _write(tmp_path, names, texts):
    for name, text in zip(names, texts):
        (tmp_path / name).write_text(text)


def test_load_tiny_corpus_adds_eos_and_orders_vocab(tmp_path):
    _write(tmp_path, ["train.txt", "valid.txt", "test.txt"], ["a b a\nc a\n", "a c\n", "b\n"])
    corpus = ptb.load_ptb(str(tmp_path), vocab_size=None, verify=False)
    # counts: a=3, <eos>=2, b=1, c=1
    assert corpus.vocab == ["a", "<eos>", "b", "c"]
    np.testing.assert_array_equal(corpus.train, [0, 2, 0, 1, 3, 0, 1])
    np.testing.assert_array_equal(corpus.valid, [0, 3, 1])
    assert corpus.train.dtype == np.int32
    assert corpus.word_to_id["c"] == 3


def test_ptb_prefixed_names_are_accepted(tmp_path):
    _write(tmp_path, ["ptb.train.txt", "ptb.valid.txt", "ptb.test.txt"], ["x y\n", "x\n", "y\n"])
    assert ptb.load_ptb(str(tmp_path), vocab_size=None, verify=False).vocab_size == 3


def test_missing_files_are_named(tmp_path):
    _write(tmp_path, ["train.txt"], ["a\n"])
    with pytest.raises(FileNotFoundError, match=r"valid\.txt or ptb\.valid\.txt.*test\.txt"):
        ptb.load_ptb(str(tmp_path))
    with pytest.raises(FileNotFoundError, match="does not exist"):
        ptb.load_ptb(str(tmp_path / "nope"))


def test_unexpected_vocabulary(tmp_path):
    _write(tmp_path, ["train.txt", "valid.txt", "test.txt"], ["a b\n", "a\n", "a\n"])
    with pytest.raises(ptb.PTBDataError, match="train.txt has 3 distinct.*expected 10000"):
        ptb.load_ptb(str(tmp_path), verify=False)
    _write(tmp_path, ["valid.txt"], ["zzz\n"])
    pattern = "valid.txt has 1 words not in the training vocabulary.*zzz"
    with pytest.raises(ptb.PTBDataError, match=pattern):
        ptb.load_ptb(str(tmp_path), vocab_size=None, verify=False)


def test_batchify_and_windows():
    ids = np.arange(23)
    data = ptb.batchify(ids, 2)
    assert data.shape == (2, 11)
    np.testing.assert_array_equal(data[1], np.arange(11, 22))
    assert ptb.num_windows(data, 3) == 3
    x, y = ptb.bptt_window(data, 1, 3)
    np.testing.assert_array_equal(x, [[3, 4, 5], [14, 15, 16]])
    np.testing.assert_array_equal(y, x + 1)
    assert len(list(ptb.bptt_windows(data, 3))) == 3
    with pytest.raises(IndexError):
        ptb.bptt_window(data, 3, 3)
    with pytest.raises(ValueError, match="too few"):
        ptb.batchify(np.arange(3), 2)


def test_real_ptb(shared_data):
    corpus = ptb.load_ptb(str(shared_data / "ptb"))
    assert corpus.vocab_size == 10000
    assert len(corpus.train) == 929589
    assert corpus.vocab[corpus.train[-1]] == "<eos>"


# --------------------------------------------------------------------------- validation
NAMES = ["train.txt", "valid.txt", "test.txt"]


def _tiny(tmp_path):
    _write(tmp_path, NAMES, ["a b a\nc a\n", "a c\n", "b\n"])


@pytest.mark.parametrize(
    "raw,line",
    [
        ("a b\ncaf\u00e9 a\n".encode("latin-1"), 2),  # latin-1, not UTF-8
        (b"a b\n\xff\xfe c\n", 2),
        ("a b\n".encode("utf-16"), 1),  # starts with a byte-order mark 0xff 0xfe
        (b"a b\nc \xe2\x82", 2),  # a character cut in half by truncation
    ],
)
def test_non_utf8_file_names_the_file_and_line(tmp_path, raw, line):
    _tiny(tmp_path)
    (tmp_path / "valid.txt").write_bytes(raw)
    with pytest.raises(ptb.PTBDataError) as info:
        ptb.load_ptb(str(tmp_path), vocab_size=None, verify=False)
    message = str(info.value)
    assert str(tmp_path / "valid.txt") in message and "not UTF-8" in message
    assert f"line {line}" in message
    assert isinstance(info.value.__cause__, UnicodeDecodeError)


def test_binary_file_with_nul_bytes_is_rejected(tmp_path):
    _tiny(tmp_path)
    (tmp_path / "test.txt").write_bytes(b"b\nab\x00\x00c\n")
    with pytest.raises(ptb.PTBDataError, match="test.txt: NUL byte on line 2"):
        ptb.load_ptb(str(tmp_path), vocab_size=None, verify=False)


@pytest.mark.parametrize("text", ["", "\n\n  \n"])
def test_empty_split_names_the_file(tmp_path, text):
    _tiny(tmp_path)
    _write(tmp_path, ["test.txt"], [text])
    with pytest.raises(ptb.PTBDataError, match="'test'.*test.txt.*empty"):
        ptb.load_ptb(str(tmp_path), vocab_size=None, verify=False)


def test_line_endings_and_missing_final_newline(tmp_path):
    _write(tmp_path, NAMES, ["a b a\r\nc a", "a c\r", "b\n"])
    corpus = ptb.load_ptb(str(tmp_path), vocab_size=None, verify=False)
    np.testing.assert_array_equal(corpus.train, [0, 2, 0, 1, 3, 0, 1])
    np.testing.assert_array_equal(corpus.valid, [0, 3, 1])


def test_errors_are_the_projects_own():
    assert issubclass(ptb.PTBDataError, ValueError)
    assert issubclass(ptb.PTBMissingError, FileNotFoundError)
    assert issubclass(ptb.PTBChecksumError, ptb.PTBDataError)


# --------------------------------------------------------------------------- checksums
@pytest.mark.parametrize("names", [NAMES, ["ptb.train.txt", "ptb.valid.txt", "ptb.test.txt"]])
def test_standard_names_are_verified_by_default(tmp_path, names):
    _write(tmp_path, names, ["a b a\nc a\n", "a c\n", "b\n"])
    with pytest.raises(ptb.PTBChecksumError) as info:
        ptb.load_ptb(str(tmp_path), vocab_size=None)
    path = str(tmp_path / names[0])
    actual = hashlib.md5(open(path, "rb").read()).hexdigest()
    message = str(info.value)
    assert path in message and actual in message and ptb.PTB_MD5[names[0]] in message
    assert info.value.expected == "f26c4b92c5fdc7b3f8c7cdcb991d8420"
    assert ptb.load_ptb(str(tmp_path), vocab_size=None, verify=False).vocab_size == 4


@pytest.mark.parametrize("split", ["valid", "test"])
def test_truncated_real_file_fails_the_checksum(shared_data, tmp_path, split):
    for name in NAMES:
        os.symlink(shared_data / "ptb" / name, tmp_path / name)
    os.remove(tmp_path / f"{split}.txt")
    raw = (shared_data / "ptb" / f"{split}.txt").read_bytes()
    (tmp_path / f"{split}.txt").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(ptb.PTBChecksumError, match=f"{split}.txt: md5 .* differs"):
        ptb.load_ptb(str(tmp_path))


@pytest.mark.parametrize("call, error, match", [
    (lambda ids: ptb.batchify(ids, 0), ValueError, "batchify: batch_size must be an integer >= 1"),
    (lambda ids: ptb.batchify(ids, 2.0), TypeError, "batchify: batch_size"),
    (lambda ids: ptb.num_windows(ptb.batchify(ids, 2), -1), ValueError, "num_windows: bptt"),
    (lambda ids: ptb.num_windows(ptb.batchify(ids, 2), "35"), TypeError, "num_windows: bptt"),
])
def test_batch_size_and_bptt_are_checked(call, error, match):
    ids = np.arange(20)
    with pytest.raises(error, match=match):
        call(ids)
    assert ptb.num_windows(ptb.batchify(ids, np.int64(2)), np.int32(3)) == 3
