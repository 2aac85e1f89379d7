"""Training chosen cells from scratch with one fixed budget and recipe, and a cache of the
results, for judging searches (:mod:`wpl_keras.experiments.search_quality`,
:mod:`wpl_keras.experiments.ranking`).

The recipe is the space's own train-from-scratch procedure
(:func:`wpl_keras.nas.spaces.rnn.model.train_from_scratch` for ``"rnn"``: perplexity on the whole
validation and test splits; :func:`wpl_keras.nas.spaces.cnn.model.train_final` for ``"cnn"``:
trained on train minus a held-out split, error % on the held-out split and on test). Every
cell gets the same :class:`TrainBudget` and the same initialisation seed, so the only
difference between two results is the cell.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from typing import Any, Dict, Optional, Sequence

from wpl_keras.experiments.enas import ENASExperimentConfig
from wpl_keras.utils.strict_json import write_json_atomic
from wpl_keras.utils.validation import check_fields

# The CIFAR-10 held-out split of from-scratch training: one split for every cell and search seed.
HELD_OUT_SEED = 0


@dataclasses.dataclass(frozen=True)
class TrainBudget:
    """How long every cell trains from scratch.

    Args:
        epochs: passes over the training data (>= 1).
        max_batches: RNN only: cap on training windows per epoch (None: the whole split).
        train_size: CNN only: train on a random subset of this many images (None: all of
            train minus the held-out split).
    """

    epochs: int
    max_batches: Optional[int] = None
    train_size: Optional[int] = None

    def __post_init__(self):
        optional_count = dict(integer=True, minimum=1, optional=True)
        check_fields(self, {"epochs": dict(integer=True, minimum=1),
                            "max_batches": optional_count, "train_size": optional_count})

    def check_space(self, space: str) -> None:
        """Raises ValueError when a field the space does not use is set."""
        unused = {"rnn": "train_size", "cnn": "max_batches"}.get(space)
        if unused is None:
            raise ValueError(f"no from-scratch recipe for space {space!r}; known: rnn, cnn.")
        if getattr(self, unused) is not None:
            raise ValueError(f"TrainBudget.{unused} does not apply to the {space} space; "
                             "leave it None.")

    def to_json(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def of_preset(cls, config: ENASExperimentConfig) -> "TrainBudget":
        """The preset's own train-best budget (``train_epochs`` with ``train_max_batches``
        for the RNN, ``task.final_train_size`` images for the CNN)."""
        epochs = max(int(config.train_epochs), 1)
        if config.space == "rnn":
            return cls(epochs=epochs, max_batches=config.train_max_batches)
        return cls(epochs=epochs, train_size=getattr(config.task, "final_train_size", None))


def train_cell(data, arch: Sequence[int], config: ENASExperimentConfig, budget: TrainBudget,
               *, seed: int = 0) -> Dict[str, float]:
    """Trains ``arch`` from scratch with ``budget`` (the recipe in the module docstring).

    Args:
        data: the space's data as :func:`wpl_keras.experiments.enas.prepare` returns it.
        config: the experiment (its task config gives sizes, dropouts and optimiser).
        seed: initialisation, dropout and data-order seed.

    Returns:
        ``{"valid", "test", "seconds"}``: perplexity (RNN) or error % (CNN) on the whole
        validation (held-out) and test splits.
    """
    budget.check_space(config.space)
    arch = tuple(int(a) for a in arch)
    start = time.time()
    if config.space == "rnn":
        from wpl_keras.nas.spaces.rnn.model import train_from_scratch

        result = train_from_scratch(data, arch, config.task, budget.epochs, seed=seed,
                                    max_batches_per_epoch=budget.max_batches,
                                    max_eval_batches=None)
        valid, test = result["valid_ppl"], result["test_ppl"]
    else:
        valid, test = _train_cnn_cell(data, arch, config, budget, seed)
    return {"valid": float(valid), "test": float(test), "seconds": time.time() - start}


def _train_cnn_cell(arrays, arch, config: ENASExperimentConfig, budget: TrainBudget, seed: int):
    from wpl_keras.data.cifar10 import CIFAR10Arrays, search_splits
    from wpl_keras.experiments.enas import build_space
    from wpl_keras.nas.spaces.cnn.model import classifier_of, evaluate_accuracy, train_final

    splits = search_splits(arrays, num_valid=config.task.num_valid, seed=HELD_OUT_SEED)
    train = CIFAR10Arrays(splits.x_train, splits.y_train, arrays.x_test, arrays.y_test,
                          arrays.source)
    model, metrics = train_final(build_space(config), arch, config.task.final, train,
                                 epochs=budget.epochs, seed=seed, train_size=budget.train_size)
    valid_accuracy = evaluate_accuracy(classifier_of(model), splits.x_valid, splits.y_valid)
    return 100.0 * (1.0 - valid_accuracy), metrics["test_error_percent"]


class CellCache:
    """Results of :func:`train_cell` kept in a JSON file, keyed by space, architecture,
    budget and seed, so a cell trained by one benchmark (or before an interruption) is not
    trained again. Each new result is written at once (atomically)."""

    def __init__(self, path: str):
        self.path = path
        self.entries: Dict[str, Dict[str, Any]] = {}
        if os.path.exists(path):
            with open(path) as f:
                self.entries = json.load(f)

    @staticmethod
    def key(space: str, arch: Sequence[int], budget: TrainBudget, seed: int) -> str:
        return json.dumps({"space": space, "arch": [int(a) for a in arch],
                           "budget": budget.to_json(), "seed": int(seed)}, sort_keys=True)

    def train(self, data, arch: Sequence[int], config: ENASExperimentConfig,
              budget: TrainBudget, *, seed: int = 0, progress=None) -> Dict[str, float]:
        """The cached result of ``arch``, training it first if it is not cached."""
        key = self.key(config.space, arch, budget, seed)
        if key not in self.entries:
            result = train_cell(data, arch, config, budget, seed=seed)
            self.entries[key] = {"arch": [int(a) for a in arch], **result}
            self._write()
            if progress is not None:
                progress(f"trained {list(arch)} from scratch: valid {result['valid']:.2f}, "
                         f"test {result['test']:.2f} ({result['seconds']:.0f}s)")
        return self.entries[key]

    def _write(self) -> None:
        write_json_atomic(self.path, self.entries)
