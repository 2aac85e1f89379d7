"""Executes notebooks/03_enas_cnn_wpl.ipynb at tiny settings on a tiny CIFAR-like image folder."""

import io
import pathlib

import numpy as np
from tests.notebooks.nbrun import execute_notebook
from PIL import Image

from wpl_keras.data.cifar10 import CLASSES


def _write_image_folder(root: pathlib.Path, per_class: int = 5) -> str:
    rng = np.random.default_rng(0)
    for split, count in (("train", per_class), ("test", 1)):
        for label, name in enumerate(CLASSES):
            folder = root / split / name
            folder.mkdir(parents=True)
            for i in range(count):
                image = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
                image[..., label % 3] = 40 * (label % 5)  # a weak class signal
                buffer = io.BytesIO()
                Image.fromarray(image).save(buffer, format="PNG")
                (folder / f"{i:04d}.png").write_bytes(buffer.getvalue())
    return str(root)


def test_notebook_03_runs_tiny_cnn_search_export(tmp_path, monkeypatch):
    data = _write_image_folder(tmp_path / "cifar")
    out = tmp_path / "out"
    nb, text = execute_notebook(
        "03_enas_cnn_wpl.ipynb", monkeypatch,
        {
            "WPL_NB_DATA_DIR": data,
            "WPL_NB_PRESET": "tiny",
            "WPL_NB_EPOCHS": "2",
            "WPL_NB_OUT": str(out),
            "WPL_KERAS_CACHE": str(tmp_path / "cache"),
        },
        timeout=300,
    )
    assert (out / "figure3_forgetting_cnn.png").exists()
    assert (out / "with_wpl" / "derived.json").exists()
    assert (out / "with_wpl" / "train_best.json").exists()
    assert "best cells:" in text and "mean_reduction" in text and "exported to" in text
