"""Executes notebooks/02_enas_rnn_wpl.ipynb at tiny settings on tiny PTB-like text."""

import os
import pathlib

import numpy as np
import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

NOTEBOOK = pathlib.Path(__file__).resolve().parents[2] / "notebooks" / "02_enas_rnn_wpl.ipynb"


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
    monkeypatch.setenv("WPL_NB_DATA_DIR", data)
    monkeypatch.setenv("WPL_NB_PRESET", "tiny")
    monkeypatch.setenv("WPL_NB_EPOCHS", "2")
    monkeypatch.setenv("WPL_NB_OUT", str(out))
    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "2")
    nb = nbformat.read(str(NOTEBOOK), as_version=4)
    client = nbclient.NotebookClient(
        nb, timeout=240, kernel_name="python3",
        resources={"metadata": {"path": str(NOTEBOOK.parent)}},
    )
    client.execute()
    assert (out / "figure3_forgetting.png").exists()
    assert (out / "with_wpl" / "history.json").exists()
    assert (out / "without_wpl" / "history.json").exists()
    assert (out / "with_wpl" / "derived.json").exists()
    text = "".join(
        o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
    )
    assert "best cell:" in text and "mean_reduction" in text
