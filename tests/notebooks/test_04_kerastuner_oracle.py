"""Executes notebooks/04_kerastuner_oracle.ipynb at small settings."""

import json
import pathlib

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

NOTEBOOK = pathlib.Path(__file__).resolve().parents[2] / "notebooks" / "04_kerastuner_oracle.ipynb"


def test_notebook_04_runs_oracle_tuners_and_resume(tmp_path, monkeypatch):
    out = tmp_path / "out"
    monkeypatch.setenv("WPL_NB_TRIALS", "25")
    monkeypatch.setenv("WPL_NB_OUT", str(out))
    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "2")
    nb = nbformat.read(str(NOTEBOOK), as_version=4)
    client = nbclient.NotebookClient(
        nb, timeout=240, kernel_name="python3",
        resources={"metadata": {"path": str(NOTEBOOK.parent)}},
    )
    client.execute()
    assert (out / "oracle_curves.png").exists()
    assert (out / "best_saved_model" / "saved_model.pb").exists()
    summary = json.loads((out / "summary.json").read_text())
    assert summary["resumed_step"] >= 6
    text = "".join(
        o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
    )
    assert "matches supernet: True" in text
    assert "controller identical: True" in text and "supernet identical: True" in text
    assert "best MLP:" in text
