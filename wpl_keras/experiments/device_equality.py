"""Does a weight-sharing search task give the same numbers on another device setup?

:func:`equality_values` trains and scores a few architectures on a task and collects what to
compare (losses, penalties, err1, rewards, final weights, Fisher and anchors);
:func:`compare_runs` compares two such collections, each value as a whole, within
``‖two − one‖₂ <= rtol · max(‖one‖₂, ‖two‖₂) + atol``. The supernet-step benchmarks
(``benchmarks/supernet_step.py`` for the RNN, ``benchmarks/supernet_step_cnn.py`` for the CNN)
use them to check ``MirroredStrategy`` over two logical CPUs against one device.
"""

from __future__ import annotations

from typing import Callable, Dict, Mapping, Optional, Sequence

import numpy as np

EQUAL_RTOL, EQUAL_ATOL = 1e-3, 1e-6


def compare_runs(one: Mapping[str, Sequence], two: Mapping[str, Sequence],
                 rtol: float = EQUAL_RTOL, atol: float = EQUAL_ATOL) -> dict:
    """Compares two runs' values (``name -> list of arrays or floats``), each value as a whole:
    ``‖b − a‖₂ <= rtol · max(‖a‖₂, ‖b‖₂) + atol``.

    Returns:
        ``{"equal": 1 or 0, "max_rel_diff": {name: max ‖b − a‖ / max(‖a‖, ‖b‖)}, "rtol",
        "atol"}`` (a relative difference of 0 where both values are 0).

    Raises:
        ValueError: the runs do not hold the same names, or a name holds lists of different
            lengths in the two runs (``zip(strict=True)``).
    """
    if set(one) != set(two):
        raise ValueError(f"compare_runs: the runs hold different values: {sorted(one)} "
                         f"against {sorted(two)}.")
    equal, diffs = True, {}
    for name, values in one.items():
        worst = 0.0
        for a, b in zip(values, two[name], strict=True):
            a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
            diff, scale = np.linalg.norm(b - a), max(np.linalg.norm(a), np.linalg.norm(b))
            worst = max(worst, float(diff / scale) if scale > 0 else 0.0)
            equal = equal and bool(diff <= rtol * scale + atol)
        diffs[name] = worst
    return {"equal": int(equal), "max_rel_diff": diffs, "rtol": rtol, "atol": atol}


def equality_values(task, archs: Sequence, variables: Optional[Sequence] = None,
                    extra: Optional[Mapping[str, Callable[[], list]]] = None
                    ) -> Dict[str, list]:
    """Trains ``archs`` in turn (2 batches each, WPL on after the first: the later ones have a
    Fisher, anchors and a penalty), then scores each (err1 and reward); returns the values to
    compare between device setups.

    Args:
        task: a search task (``train_architecture``, ``validation_error``, ``reward``,
            ``variables`` and ``wpl_state`` with ``fisher`` and ``anchors``).
        archs: the architectures, in training order.
        variables: the weights to compare (default ``task.variables``), as ``weights``.
        extra: name → a function returning a list of arrays, read after the scoring.

    Returns:
        ``{"loss", "penalty", "err1", "reward", "weights", "fisher", "anchors", *extra}``,
        each a list.
    """
    losses, penalties = [], []
    for k, arch in enumerate(archs):
        out = task.train_architecture(arch, 2, wpl_active=k > 0)
        losses.append(out["loss"])
        penalties.append(out["penalty"])
    state = task.wpl_state
    values = {
        "loss": losses, "penalty": penalties,
        "err1": [task.validation_error(a) for a in archs],
        "reward": [task.reward(a) for a in archs],
        "weights": [v.numpy() for v in (task.variables if variables is None else variables)],
        "fisher": [f.numpy() for f in state.fisher],
        "anchors": [a.numpy() for a in state.anchors],
    }
    values.update({name: read() for name, read in (extra or {}).items()})
    return values
