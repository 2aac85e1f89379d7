"""Executes notebooks/05_nao_wpl.ipynb at tiny settings on a tiny PTB-like corpus."""

import json
import pathlib

from tests.notebooks.nbrun import execute_notebook


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
    nb, text = execute_notebook(
        "05_nao_wpl.ipynb", monkeypatch,
        {
            "WPL_NAO_DATA_DIR": str(_tiny_ptb(tmp_path / "ptb")),
            "WPL_NAO_PRESET": "tiny",
            "WPL_NAO_RATES": "0.5",
            "WPL_NAO_EPOCHS": "3",
            "WPL_NAO_OUT": str(out),
        },
        timeout=300,
    )
    assert (out / "figure4.png").stat().st_size > 1000
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary["rates"]) == {"0.5"}
    assert summary["resume_equal"] is True
    assert "ascent raises every predicted score: True" in text
    assert "all valid: True" in text
    assert "resumed equals uninterrupted: True" in text
