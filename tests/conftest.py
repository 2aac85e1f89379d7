"""Shared fixtures: quiet TensorFlow, seeds, and the real-data directory."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import collections  # noqa: E402
import gc  # noqa: E402
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
# Each notebook test executes a notebook in a fresh Jupyter kernel (TensorFlow start-up, then
# a tiny run): an end-to-end test of more than 5 s.
NOTEBOOKS = pathlib.Path(__file__).resolve().parent / "notebooks"


def pytest_collection_modifyitems(config, items):
    """Marks every test under ``tests/distributed/`` ``distributed`` and every test under
    ``tests/notebooks/`` ``slow`` (the quick loop ``-m "not distributed and not slow"`` leaves
    them out), and orders the modules longest first: the distributed ones (their module
    fixtures start several processes and take minutes), then the modules with a slow test,
    then the rest, each group's modules by their number of tests (most first). Under
    ``-n 2 --dist loadscope --no-loadscope-reorder`` (``pytest.ini``) the workers take the
    modules in this order, so the long ones overlap the rest of the suite and short ones fill
    its end."""
    for item in items:
        parents = pathlib.Path(str(item.fspath)).resolve().parents
        if DISTRIBUTED in parents:
            item.add_marker(pytest.mark.distributed)
        if NOTEBOOKS in parents:
            item.add_marker(pytest.mark.slow)
    heavy = {item.path for item in items if item.get_closest_marker("slow")}
    sizes = collections.Counter(item.path for item in items)

    def order(item):
        if item.get_closest_marker("distributed"):
            group = 0
        else:
            group = 1 if item.path in heavy else 2
        return group, -sizes[item.path]

    items.sort(key=order)  # stable: a module's tests stay together, in their order


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_teardown(item, nextitem):
    """After a test module's last test (its module fixtures finalised): ``gc.collect()``, then
    ``gc.freeze()``, which moves every object still alive (imported modules, TensorFlow's and
    Keras' caches, functions kept by module-level ``tf.function``s) to the permanent
    generation that later collections do not scan. A full collection scans every tracked
    object, and a worker process accumulates over a million of them across modules, while
    KerasTuner collects twice per trial and ``keras.backend.clear_session`` once per call;
    with the freeze a collection scans what the current module made (README, "Install and
    run the tests"). An object frozen here that becomes garbage later is still freed by its
    reference count; only a reference cycle among frozen objects stays until the worker
    exits."""
    yield
    if nextitem is None or nextitem.module is not item.module:
        gc.collect()
        gc.freeze()
