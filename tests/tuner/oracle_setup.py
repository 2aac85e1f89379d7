"""Shared test setup for oracles driven by hand (no tuner)."""

import keras_tuner


def ready_oracle(oracle, tmp_path, declare=None):
    """``oracle`` with a project folder under ``tmp_path``, quiet, and, when ``declare`` is
    given, the hyperparameters ``declare(hp)`` registers as its space (what a tuner's first
    build does)."""
    oracle._set_project_dir(str(tmp_path), "proj")
    oracle.verbose = 0
    if declare is not None:
        hp = keras_tuner.HyperParameters()
        declare(hp)
        oracle.update_space(hp)
    return oracle
