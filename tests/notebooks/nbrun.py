"""Executes a notebook of notebooks/ with settings passed as environment variables."""

from __future__ import annotations

import pathlib
from typing import Mapping, Tuple

import nbclient
import nbformat

NOTEBOOKS = pathlib.Path(__file__).resolve().parents[2] / "notebooks"


def execute_notebook(name: str, monkeypatch, env: Mapping[str, str], timeout: int = 300) -> Tuple[object, str]:
    """Runs ``notebooks/<name>`` in a fresh kernel (which inherits ``env``); returns the
    executed notebook and the text of all its code-cell outputs. A failing cell fails the test
    with the cell's traceback."""
    for key, value in {"TF_CPP_MIN_LOG_LEVEL": "2", **env}.items():
        monkeypatch.setenv(key, str(value))
    path = NOTEBOOKS / name
    nb = nbformat.read(str(path), as_version=4)
    client = nbclient.NotebookClient(
        nb, timeout=timeout, kernel_name="python3",
        resources={"metadata": {"path": str(NOTEBOOKS)}},
    )
    client.execute()
    text = "".join(
        o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
    )
    return nb, text
