import numpy as np
import pytest

from wpl_keras.data import ptb


def _write(tmp_path, names, texts):
    for name, text in zip(names, texts):
        (tmp_path / name).write_text(text)


def test_load_tiny_corpus_adds_eos_and_orders_vocab(tmp_path):
    _write(tmp_path, ["train.txt", "valid.txt", "test.txt"], ["a b a\nc a\n", "a c\n", "b\n"])
    corpus = ptb.load_ptb(str(tmp_path), vocab_size=None)
    # counts: a=3, <eos>=2, b=1, c=1
    assert corpus.vocab == ["a", "<eos>", "b", "c"]
    np.testing.assert_array_equal(corpus.train, [0, 2, 0, 1, 3, 0, 1])
    np.testing.assert_array_equal(corpus.valid, [0, 3, 1])
    assert corpus.train.dtype == np.int32
    assert corpus.word_to_id["c"] == 3


def test_ptb_prefixed_names_are_accepted(tmp_path):
    _write(tmp_path, ["ptb.train.txt", "ptb.valid.txt", "ptb.test.txt"], ["x y\n", "x\n", "y\n"])
    assert ptb.load_ptb(str(tmp_path), vocab_size=None).vocab_size == 3


def test_missing_files_are_named(tmp_path):
    _write(tmp_path, ["train.txt"], ["a\n"])
    with pytest.raises(FileNotFoundError, match=r"valid\.txt or ptb\.valid\.txt.*test\.txt"):
        ptb.load_ptb(str(tmp_path))
    with pytest.raises(FileNotFoundError, match="does not exist"):
        ptb.load_ptb(str(tmp_path / "nope"))


def test_unexpected_vocabulary(tmp_path):
    _write(tmp_path, ["train.txt", "valid.txt", "test.txt"], ["a b\n", "a\n", "a\n"])
    with pytest.raises(ValueError, match="unexpected PTB vocabulary.*3 distinct.*expected 10000"):
        ptb.load_ptb(str(tmp_path))
    _write(tmp_path, ["valid.txt"], ["zzz\n"])
    with pytest.raises(ValueError, match="not in the training vocabulary.*zzz"):
        ptb.load_ptb(str(tmp_path), vocab_size=None)


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
