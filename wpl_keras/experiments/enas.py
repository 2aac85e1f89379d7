"""ENAS (+ WPL) experiments: frozen configs, presets per search space, and runners.

An experiment is one :class:`ENASExperimentConfig`: the search space's name, its task config
(a frozen dataclass of that space, e.g. ``RNNSupernetConfig``), the controller settings
(:class:`ControllerConfig`) and the loop settings (:class:`~wpl_keras.nas.search.SearchConfig`).
Runners build the objects from a config and run one stage:

* :func:`run_search_experiment`: the search (with or without WPL), resumable;
* :func:`run_derive`: reload the finished search, sample ``K`` architectures, keep the best;
* :func:`run_train_best`: train the derived architecture from scratch;
* :func:`run_export`: export the trained model (a SavedModel for the RNN space).

Search spaces plug in through a registry of :class:`SpaceSpec` objects, imported lazily:
``"rnn"`` from :mod:`wpl_keras.experiments.enas_rnn` (PTB language modelling with the ENAS
recurrent cell), ``"cnn"`` from :mod:`wpl_keras.experiments.enas_cnn` (CIFAR-10 with the micro
cell). Another module registers its own space with :func:`register_space`
(``"name" → "module.path:ATTRIBUTE"``). Each space module holds its presets (``paper`` for a
GPU, ``cpu-small`` for 2 CPU cores, ``tiny`` for tests).
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import os
from typing import Any, Callable, Dict, Mapping, Optional, Tuple

from wpl_keras.experiments.data_source import save_data_source
from wpl_keras.nas.search import SearchConfig, SearchResult
from wpl_keras.utils.validation import check_fields

# Space name → "module:attribute" of its SpaceSpec, imported on first use.
_SPACES: Dict[str, str] = {
    "rnn": "wpl_keras.experiments.enas_rnn:RNN_SPACE",
    "cnn": "wpl_keras.experiments.enas_cnn:CNN_SPACE",
}


@dataclasses.dataclass(frozen=True)
class ControllerConfig:
    """ENAS controller and REINFORCE settings (ENAS/WPL release RNN defaults).

    Args:
        units: LSTM units (100).
        temperature: logit temperature (RNN 5, CNN 8).
        tanh_constant: logits ``c·tanh(z)`` (2.5).
        learning_rate: Adam learning rate (RNN 3.5e-4, CNN 3.5e-3).
        baseline_decay: EMA baseline decay (RNN 0.95, CNN 0.99).
        entropy_weight: the entropy's weight ``w`` (1e-4).
        entropy_mode: ``"bonus"`` (``loss = −(log π·A + w·H)``, default), ``"reward"`` (the
            WPL/ENAS-PyTorch release: ``w·H_k`` added to decision ``k``'s reward, per-decision
            baselines) or ``"reward_sum"`` (ENAS TF: ``w·H`` added to the reward); see
            :mod:`wpl_keras.nas.reinforce`.
        baseline_init: ``"zero"`` (default) or ``"first_reward"`` (the release).
        baseline_reset_each_epoch: reset the baseline at each epoch's first controller update
            (the release: True; default False).

    Raises:
        ValueError: for an unknown ``entropy_mode`` or ``baseline_init``, or a non-bool
            ``baseline_reset_each_epoch``.
    """

    units: int = 100
    temperature: Optional[float] = 5.0
    tanh_constant: Optional[float] = 2.5
    learning_rate: float = 3.5e-4
    baseline_decay: float = 0.95
    entropy_weight: float = 1e-4
    entropy_mode: str = "bonus"
    baseline_init: str = "zero"
    baseline_reset_each_epoch: bool = False

    def __post_init__(self):
        from wpl_keras.nas.reinforce import BASELINE_INITS, ENTROPY_MODES

        for field, choices in (("entropy_mode", ENTROPY_MODES),
                               ("baseline_init", BASELINE_INITS)):
            if getattr(self, field) not in choices:
                raise ValueError(f"ControllerConfig.{field} must be one of {list(choices)}, "
                                 f"got {getattr(self, field)!r}.")
        if not isinstance(self.baseline_reset_each_epoch, bool):
            raise ValueError("ControllerConfig.baseline_reset_each_epoch must be true or false, "
                             f"got {self.baseline_reset_each_epoch!r}.")
        positive = dict(minimum=0, exclusive_minimum=True)
        check_fields(self, {
            "units": dict(integer=True, minimum=1),
            "temperature": dict(positive, optional=True),
            "tanh_constant": dict(positive, optional=True), "learning_rate": positive,
            "baseline_decay": dict(minimum=0, maximum=1, exclusive_maximum=True),
            "entropy_weight": dict(minimum=0),
        })


@dataclasses.dataclass(frozen=True)
class ENASExperimentConfig:
    """Everything an ENAS experiment needs, saved as ``experiment.json`` next to results.

    Args:
        space: registered space name (``"rnn"``, ``"cnn"``).
        preset: the preset it came from (informational).
        task: the space's frozen task config (e.g. ``RNNSupernetConfig``).
        search: the loop settings.
        controller: the controller settings.
        derive_samples: ``K`` architectures sampled by the derive step.
        train_epochs: epochs of training the derived architecture from scratch.
        seed: seeds the task, the controller and the global RNGs.
        train_max_batches: cap on training (and evaluation) batches per epoch when training
            the derived architecture from scratch; None trains on everything.
        data_check: verify the data is the standard dataset (PTB's 10,000-word vocabulary,
            and the standard files' checksums unless the stage turns ``verify`` off); False
            for tiny test corpora, which also skips the checksums.
    """

    space: str
    preset: str
    task: Any
    search: SearchConfig
    controller: ControllerConfig = ControllerConfig()
    derive_samples: int = 100
    train_epochs: int = 1
    seed: int = 0
    train_max_batches: Optional[int] = None
    data_check: bool = True

    def __post_init__(self):
        if not dataclasses.is_dataclass(self.task):
            raise TypeError(f"task must be a dataclass config, got {type(self.task).__name__}.")
        check_fields(self, {
            "derive_samples": dict(integer=True, minimum=1),
            "train_epochs": dict(integer=True, minimum=0),
            "seed": dict(integer=True, minimum=0),
            "train_max_batches": dict(integer=True, minimum=1, optional=True),
        })

    def with_wpl(self, wpl: bool) -> "ENASExperimentConfig":
        return dataclasses.replace(self, search=dataclasses.replace(self.search, wpl=bool(wpl)))

    def replace(self, *, search: Optional[Mapping[str, Any]] = None, task=None,
                **fields) -> "ENASExperimentConfig":
        """A copy with some top-level fields, search fields and/or task fields changed."""
        new = dataclasses.replace(self, **fields)
        if search:
            new = dataclasses.replace(new, search=dataclasses.replace(new.search, **search))
        if task:
            new = dataclasses.replace(new, task=dataclasses.replace(new.task, **task))
        return new

    def to_json(self) -> dict:
        return {
            "space": self.space,
            "preset": self.preset,
            "task": dataclasses.asdict(self.task),
            "search": self.search.to_json(),
            "controller": dataclasses.asdict(self.controller),
            "derive_samples": self.derive_samples,
            "train_epochs": self.train_epochs,
            "seed": self.seed,
            "train_max_batches": self.train_max_batches,
            "data_check": self.data_check,
        }

    @classmethod
    def from_json(cls, obj) -> "ENASExperimentConfig":
        if isinstance(obj, str):
            obj = json.loads(obj)
        obj = dict(obj)
        spec = get_space(obj["space"])
        task_type = spec.task_config_type
        from_json = getattr(task_type, "from_json", None)
        obj["task"] = from_json(obj["task"]) if from_json else task_type(**obj["task"])
        obj["search"] = SearchConfig.from_json(obj["search"])
        obj["controller"] = ControllerConfig(**obj["controller"])
        return cls(**obj)

    def save(self, path: str) -> str:
        with open(path, "w") as f:
            json.dump(self.to_json(), f, indent=1)
        return path

    @classmethod
    def load(cls, path: str) -> "ENASExperimentConfig":
        with open(path) as f:
            return cls.from_json(json.load(f))


@dataclasses.dataclass(frozen=True)
class SpaceSpec:
    """How to run ENAS experiments in one search space.

    Args:
        name: registry name.
        data_subdir: sub-folder of a shared data root holding this space's data (``"ptb"``).
        task_config_type: the frozen dataclass of the task config (for JSON round trips).
        presets: preset name → ``() -> ENASExperimentConfig``.
        load_data: ``(data_dir, config) -> data``; called with ``verify=False`` as well when
            local files are not to be checked against their standard checksums.
        build_task: ``(data, config) -> SharedWeightsTask``.
        train_best: ``(data, arch, config, out_dir) -> (model, metrics dict)`` or None.
        export: ``(model, arch, space, export_dir, data) -> path`` or None (``data`` as
            ``load_data`` returned it, e.g. for the vocabulary of a language model).
        build_space: ``(config) -> SearchSpace`` without building the task, or None.
        adapt_config: ``(data, config) -> config`` fitting sizes to the loaded data (e.g. the
            vocabulary of a tiny corpus when ``data_check`` is off), or None.
        error_name: what ``validation_error`` measures, for plots.
        dataset: the dataset's name in error messages (``"PTB"``).
        data_files: the files a ``--data-dir`` folder must hold, for error messages.
    """

    name: str
    data_subdir: str
    task_config_type: type
    presets: Mapping[str, Callable[[], ENASExperimentConfig]]
    load_data: Callable[[Optional[str], ENASExperimentConfig], Any]
    build_task: Callable[[Any, ENASExperimentConfig], Any]
    train_best: Optional[Callable[..., Tuple[Any, Dict[str, Any]]]] = None
    export: Optional[Callable[..., str]] = None
    build_space: Optional[Callable[[ENASExperimentConfig], Any]] = None
    adapt_config: Optional[Callable[[Any, ENASExperimentConfig], ENASExperimentConfig]] = None
    error_name: str = "error"
    dataset: str = "the data"
    data_files: str = "the space's data files"


def register_space(name: str, target: str) -> None:
    """Registers ``"module.path:ATTRIBUTE"`` (a :class:`SpaceSpec`) under ``name``."""
    if ":" not in target:
        raise ValueError(f"target must look like 'module.path:ATTRIBUTE', got {target!r}.")
    _SPACES[name] = target


def available_spaces() -> Tuple[str, ...]:
    return tuple(sorted(_SPACES))


def get_space(name: str) -> SpaceSpec:
    """The :class:`SpaceSpec` registered as ``name`` (imports its module on first use).

    Raises:
        ValueError: for an unknown name, or a module that cannot be imported yet.
    """
    if name not in _SPACES:
        raise ValueError(f"unknown search space {name!r}; available: {list(available_spaces())}.")
    module_name, attribute = _SPACES[name].split(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        raise ValueError(f"search space {name!r} needs {module_name}, which failed to import: "
                         f"{error}") from error
    return getattr(module, attribute)


def get_preset(space: str, preset: str, **overrides) -> ENASExperimentConfig:
    """The named preset of ``space``, with top-level fields replaced by ``overrides``."""
    spec = get_space(space)
    key = preset.replace("_", "-")
    if key not in spec.presets:
        raise ValueError(
            f"unknown preset {preset!r} for space {space!r}; available: {sorted(spec.presets)}."
        )
    return dataclasses.replace(spec.presets[key](), **overrides)


# ---------------------------------------------------------------------------------------------
# Runners.


def _seed_everything(seed: int) -> None:
    import keras

    keras.utils.set_random_seed(int(seed))


def build_search(config: ENASExperimentConfig, data) -> Tuple[Any, Any, Any]:
    """Builds ``(task, controller, reinforce)`` of an experiment from its config and data."""
    from wpl_keras.nas.controller import Controller
    from wpl_keras.nas.reinforce import Reinforce

    spec = get_space(config.space)
    _seed_everything(config.seed)
    task = spec.build_task(data, config)
    c = config.controller
    controller = Controller(
        task.space.decision_sizes,
        units=c.units,
        temperature=c.temperature,
        tanh_constant=c.tanh_constant,
        seed=config.seed,
    )
    reinforce = Reinforce(
        controller,
        learning_rate=c.learning_rate,
        baseline_decay=c.baseline_decay,
        entropy_weight=c.entropy_weight,
        entropy_mode=c.entropy_mode,
        baseline_init=c.baseline_init,
        baseline_reset_each_epoch=c.baseline_reset_each_epoch,
    )
    return task, controller, reinforce


def load_data(config: ENASExperimentConfig, data_dir: Optional[str], *, verify: bool = True):
    """Loads the experiment's data from ``data_dir`` (the space's loader decides defaults).

    Local files are checked against their standard checksums when ``verify`` and
    ``config.data_check`` are both true.
    """
    spec = get_space(config.space)
    # A loader that verifies nothing need not accept the keyword: it is passed only to turn
    # the check off.
    extra = {} if verify and config.data_check else {"verify": False}
    return spec.load_data(data_dir, config, **extra)


def prepare(config: ENASExperimentConfig, data_dir: Optional[str], data=None, *,
            verify: bool = True):
    """``(data, config)``: loads the data unless given, and fits the config to it."""
    spec = get_space(config.space)
    data = load_data(config, data_dir, verify=verify) if data is None else data
    if spec.adapt_config is not None:
        config = spec.adapt_config(data, config)
    return data, config


def run_search_experiment(
    config: ENASExperimentConfig,
    data_dir: Optional[str],
    out_dir: str,
    *,
    resume: bool = False,
    data=None,
    verify: bool = True,
) -> SearchResult:
    """Runs (or resumes) the search of ``config`` into ``out_dir``; saves ``experiment.json``.

    Args:
        config: the experiment.
        data_dir: the space's data folder (e.g. ``../shared/data/ptb``).
        out_dir: results, logs and checkpoints.
        resume: continue from the latest checkpoint in ``out_dir``.
        data: already loaded data (skips loading).
        verify: check local data files against their standard checksums.

    The data location and ``verify`` are recorded as ``out_dir/data_source.json``
    (:mod:`wpl_keras.experiments.data_source`) for the later stages. Under a multi-worker
    strategy (``config.task.strategy``) every worker runs this; only the chief writes
    ``out_dir``, the others their private folder (:func:`write_dir`).
    """
    from wpl_keras.nas.search import run_search

    data, config = prepare(config, data_dir, data, verify=verify)
    task, controller, reinforce = build_search(config, data)
    save_records(config, "experiment.json", write_dir(out_dir, task), data_dir, verify=verify)
    return run_search(task, controller, reinforce, config.search, out_dir, resume=resume)


def write_dir(out_dir: str, task) -> str:
    """Where this process writes the experiment's files: ``out_dir`` on the chief (and in any
    single-process run), a private folder on the other workers of a multi-worker task
    (:func:`wpl_keras.nas.distribute.worker_out_dir` of the task's strategy)."""
    from wpl_keras.nas.distribute import task_strategy, worker_out_dir

    return worker_out_dir(out_dir, task_strategy(task))


def save_records(config, name: str, directory: str, data_dir: Optional[str], *,
                 verify: bool) -> None:
    """Saves ``config`` as ``directory/name`` and the data source as
    ``directory/data_source.json`` (``directory`` created)."""
    os.makedirs(directory, exist_ok=True)
    config.save(os.path.join(directory, name))
    save_data_source(directory, data_dir, verify=verify)


def run_derive(
    config: ENASExperimentConfig,
    data_dir: Optional[str],
    out_dir: str,
    *,
    num_samples: Optional[int] = None,
    data=None,
    verify: bool = True,
):
    """Reloads the search in ``out_dir`` and derives its best architecture.

    Writes ``derived.json`` and ``derived.png`` into ``out_dir`` (a worker of a multi-worker
    task other than the chief: into its private folder, :func:`write_dir`, whose checkpoint it
    restores).

    Returns:
        The :class:`~wpl_keras.nas.derive.DerivedArchitecture`.
    """
    from wpl_keras.nas.derive import derive_best, write_derived
    from wpl_keras.nas.search import restore_latest

    data, config = prepare(config, data_dir, data, verify=verify)
    task, controller, reinforce = build_search(config, data)
    restore_latest(task, controller, reinforce, out_dir)
    derived = derive_best(task, controller, num_samples or config.derive_samples)
    write_derived(derived, task.space, write_dir(out_dir, task))
    return derived


def run_train_best(
    config: ENASExperimentConfig,
    data_dir: Optional[str],
    out_dir: str,
    *,
    arch=None,
    epochs: Optional[int] = None,
    data=None,
    verify: bool = True,
):
    """Trains the derived architecture (``out_dir/derived.json`` unless ``arch`` is given)
    from scratch for ``epochs`` (default ``config.train_epochs``); writes ``train_best.json``.

    Returns:
        ``(model, metrics)`` from the space's ``train_best``.
    """
    from wpl_keras.nas.derive import load_derived

    spec = get_space(config.space)
    if spec.train_best is None:
        raise NotImplementedError(f"space {config.space!r} has no train-best runner.")
    data, config = prepare(config, data_dir, data, verify=verify)
    if arch is None:
        arch = load_derived(os.path.join(out_dir, "derived.json"))
    if epochs is not None:
        config = dataclasses.replace(config, train_epochs=int(epochs))
    model, result = spec.train_best(data, tuple(arch), config, out_dir)
    with open(os.path.join(out_dir, "train_best.json"), "w") as f:
        json.dump({"arch": list(arch), "epochs": config.train_epochs, **result}, f, indent=1,
                  default=float)
    return model, result


def run_export(
    config: ENASExperimentConfig,
    data_dir: Optional[str],
    out_dir: str,
    export_dir: Optional[str] = None,
    *,
    arch=None,
    epochs: Optional[int] = None,
    data=None,
    verify: bool = True,
) -> str:
    """Trains the derived architecture or ``arch`` (as :func:`run_train_best`) and exports it to
    ``export_dir`` (default ``out_dir/export``). Returns the export path."""
    spec = get_space(config.space)
    if spec.export is None:
        raise NotImplementedError(f"space {config.space!r} has no export.")
    data, config = prepare(config, data_dir, data, verify=verify)
    from wpl_keras.nas.derive import load_derived

    if arch is None:
        arch = load_derived(os.path.join(out_dir, "derived.json"))
    model, _ = run_train_best(config, data_dir, out_dir, arch=arch, epochs=epochs, data=data)
    space = build_space(config)
    return spec.export(model, arch, space, export_dir or os.path.join(out_dir, "export"), data)


def build_space(config: ENASExperimentConfig):
    """The experiment's search space object, without building the task."""
    spec = get_space(config.space)
    if spec.build_space is None:
        raise NotImplementedError(f"space {config.space!r} does not define build_space.")
    return spec.build_space(config)

