"""Shared fixtures: quiet TensorFlow, seeds, and the real-data directory."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pathlib  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402

SHARED_DATA = pathlib.Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture
def seed():
    """Seeds Python, NumPy, TensorFlow and Keras; returns the seed."""
    import keras

    keras.utils.set_random_seed(1234)
    np.random.seed(1234)
    return 1234


@pytest.fixture
def shared_data():
    """Path to ../shared/data, or skip where it is absent (a user's fresh clone)."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real data not present at {SHARED_DATA} (only on development machines and CI)")
    return SHARED_DATA


DISTRIBUTED = pathlib.Path(__file__).resolve().parent / "distributed"


def pytest_collection_modifyitems(config, items):
    """Marks every test under ``tests/distributed/`` ``distributed`` (``-m "not distributed"``
    leaves them out)."""
    for item in items:
        if DISTRIBUTED in pathlib.Path(str(item.fspath)).resolve().parents:
            item.add_marker(pytest.mark.distributed)
