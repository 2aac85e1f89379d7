"""NAO (+ WPL) experiments: a NAO search on a registered space of
:mod:`wpl_keras.experiments.enas`.

The space's data loader, task builder, train-from-scratch and export runners are reused as
they are; this module adds the NAO experiment config (:class:`NAOExperimentConfig`), its presets
(:func:`nao_preset`) and runners (:func:`build_nao_search`, :func:`prepare_nao`,
:func:`run_nao_experiment`). The search loop itself is
:func:`wpl_keras.nas.search.nao.run_nao_search`.
"""

from __future__ import annotations

import dataclasses
import json
import math
from typing import Any, Callable, Dict, Optional

from wpl_keras.experiments import enas
from wpl_keras.experiments.enas import ENASExperimentConfig
from wpl_keras.nas.search.derive import DerivedArchitecture, write_derived
from wpl_keras.nas.controllers.nao import NAOConfig, NAOController
from wpl_keras.nas.search.nao import (
    NAOSearchConfig,
    NAOSearchResult,
    run_nao_search,
    with_regularization,
)
from wpl_keras.utils.config_fields import find_field, nested_changes, replace_fields
from wpl_keras.utils.validation import check_fields
from wpl_keras.experiments.presets import cpu_small_nao_search

__all__ = ["NAOExperimentConfig", "nao_preset", "build_nao_search", "prepare_nao",
           "run_nao_experiment"]


@dataclasses.dataclass(frozen=True)
class NAOExperimentConfig:
    """A NAO (+ WPL) experiment: the ENAS experiment of the space (data, task config, seed,
    train-from-scratch settings), the NAO loop and controller settings, and the supernet's
    regularisation (output dropout rate, path-drop keep probability; ``None`` keeps the task
    config's value)."""

    base: ENASExperimentConfig
    search: NAOSearchConfig
    nao: NAOConfig = dataclasses.field(default_factory=NAOConfig)
    output_dropout: Optional[float] = None
    path_keep: Optional[float] = None

    def __post_init__(self):
        check_fields(self, {
            "output_dropout": dict(minimum=0, maximum=1, exclusive_maximum=True, optional=True),
            "path_keep": dict(minimum=0, maximum=1, exclusive_minimum=True, optional=True),
        })

    @property
    def task_config(self):
        """The space's task config with this experiment's output dropout / path dropping."""
        return with_regularization(
            self.base.task, output_dropout=self.output_dropout, path_keep=self.path_keep
        )

    def enas_config(self):
        """The base ENAS experiment with the regularised task (for data, task, train-best)."""
        return dataclasses.replace(self.base, task=self.task_config)

    def replace(self, *, search: Optional[Dict[str, Any]] = None,
                nao: Optional[Dict[str, Any]] = None, **fields) -> "NAOExperimentConfig":
        """A copy with some top-level, search and/or NAO controller fields changed, through
        :func:`~wpl_keras.utils.config_fields.replace_fields`."""
        return replace_fields(self, nested_changes(fields, search=search, nao=nao),
                              where="NAOExperimentConfig.replace")

    def to_json(self) -> dict:
        return {"base": self.base.to_json(), "search": self.search.to_json(),
                "nao": self.nao.to_json(), "output_dropout": self.output_dropout,
                "path_keep": self.path_keep}

    @classmethod
    def from_json(cls, obj) -> "NAOExperimentConfig":
        if isinstance(obj, str):
            obj = json.loads(obj)
        return cls(base=ENASExperimentConfig.from_json(obj["base"]),
                   search=NAOSearchConfig.from_json(obj["search"]),
                   nao=NAOConfig.from_json(obj["nao"]),
                   output_dropout=obj.get("output_dropout"), path_keep=obj.get("path_keep"))

    def save(self, path: str) -> str:
        with open(path, "w") as f:
            json.dump(self.to_json(), f, indent=1)
        return path

    @classmethod
    def load(cls, path: str) -> "NAOExperimentConfig":
        with open(path) as f:
            return cls.from_json(json.load(f))


def _small_task(base: ENASExperimentConfig) -> ENASExperimentConfig:
    """``base`` with the NAO cpu-small sizes on the task fields that exist: batches of 32 rows,
    windows of 20 steps and, for a task with a ``model`` of ``embedding_size`` /
    ``hidden_size`` (RNN), both 128."""
    small = {(): dict(batch_size=32, bptt=20, eval_batch_size=32, eval_bptt=20),
             ("model",): dict(embedding_size=128, hidden_size=128)}
    changes: Dict[str, Any] = {
        ".".join(("task", *where, name)): value
        for where, fields in small.items() for name, value in fields.items()
        if find_field(base.task, [name]) == (*where, name)
    }
    return replace_fields(base, changes, where="nao cpu-small task")


def nao_preset(space: str, preset: str, **overrides) -> NAOExperimentConfig:
    """NAO presets over the ENAS space presets.

    * ``cpu-small`` (RNN): the ENAS ``cpu-small`` task (hidden 128, batch 32, lr 10) with BPTT
      20 (12 nodes, PTB's 10k vocabulary kept), sized for the 8 searches of
      ``benchmarks/nao_forgetting.py`` (4 dropout rates × with/without WPL) on 2 CPU cores;
      18 epochs of 8 pool architectures × 3 batches, a pool of 16 random seeds growing by 6
      every 2 epochs; WPL from epoch 10, α 1e6 with WPL on every shared weight and the
      proximal step (the task's ``wpl_scope="all"`` and ``WPLConfig`` of the ENAS
      cpu-small preset), flush every 2 epochs. NAO controller: 64 units, 60 epochs per phase.
    * ``paper``: the ENAS ``paper`` task and WPL schedule and NAO-WS's controller (1000 seed
      architectures, 100 seeds, up to 300 new per phase with ``η`` = 1 … 30, embedding 48,
      96 units, a 4 × 200 predictor, 1000 controller epochs, a phase every 30 of 150 epochs),
      sized for a GPU; sources in ``wpl_keras/experiments/paper_presets.json``.
    * ``tiny``: the ENAS ``tiny`` task; seconds, for tests and the notebook.
    """
    key = preset.replace("_", "-")
    base = enas.get_preset(space, key)
    if key == "cpu-small":
        base = _small_task(base)
        config = NAOExperimentConfig(
            base=base,
            # α 1e6 as the ENAS cpu-small preset (whose task also brings wpl_scope="all" and
            # the proximal step), large against this supernet's small per-batch Fisher.
            search=cpu_small_nao_search(shared_steps_per_epoch=8, strength=1e6,
                                             epochs=18, wpl_start_epoch=10),
            nao=NAOConfig(token_embedding=32, units=64, predictor_units=64, epochs=60),
        )
    elif key == "paper":
        # The ENAS RNN task and WPL schedule of the release's run command, NAO-WS's
        # controller (renqianluo/NAO, NAO-WS/rnn/train_search.sh) with its 5 controller
        # phases per search. Every value, its source and each difference:
        # wpl_keras/experiments/paper_presets.json.
        config = NAOExperimentConfig(
            base=base,
            search=NAOSearchConfig(epochs=150, shared_steps_per_epoch=60, batches_per_arch=7,
                                   best_k=5, seed_archs=1000, controller_every=30,
                                   new_archs=300, top_k_seeds=100, max_pool=1000,
                                   controller_epochs=None, wpl=True, wpl_start_epoch=5,
                                   strength=60.0, strength_decay="linear",
                                   strength_decay_start=15, strength_decay_rate=1.0,
                                   strength_floor=0.0, flush_every=2),
            nao=NAOConfig(token_embedding=48, units=96, predictor_layers=4,
                          predictor_units=200, trade_off=0.8, learning_rate=1e-3,
                          epochs=1000, batch_size=100, grad_clip=5.0, step_size=1.0,
                          max_rounds=30),
        )
    elif key == "tiny":
        config = NAOExperimentConfig(
            base=base,
            search=NAOSearchConfig(epochs=3, shared_steps_per_epoch=3, batches_per_arch=2,
                                   seed_archs=4, controller_every=2, new_archs=2,
                                   top_k_seeds=2, max_pool=8, wpl_start_epoch=1,
                                   strength=10.0, flush_every=2, verbose=0),
            nao=NAOConfig(token_embedding=4, units=8, predictor_units=8, epochs=3,
                          batch_size=8, max_rounds=4),
        )
    else:
        raise ValueError(f"unknown NAO preset {preset!r}; available: cpu-small, paper, tiny.")
    return dataclasses.replace(config, **overrides) if overrides else config


def build_nao_search(config: NAOExperimentConfig, data):
    """``(task, nao)`` of an experiment: the space's task (with the regularised task config)
    and a NAO controller over its decisions, both seeded with ``config.base.seed``."""
    import keras

    base = config.enas_config()
    keras.utils.set_random_seed(int(base.seed))
    task = enas.get_space(base.space).build_task(data, base)
    nao = NAOController(task.space.decision_sizes, config.nao, seed=base.seed)
    return task, nao


def prepare_nao(config: NAOExperimentConfig, data_dir: Optional[str], data=None, *,
                verify: bool = True):
    """``(data, config)``: loads the space's data unless given and fits the task to it
    (``verify=False`` skips the check of local files against their standard checksums)."""
    data, base = enas.prepare(config.base, data_dir, data, verify=verify)
    return data, dataclasses.replace(config, base=base)


def run_nao_experiment(
    config: NAOExperimentConfig,
    data_dir: Optional[str],
    out_dir: str,
    *,
    resume: bool = False,
    data=None,
    on_epoch_end: Optional[Callable[[Dict[str, Any]], None]] = None,
    verify: bool = True,
) -> NAOSearchResult:
    """Runs (or resumes) the NAO search of ``config`` into ``out_dir``; saves
    ``nao_experiment.json``, ``data_source.json`` (``data_dir`` and ``verify``, for the later
    stages; :mod:`wpl_keras.experiments.data_source`) and, at the end, ``derived.json`` (the
    best pool architecture, in the format of :mod:`wpl_keras.nas.search.derive`, so the ENAS
    train-best/export runners read it). Under a multi-worker strategy every worker runs this;
    only the chief writes ``out_dir``, the others their private folder
    (:func:`~wpl_keras.experiments.enas.write_dir`)."""
    data, config = prepare_nao(config, data_dir, data, verify=verify)
    task, nao = build_nao_search(config, data)
    enas.save_records(config, "nao_experiment.json", enas.write_dir(out_dir, task), data_dir,
                      verify=verify)
    result = run_nao_search(task, nao, config.search, out_dir, seed=config.base.seed,
                            resume=resume, on_epoch_end=on_epoch_end)
    scored = [(a, e) for a, e in zip(result.pool, result.pool_errors) if math.isfinite(e)]
    if scored:
        scored.sort(key=lambda ae: ae[1])
        derived = DerivedArchitecture(arch=tuple(scored[0][0]), error=float(scored[0][1]),
                                      candidates=tuple((tuple(a), float(e)) for a, e in scored),
                                      num_samples=len(result.pool))
        write_derived(derived, task.space, result.out_dir)
    return result
