"""A KerasTuner tuner whose trials all train one set of shared weights, with WPL between trials.

:class:`WeightSharingTuner` has two forms, one trial loop and one WPL schedule:

* ``WeightSharingTuner(oracle, task, ...)``: each trial trains an architecture of a
  :class:`~wpl_keras.nas.base.SharedWeightsTask` (this project's RNN and CNN supernets,
  :class:`TaskTrials`); any oracle over the task's space proposes the architectures
  (:class:`~wpl_keras.tuner.enas.ENASOracle`, :class:`~wpl_keras.tuner.nao.NAOOracle`,
  ``keras_tuner.oracles.RandomSearchOracle``).
* ``WeightSharingTuner(oracle, hypermodel=build, ...)``: each trial builds the user's own
  KerasTuner model and trains it on weights shared across trials by key, ENAS-style
  (:class:`~wpl_keras.tuner.hypermodel_trials.HypermodelTrials`): a weight is its layer's
  name, its path within the layer and its shape. With ``RandomSearchOracle`` this is random
  search with weight sharing.

Example with a build function of the user's own (name layers by role, so that a layer in the
same role is the same weight in every trial; Keras' automatic names restart at every build)::

    import keras, keras_tuner
    from wpl_keras.tuner.weight_sharing import WeightSharingTuner
    from wpl_keras.wpl.schedule import ScheduleConfig

    def build(hp):
        model = keras.Sequential([keras.Input((784,))])
        for i in range(hp.Int("layers", 1, 3)):
            model.add(keras.layers.Dense(hp.Choice(f"units_{i}", [64, 128]),
                                         activation="relu", name=f"dense_{i}"))
        model.add(keras.layers.Dense(10, name="head"))
        model.compile(optimizer=keras.optimizers.Adam(1e-3), metrics=["accuracy"],
                      loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        return model

    oracle = keras_tuner.oracles.RandomSearchOracle(
        keras_tuner.Objective("val_accuracy", "max"), max_trials=50)
    tuner = WeightSharingTuner(oracle, hypermodel=build, steps_per_trial=50,
                               schedule=ScheduleConfig(wpl_start_epoch=2, strength=60.0,
                                                       strength_decay=None, flush_every=0),
                               directory="runs", project_name="ws")
    tuner.search(x, y, validation_data=(x_val, y_val), batch_size=64)
    model = tuner.retrain_best(x, y, epochs=3, validation_data=(x_val, y_val))
"""

from __future__ import annotations

import os
from typing import Callable, Dict, Mapping, Optional, Protocol, Union

import keras
import keras_tuner
import tensorflow as tf

from wpl_keras.nas.base import Architecture, SharedWeightsTask
from wpl_keras.tuner.controller_oracle import hyperparameters_to_architecture
from wpl_keras.tuner.hypermodel_trials import HypermodelTrials, fixed_batches
from wpl_keras.tuner.shared_weights import SharedWeightStore, shared_task_variables
from wpl_keras.utils.checkpoint import check_checkpoint_covers
from wpl_keras.utils.validation import check_number
from wpl_keras.wpl.config import WPLConfig
from wpl_keras.wpl.schedule import ScheduleConfig, flush_at, strength_at, wpl_active_at

# A tuner's default schedule: WPL from the first trial at a constant α 60, never flushed.
DEFAULT_TRIAL_SCHEDULE = ScheduleConfig(wpl_start_epoch=0, strength=60.0, strength_decay=None,
                                        flush_every=0)


class TrialWork(Protocol):
    """What one form of :class:`WeightSharingTuner` does per trial and at saving."""

    def run(self, hp, *, wpl_active: bool, strength: float, flush: bool, args: tuple,
            kwargs: dict) -> Dict[str, float]:
        """Trains ``hp``'s model on the shared weights (Fisher reset first iff ``flush``,
        ``α = strength``, WPL on iff ``wpl_active``); returns the trial's metrics."""

    def build_model(self, hp) -> keras.Model:
        """A fresh model of ``hp`` to train from scratch."""

    def load_model(self, hp) -> keras.Model:
        """``hp``'s model as the tuner holds it (``get_best_models``)."""

    def write(self, path: str) -> None:
        """Writes the shared state (weights, slots, WPL state) to ``path``."""

    def read(self, path: str) -> None:
        """Reads what :meth:`write` wrote."""


class TaskTrials:
    """The per-trial work on a :class:`SharedWeightsTask`: ``task.train_architecture(a,
    batches_per_trial, wpl_active=...)`` with ``a`` read from the trial's hyperparameters,
    after ``task.wpl_state.reset_fisher()`` iff ``flush`` and ``α ← strength`` in
    ``task.wpl_state.strength``; then ``val_error = task.validation_error(a)`` (fixed
    validation batch) and ``reward = task.reward(a)``.

    Args:
        task: the shared-weights task.
        batches_per_trial: training batches per trial.
        build_standalone: ``arch -> keras.Model`` for ``load_model`` / ``build_model``.
    """

    def __init__(self, task: SharedWeightsTask, *, batches_per_trial: int,
                 build_standalone: Optional[Callable[[Architecture], keras.Model]]):
        self.task = task
        self.batches_per_trial = check_number("WeightSharingTuner batches_per_trial",
                                              batches_per_trial, integer=True, minimum=1)
        self.build_standalone = build_standalone
        items = task.checkpoint_items()
        self._items = tuple(items.values())
        self._checkpoint = tf.train.Checkpoint(**items)

    def run(self, hp, *, wpl_active: bool, strength: float, flush: bool, args: tuple = (),
            kwargs: Optional[dict] = None) -> Dict[str, float]:
        arch = hyperparameters_to_architecture(self.task.space, hp)
        state = getattr(self.task, "wpl_state", None)
        if state is not None:
            if flush:
                state.reset_fisher()
            state.strength.assign(strength)
        logs = self.task.train_architecture(arch, self.batches_per_trial, wpl_active=wpl_active)
        metrics = {k: float(v) for k, v in (logs or {}).items()}
        metrics["val_error"] = float(self.task.validation_error(arch))
        metrics["reward"] = float(self.task.reward(arch))
        metrics["wpl_strength"] = 0.0 if state is None else float(state.strength.numpy())
        return metrics

    def build_model(self, hp) -> keras.Model:
        """``build_standalone`` of the trial's architecture."""
        if self.build_standalone is None:
            raise ValueError(
                "WeightSharingTuner needs build_standalone(arch) -> keras.Model to return "
                "models; use get_best_hyperparameters() + hyperparameters_to_architecture()."
            )
        return self.build_standalone(hyperparameters_to_architecture(self.task.space, hp))

    load_model = build_model

    def write(self, path: str) -> None:
        check_checkpoint_covers(self._checkpoint, self._items)
        self._checkpoint.write(path)

    def read(self, path: str) -> None:
        if tf.io.gfile.exists(path + ".index"):
            self._checkpoint.read(path).assert_existing_objects_matched()


class WeightSharingTuner(keras_tuner.engine.base_tuner.BaseTuner):
    """A tuner whose trials all train one set of shared weights, with WPL between trials.

    Give exactly one of ``task`` (a :class:`SharedWeightsTask`, :class:`TaskTrials`) and
    ``hypermodel`` (a KerasTuner build function or ``HyperModel``,
    :class:`~wpl_keras.tuner.hypermodel_trials.HypermodelTrials`). ``run_trial`` of trial
    ``t`` (the number of trials run before it) runs the form's trial with WPL on iff
    ``wpl_active_at(t, schedule)``, ``α = strength_at(t, schedule)`` and the Fisher reset
    first iff ``flush_at(t, schedule)``: the same schedule type and functions as a search
    (:class:`~wpl_keras.wpl.schedule.ScheduleConfig`), with trials for epochs
    (``wpl_start_epoch`` is the first trial with WPL on). The trial's metrics go to the
    oracle with ``wpl_active`` and ``wpl_strength``; an objective the trial does not log stops
    the search with a ``keras_tuner.errors.FatalValueError`` that lists what it logs.

    Task form: the metrics are the task's training logs (``loss``, ``penalty``, ...),
    ``val_error`` (fixed validation batch) and ``reward``, so the objective can be
    ``Objective("reward", "max")`` or ``Objective("val_error", "min")``.

    Hypermodel form: ``search(x, y, validation_data=(x_val, y_val), batch_size=...)`` (or
    ``x`` a ``tf.data.Dataset`` of batches; ``validation_steps`` fixes how many validation
    batches). Every trial builds ``build(hp)`` (compiled by the user with an optimizer and a
    loss), starts every weight, optimizer slot, Fisher and anchor from the shared bank by key,
    trains ``steps_per_trial`` WPL steps, and reports ``loss``, ``wpl_penalty`` and
    ``val_loss`` plus ``val_<metric>`` for every compiled metric on fixed validation batches.
    The key of a weight is ``(layer name, variable path within the layer, shape)``: KerasTuner
    (and this tuner) call ``keras.backend.clear_session()`` before each build, so automatic
    names (``dense``, ``dense_1``, ...) restart at every build and follow the ORDER in which
    layers are made; name layers by role (``Dense(units, name=f"dense_{i}")``) so that a role
    is one weight whatever the other hyperparameters. A layer whose shape changes under the
    same name (``units`` 64 vs 128) is a separate weight per shape (a warning says so once).
    A model without a ``keras.Input`` is built by a call on the first validation batch before
    its weights are bound.
    ``retrain_best`` trains the best hyperparameters from scratch; ``shared_score`` scores
    any hyperparameters on the shared weights without training; ``get_best_models`` returns
    the best trials' models on the current shared weights.

    ``save()`` (KerasTuner calls it after every trial) writes the shared state beside the
    oracle: the task's checkpoint (``supernet/checkpoint``), or the bank of the hypermodel form
    (``shared_weights.npz``, written atomically with a manifest of keys, shapes and dtypes);
    a tuner made again with ``overwrite=False`` reloads it and continues the search.

    In distributed tuning the oracle lives in the chief. Without ``shared_weights`` each worker
    trains its own copy. With a :class:`~wpl_keras.tuner.shared_weights.SharedWeightStore` (task
    form only) the workers train ONE supernet held on a parameter server: before its first
    trial a worker attaches ``shared_task_variables(task)`` (weights, optimizer slots, Fisher,
    anchors), every trial pulls them (``θ ← θ_ps``), trains, and pushes its change
    (``θ_ps += θ − θ_pulled``); the WPL schedule then counts the trials of all workers (the
    shared counter at the pull). The hypermodel form's bank grows with the keys the trials
    meet, which the store's fixed variable list cannot follow: it refuses a store.

    Args:
        oracle: any KerasTuner oracle (for the task form one over ``task.space``).
        task: the shared-weights task (task form).
        hypermodel: ``build(hp) -> compiled keras.Model`` or a ``keras_tuner.HyperModel``
            (hypermodel form; its ``fit`` is not used: trials train with the WPL step).
        batches_per_trial: training batches per trial, task form (paper RNN preset: 7).
        steps_per_trial: training steps per trial, hypermodel form (an int >= 1).
        schedule: the WPL schedule over trials (``wpl_start_epoch``: trials of plain
            training before WPL turns on; ``strength``: ``α0``; decay and flush per trial).
            Default: WPL from the first trial, ``α = 60`` constant, no flush. The tasks
            start at ``α = 0``: a search's ``α`` belongs to its schedule.
        wpl_config: the WPL step's choices, hypermodel form (default ``WPLConfig()``:
            proximal mode, ``η_F = 0.9``, Fisher clip 10); the task form uses its task's.
        build_standalone: ``arch -> keras.Model`` for :meth:`load_model` / ``get_best_models``
            (task form).
        shared_weights: a store that shares the task's state with the other workers (None:
            this process's state alone, as on one machine).
        **kwargs: ``directory``, ``project_name``, ``overwrite`` of ``BaseTuner``.
    """

    def __init__(
        self,
        oracle: keras_tuner.Oracle,
        task: Optional[SharedWeightsTask] = None,
        *,
        hypermodel: Union[keras_tuner.HyperModel, Callable, None] = None,
        batches_per_trial: int = 7,
        steps_per_trial: Optional[int] = None,
        schedule: ScheduleConfig = DEFAULT_TRIAL_SCHEDULE,
        wpl_config: Optional[WPLConfig] = None,
        build_standalone: Optional[Callable[[Architecture], keras.Model]] = None,
        shared_weights: Optional[SharedWeightStore] = None,
        **kwargs,
    ):
        if not isinstance(schedule, ScheduleConfig):
            raise TypeError(
                "WeightSharingTuner: schedule must be a wpl_keras.wpl.schedule.ScheduleConfig "
                f"(trials for epochs), got {type(schedule).__name__}; e.g. "
                "ScheduleConfig(wpl_start_epoch=2, strength=60.0, strength_decay=None, "
                "flush_every=0)."
            )
        self.schedule = schedule
        self.task = task
        self.work = self._make_work(task, hypermodel, batches_per_trial, steps_per_trial,
                                    wpl_config, build_standalone, shared_weights)
        if task is not None:
            self.space = task.space
            self.batches_per_trial = self.work.batches_per_trial
        else:
            self.steps_per_trial = self.work.steps_per_trial
        self.build_standalone = build_standalone
        self.shared_weights = shared_weights
        self.trials_run = 0
        super().__init__(oracle, hypermodel=hypermodel, **kwargs)

    @staticmethod
    def _make_work(task, hypermodel, batches_per_trial, steps_per_trial, wpl_config,
                   build_standalone, shared_weights) -> TrialWork:
        """The form's :class:`TrialWork`, after checking the arguments fit that form."""
        if (task is None) == (hypermodel is None):
            raise ValueError(
                "WeightSharingTuner takes exactly one of task (a SharedWeightsTask) and "
                "hypermodel (a build(hp) function or keras_tuner.HyperModel).")
        if task is not None:
            if steps_per_trial is not None or wpl_config is not None:
                raise ValueError(
                    "WeightSharingTuner with a task: use batches_per_trial (not "
                    "steps_per_trial); the WPL config is the task's (not wpl_config).")
            return TaskTrials(task, batches_per_trial=batches_per_trial,
                              build_standalone=build_standalone)
        if steps_per_trial is None:
            raise ValueError("WeightSharingTuner with a hypermodel needs steps_per_trial, "
                             "the training steps of each trial (e.g. steps_per_trial=50).")
        if shared_weights is not None:
            raise NotImplementedError(
                "WeightSharingTuner(hypermodel=..., shared_weights=store): the parameter "
                "server's store shares a fixed list of variables, and a hypermodel's shared "
                "weights grow with the keys its trials meet. Run distributed workers without "
                "shared_weights (each worker then shares weights among its own trials, the "
                "oracle is still the chief's), or use the task form for one shared supernet.")
        if build_standalone is not None:
            raise ValueError("WeightSharingTuner with a hypermodel builds standalone models "
                             "with the hypermodel itself; drop build_standalone.")
        build = hypermodel.build if isinstance(hypermodel, keras_tuner.HyperModel) else hypermodel
        if not callable(build):
            raise TypeError("WeightSharingTuner hypermodel must be a build(hp) function or a "
                            f"keras_tuner.HyperModel, got {type(hypermodel).__name__}.")
        return HypermodelTrials(build, steps_per_trial=steps_per_trial,
                                wpl_config=WPLConfig() if wpl_config is None else wpl_config)

    # ------------------------------------------------------------------ trials
    def run_trial(self, trial, *args, **kwargs) -> Dict[str, float]:
        before = self._pull_shared()
        wpl_active = wpl_active_at(before, self.schedule)
        metrics = self.work.run(trial.hyperparameters, wpl_active=wpl_active,
                                strength=strength_at(before, self.schedule),
                                flush=flush_at(before, self.schedule), args=args, kwargs=kwargs)
        if self.shared_weights is not None:
            self.shared_weights.push()
        self.trials_run += 1
        metrics.setdefault("wpl_strength", strength_at(before, self.schedule))
        metrics["wpl_active"] = float(wpl_active)
        self._check_objective(metrics)
        return metrics

    def _check_objective(self, metrics: Mapping[str, float]) -> None:
        objective = self.oracle.objective
        names = [o.name for o in getattr(objective, "objectives", [objective])]
        missing = [n for n in names if n not in metrics]
        if missing:
            raise keras_tuner.errors.FatalValueError(
                f"WeightSharingTuner: the oracle's objective {missing} is not among the "
                f"metrics a trial logs: {sorted(metrics)}; use one of those, e.g. "
                "keras_tuner.Objective('val_loss', 'min').")

    def _pull_shared(self) -> int:
        """Trials run before this one: this worker's, or all workers' when weights are shared
        (then the shared state is pulled into the task first, attaching it on first use)."""
        store = self.shared_weights
        if store is None:
            return self.trials_run
        if not store.attached:
            store.attach(shared_task_variables(self.task))
        return store.pull().trials

    def load_model(self, trial) -> keras.Model:
        """The trial's model: the task's ``build_standalone(arch)``, or the hypermodel's model
        of the trial's hyperparameters on the current shared weights."""
        return self.work.load_model(trial.hyperparameters)

    def save_model(self, trial_id, model, step=0):  # the shared weights are saved by save()
        pass

    def get_best_architectures(self, num: int = 1):
        """Architectures of the ``num`` best trials (task form)."""
        if self.task is None:
            raise ValueError("get_best_architectures needs the task form; with a hypermodel "
                             "use get_best_hyperparameters().")
        return [
            hyperparameters_to_architecture(self.space, hp)
            for hp in self.get_best_hyperparameters(num)
        ]

    # ------------------------------------------------------------------ after the search
    def _hyperparameters(self, values) -> keras_tuner.HyperParameters:
        if isinstance(values, keras_tuner.HyperParameters):
            return values
        hp = self.oracle.get_space()
        hp.values.update(dict(values))
        return hp

    def retrain_best(self, x=None, y=None, *, epochs: int = 1, validation_data=None,
                     **fit_kwargs) -> keras.Model:
        """The best trial's hyperparameters trained from scratch: a fresh ``build(hp)``
        (its own initial weights, nothing from the shared ones) fitted with
        ``model.fit(x, y, epochs=epochs, validation_data=validation_data, **fit_kwargs)``;
        returns the fitted ``keras.Model`` (``model.export(path)`` serves it)."""
        best = self.get_best_hyperparameters(1)
        if not best:
            raise ValueError("retrain_best: no completed trial yet; run search() first.")
        model = self.work.build_model(best[0])
        model.fit(x, y, epochs=epochs, validation_data=validation_data, **fit_kwargs)
        return model

    def shared_score(self, hp_values, validation_data, *, batch_size: int = 32,
                     validation_steps: Optional[int] = None) -> Dict[str, float]:
        """``val_<metric>`` (the loss and every compiled metric) of the model of
        ``hp_values`` (a dict or ``HyperParameters``) on the current shared weights, without
        training, on the first ``validation_steps`` batches of ``validation_data``
        (hypermodel form): the one-shot score a weight-sharing search ranks models by."""
        if not isinstance(self.work, HypermodelTrials):
            raise ValueError("shared_score needs the hypermodel form; the task form scores "
                             "architectures with task.validation_error(arch).")
        validation = fixed_batches(validation_data, batch_size=batch_size,
                                   steps=validation_steps)
        return self.work.score(self._hyperparameters(hp_values), validation)

    # ------------------------------------------------------------------ state
    def get_state(self):
        state = super().get_state()
        state["trials_run"] = self.trials_run
        return state

    def set_state(self, state):
        super().set_state(state)
        self.trials_run = int(state.get("trials_run", 0))

    def _shared_path(self) -> str:
        if self.task is not None:
            return os.path.join(self.project_dir, "supernet", "checkpoint")
        return os.path.join(self.project_dir, "shared_weights.npz")

    def save(self):
        self.work.write(self._shared_path())
        super().save()

    def reload(self):
        super().reload()
        path = self._shared_path()
        if self.task is not None or os.path.exists(path):
            self.work.read(path)
