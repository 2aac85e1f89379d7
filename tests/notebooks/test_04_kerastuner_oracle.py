"""Executes notebooks/04_kerastuner_oracle.ipynb at small settings."""

import json

from tests.notebooks.nbrun import execute_notebook


def test_notebook_04_runs_oracle_tuners_and_resume(tmp_path, monkeypatch):
    out = tmp_path / "out"
    nb, text = execute_notebook(
        "04_kerastuner_oracle.ipynb", monkeypatch,
        {
            "WPL_NB_TRIALS": "25",
            "WPL_NB_OUT": str(out),
        },
        timeout=240,
    )
    assert (out / "oracle_curves.png").exists()
    assert (out / "best_saved_model" / "saved_model.pb").exists()
    summary = json.loads((out / "summary.json").read_text())
    assert summary["resumed_step"] >= 6
    assert "matches supernet: True" in text
    assert "controller identical: True" in text and "supernet identical: True" in text
    assert "best MLP:" in text
