"""The trials of a weight-sharing search over a user's own KerasTuner hypermodel.

:class:`HypermodelTrials` is the per-trial work of
:class:`~wpl_keras.tuner.weight_sharing.WeightSharingTuner` in its hypermodel form. A trial:

1. builds the user's model with ``build(hp)`` after ``keras.backend.clear_session()`` (as
   KerasTuner's own ``Tuner._try_build`` does, so Keras' automatic layer names restart at each
   build); the model must be compiled with an optimizer and a loss, as in any KerasTuner build;
2. binds it to the shared :class:`~wpl_keras.tuner.weight_bank.WeightBank`
   (:class:`BoundModel`): every floating variable whose key (layer path, shape) the bank
   holds starts from the shared value, and so do its optimizer slots (Keras names a slot
   ``"<weight path with _>_<slot>"``, ``add_variable_from_reference``), the optimizer's
   iteration count, and the weight's Fisher ``F`` and anchor ``θ*``;
3. trains ``steps_per_trial`` steps on the next training batches (one stream that continues
   from trial to trial), each step one :class:`~wpl_keras.wpl.step.WPLStep` over the model's
   trainable weights: ``g = ∇L`` (``L`` = ``model.compute_loss``: the compiled loss plus the
   model's losses), in gradient mode ``g + α F (θ − θ*)``, the optimizer's step, in proximal
   mode ``θ ← (θ + η α F θ*) / (1 + η α F)``; with WPL on, the last step's data gradient
   updates the Fisher, ``F ← clip((1 − η_F) F + η_F g²)`` (as the searches' ``fisher_source=
   "train"``);
4. measures every compiled metric and the loss on FIXED validation batches (the first
   ``validation_steps`` batches, cached), reported as ``val_<name>`` (err1 of the searches);
5. sets the anchors to the trained weights, ``θ* ← θ``, and writes every value back to the
   bank (keys the trial did not use keep theirs).

A trial whose training loss or penalty is not finite raises
``keras_tuner.errors.FailedTrialError`` (KerasTuner marks it FAILED) and writes nothing back.
"""

from __future__ import annotations

import math
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import keras
import keras_tuner
import numpy as np
import tensorflow as tf

from wpl_keras.data.options import without_autotune_thread
from wpl_keras.tuner.weight_bank import WeightBank, WeightKey, weight_key
from wpl_keras.utils.validation import check_number
from wpl_keras.wpl.config import WPLConfig
from wpl_keras.wpl.fisher import WPLState
from wpl_keras.wpl.step import Covered, WPLStep

Build = Callable[[keras_tuner.HyperParameters], keras.Model]
_ITERATIONS = "optimizer_iterations"
_SEARCH_ARGUMENTS = ("x", "y", "validation_data", "batch_size", "validation_steps", "seed",
                     "verbose")


def _floating(variable) -> bool:
    return np.dtype(keras.backend.standardize_dtype(variable.dtype)).kind == "f"


def check_compiled(model, what: str = "build(hp)") -> keras.Model:
    """``model`` when it is a ``keras.Model`` compiled with an optimizer and a loss, else a
    ``keras_tuner.errors.FatalTypeError`` / ``FatalValueError`` that says so (KerasTuner
    stops the search on those)."""
    if not isinstance(model, keras.Model):
        raise keras_tuner.errors.FatalTypeError(
            f"{what} must return a keras.Model, got {type(model).__name__}.")
    if getattr(model, "optimizer", None) is None or getattr(model, "loss", None) is None:
        raise keras_tuner.errors.FatalValueError(
            f"{what} returned model {model.name!r} that is not compiled with an optimizer and "
            "a loss; call model.compile(optimizer=..., loss=..., metrics=[...]) inside "
            "build(hp), with a new optimizer each call (the tuner shares its slots by key).")
    return model


def optimizer_slots(optimizer, trainable: Sequence, keys: Sequence[WeightKey]) -> list:
    """``[(kind, key, slot variable)]`` for the built ``optimizer``'s slots of ``trainable``:
    Keras names the slot ``s`` of a weight at path ``p`` ``p.replace("/", "_") + "_" + s``
    (``optimizer.add_variable_from_reference``); each slot goes to the weight whose name
    prefix is the longest match, as ``("slot/" + s, that weight's key)``. Other optimizer
    variables (iteration count, learning rate) are not slots."""
    prefixes = [(str(v.path).replace("/", "_") + "_", k) for v, k in zip(trainable, keys)]
    slots = []
    for variable in optimizer.variables:
        name = str(variable.name)
        matches = [(p, k) for p, k in prefixes if name.startswith(p) and len(name) > len(p)]
        if not matches:
            continue
        prefix, key = max(matches, key=lambda m: len(m[0]))
        slots.append((f"slot/{name[len(prefix):]}", key, variable))
    return slots


class BoundModel:
    """A trial's model with its values taken from the bank (module docstring, step 2).

    Args:
        model: the freshly built, compiled model.
        bank: the shared values.
        wpl_config: the Fisher settings of the trial's :class:`WPLState` (``train`` only).
        strength: ``α`` of this trial.
        train: also bind the optimizer (slots, iterations) and make the WPL state; False for
            scoring on the shared weights without training.
    """

    def __init__(self, model: keras.Model, bank: WeightBank, *,
                 wpl_config: Optional[WPLConfig] = None, strength: float = 0.0,
                 train: bool = True):
        self.model, self.bank = model, bank
        self.weights = [v for v in model.weights if _floating(v)]
        self.keys = [weight_key(model, v) for v in self.weights]
        if len(set(self.keys)) != len(self.keys):
            repeated = sorted({k.label() for k in self.keys if self.keys.count(k) > 1})
            raise keras_tuner.errors.FatalValueError(
                f"model {model.name!r} holds several variables under the keys {repeated}; "
                "give every layer a unique name.")
        bank.check_shapes(self.keys)
        self.reused = bank.pull("weight", zip(self.keys, self.weights))
        self.state = None
        if not train:
            return
        optimizer = model.optimizer
        if isinstance(optimizer, keras.optimizers.LossScaleOptimizer):
            raise keras_tuner.errors.FatalValueError(
                "build(hp) compiled a LossScaleOptimizer (the 'mixed_float16' policy makes one), "
                "whose loss scaling the trial's WPL step does not apply; use the float32 or "
                "'mixed_bfloat16' policy for the search (retrain_best may use any).")
        if optimizer.built:
            raise keras_tuner.errors.FatalValueError(
                "build(hp) returned a model whose optimizer is already built (used before); "
                "create the optimizer inside build(hp): model.compile(optimizer="
                "keras.optimizers.Adam(...), ...).")
        self.trainable = list(model.trainable_variables)
        self.trainable_keys = [weight_key(model, v) for v in self.trainable]
        optimizer.build(self.trainable)
        self.slots = optimizer_slots(optimizer, self.trainable, self.trainable_keys)
        for kind, key, variable in self.slots:
            bank.pull(kind, [(key, variable)])
        optimizer.iterations.assign(bank.counters.get(_ITERATIONS, 0))
        config = wpl_config or WPLConfig()
        self.state = WPLState(self.trainable, strength=strength,
                              fisher_momentum=config.fisher_momentum,
                              clip_norm=config.clip_norm,
                              fisher_normalization=config.fisher_normalization)
        for kind, variables in self._state_parts():
            bank.pull(kind, zip(self.trainable_keys, variables))

    def _state_parts(self) -> List[Tuple[str, list]]:
        state = self.state
        parts = [("anchor", list(state.anchors)), ("fisher", list(state.fisher))]
        if state.fisher_raw:
            parts.append(("fisher_raw", list(state.fisher_raw)))
        return parts

    def push(self) -> None:
        """``θ* ← θ`` on the trainable weights, then every value back into the bank."""
        self.state.snapshot_anchors()
        bank = self.bank
        bank.push("weight", zip(self.keys, self.weights))
        for kind, key, variable in self.slots:
            bank.push(kind, [(key, variable)])
        for kind, variables in self._state_parts():
            bank.push(kind, zip(self.trainable_keys, variables))
        bank.counters[_ITERATIONS] = int(self.model.optimizer.iterations.numpy())


def _batched(data, batch_size: int, *, training: bool, seed: int) -> tf.data.Dataset:
    """``data`` (a ``tf.data.Dataset`` of batches, or a tuple of arrays) as batches; the
    training stream repeats and reshuffles, drops the last partial batch (one traced shape)."""
    if isinstance(data, tf.data.Dataset):
        return data.repeat() if training else data
    dataset = without_autotune_thread(tf.data.Dataset.from_tensor_slices(tuple(data)))
    if not training:
        return dataset.batch(batch_size)
    size = int(len(data[0]))
    return (dataset.shuffle(size, seed=seed, reshuffle_each_iteration=True).repeat()
            .batch(batch_size, drop_remainder=size >= batch_size))


def fixed_batches(validation_data, *, batch_size: int = 32,
                  steps: Optional[int] = None) -> tf.data.Dataset:
    """The first ``steps`` batches (None: all) of ``validation_data`` (``(x_val, y_val)``
    arrays batched by ``batch_size``, or a dataset of batches), cached: every pass yields the
    same batches."""
    batch_size = check_number("WeightSharingTuner batch_size", batch_size, integer=True,
                              minimum=1)
    steps = check_number("WeightSharingTuner validation_steps", steps, integer=True, minimum=1,
                         optional=True)
    if validation_data is None:
        raise ValueError(
            "WeightSharingTuner needs validation_data=(x_val, y_val) or a dataset of batches: "
            "each trial reports its objective on fixed validation batches.")
    validation = _batched(validation_data, batch_size, training=False, seed=0)
    return validation.take(steps or -1).cache()


class TrialData:
    """The training stream and the fixed validation batches of a search.

    Args:
        x, y: training inputs and targets (arrays), or ``x`` a ``tf.data.Dataset`` of
            ``(x, y)`` or ``(x, y, sample_weight)`` batches and ``y`` None.
        validation_data: ``(x_val, y_val)`` arrays or a dataset of batches.
        batch_size: batch size for arrays.
        validation_steps: how many validation batches form the fixed set (None: all).
        seed: the training stream's shuffle seed.
    """

    def __init__(self, x, y=None, *, validation_data=None, batch_size: int = 32,
                 validation_steps: Optional[int] = None, seed: int = 0):
        batch_size = check_number("WeightSharingTuner.search batch_size", batch_size,
                                  integer=True, minimum=1)
        if isinstance(x, tf.data.Dataset) != (y is None):
            raise ValueError("WeightSharingTuner.search takes x and y arrays, or x a "
                             "tf.data.Dataset of (x, y) batches and no y.")
        train = x if y is None else (x, y)
        self.train = iter(_batched(train, batch_size, training=True, seed=int(seed)))
        self.validation = fixed_batches(validation_data, batch_size=batch_size,
                                        steps=validation_steps)

    def next_batch(self) -> tuple:
        """``(x, y, sample_weight)`` of the next training batch."""
        return keras.utils.unpack_x_y_sample_weight(next(self.train))


def _same_arguments(a: Tuple[tuple, dict], b: Tuple[tuple, dict]) -> bool:
    (args_a, kw_a), (args_b, kw_b) = a, b
    return (len(args_a) == len(args_b) and all(u is v for u, v in zip(args_a, args_b))
            and kw_a.keys() == kw_b.keys() and all(kw_a[k] is kw_b[k] for k in kw_a))


class HypermodelTrials:
    """Trials of a user's ``build(hp)`` on shared weights (module docstring).

    Args:
        build: ``hp -> compiled keras.Model`` (a KerasTuner build function or
            ``HyperModel.build``).
        steps_per_trial: training steps per trial.
        wpl_config: the WPL step's choices (mode, Fisher momentum, clip, normalisation);
            ``fisher_source`` must be ``"train"``.
    """

    def __init__(self, build: Build, *, steps_per_trial: int, wpl_config: WPLConfig):
        if not isinstance(wpl_config, WPLConfig):
            raise TypeError("WeightSharingTuner wpl_config must be a wpl_keras.wpl.config."
                            f"WPLConfig, got {type(wpl_config).__name__}.")
        if wpl_config.fisher_source != "train":
            raise ValueError(
                "WeightSharingTuner with a hypermodel updates the Fisher from the training "
                "gradients the trial computes; use WPLConfig(fisher_source='train').")
        self.build = build
        self.steps_per_trial = check_number("WeightSharingTuner steps_per_trial",
                                            steps_per_trial, integer=True, minimum=1)
        self.wpl_config = wpl_config
        self.bank = WeightBank()
        self._data: Optional[TrialData] = None
        self._data_arguments = None

    # ------------------------------------------------------------------ models
    def build_model(self, hp, validation: Optional[tf.data.Dataset] = None) -> keras.Model:
        """A fresh model of ``hp`` (its own initial weights), after ``clear_session``; a model
        without an ``Input`` is built by a call on the first batch of ``validation`` (its
        weights must exist before they can be shared)."""
        keras.backend.clear_session()  # as KerasTuner: fresh names, old models collected
        model = check_compiled(self.build(hp))
        if not model.built and validation is not None:
            x, _, _ = keras.utils.unpack_x_y_sample_weight(next(iter(validation)))
            model(x, training=False)
        return model

    def load_model(self, hp, validation: Optional[tf.data.Dataset] = None) -> keras.Model:
        """The model of ``hp`` on the current shared weights (``validation``, default the
        search's, builds a model without an ``Input``)."""
        if validation is None and self._data is not None:
            validation = self._data.validation
        model = self.build_model(hp, validation)
        if not model.built:
            raise ValueError(
                f"model {model.name!r} of {hp.values} is not built (no keras.Input) and no "
                "search data is at hand to build it; give build(hp) an Input layer, or run "
                "search() (or shared_score) in this process first.")
        BoundModel(model, self.bank, train=False)
        return model

    # ------------------------------------------------------------------ data
    def data(self, args: tuple, kwargs: dict) -> TrialData:
        """The :class:`TrialData` of ``search(*args, **kwargs)``, made once and reused while
        the same objects are passed (the training stream continues across trials)."""
        arguments = (tuple(args), dict(kwargs))
        if self._data is None or not _same_arguments(arguments, self._data_arguments):
            unknown = sorted(set(kwargs) - set(_SEARCH_ARGUMENTS))
            if unknown:
                raise ValueError(
                    f"WeightSharingTuner.search got unknown arguments {unknown}; it takes "
                    f"{list(_SEARCH_ARGUMENTS)} (a trial trains steps_per_trial steps: no "
                    "epochs or callbacks).")
            kwargs = {k: v for k, v in kwargs.items() if k != "verbose"}
            self._data, self._data_arguments = TrialData(*args, **kwargs), arguments
        return self._data

    # ------------------------------------------------------------------ a trial
    def run(self, hp, *, wpl_active: bool, strength: float, flush: bool, args: tuple = (),
            kwargs: Optional[dict] = None) -> Dict[str, float]:
        """One trial (module docstring); returns ``loss`` (mean training loss of the trial),
        ``wpl_penalty`` (``P`` of its last step), ``shared_fraction`` (share of the model's
        weights that came from the bank) and ``val_<metric>`` for the loss and every compiled
        metric on the fixed validation batches."""
        data = self.data(args, kwargs or {})
        if flush:
            self.bank.reset("fisher")
            self.bank.reset("fisher_raw")
        bound = BoundModel(self.build_model(hp, data.validation), self.bank,
                           wpl_config=self.wpl_config, strength=strength)
        losses, penalty = self._train(bound, data, wpl_active)
        if not (math.isfinite(losses) and math.isfinite(penalty)):
            raise keras_tuner.errors.FailedTrialError(
                f"trial diverged: mean training loss {losses}, WPL penalty {penalty} (alpha="
                f"{strength:g}); nothing was written to the shared weights. Lower the "
                "learning rate or alpha, or use WPLConfig(mode='proximal').")
        metrics = evaluate(bound.model, data.validation)
        bound.push()
        reused = sum(bound.reused) / max(1, len(bound.reused))
        return {"loss": losses, "wpl_penalty": penalty, "shared_fraction": reused, **metrics}

    def _train(self, bound: BoundModel, data: TrialData, wpl_active: bool) -> Tuple[float, float]:
        """``steps_per_trial`` WPL steps; returns the mean loss and the last penalty."""
        model, trainable = bound.model, bound.trainable
        optimizer = model.optimizer
        step = WPLStep(bound.state, self.wpl_config, default_l2_placement="after_clip")
        covered = [Covered(position=k, index=k) for k in range(len(trainable))]
        proximal = self.wpl_config.mode == "proximal"

        def apply(gradients):
            optimizer.apply_gradients(zip(gradients, trainable))

        # The WPL step branches with tf.cond itself: autograph (kept for the user's model, as
        # Keras' own train function keeps it) need not convert it again at every trace.
        @tf.autograph.experimental.do_not_convert
        def wpl_step(gradients, update_fisher):
            rate = tf.convert_to_tensor(optimizer.learning_rate) if proximal else None
            return step([tf.convert_to_tensor(v) for v in trainable], gradients, apply,
                        covered=covered, learning_rate=rate, active=bool(wpl_active),
                        update_fisher=update_fisher).penalty

        @tf.function
        def train_step(x, y, sample_weight, update_fisher):
            with tf.GradientTape() as tape:
                y_pred = model(x, training=True)
                loss = model.compute_loss(x=x, y=y, y_pred=y_pred, sample_weight=sample_weight,
                                          training=True)
            return loss, wpl_step(tape.gradient(loss, trainable), update_fisher)

        losses, last = [], self.steps_per_trial - 1
        for k in range(self.steps_per_trial):  # read back once, after the steps
            x, y, weight = data.next_batch()
            loss, penalty = train_step(x, y, weight, tf.constant(bool(wpl_active) and k == last))
            losses.append(loss)
        return float(tf.reduce_mean(tf.cast(tf.stack(losses), tf.float32))), float(penalty)

    def score(self, hp, validation: tf.data.Dataset) -> Dict[str, float]:
        """``val_<metric>`` of ``hp``'s model on the current shared weights (no training) on
        ``validation`` (:func:`fixed_batches`)."""
        return evaluate(self.load_model(hp, validation), validation)

    # ------------------------------------------------------------------ saving
    def write(self, path: str) -> None:
        self.bank.save(path)

    def read(self, path: str) -> None:
        self.bank.restore(path)


def evaluate(model: keras.Model, validation: tf.data.Dataset) -> Dict[str, float]:
    """``{"val_" + name: value}`` on the fixed validation batches, as ``model.evaluate``
    computes them (without tracing a test function for each trial's new model): every
    compiled metric (``model.reset_metrics``, then ``model.compute_metrics`` per batch) and
    ``val_loss = Σ_b n_b L_b / Σ_b n_b``, ``L_b = model.compute_loss(..., training=False)``
    of batch ``b`` of ``n_b`` examples (Keras' loss tracker, a mean weighted by batch size)."""
    model.reset_metrics()
    total, count, results = 0.0, 0, {}
    for batch in validation:
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(batch)
        y_pred = model(x, training=False)
        loss = model.compute_loss(x=x, y=y, y_pred=y_pred, sample_weight=sample_weight,
                                  training=False)
        n = int(tf.shape(tf.nest.flatten(x)[0])[0])
        total, count = total + float(loss) * n, count + n
        results = model.compute_metrics(x, y, y_pred, sample_weight=sample_weight)
    if count == 0:
        raise ValueError("WeightSharingTuner: the validation data holds no batch.")
    metrics = {f"val_{name}": float(value) for name, value in _flat(results).items()
               if name != "loss"}
    metrics["val_loss"] = total / count
    return metrics


def _flat(results) -> Dict[str, object]:
    """``compute_metrics``' results with nested dicts (several outputs) flattened."""
    out = {}
    for name, value in results.items():
        if isinstance(value, dict):
            out.update(_flat(value))
        else:
            out[name] = value
    return out
