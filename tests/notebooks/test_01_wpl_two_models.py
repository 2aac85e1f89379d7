"""Executes notebooks/01_wpl_two_models.ipynb at small settings on the real MNIST files."""

import json

from tests.notebooks.nbrun import execute_notebook


def test_notebook_01_runs_small_two_model_experiment(tmp_path, monkeypatch, shared_data):
    out = tmp_path / "out"
    nb, text = execute_notebook(
        "01_wpl_two_models.ipynb", monkeypatch,
        {
            "WPL_DATA_DIR": str(shared_data / "mnist"),
            "WPL_NB_SMALL": "1",
            "WPL_NB_OUT": str(out),
        },
        timeout=240,
    )
    results = json.loads((out / "results.json").read_text())
    assert set(results["cases"]) == {"strict", "loose_0.5"}
    assert results["source"].startswith("idx:")
    assert (out / "two_models.png").stat().st_size > 1000
    assert json.loads((out / "config.json").read_text())["iterations"] == 100
    assert "reduction" in text and "A baseline" in text
    assert any(o.get("output_type") in ("display_data", "execute_result") and "image/png" in o.get("data", {})
               for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))
