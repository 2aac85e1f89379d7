"""Deriving the final architecture of a weight-sharing search (ENAS's derive step).

Sample ``K`` architectures from the trained controller (or, for random search with weight
sharing, from the search's uniform sampler, :mod:`wpl_keras.nas.search.uniform`), score each
on the task's fixed validation batch with the shared weights (``task.validation_error``), and
keep the one with the lowest error:

    ``a* = argmin_{a ∈ {a_1..a_K} ~ π} err(a)``

Duplicates are scored once. :func:`derive_best` returns the ranking; :func:`write_derived`
writes it as JSON plus a picture of the best architecture (``space.plot``).
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any, Dict, List, Optional, Tuple

from wpl_keras.nas.base import InvalidArchitectureError, strict_int
from wpl_keras.utils.validation import check_number


@dataclasses.dataclass(frozen=True)
class DerivedArchitecture:
    """The derive result: the best architecture, its error, and every candidate scored."""

    arch: Tuple[int, ...]
    error: float
    candidates: Tuple[Tuple[Tuple[int, ...], float], ...]
    num_samples: int

    def to_json(self, space=None) -> Dict[str, Any]:
        out: Dict[str, Any] = {
            "arch": list(self.arch),
            "error": self.error,
            "num_samples": self.num_samples,
            "num_unique": len(self.candidates),
            "candidates": [{"arch": list(a), "error": e} for a, e in self.candidates],
        }
        if space is not None:
            out["architecture"] = space.to_json(self.arch)
        return out


def derive_best(task, controller, num_samples: int = 100) -> DerivedArchitecture:
    """Samples ``num_samples`` architectures from ``controller`` and keeps the lowest-error one.

    Args:
        task: a :class:`~wpl_keras.nas.base.SharedWeightsTask` (its shared weights trained).
        controller: has ``sample_architecture() -> tuple`` (the ENAS controller, or a
            :class:`~wpl_keras.nas.search.uniform.UniformSampler`).
        num_samples: ``K``, architectures sampled (ENAS: 100 for RNN, 10 for CNN per epoch).

    Returns:
        A :class:`DerivedArchitecture`; ``candidates`` sorted by error (ties: first sampled).

    Raises:
        ValueError: for ``num_samples < 1`` or a non-finite error of every candidate.
    """
    num_samples = check_number("derive_best: num_samples", num_samples, minimum=1,
                               integer=True)
    scores: Dict[Tuple[int, ...], float] = {}
    for _ in range(num_samples):
        arch = tuple(int(a) for a in controller.sample_architecture())
        if arch not in scores:
            scores[arch] = float(task.validation_error(arch))
    finite = [(a, e) for a, e in scores.items() if e == e and e != float("inf")]
    if not finite:
        raise ValueError("every sampled architecture had a non-finite validation error.")
    ranked = sorted(scores.items(), key=lambda item: (not (item[1] == item[1]), item[1]))
    best_arch, best_error = min(finite, key=lambda item: item[1])
    return DerivedArchitecture(
        arch=best_arch, error=best_error, candidates=tuple(ranked), num_samples=int(num_samples)
    )


def write_derived(derived: DerivedArchitecture, space, out_dir: str) -> Dict[str, Optional[str]]:
    """Writes ``derived.json`` and ``derived.png`` (when the space can plot) into ``out_dir``.

    Returns:
        ``{"json": path, "png": path or None}``.
    """
    os.makedirs(out_dir, exist_ok=True)
    json_path = os.path.join(out_dir, "derived.json")
    with open(json_path, "w") as f:
        json.dump(derived.to_json(space), f, indent=1)
    png_path: Optional[str] = os.path.join(out_dir, "derived.png")
    try:
        space.plot(derived.arch, png_path)
    except NotImplementedError:
        png_path = None
    return {"json": json_path, "png": png_path}


def load_derived(path: str, space=None) -> Tuple[int, ...]:
    """Reads the best architecture back from a ``derived.json`` (validated by ``space``)."""
    try:
        with open(path) as f:
            obj = json.load(f)
    except json.JSONDecodeError as error:
        raise InvalidArchitectureError(f"{path}: not valid JSON ({error}).") from error
    if not isinstance(obj, dict) or not ("arch" in obj or "decisions" in obj):
        raise InvalidArchitectureError(
            f"{path}: expected a JSON object with an 'arch' (or 'decisions') list, got "
            f"{type(obj).__name__}."
        )
    arch: List[int] = obj["arch"] if "arch" in obj else obj["decisions"]
    if space is not None:
        return space.validate(arch)
    if not isinstance(arch, list):
        raise InvalidArchitectureError(f"{path}: 'arch' must be a list of ints, got {arch!r}.")
    return tuple(strict_int(a, f"{path}: arch[{k}]") for k, a in enumerate(arch))
