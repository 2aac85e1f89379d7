"""ENAS (+ WPL) experiments: frozen configs, presets per search space, and runners.

An experiment is one :class:`ENASExperimentConfig`: the search space's name, its task config
(a frozen dataclass of that space, e.g. ``RNNSupernetConfig``), the controller settings
(:class:`ControllerConfig`), the loop settings (:class:`~wpl_keras.nas.search.enas.SearchConfig`)
and the ``sampler`` that proposes the architectures of the shared steps: ``"enas"`` (the ENAS
controller trained by REINFORCE, :mod:`wpl_keras.nas.search.enas`) or ``"uniform"`` (random
search with weight sharing, :mod:`wpl_keras.nas.search.uniform`: uniform draws, no controller
phase; its derive step ranks ``K`` uniform draws by the supernet).
Runners build the objects from a config and run one stage:

* :func:`run_search_experiment`: the search (with or without WPL), resumable;
* :func:`run_derive`: reload the finished search, sample ``K`` architectures, keep the best;
* :func:`run_train_best`: train the derived architecture from scratch, checkpointing as it
  goes (resumable), and keep its weights with the metrics;
* :func:`run_export`: export the model :func:`run_train_best` trained (never trains) as a
  SavedModel in TensorFlow Serving's layout (:mod:`wpl_keras.utils.serving`).

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

from wpl_keras.experiments.data_source import load_data_source, save_data_source
from wpl_keras.nas.search.enas import SearchConfig, SearchResult
from wpl_keras.utils.config_fields import nested_changes, replace_fields
from wpl_keras.utils.validation import check_fields
from wpl_keras.utils.strict_json import write_json_atomic

# The samplers of an experiment's shared steps (ENASExperimentConfig.sampler).
SAMPLERS = ("enas", "uniform")

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
            :mod:`wpl_keras.nas.controllers.reinforce`.
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
        from wpl_keras.nas.controllers.reinforce import BASELINE_INITS, ENTROPY_MODES

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
        sampler: what proposes each shared step's architecture: ``"enas"`` (the controller,
            trained by REINFORCE in each epoch's controller phase) or ``"uniform"`` (uniform
            draws from a generator seeded with ``seed``; no controller phase, so
            ``controller`` and ``search.controller_steps`` are unused). A config saved
            without this field (before it existed) reads as ``"enas"``.
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
    sampler: str = "enas"

    def __post_init__(self):
        if not dataclasses.is_dataclass(self.task):
            raise TypeError(f"task must be a dataclass config, got {type(self.task).__name__}.")
        if self.sampler not in SAMPLERS:
            raise ValueError(f"ENASExperimentConfig.sampler must be one of {list(SAMPLERS)}, "
                             f"got {self.sampler!r}.")
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
        """A copy with some top-level fields, search fields and/or task fields changed, through
        :func:`~wpl_keras.utils.config_fields.replace_fields` (a dict for a nested config changes
        only the fields it gives)."""
        return replace_fields(self, nested_changes(fields, search=search, task=task),
                              where="ENASExperimentConfig.replace")

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
            "sampler": self.sampler,
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
        train_best: ``(data, arch, config, out_dir, *, checkpoint) -> (model, metrics
            dict)`` or None; ``checkpoint`` a :class:`~wpl_keras.nas.resumable.ResumableTraining`
            the training saves into and resumes from.
        export: ``(model, arch, space, export_dir, files) -> path`` or None: writes the next
            version folder of ``export_dir`` and returns it; ``files`` maps the names
            ``model_files`` returned to their paths.
        build_model: ``(arch, config) -> model``, untrained, the model ``train_best`` builds
            (its saved weights load into it), or None.
        model_files: ``(data, out_dir) -> {name: file name}``: writes into ``out_dir`` what
            ``export`` needs besides the weights (e.g. a language model's vocabulary), or None.
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
    build_model: Optional[Callable[[Tuple[int, ...], ENASExperimentConfig], Any]] = None
    model_files: Optional[Callable[[Any, str], Dict[str, str]]] = None
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
    """Builds ``(task, controller, reinforce)`` of an ENAS experiment from its config and data.

    Raises:
        ValueError: ``config.sampler`` is not ``"enas"`` (a uniform search has no controller:
            use :func:`build_uniform_search`).
    """
    from wpl_keras.nas.controllers.enas import Controller
    from wpl_keras.nas.controllers.reinforce import Reinforce

    if config.sampler != "enas":
        raise ValueError(f"build_search builds the ENAS controller, but config.sampler is "
                         f"{config.sampler!r}; use build_uniform_search for a uniform search.")
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


def build_uniform_search(config: ENASExperimentConfig, data) -> Tuple[Any, Any]:
    """Builds ``(task, sampler)`` of a uniform experiment (``config.sampler == "uniform"``):
    the space's task and a :class:`~wpl_keras.nas.search.uniform.UniformSampler` of its
    decisions seeded with ``config.seed``.

    Raises:
        ValueError: ``config.sampler`` is not ``"uniform"``.
    """
    from wpl_keras.nas.search.uniform import UniformSampler

    if config.sampler != "uniform":
        raise ValueError(f"build_uniform_search builds a uniform search, but config.sampler is "
                         f"{config.sampler!r}; use build_search for an ENAS search.")
    spec = get_space(config.space)
    _seed_everything(config.seed)
    task = spec.build_task(data, config)
    return task, UniformSampler(task.space.decision_sizes, seed=config.seed)


def load_search(config: ENASExperimentConfig, data, out_dir: str) -> Tuple[Any, Any, Dict]:
    """The search of ``config`` saved in ``out_dir``, restored from its latest checkpoint.

    Returns:
        ``(task, proposer, restored)``: the task with its shared weights; what proposes
        architectures (``sample_architecture()``): the ENAS controller, or for a uniform
        search its sampler, whose stream continues after the search's draws; and
        ``{"checkpoint", "epoch", "history"}`` of the restore.

    Raises:
        FileNotFoundError: ``out_dir`` holds no search checkpoint.
    """
    if config.sampler == "uniform":
        from wpl_keras.nas.search.uniform import restore_latest as restore_uniform

        task, sampler = build_uniform_search(config, data)
        return task, sampler, restore_uniform(task, sampler, out_dir)
    from wpl_keras.nas.search.enas import restore_latest

    task, controller, reinforce = build_search(config, data)
    return task, controller, restore_latest(task, controller, reinforce, out_dir)


def check_resume_sampler(config: ENASExperimentConfig, out_dir: str) -> None:
    """Refuses to resume the search in ``out_dir`` with another sampler than the one its
    ``experiment.json`` records (``"enas"`` when it records none).

    Raises:
        ValueError: naming both samplers and the fix.
    """
    path = os.path.join(out_dir, "experiment.json")
    if not os.path.exists(path):
        return
    with open(path) as f:
        saved = json.load(f).get("sampler", "enas")
    if saved != config.sampler:
        raise ValueError(f"the search in {out_dir} uses the {saved!r} sampler ({path}); it "
                         f"cannot resume with the {config.sampler!r} sampler: resume it with "
                         f"--sampler {saved} (or without --sampler), or start the "
                         f"{config.sampler!r} search in another --out.")


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

    ``config.sampler`` chooses the search: ENAS (:func:`wpl_keras.nas.search.enas.run_search`)
    or uniform (:func:`wpl_keras.nas.search.uniform.run_search`). A resume with another
    sampler than the saved ``experiment.json``'s is refused (:func:`check_resume_sampler`).

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
    from wpl_keras.nas.search import enas as enas_search
    from wpl_keras.nas.search import uniform

    data, config = prepare(config, data_dir, data, verify=verify)
    if config.sampler == "uniform":
        task, sampler = build_uniform_search(config, data)
    else:
        task, controller, reinforce = build_search(config, data)
    here = write_dir(out_dir, task)
    if resume:
        check_resume_sampler(config, here)
    save_records(config, "experiment.json", here, data_dir, verify=verify)
    if config.sampler == "uniform":
        return uniform.run_search(task, sampler, config.search, out_dir, resume=resume)
    return enas_search.run_search(task, controller, reinforce, config.search, out_dir,
                                  resume=resume)


def write_dir(out_dir: str, task) -> str:
    """Where this process writes the experiment's files: ``out_dir`` on the chief (and in any
    single-process run), a private folder on the other workers of a multi-worker task
    (:func:`wpl_keras.nas.search.distribute.worker_out_dir` of the task's strategy)."""
    from wpl_keras.nas.search.distribute import task_strategy, worker_out_dir

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
    """Reloads the search in ``out_dir`` and derives its best architecture: the lowest
    supernet error among ``K`` architectures proposed by the search's controller (ENAS) or by
    its restored uniform sampler (``config.sampler == "uniform"``), see :func:`load_search`.

    Writes ``derived.json`` and ``derived.png`` into ``out_dir`` (a worker of a multi-worker
    task other than the chief: into its private folder, :func:`write_dir`, whose checkpoint it
    restores).

    Returns:
        The :class:`~wpl_keras.nas.search.derive.DerivedArchitecture`.
    """
    from wpl_keras.nas.search.derive import derive_best, write_derived

    data, config = prepare(config, data_dir, data, verify=verify)
    task, proposer, _ = load_search(config, data, out_dir)
    derived = derive_best(task, proposer, num_samples or config.derive_samples)
    write_derived(derived, task.space, write_dir(out_dir, task))
    return derived


# The files of train-best in its output folder (see run_train_best).
TRAIN_BEST_FILE = "train_best.json"
TRAIN_BEST_WEIGHTS = "train_best.weights.h5"
TRAIN_BEST_CHECKPOINTS = "train_best_ckpt"
TRAIN_BEST_RUN = "run.json"  # in TRAIN_BEST_CHECKPOINTS: the run's architecture, epochs, config
TRAIN_CHECKPOINT_EVERY = 100  # training batches between two checkpoints of train-best


class TrainBestError(RuntimeError):
    """train-best or export cannot run on what the output folder holds; the message says
    what to run instead (the apps print it and exit with status 2)."""


def run_train_best(
    config: ENASExperimentConfig,
    data_dir: Optional[str],
    out_dir: str,
    *,
    arch=None,
    epochs: Optional[int] = None,
    data=None,
    verify: bool = True,
    resume: bool = False,
    checkpoint_every: int = TRAIN_CHECKPOINT_EVERY,
) -> Tuple[Any, Dict[str, Any]]:
    """Trains the derived architecture (``out_dir/derived.json`` unless ``arch`` is given)
    from scratch for ``epochs`` (default ``config.train_epochs``) and keeps the trained model.

    Written into ``out_dir`` (a worker of a multi-worker task other than the chief: into its
    private folder, :func:`write_dir`):

    * ``train_best_ckpt/``: ``run.json`` (the run's architecture, epochs and config) and the
      latest checkpoint of the training (:class:`~wpl_keras.nas.resumable.ResumableTraining`:
      every ``checkpoint_every`` batches, at each epoch end, and on SIGINT/SIGTERM);
    * ``train_best.weights.h5``: the final weights (``keras.Model.save_weights``);
    * what the export needs besides the weights (the space's ``model_files``; the RNN space:
      ``train_best_vocab.txt``);
    * ``train_best.json``, last: the architecture, the epochs trained, the metrics, ``weights``
      (the name of the weights file it describes), ``files`` and the (data-fitted) ``config``.

    With ``resume`` the recorded run continues from its latest checkpoint, with its recorded
    architecture, epochs and config, to the result of an uninterrupted run; a finished run is
    returned as recorded, without training. A run started without a search also records its
    data source (``data_source.json``, see :func:`run_search_experiment`) for the resume.

    Returns:
        ``(model, record)``: the trained model and the contents of ``train_best.json``.

    Raises:
        TrainBestError: the folder holds a train-best run and ``resume`` is False; ``arch`` or
            ``epochs`` differ from the recorded run's; no ``derived.json`` and no ``arch``.
    """
    from wpl_keras.nas.search.distribute import worker_out_dir
    from wpl_keras.nas.resumable import ResumableTraining

    here = worker_out_dir(out_dir)
    recorded, finished = _recorded_train_best(here)
    if (recorded or finished) and not resume:
        raise TrainBestError(
            f"{here} already holds a {'finished' if finished else 'started'} train-best run; "
            "pass --resume (resume=True) to continue it (a finished one is not trained again), "
            f"or remove {TRAIN_BEST_CHECKPOINTS}/, {TRAIN_BEST_FILE} and {TRAIN_BEST_WEIGHTS} "
            "there to train again.")
    if finished:
        model, record, _ = load_trained_model(here)
        _check_same_run(here, record, arch, epochs)
        return model, record
    if recorded:
        _check_same_run(here, recorded, arch, epochs)
        config = ENASExperimentConfig.from_json(recorded["config"])
        arch, epochs = recorded["arch"], recorded["epochs"]
    spec = get_space(config.space)
    if spec.train_best is None:
        raise NotImplementedError(f"space {config.space!r} has no train-best runner.")
    arch = tuple(int(a) for a in (arch if arch is not None else _derived_arch(out_dir)))
    data_given = data
    data, config = prepare(config, data_dir, data, verify=verify)
    if epochs is not None:
        config = dataclasses.replace(config, train_epochs=int(epochs))
    folder = os.path.join(here, TRAIN_BEST_CHECKPOINTS)
    if not recorded:
        os.makedirs(folder, exist_ok=True)
        write_json_atomic(os.path.join(folder, TRAIN_BEST_RUN), {
            "arch": list(arch), "epochs": config.train_epochs, "config": config.to_json()})
        if data_given is None and load_data_source(here) is None:  # a run without a search
            save_data_source(here, data_dir, verify=verify)
    checkpoint = ResumableTraining(folder, every=checkpoint_every, resume=True)
    model, metrics = spec.train_best(data, arch, config, here, checkpoint=checkpoint)
    return model, _keep_trained(model, arch, config, metrics, data, here)


def _recorded_train_best(folder: str) -> Tuple[Optional[dict], bool]:
    """``(run.json of a started train-best or None, whether a finished one is recorded)``;
    a ``train_best.json`` without ``weights`` (no trained model kept) counts as none."""
    run = os.path.join(folder, TRAIN_BEST_CHECKPOINTS, TRAIN_BEST_RUN)
    recorded = None
    if os.path.exists(run):
        with open(run) as f:
            recorded = json.load(f)
    path = os.path.join(folder, TRAIN_BEST_FILE)
    finished = False
    if os.path.exists(path):
        with open(path) as f:
            finished = "weights" in json.load(f)
    return recorded, finished


def _check_same_run(folder: str, recorded: Mapping[str, Any], arch, epochs) -> None:
    """Refuses an explicit ``arch`` or ``epochs`` other than the recorded run's."""
    if arch is not None and [int(a) for a in arch] != list(recorded["arch"]):
        raise TrainBestError(
            f"the train-best run in {folder} trains architecture {list(recorded['arch'])}, not "
            f"the given {[int(a) for a in arch]}; resume it without --arch, or train the other "
            "architecture into another --out.")
    if epochs is not None and int(epochs) != int(recorded["epochs"]):
        raise TrainBestError(
            f"the train-best run in {folder} trains {recorded['epochs']} epochs, not the given "
            f"{epochs}; resume it without --train-epochs, or train {epochs} epochs into another "
            "--out.")


def _derived_arch(out_dir: str):
    from wpl_keras.nas.search.derive import load_derived

    path = os.path.join(out_dir, "derived.json")
    if not os.path.exists(path):
        raise TrainBestError(f"{path} is missing: run the search (and, for ENAS, derive) on "
                             f"--out {out_dir} first, or pass --arch.")
    return load_derived(path)


def _keep_trained(model, arch, config: ENASExperimentConfig, metrics: Mapping[str, Any], data,
                  folder: str) -> Dict[str, Any]:
    """Saves the weights, the space's model files and, last, ``train_best.json`` into
    ``folder``; returns the record."""
    spec = get_space(config.space)
    partial = os.path.join(folder, f".partial-{os.getpid()}.weights.h5")
    model.save_weights(partial)
    os.replace(partial, os.path.join(folder, TRAIN_BEST_WEIGHTS))
    files = spec.model_files(data, folder) if spec.model_files is not None else {}
    record = {"arch": list(arch), "epochs": config.train_epochs, **metrics,
              "weights": TRAIN_BEST_WEIGHTS, "files": dict(files), "config": config.to_json()}
    write_json_atomic(os.path.join(folder, TRAIN_BEST_FILE), record)
    return record


def load_trained_model(out_dir: str) -> Tuple[Any, Dict[str, Any], ENASExperimentConfig]:
    """The model train-best kept in ``out_dir``, with its weights loaded.

    Returns:
        ``(model, record, config)``: the model, ``train_best.json`` and its config.

    Raises:
        TrainBestError: no ``train_best.json`` naming a weights file, or that file is missing
            (the message says to run train-best first).
    """
    path = os.path.join(out_dir, TRAIN_BEST_FILE)
    record = None
    if os.path.exists(path):
        with open(path) as f:
            record = json.load(f)
    if record is None or "weights" not in record:
        found = "holds no" if record is None else "names no weights file in its"
        raise TrainBestError(
            f"{path} {found} trained model: run train-best on --out {out_dir} first (export "
            "exports the model train-best trained and never trains).")
    weights = os.path.join(out_dir, record["weights"])
    if not os.path.exists(weights):
        raise TrainBestError(f"{path} names the weights file {weights}, which is missing: run "
                             f"train-best on --out {out_dir} again.")
    config = ENASExperimentConfig.from_json(record["config"])
    spec = get_space(config.space)
    if spec.build_model is None:
        raise NotImplementedError(f"space {config.space!r} does not define build_model.")
    model = spec.build_model(tuple(record["arch"]), config)
    model.load_weights(weights)
    return model, record, config


def run_export(out_dir: str, export_dir: Optional[str] = None, *, arch=None) -> str:
    """Exports the model train-best kept in ``out_dir`` (:func:`load_trained_model`; nothing
    is trained) as the next version folder of ``export_dir`` (default ``out_dir/export``), the
    layout of :mod:`wpl_keras.utils.serving`. Returns the version folder.

    Raises:
        TrainBestError: no trained model in ``out_dir``, or ``arch`` is not its architecture.
    """
    model, record, config = load_trained_model(out_dir)
    if arch is not None and [int(a) for a in arch] != list(record["arch"]):
        raise TrainBestError(
            f"--arch {[int(a) for a in arch]} is not the architecture of the model trained in "
            f"{out_dir} ({record['arch']}); export exports that model: train the other "
            "architecture with train-best --arch into another --out first.")
    spec = get_space(config.space)
    if spec.export is None:
        raise NotImplementedError(f"space {config.space!r} has no export.")
    files = {name: os.path.join(out_dir, file) for name, file in record["files"].items()}
    return spec.export(model, tuple(record["arch"]), build_space(config),
                       export_dir or os.path.join(out_dir, "export"), files)


def build_space(config: ENASExperimentConfig):
    """The experiment's search space object, without building the task."""
    spec = get_space(config.space)
    if spec.build_space is None:
        raise NotImplementedError(f"space {config.space!r} does not define build_space.")
    return spec.build_space(config)

