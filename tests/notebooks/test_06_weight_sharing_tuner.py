"""Executes notebooks/06_weight_sharing_tuner.ipynb at a tiny size on tiny MNIST idx files."""

import json

from tests.experiments.mnist_files import write_mnist
from tests.notebooks.nbrun import execute_notebook


def test_notebook_06_weight_sharing_search_retrain_export_resume(tmp_path, monkeypatch):
    data, out = tmp_path / "mnist", tmp_path / "out"
    write_mnist(str(data), n_train=300, n_test=60)
    nb, text = execute_notebook(
        "06_weight_sharing_tuner.ipynb", monkeypatch,
        {
            "WPL_NB_DATA": str(data),
            "WPL_NB_VERIFY": "0",  # tiny files under the standard names
            "WPL_NB_TRIALS": "3",
            "WPL_NB_STEPS": "2",
            "WPL_NB_TRAIN": "200",
            "WPL_NB_VAL": "64",
            "WPL_NB_TEST": "60",
            "WPL_NB_EPOCHS": "1",
            "WPL_NB_OUT": str(out),
        },
        timeout=240,
    )
    summary = json.loads((out / "summary.json").read_text())
    assert summary["trials"] == {"random": 3, "enas": 3, "random_resumed": 5}
    assert "after resuming: 5 trials (new: [3, 4]), trials_run 5" in text
    assert "identical to the saved file: True" in text
    assert "SavedModel equals the Keras model: True" in text
    assert (out / "best_saved_model" / "saved_model.pb").exists()
    assert (out / "trial_scores.png").stat().st_size > 1000
    assert 0.0 <= summary["test_accuracy"] <= 1.0
    assert "controller decisions: conv (2), " in text and "filters (2), kernel (2)" in text
    # WPL off in trials 0 and 1, on from trial 2 (the schedule's wpl_start_epoch)
    assert "trial 1: " in text and text.count("WPL on ") == 2  # trial 2 of each search
    assert len(summary["shared_vs_scratch"]) == 4
    assert all(0.0 <= row["coverage"] <= 1.0 for row in summary["shared_vs_scratch"])
    assert "Results summary" in text and "Kendall tau" in text
