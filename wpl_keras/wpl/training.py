"""Training with the Weight Plasticity Loss from ``model.fit``, saved and loaded with the model.

Two ways in:

* :func:`apply_wpl` on any Keras model: creates a :class:`WPLState` for the named shared layers
  or variables and attaches a :class:`WeightPlasticity` regularizer to each, so plain
  ``model.fit`` minimises ``loss + (α/2) Σ F (θ − θ*)² + (λ/2) Σ θ²``.
* :class:`WPLModel`, :class:`WPLSequential` (or :class:`WPLTrainingMixin` for a subclassed
  model): one WPL step of :mod:`wpl_keras.wpl.core` around the optimiser's step. It adds the
  penalty's gradient in closed form (gradient mode, scaled correctly under ``tf.distribute``)
  or applies the exact proximal step after the optimiser (stable for any ``α``), can update
  the Fisher from the data gradients ``fit`` already computed (``F ← (1 − η_F)F + η_F g²``,
  or its normalised form under ``apply_wpl(..., fisher_normalization=...)``; no second
  backward pass), and puts ``wpl_strength``, ``wpl_penalty`` and ``wpl_fisher_norm`` into each
  epoch's logs (``model.wpl_logs()`` reads them at any time). ``model.save("m.keras")``
  stores the WPL settings in the model's config and ``keras.models.load_model`` restores
  them, with the Fisher, its raw EMA and the anchors from the weights.

Only public Keras and ``tf.distribute`` APIs are used: ``train_step`` is the documented hook
for customising ``fit``; ``compute_loss``, ``compute_metrics``, ``optimizer.scale_loss`` and
``optimizer.apply_gradients`` do the Keras parts of the step.
"""

from __future__ import annotations

import inspect
import weakref
from typing import Optional, Sequence

import keras
import tensorflow as tf

from wpl_keras.utils.validation import check_number
from wpl_keras.wpl.config import WPLConfig
from wpl_keras.wpl.core import check_wpl_mode, wpl_penalty
from wpl_keras.wpl.fisher import WPLState, _resolve_alias
from wpl_keras.wpl.penalty import WeightPlasticity
from wpl_keras.wpl.step import Covered, WPLStep


class WPLDivergenceError(RuntimeError):
    """Training with WPL produced a NaN or exploding loss."""


def resolve_shared_variables(model: keras.Model, shared: Sequence) -> list:
    """Turns layer names, layers or variables into the list of trainable variables to protect.

    Raises:
        ValueError: for an unknown layer name or a layer without trainable weights.
    """
    if isinstance(shared, (str, keras.layers.Layer)) or hasattr(shared, "assign"):
        shared = [shared]
    variables = []
    for item in shared:
        if isinstance(item, str):
            try:
                layer = model.get_layer(item)
            except ValueError as error:
                names = [layer.name for layer in model.layers]
                raise ValueError(
                    f"apply_wpl: no layer named {item!r} in model {model.name!r}; layers: {names}."
                ) from error
            item = layer
        if isinstance(item, keras.layers.Layer):
            if not item.trainable_weights:
                raise ValueError(
                    f"apply_wpl: layer {item.name!r} has no trainable weights (is it built?)."
                )
            variables.extend(item.trainable_weights)
        else:
            variables.append(item)
    if not variables:
        raise ValueError("apply_wpl: `shared` named no variables.")
    unique = []
    for v in variables:
        if not any(v is u for u in unique):
            unique.append(v)
    return unique


def apply_wpl(
    model: keras.Model,
    shared: Sequence,
    *,
    strength: float = 1.0,
    l2: float = 0.0,
    fisher_momentum: Optional[float] = None,
    clip_norm: Optional[float] = None,
    update_fisher: bool = False,
    mode: str = "gradient",
    momentum: Optional[float] = None,
    fisher_normalization: str = "none",
) -> WPLState:
    """Protects ``shared`` weights of ``model`` with the Weight Plasticity Loss.

    The anchors ``θ*`` are set to the current weights and the Fisher ``F`` to zero; fill the
    Fisher with ``state.assign_fisher(estimate_fisher(...))`` or let a :class:`WPLModel` update
    it from its training gradients (``update_fisher=True``). The state is ``model.wpl_state``;
    ``model.save``, ``model.save_weights`` (so ``ModelCheckpoint`` and ``BackupAndRestore``)
    and ``tf.train.Checkpoint(model=model)`` save it (:func:`_attach_state`).

    For a plain Keras model the penalty ``(α/2) Σ F (θ − θ*)² + (λ/2) Σ θ²`` is attached as a
    :class:`WeightPlasticity` regularizer on each shared weight. (Keras sums regularizer losses
    on every replica without dividing by the replica count; under ``MirroredStrategy`` use a
    :class:`WPLModel`, which adds the penalty with the correct scaling.) ``update_fisher`` and
    ``mode="proximal"`` need a :class:`WPLTrainingMixin` model.

    Args:
        model: the model being trained now (model B); its shared weights hold ``θs*``.
        shared: layer names, layers or variables whose weights are shared with earlier models.
        strength: ``α``.
        l2: ``λ`` (L2 on the shared weights, eq. 8).
        fisher_momentum: ``η_F`` for Fisher updates from gradients (default 0.9).
        clip_norm: optional per-tensor L2 clip of the Fisher after each update (with
            ``fisher_normalization="tensor_norm"``: the norm ``c`` each weight's ``F`` has).
        update_fisher: update ``F`` from each training step's gradients (WPLModel only).
        mode: ``"gradient"`` (penalty in the loss) or ``"proximal"`` (exact proximal step after
            each optimizer step; WPLModel only).
        momentum: former name of ``fisher_momentum``.
        fisher_normalization: the ``F`` the penalty and the pull use
            (:class:`~wpl_keras.wpl.config.WPLConfig`): ``"none"`` (the clipped EMA of
            ``g²``), ``"tensor_norm"`` (``F = c R / ‖R‖`` per weight, ``c = clip_norm``,
            ``R`` the plain EMA of ``g²`` kept in ``state.fisher_raw``) or ``"mean"``
            (``F = R / mean(R)``). Fisher updates from the train step,
            ``state.assign_fisher`` and ``state.add_model`` all go through ``R``.

    Returns:
        The :class:`WPLState`.
    """
    fisher_momentum = _resolve_alias(fisher_momentum, momentum, 0.9,
                                     "apply_wpl: fisher_momentum (η_F)")
    strength = check_number("apply_wpl: strength (α)", strength, minimum=0, allow_inf=True)
    l2 = check_number("apply_wpl: l2 (λ)", l2, minimum=0)
    clip_norm = check_number("apply_wpl: clip_norm", clip_norm, minimum=0,
                             exclusive_minimum=True, optional=True)
    check_wpl_mode(mode, "apply_wpl: mode")
    if strength == float("inf") and mode != "proximal":
        raise ValueError(
            "apply_wpl: strength=inf needs mode='proximal' (the proximal step holds each weight "
            "with F > 0 at its anchor); in mode='gradient' the penalty's gradient is infinite.")
    is_wpl_model = isinstance(model, WPLTrainingMixin)
    if (update_fisher or mode == "proximal") and not is_wpl_model:
        raise ValueError(
            "update_fisher=True and mode='proximal' need the WPL train step: build the model as "
            "wpl_keras.wpl.WPLModel(inputs, outputs) or mix WPLTrainingMixin into its class.")
    variables = resolve_shared_variables(model, shared)
    strategy = getattr(model, "distribute_strategy", None) or tf.distribute.get_strategy()
    with strategy.scope():
        state = WPLState(variables, strength=strength, fisher_momentum=fisher_momentum,
                         clip_norm=clip_norm, fisher_normalization=fisher_normalization)
    regularizers = None if is_wpl_model else _bound_regularizers(state, variables, l2)
    _attach_state(model, state)
    if is_wpl_model:
        model.configure_wpl(update_fisher=bool(update_fisher), mode=mode, l2=l2)
    else:
        for v, regularizer in zip(variables, regularizers):
            v.regularizer = regularizer
            _set_layer_regularizer(model, v, regularizer)
    return state


def _attach_state(model: keras.Model, state: WPLState) -> None:
    """Makes ``state`` the attribute ``model.wpl_state`` and a checkpoint dependency of the
    model named ``"wpl_state"``, without making it one of the model's layers.

    Keras' own saving (``model.save``, ``save_weights``, and so ``ModelCheckpoint`` and
    ``BackupAndRestore``) walks the model's attributes and stores the state's variables under
    ``"wpl_state"``. ``tf.train.Checkpoint`` follows TensorFlow's trackable dependencies
    instead, which an attribute set with ``object.__setattr__`` does not create: the explicit
    dependency puts the Fisher, raw EMA, anchors, ``α`` and the update count into
    ``tf.train.Checkpoint(model=model)`` (as ``model/wpl_state/...``), and a checkpoint
    restored before ``apply_wpl`` fills the state when it is attached here (TensorFlow's
    deferred restoration). The dependency is a :class:`_StateDependency`, not the state
    itself: a Keras model keeps its dependency names in a Keras-tracked dict, which would take
    the state (a layer) for a new sub-layer and refuse it once a subclassed model is built.
    """
    object.__setattr__(model, "wpl_state", state)
    model._track_trackable(_StateDependency(state), name="wpl_state", overwrite=True)


class _StateDependency(tf.__internal__.tracking.Trackable):
    """Stands for a :class:`WPLState` in a model's checkpoint graph: its checkpoint children
    are the state's (Fisher, raw EMA, anchors, ``α``, update count, layout), so a checkpoint
    holds them under ``model/wpl_state/...`` and restores them into the state."""

    def __init__(self, state: WPLState):
        self._state = state

    def _trackable_children(self, save_type="checkpoint", **kwargs):
        return self._state._trackable_children(save_type, **kwargs)


def _bound_regularizers(state: WPLState, variables: list, l2: float) -> list:
    """One :class:`WeightPlasticity` bound to ``state`` per variable, after checking that no
    variable has another regularizer (their saved binding records the whole state's settings,
    the Fisher normalisation included, so :func:`~wpl_keras.wpl.saving.restore_wpl` re-creates
    it)."""
    out = []
    for v in variables:
        existing = getattr(v, "regularizer", None)
        if existing is not None and not isinstance(existing, WeightPlasticity):
            raise ValueError(
                f"apply_wpl: {getattr(v, 'path', v.name)} already has regularizer "
                f"{existing!r}; fold it into WeightPlasticity(l2=...) or remove it first."
            )
        out.append(WeightPlasticity(l2=l2).bind(state, v))
    return out


def _set_layer_regularizer(model: keras.Model, variable, regularizer) -> None:
    """Sets ``<name>_regularizer`` on the layer whose attribute ``<name>`` is ``variable``
    (e.g. ``kernel_regularizer`` of a Dense kernel), so that the layer's config, and so the
    saved model, records the regularizer. A layer without such an attribute keeps it on the
    variable only."""
    for layer in _all_layers(model):
        for key in layer.get_config():
            if key.endswith("_regularizer") and getattr(layer, key[: -len("_regularizer")],
                                                        None) is variable:
                setattr(layer, key, regularizer)
                return


def _all_layers(model) -> list:
    out = []
    for layer in getattr(model, "layers", []):
        out.append(layer)
        out.extend(_all_layers(layer))
    return out


def _replicas() -> int:
    return tf.distribute.get_strategy().num_replicas_in_sync


def _loss_tracker(model: keras.Model):
    """The metric that ``fit`` reports as ``loss`` (Keras' own loss tracker).

    ``Model.metrics`` lists it under the name ``"loss"`` once the model is compiled; a custom
    ``train_step`` updates it like any metric (the Keras guide to customising ``fit``).
    """
    for metric in model.metrics:
        if metric.name == "loss":
            return metric
    raise RuntimeError(
        f"model {model.name!r} has no 'loss' metric: compile it with a loss before fit()."
    )


class WPLTrainingMixin:
    """Mix into a ``keras.Model`` subclass (before it in the bases) to train with WPL from
    ``fit`` and to save and load the WPL state with the model.

    One training step is one :class:`~wpl_keras.wpl.step.WPLStep` over the protected weights
    (config ``wpl_step_config``: the raw data gradient in the Fisher, L2 in the penalty),
    with ``θ, F, θ*`` read at its start:

    1. the data loss ``L`` (the parent class's ``compute_loss``: compiled loss plus
       ``model.losses``) and its gradient ``g``;
    2. the penalty ``P = (α/2) Σ F (θ − θ*)² + (λ/2) Σ θ²``
       (:func:`~wpl_keras.wpl.core.wpl_penalty`) and, in gradient mode, the closed-form
       ``α F (θ − θ*) + λ θ`` added to ``g`` with the data gradient's own factor
       (``1 / replicas`` under ``tf.distribute``, times the loss scale; proximal mode adds
       ``λ θ`` only);
    3. ``optimizer.apply_gradients``;
    4. proximal mode: :func:`~wpl_keras.wpl.core.proximal_pull`,
       ``θ ← (θ + η α F θ*) / (1 + η α F)`` with this step's learning rate ``η``;
    5. with ``update_fisher``: :meth:`WPLState.update_fisher` from the all-reduced data
       gradient, ``F ← clip((1 − η_F) F + η_F g²)``; under a Fisher normalisation
       (``state.fisher_normalization``) ``R ← (1 − η_F) R + η_F g²`` (``state.fisher_raw``)
       and ``F ← c R / ‖R‖`` or ``R / mean(R)`` per weight.

    WPL follows the optimiser's applied steps: steps 4 and 5 (the pull, the Fisher update and
    its count ``state.num_fisher_updates``) take effect exactly when ``apply_gradients``
    updated the weights, which ``optimizer.iterations`` records (:func:`_step_outcome`; known
    when tracing for a Keras optimiser that updates on every call, :func:`_applies_every_call`). A
    step a ``LossScaleOptimizer`` skips for inf/NaN gradients (mixed precision) changes no
    WPL state; with ``gradient_accumulation_steps = k`` the pull runs once per real update
    (with its ``η``) and the Fisher uses ``g = (1/k) Σ g_i``, the mean of the unscaled,
    all-reduced data gradients of the k micro-batches that update consumed, as Keras averages
    them (:meth:`_wpl_applied_gradients`). The same holds under ``steps_per_execution``,
    ``jit_compile`` and ``tf.distribute``. With ``use_ema=True`` the penalty, the pull and the
    Fisher act on the raw weights the optimiser trains (the weights the gradients are taken
    at); Keras averages them after each update's optimiser step (before that step's pull) and
    writes the average into the model when ``fit`` ends, before ``on_train_end``: anchors
    taken after ``fit`` (``SnapshotAnchors``, ``apply_wpl`` on the next model) are the
    averaged weights, the ones the trained model keeps, is evaluated and saved with.

    The logged ``loss`` is ``L + P`` in gradient mode and ``L`` in proximal mode; each epoch's
    logs also hold ``wpl_strength`` (``α``), ``wpl_penalty`` (``P`` of the epoch's last step) and
    ``wpl_fisher_norm`` (``‖F‖``) (:meth:`wpl_logs`; per-batch logs carry only the compiled
    loss and metrics, so that a step returns no more outputs than Keras' own).
    ``compute_loss(..., training=True)`` returns ``L + P / replicas`` in gradient mode, for a
    caller that differentiates it itself.

    Saving: ``get_config`` adds a ``"wpl"`` entry (the protected variables by path, ``α``,
    ``η_F``, clip, Fisher normalisation, mode, ``update_fisher``, ``λ``); ``from_config`` (or
    ``build_from_config`` for a model built lazily) calls :func:`apply_wpl` with it, and Keras
    then loads ``F``, ``θ*``, the raw EMA ``R`` and ``α`` from the saved weights (a config
    without a Fisher normalisation loads as ``"none"``). A custom ``compute_loss`` belongs in
    a base class listed after the mixin.
    """

    wpl_state: Optional[WPLState] = None
    #: The step's choices: the raw data gradient in the Fisher, L2 in the penalty.
    wpl_step_config: WPLConfig = WPLConfig(mode="gradient", fisher_gradient="data",
                                           l2_placement="penalty", clip_norm=None)
    #: Update ``F`` from each step's data gradients.
    wpl_update_fisher: bool = False
    #: ``λ`` of the L2 term ``(λ/2) Σ θ²`` on the protected weights.
    wpl_l2: float = 0.0

    def configure_wpl(self, *, update_fisher: bool = False, mode: str = "gradient",
                      l2: float = 0.0) -> None:
        """Sets how ``fit`` uses the WPL state (see :func:`apply_wpl`): ``mode``
        (``"gradient"`` or ``"proximal"``), ``update_fisher`` and ``l2`` (``λ``), as the
        :class:`~wpl_keras.wpl.step.WPLStep` config ``WPLConfig(mode=mode,
        fisher_gradient="data", l2_placement="penalty")`` (Fisher momentum, clip and
        normalisation are the state's)."""
        l2 = check_number("configure_wpl: l2 (λ)", l2, minimum=0)
        state = self.wpl_state
        config = WPLConfig(
            mode=check_wpl_mode(mode, "configure_wpl: mode"), fisher_gradient="data",
            l2_placement="penalty", clip_norm=None if state is None else state.clip_norm,
            fisher_momentum=0.9 if state is None else state.fisher_momentum,
            fisher_normalization="none" if state is None else state.fisher_normalization)
        object.__setattr__(self, "wpl_step_config", config)
        object.__setattr__(self, "wpl_update_fisher", bool(update_fisher))
        object.__setattr__(self, "wpl_l2", l2)
        if self.__dict__.get("_wpl_penalty_log") is None:
            # P of the last step, for the epoch logs; a plain attribute, not saved with the
            # model. Every replica computes the same P, the first one's value is kept.
            with self.distribute_strategy.scope():
                log = tf.Variable(0.0, trainable=False, name="wpl_penalty_log",
                                  aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA)
            object.__setattr__(self, "_wpl_penalty_log", log)
        # A compiled train function traced with other settings must be rebuilt.
        if getattr(self, "train_function", None) is not None:
            self.train_function = None

    def wpl_penalty_value(self) -> tf.Tensor:
        """The current penalty ``(α/2) Σ F (θ − θ*)² + (λ/2) Σ θ²`` (unscaled)."""
        state = self.wpl_state
        if state is None:
            return tf.constant(0.0)
        k = range(len(state.protected_variables))
        theta, fisher, anchors = zip(*[state.read(i) for i in k])
        return wpl_penalty(theta, fisher, anchors, state.strength, l2=self.wpl_l2)

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        loss = super().compute_loss(x=x, y=y, y_pred=y_pred, sample_weight=sample_weight,
                                    training=training)
        if training and self.wpl_state is not None and self.wpl_step_config.mode == "gradient":
            loss = loss + tf.cast(self.wpl_penalty_value() / _replicas(), loss.dtype)
        return loss

    def train_step(self, data):
        if self.wpl_state is None:
            return super().train_step(data)
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        with tf.GradientTape() as tape:
            y_pred = self(x, training=True)
            data_loss = super().compute_loss(x=x, y=y, y_pred=y_pred,
                                             sample_weight=sample_weight, training=True)
            scaled = self.optimizer.scale_loss(data_loss)
        trainable = self.trainable_variables
        gradients = tape.gradient(scaled, trainable)
        penalty = self._wpl_apply(gradients, trainable)
        # Keras' own step reports the loss unscaled by the replica count: L · replicas + P.
        replicas = _replicas()
        loss = data_loss if replicas == 1 else data_loss * replicas
        if self.wpl_step_config.mode == "gradient":
            loss = loss + tf.cast(penalty, loss.dtype)
        _loss_tracker(self).update_state(loss, sample_weight=tf.shape(tf.nest.flatten(x)[0])[0])
        # P goes to the epoch logs through a variable (see `fit`), not as a per-batch output.
        self._wpl_penalty_log.assign(penalty)
        return self.compute_metrics(x, y, y_pred, sample_weight=sample_weight)

    def wpl_logs(self) -> dict:
        """The WPL values that ``fit`` adds to each epoch's logs, as Python floats.

        ``wpl_strength``: ``α`` now; ``wpl_penalty``: ``P`` of the last training step (at the
        weights that step started from, as in the logged ``loss``); ``wpl_fisher_norm``:
        ``‖F‖`` now (after the last step's Fisher update). A callback that wants them per
        batch calls this method in ``on_train_batch_end``. Empty without a WPL state.
        """
        state = self.wpl_state
        if state is None:
            return {}
        return {"wpl_strength": float(state.strength.numpy()),
                "wpl_penalty": float(self._wpl_penalty_log.numpy()),
                "wpl_fisher_norm": float(state.fisher_norm().numpy())}

    def fit(self, *args, **kwargs):
        """``keras.Model.fit``, with ``wpl_strength``, ``wpl_penalty`` and ``wpl_fisher_norm``
        (:meth:`wpl_logs`) added to each epoch's logs before any other callback sees them.

        The values are read once per epoch instead of leaving the train function as three
        more outputs of every batch (which ``fit`` converts to Python floats per batch).
        """
        if self.wpl_state is None:
            return super().fit(*args, **kwargs)
        bound = inspect.signature(super().fit).bind(*args, **kwargs)
        callbacks = bound.arguments.get("callbacks")
        logger = _WPLEpochLogs()
        if isinstance(callbacks, keras.callbacks.CallbackList):  # the caller's list, kept
            if not any(isinstance(c, _WPLEpochLogs) for c in callbacks.callbacks):
                callbacks.callbacks.insert(0, logger)
                logger.set_model(self)
        else:
            bound.arguments["callbacks"] = [logger, *(callbacks or [])]
        return super().fit(*bound.args, **bound.kwargs)

    # ----------------------------------------------------------------- the WPL step
    def _wpl_apply(self, gradients, trainable):
        """Steps 2–5 of the class docstring, one :class:`~wpl_keras.wpl.step.WPLStep` over
        the protected weights (4 and 5 only where the optimiser applied an update,
        :func:`_step_outcome`); returns ``P``."""
        state, optimizer = self.wpl_state, self.optimizer
        protected = state.protected_variables
        positions = [next((i for i, t in enumerate(trainable) if t is v), None) for v in protected]
        data = [None if i is None else gradients[i] for i in positions]
        data = [None if g is None else tf.convert_to_tensor(g) for g in data]
        scale = optimizer.scale_loss(1.0 / _replicas())
        learning_rate = None  # this step's η, read before the step moves a schedule
        if self.wpl_step_config.mode == "proximal":
            learning_rate = tf.convert_to_tensor(optimizer.learning_rate)
        unit = optimizer.scale_loss(1.0)  # this step's loss scale (the step may change it)
        consumed = []

        def apply(step_gradients):
            merged = list(gradients)
            for i, g in zip(positions, step_gradients):
                if i is not None:
                    merged[i] = g
            marks = _step_marks(optimizer)
            optimizer.apply_gradients(zip(merged, trainable))
            applied, used = _step_outcome(optimizer, marks)
            consumed.append(used)
            return applied

        def for_fisher(values, applied):  # after the step, which used the F read at its start
            return self._wpl_applied_gradients(_all_reduce(_unscale(values, unit)), applied,
                                               consumed[0])

        result = WPLStep(state, self.wpl_step_config)(
            [tf.convert_to_tensor(v) for v in protected], data, apply,
            covered=[Covered(position=k, index=k) for k in range(len(protected))],
            learning_rate=learning_rate, l2=self.wpl_l2, update_fisher=self.wpl_update_fisher,
            scale=None if _is_one(scale) else tf.convert_to_tensor(scale, tf.float32),
            fisher_gradients=for_fisher)
        return result.penalty

    def _wpl_applied_gradients(self, gradients, applied, consumed) -> list:
        """The data gradients of the update the optimiser applied, for the Fisher.

        Without gradient accumulation: this step's (unscaled, all-reduced) gradients ``g``.
        With ``gradient_accumulation_steps = k``: ``(1/k) Σ g_i`` over the k micro-batches
        the optimiser consumed since its last update, as Keras averages them: each consumed
        ``g_i`` is added to a sum (:meth:`_wpl_accumulators`), which the applied update
        resets. Where no update was applied the values are left as they are: the Fisher
        update is then off, a select that keeps ``F`` exactly whatever they hold
        (:func:`wpl_keras.wpl.core.fisher_update`).
        """
        k = _accumulation_steps(self.optimizer)
        sums = None if k is None else self._wpl_accumulators()
        out = []
        for i, g in enumerate(gradients):
            if g is not None and sums is not None:
                if consumed is not True:
                    g = tf.where(consumed, g, tf.zeros_like(g))
                total = tf.convert_to_tensor(sums[i]) + g
                sums[i].assign(tf.where(applied, tf.zeros_like(total), total))
                g = total / k
            out.append(g)
        return out

    def _wpl_accumulators(self) -> list:
        """The sums of :meth:`_wpl_applied_gradients` (float32 zeros at first, one per
        protected weight, under the model's strategy), made again for another optimiser or
        state. A plain attribute, not saved: Keras saves its own accumulators with the
        optimiser, so a run restored inside an accumulation window applies the window's
        update as saved, and its Fisher update averages only the micro-batches since the
        restore (still divided by k)."""
        state, held = self.wpl_state, self.__dict__.get("_wpl_accumulated")
        if held is not None and held[0]() is self.optimizer and held[1]() is state:
            return held[2]
        with self.distribute_strategy.scope():
            sums = [tf.Variable(tf.zeros(tuple(v.shape), tf.float32), trainable=False,
                                name=f"wpl_gradient_sum_{k}",
                                aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA)
                    for k, v in enumerate(state.protected_variables)]
        # Weak references: Keras' saving walks the model's attributes, and must find the
        # optimiser and the state under their own names only.
        object.__setattr__(self, "_wpl_accumulated",
                           (weakref.ref(self.optimizer), weakref.ref(state), sums))
        return sums

    def make_train_function(self, force=False):
        """``keras.Model.make_train_function``, after making the gradient sums of
        :meth:`_wpl_accumulators` (variables are made outside the traced step)."""
        if (self.wpl_state is not None and self.wpl_update_fisher
                and _accumulation_steps(self.optimizer) is not None):
            self._wpl_accumulators()
        return super().make_train_function(force=force)

    # ----------------------------------------------------------------- saving
    def wpl_config(self) -> Optional[dict]:
        """The WPL part of :meth:`get_config` (None without a WPL state)."""
        state = self.wpl_state
        if state is None:
            return None
        weights = list(self.weights)
        shared = []
        for v in state.protected_variables:
            index = next((i for i, w in enumerate(weights) if w is v), None)
            shared.append({"path": getattr(v, "path", None), "index": index})
        return {
            "shared": shared,
            "strength": float(state.strength.numpy()),
            "fisher_momentum": state.fisher_momentum,
            "clip_norm": state.clip_norm,
            "fisher_normalization": state.fisher_normalization,
            "mode": self.wpl_step_config.mode,
            "update_fisher": self.wpl_update_fisher,
            "l2": self.wpl_l2,
        }

    def get_config(self):
        config = dict(super().get_config())
        wpl = self.wpl_config()
        if wpl is not None:
            config["wpl"] = wpl
        return config

    @classmethod
    def from_config(cls, config, custom_objects=None):
        config = dict(config)
        wpl = config.pop("wpl", None)
        model = super().from_config(config, custom_objects=custom_objects)
        if wpl is not None:
            object.__setattr__(model, "_wpl_pending", wpl)
            if model.built:
                model._wpl_restore()
        return model

    def build_from_config(self, config):
        super().build_from_config(config)
        if self.__dict__.get("_wpl_pending") is not None:
            self._wpl_restore()

    def _wpl_restore(self) -> None:
        wpl = dict(self.__dict__.pop("_wpl_pending"))
        shared = [_find_weight(self, entry) for entry in wpl.pop("shared")]
        apply_wpl(self, shared, **wpl)


class _WPLEpochLogs(keras.callbacks.Callback):
    """Adds :meth:`WPLTrainingMixin.wpl_logs` to the epoch logs (first in the list, so that
    later callbacks, ``History`` included, see the values of the epoch that ended)."""

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs.update(self.model.wpl_logs())


def _find_weight(model, entry: dict):
    """The weight of ``model`` saved as ``{"path": ..., "index": ...}``."""
    weights = list(model.weights)
    by_path = [w for w in weights if getattr(w, "path", None) == entry.get("path")]
    if len(by_path) == 1:
        return by_path[0]
    index = entry.get("index")
    if index is not None and index < len(weights):
        return weights[index]
    raise ValueError(
        f"loading WPL: model {model.name!r} has no weight {entry.get('path')!r} (index "
        f"{index}); the saved config names the protected weights by path. Rebuild the model "
        "with the same layer names, or call apply_wpl on it and load_weights."
    )


def _accumulation_steps(optimizer) -> Optional[int]:
    """``k`` of ``gradient_accumulation_steps`` (a ``LossScaleOptimizer``'s inner optimiser's),
    or None without accumulation."""
    if isinstance(optimizer, keras.optimizers.LossScaleOptimizer):
        optimizer = optimizer.inner_optimizer
    steps = getattr(optimizer, "gradient_accumulation_steps", None)
    return int(steps) if steps else None


def _applies_every_call(optimizer) -> bool:
    """True where every ``apply_gradients`` call of ``optimizer`` updates the weights, known
    when tracing: a Keras optimiser whose ``apply`` is Keras' own (it updates and counts
    ``iterations`` on every call), neither a ``LossScaleOptimizer`` (it skips inf/NaN steps)
    nor accumulating gradients. Then :func:`_step_outcome`'s answer is always True, and the
    step uses python True instead of reading ``iterations`` twice and selecting per weight.
    A subclass that overrides ``apply``, ``apply_gradients`` or ``_backend_apply_gradients``
    is not assumed to apply every call."""
    if (isinstance(optimizer, keras.optimizers.LossScaleOptimizer)
            or _accumulation_steps(optimizer) is not None):
        return False
    base, cls = keras.optimizers.Optimizer, type(optimizer)
    return isinstance(optimizer, base) and all(
        getattr(cls, name, None) is getattr(base, name, None)
        for name in ("apply", "apply_gradients", "_backend_apply_gradients"))


def _step_marks(optimizer) -> Optional[tuple]:
    """Read right before ``apply_gradients`` for :func:`_step_outcome`: ``optimizer.iterations``
    and, for a ``LossScaleOptimizer``, its loss scale (``initial_scale`` until it is built,
    as in its ``scale_loss``); None, nothing read, where :func:`_applies_every_call`."""
    if _applies_every_call(optimizer):
        return None
    iterations = tf.convert_to_tensor(optimizer.iterations)
    if not isinstance(optimizer, keras.optimizers.LossScaleOptimizer):
        return iterations, None
    scale = optimizer.dynamic_scale if optimizer.built else optimizer.initial_scale
    return iterations, tf.convert_to_tensor(scale, tf.float32)


def _step_outcome(optimizer, marks) -> tuple:
    """``(applied, consumed)`` of the ``apply_gradients`` call after :func:`_step_marks`.

    * ``applied`` (bool tensor, or python True): the optimiser updated the weights, read as
      ``optimizer.iterations`` having grown. Keras counts exactly the applied updates there:
      one per step; with ``gradient_accumulation_steps = k``, ``⌊micro-steps / k⌋``, which
      grows on every k-th consumed micro-batch; a ``LossScaleOptimizer`` that skips a step
      with inf/NaN gradients never calls its inner optimiser, whose count it reports.
    * ``consumed``: the gradients entered the optimiser (its update or its accumulators):
      False only on a ``LossScaleOptimizer``'s skipped step, which halves its
      ``dynamic_scale`` (a finite step keeps or doubles it); python True for any other
      optimiser.

    Both are read from the optimiser's own variables, so every replica under
    ``tf.distribute`` gets the same answer. Without marks (an optimiser that applies every
    call, :func:`_applies_every_call`) both are python True, known when tracing: the step
    then selects nothing per weight.
    """
    if marks is None:
        return True, True
    iterations, scale = marks
    applied = tf.greater(tf.convert_to_tensor(optimizer.iterations), iterations)
    if scale is None:
        return applied, True
    return applied, tf.greater_equal(tf.convert_to_tensor(optimizer.dynamic_scale), scale)


def _is_one(value) -> bool:
    return isinstance(value, (int, float)) and value == 1


def _unscale(gradients, unit):
    """Divides gradients by the optimiser's loss scale (``unit = scale_loss(1)``)."""
    if _is_one(unit):
        return gradients
    unit = tf.cast(unit, tf.float32)
    return [None if g is None else tf.cast(g, tf.float32) / unit for g in gradients]


def _all_reduce(gradients):
    """Sums per-replica gradients over the replicas (identity on one replica)."""
    ctx = tf.distribute.get_replica_context()
    if ctx is None or ctx.num_replicas_in_sync == 1:
        return gradients
    present = [g for g in gradients if g is not None]
    reduced = iter(ctx.all_reduce(tf.distribute.ReduceOp.SUM, present))
    return [None if g is None else next(reduced) for g in gradients]


@keras.saving.register_keras_serializable(package="wpl_keras")
class WPLModel(WPLTrainingMixin, keras.Model):
    """A ``keras.Model`` whose ``fit`` trains with WPL; build it like any functional model.

    >>> import keras
    >>> from wpl_keras.wpl import WPLModel, apply_wpl
    >>> inputs = keras.Input((4,))
    >>> shared = keras.layers.Dense(3, name="shared")
    >>> model = WPLModel(inputs, keras.layers.Dense(2)(shared(inputs)))
    >>> state = apply_wpl(model, ["shared"], strength=10.0, update_fisher=True)
    >>> model.compile(optimizer="sgd", loss=keras.losses.SparseCategoricalCrossentropy(True))
    """


@keras.saving.register_keras_serializable(package="wpl_keras")
class WPLSequential(WPLTrainingMixin, keras.Sequential):
    """A ``keras.Sequential`` whose ``fit`` trains with WPL (see :class:`WPLTrainingMixin`)."""


def check_finite_loss(loss: float, *, strength: float, learning_rate: float, step: int) -> None:
    """Raises :class:`WPLDivergenceError` naming ``α`` and the learning rate if ``loss`` is bad."""
    if not (loss == loss) or loss in (float("inf"), float("-inf")):
        raise WPLDivergenceError(
            f"Training diverged at step {step}: loss is {loss} with WPL strength alpha={strength:g} "
            f"and learning rate {learning_rate:g}. A gradient step on the penalty is stable only "
            "while lr * alpha * max(F) < 2(1 + momentum) (see max_stable_strength); lower alpha "
            "or the learning rate, or use mode='proximal'."
        )
