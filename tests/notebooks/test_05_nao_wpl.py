"""Executes notebooks/05_nao_wpl.ipynb at tiny settings on a tiny PTB-like corpus."""

import json
import pathlib

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

NOTEBOOK = pathlib.Path(__file__).resolve().parents[2] / "notebooks" / "05_nao_wpl.ipynb"
WORDS = ["the", "cat", "dog", "sat", "on", "mat", "a", "big", "red", "ran"]


def _tiny_ptb(folder: pathlib.Path) -> pathlib.Path:
    folder.mkdir()
    rng = __import__("random").Random(0)
    for split, lines in (("train", 40), ("valid", 12), ("test", 12)):
        text = "\n".join(" ".join(rng.choice(WORDS) for _ in range(8)) for _ in range(lines))
        (folder / f"{split}.txt").write_text(text + "\n")
    return folder


def test_notebook_05_runs_nao_with_and_without_wpl_and_resumes(tmp_path, monkeypatch):
    out = tmp_path / "out"
    monkeypatch.setenv("WPL_NAO_DATA_DIR", str(_tiny_ptb(tmp_path / "ptb")))
    monkeypatch.setenv("WPL_NAO_PRESET", "tiny")
    monkeypatch.setenv("WPL_NAO_RATES", "0.5")
    monkeypatch.setenv("WPL_NAO_EPOCHS", "3")
    monkeypatch.setenv("WPL_NAO_OUT", str(out))
    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "2")
    nb = nbformat.read(str(NOTEBOOK), as_version=4)
    client = nbclient.NotebookClient(
        nb, timeout=300, kernel_name="python3",
        resources={"metadata": {"path": str(NOTEBOOK.parent)}},
    )
    client.execute()
    assert (out / "figure4.png").stat().st_size > 1000
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary["rates"]) == {"0.5"}
    assert summary["resume_equal"] is True
    text = "".join(
        o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
    )
    assert "ascent raises every predicted score: True" in text
    assert "all valid: True" in text
    assert "resumed equals uninterrupted: True" in text
