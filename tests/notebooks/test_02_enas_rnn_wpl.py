"""Executes notebooks/02_enas_rnn_wpl.ipynb at tiny settings on tiny PTB-like text."""

import pathlib

import numpy as np
from tests.notebooks.nbrun import execute_notebook


def _write_tiny_ptb(directory: pathlib.Path) -> str:
    rng = np.random.default_rng(0)
    vocab = [f"w{i}" for i in range(30)]
    directory.mkdir(parents=True)
    for split, lines in (("train", 60), ("valid", 15), ("test", 15)):
        with open(directory / f"{split}.txt", "w") as f:
            if split == "train":
                f.write(" " + " ".join(vocab) + " \n")
            for _ in range(lines):
                f.write(" " + " ".join(rng.choice(vocab, 8)) + " \n")
    return str(directory)


def test_notebook_02_runs_tiny_search_with_and_without_wpl(tmp_path, monkeypatch):
    data = _write_tiny_ptb(tmp_path / "ptb")
    out = tmp_path / "out"
    nb, text = execute_notebook(
        "02_enas_rnn_wpl.ipynb", monkeypatch,
        {
            "WPL_NB_DATA_DIR": data,
            "WPL_NB_PRESET": "tiny",
            "WPL_NB_EPOCHS": "2",
            "WPL_NB_OUT": str(out),
        },
        timeout=240,
    )
    assert (out / "figure3_forgetting.png").exists()
    assert (out / "with_wpl" / "history.json").exists()
    assert (out / "without_wpl" / "history.json").exists()
    assert (out / "with_wpl" / "derived.json").exists()
    assert "best cell:" in text and "mean_reduction" in text
