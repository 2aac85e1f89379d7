"""Executes notebooks/01_wpl_two_models.ipynb at small settings on the real MNIST files."""

import json
import pathlib

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

NOTEBOOK = pathlib.Path(__file__).resolve().parents[2] / "notebooks" / "01_wpl_two_models.ipynb"


def test_notebook_01_runs_small_two_model_experiment(tmp_path, monkeypatch, shared_data):
    out = tmp_path / "out"
    monkeypatch.setenv("WPL_DATA_DIR", str(shared_data / "mnist"))
    monkeypatch.setenv("WPL_NB_SMALL", "1")
    monkeypatch.setenv("WPL_NB_OUT", str(out))
    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "2")
    nb = nbformat.read(str(NOTEBOOK), as_version=4)
    client = nbclient.NotebookClient(
        nb, timeout=240, kernel_name="python3",
        resources={"metadata": {"path": str(NOTEBOOK.parent)}},
    )
    client.execute()
    results = json.loads((out / "results.json").read_text())
    assert set(results["cases"]) == {"strict", "loose_0.5"}
    assert results["source"].startswith("idx:")
    assert (out / "two_models.png").stat().st_size > 1000
    assert json.loads((out / "config.json").read_text())["iterations"] == 100
    text = "".join(
        o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
    )
    assert "reduction" in text and "A baseline" in text
    assert any(o.get("output_type") in ("display_data", "execute_result") and "image/png" in o.get("data", {})
               for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))
