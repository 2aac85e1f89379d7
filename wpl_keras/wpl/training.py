"""Training with the Weight Plasticity Loss from ``model.fit``.

Two ways in:

* :func:`apply_wpl` on any Keras model: creates a :class:`WPLState` for the named shared layers
  or variables and attaches a :class:`WeightPlasticity` regularizer to each, so plain
  ``model.fit`` minimises ``loss + (α/2) Σ F (θ − θ*)²``.
* :class:`WPLModel` (or :class:`WPLTrainingMixin` for a subclassed model): adds the penalty in
  ``compute_loss`` (scaled correctly under ``tf.distribute``), can update the Fisher from the
  gradients ``fit`` already computed (``F ← (1 − η)F + η g²``, no second backward pass), can
  apply the penalty as an exact proximal step (stable for any ``α``), and puts ``wpl_alpha``,
  ``wpl_penalty`` and ``wpl_fisher_norm`` into the Keras logs.
"""

from __future__ import annotations

from typing import Optional, Sequence

import keras
import tensorflow as tf
from keras.src.losses.loss import scale_loss_for_distribution, unscale_loss_for_distribution
from keras.src.trainers.data_adapters import data_adapter_utils

from wpl_keras.wpl.fisher import WPLState
from wpl_keras.wpl.penalty import (
    WeightPlasticity,
    check_wpl_mode,
    proximal_pull,
    wpl_penalty_and_gradient,
)


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


def _attach(model: keras.Model, name: str, value) -> None:
    """Sets a tracked attribute on a (possibly built and locked) Keras model."""
    tracker = getattr(model, "_tracker", None)
    if tracker is not None and getattr(tracker, "locked", False):
        tracker.unlock()
        try:
            setattr(model, name, value)
        finally:
            tracker.lock()
    else:
        setattr(model, name, value)


def apply_wpl(
    model: keras.Model,
    shared: Sequence,
    *,
    strength: float = 1.0,
    l2: float = 0.0,
    momentum: float = 0.9,
    clip_norm: Optional[float] = None,
    update_fisher: bool = False,
    mode: str = "gradient",
) -> WPLState:
    """Protects ``shared`` weights of ``model`` with the Weight Plasticity Loss.

    The anchors ``θ*`` are set to the current weights and the Fisher ``F`` to zero; fill the
    Fisher with ``state.assign_fisher(estimate_fisher(...))`` or let a :class:`WPLModel` update
    it from its training gradients (``update_fisher=True``). The state is tracked by the model
    (``model.wpl_state``), so ``model.save_weights`` and ``tf.train.Checkpoint`` save it.

    For a plain Keras model the penalty ``(α/2) Σ F (θ − θ*)² + (λ/2) Σ θ²`` is attached as a
    :class:`WeightPlasticity` regularizer on each shared weight. (Keras sums regularizer losses
    on every replica without dividing by the replica count; under ``MirroredStrategy`` use a
    :class:`WPLModel`, which adds the penalty with the correct scaling.) ``update_fisher`` and
    ``mode="proximal"`` need a :class:`WPLModel`.

    Args:
        model: the model being trained now (model B); its shared weights hold ``θs*``.
        shared: layer names, layers or variables whose weights are shared with earlier models.
        strength: ``α``.
        l2: ``λ`` (L2 on the shared weights, eq. 8).
        momentum: ``η`` for Fisher updates from gradients.
        clip_norm: optional per-tensor L2 clip of the Fisher after each update.
        update_fisher: update ``F`` from each training step's gradients (WPLModel only).
        mode: ``"gradient"`` (penalty in the loss) or ``"proximal"`` (exact proximal step after
            each optimizer step; WPLModel only).

    Returns:
        The :class:`WPLState`.
    """
    check_wpl_mode(mode)
    is_wpl_model = isinstance(model, WPLTrainingMixin)
    if (update_fisher or mode == "proximal") and not is_wpl_model:
        raise ValueError(
            "update_fisher=True and mode='proximal' need the WPL train step: build the model as "
            "wpl_keras.wpl.WPLModel(inputs, outputs) or mix WPLTrainingMixin into its class."
        )
    variables = resolve_shared_variables(model, shared)
    strategy = getattr(model, "distribute_strategy", None) or tf.distribute.get_strategy()
    with strategy.scope():
        state = WPLState(variables, strength=strength, momentum=momentum, clip_norm=clip_norm)
    _attach(model, "wpl_state", state)
    if is_wpl_model:
        model.configure_wpl(update_fisher=update_fisher, mode=mode, l2=l2)
    else:
        for v in variables:
            existing = getattr(v, "regularizer", None)
            if existing is not None and not isinstance(existing, WeightPlasticity):
                raise ValueError(
                    f"apply_wpl: {getattr(v, 'path', v.name)} already has regularizer "
                    f"{existing!r}; fold it into WeightPlasticity(l2=...) or remove it first."
                )
            v.regularizer = WeightPlasticity(l2=l2).bind(state, v)
    return state


class WPLTrainingMixin:
    """Mix into a ``keras.Model`` subclass to train with WPL from ``fit``.

    ``compute_loss`` adds ``(α/2) Σ F (θ − θ*)² + (λ/2) Σ θ²`` over ``self.wpl_state``'s weights
    in gradient mode, scaled by ``1 / num_replicas`` like Keras' own loss so that the
    all-reduced gradient is right under ``tf.distribute``. ``train_step`` additionally

    * differentiates only the data loss and adds the penalty's gradient ``α F (θ − θ*) + λ θ``
      in closed form (same result as differentiating the total loss, fewer operations);
    * updates the Fisher from the data-loss gradient it already computed (all-reduced across
      replicas): ``F ← (1 − η) F + η g²``;
    * in proximal mode, after the optimizer step, sets ``θ ← (θ + η_lr α F θ*) / (1 + η_lr α F)``;
    * returns ``wpl_alpha``, ``wpl_penalty`` and ``wpl_fisher_norm`` in the logs.
    """

    wpl_state: Optional[WPLState] = None
    _wpl_update_fisher: bool = False
    _wpl_mode: str = "gradient"
    _wpl_l2: float = 0.0
    _wpl_in_train_step: bool = False

    def configure_wpl(
        self, *, update_fisher: bool = False, mode: str = "gradient", l2: float = 0.0
    ) -> None:
        """Sets how ``fit`` uses the WPL state (see :func:`apply_wpl`)."""
        check_wpl_mode(mode)
        object.__setattr__(self, "_wpl_update_fisher", bool(update_fisher))
        object.__setattr__(self, "_wpl_mode", mode)
        object.__setattr__(self, "_wpl_l2", float(l2))
        # A compiled train function traced with other settings must be rebuilt.
        if getattr(self, "train_function", None) is not None:
            self.train_function = None

    def wpl_penalty_value(self) -> tf.Tensor:
        """The current penalty ``(α/2) Σ F (θ − θ*)² + (λ/2) Σ θ²`` (unscaled)."""
        state = self.wpl_state
        if state is None:
            return tf.constant(0.0)
        penalty = state.penalty()
        if self._wpl_l2:
            penalty += 0.5 * self._wpl_l2 * tf.add_n(
                [tf.reduce_sum(tf.square(tf.convert_to_tensor(v))) for v in state.protected_variables]
            )
        return penalty

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        loss = super().compute_loss(x, y, y_pred, sample_weight, training=training)
        if (
            training
            and self.wpl_state is not None
            and self._wpl_mode == "gradient"
            and not self._wpl_in_train_step
        ):
            loss = loss + tf.cast(scale_loss_for_distribution(self.wpl_penalty_value()), loss.dtype)
        return loss

    def train_step(self, data):
        state = self.wpl_state
        if state is None:
            return super().train_step(data)
        x, y, sample_weight = data_adapter_utils.unpack_x_y_sample_weight(data)
        with tf.GradientTape() as tape:
            if self._call_has_training_arg:
                y_pred = self(x, training=True)
            else:
                y_pred = self(x)
            # Only the data loss goes through autodiff: the penalty's gradient is added in
            # closed form below (cheaper than differentiating it, and the data gradient needed
            # for the Fisher update is then available without a subtraction).
            object.__setattr__(self, "_wpl_in_train_step", True)
            try:
                loss = self._compute_loss(
                    x=x, y=y, y_pred=y_pred, sample_weight=sample_weight, training=True
                )
            finally:
                object.__setattr__(self, "_wpl_in_train_step", False)
            scaled = self.optimizer.scale_loss(loss)
        trainable = self.trainable_weights
        gradients = list(tape.gradient(scaled, trainable))
        positions = self._wpl_positions(trainable)
        if self._wpl_mode == "gradient":
            penalty, penalty_grads = self._wpl_penalty_and_gradients()
            loss = loss + tf.cast(scale_loss_for_distribution(penalty), loss.dtype)
        else:
            penalty, penalty_grads = self.wpl_penalty_value(), None
        self._loss_tracker.update_state(
            unscale_loss_for_distribution(loss),
            sample_weight=tf.shape(tf.nest.flatten(x)[0])[0],
        )
        if self._wpl_update_fisher:
            self._update_fisher_from_data_gradients(
                [None if i is None else gradients[i] for i in positions]
            )
        if penalty_grads is not None:
            # d(scaled loss)/dθ of the penalty term: α F (θ − θ*) + λ θ, times the loss scale and
            # divided by the replica count like the data loss (all-reduce sums replicas).
            factor = None  # 1 on one replica without loss scaling: no multiply in the graph
            if tf.distribute.get_strategy().num_replicas_in_sync > 1:
                factor = scale_loss_for_distribution(tf.constant(1.0, tf.float32))
            if isinstance(self.optimizer, keras.optimizers.LossScaleOptimizer):
                scale = tf.cast(self.optimizer.dynamic_scale, tf.float32)
                factor = scale if factor is None else factor * scale
            for i, pg in zip(positions, penalty_grads):
                if i is None:
                    continue
                g = gradients[i]
                g = tf.convert_to_tensor(g) if g is not None else tf.zeros_like(pg)
                gradients[i] = g + tf.cast(pg if factor is None else pg * factor, g.dtype)
        self.optimizer.apply_gradients(zip(gradients, trainable))
        if self._wpl_mode == "proximal":
            self._proximal_step()
        metrics = self.compute_metrics(x, y, y_pred, sample_weight=sample_weight)
        metrics = dict(metrics)
        metrics["wpl_alpha"] = tf.convert_to_tensor(state.strength)
        metrics["wpl_penalty"] = penalty
        metrics["wpl_fisher_norm"] = state.fisher_norm()
        return metrics

    # ----------------------------------------------------------------- helpers
    def _wpl_positions(self, trainable) -> list:
        """Index in ``trainable`` of each protected variable (None if not trainable)."""
        positions = []
        for v in self.wpl_state.protected_variables:
            positions.append(next((i for i, t in enumerate(trainable) if t is v), None))
        return positions

    def _wpl_penalty_and_gradients(self):
        """Penalty ``(α/2) Σ F (θ − θ*)² + (λ/2) Σ θ²`` and its gradient ``α F (θ − θ*) + λ θ``
        per protected weight, sharing ``α F (θ − θ*)`` between the two."""
        state = self.wpl_state
        terms, grads = [], []
        for v, f, a in zip(state.protected_variables, state.fisher, state.anchors):
            theta = tf.cast(tf.convert_to_tensor(v), tf.float32)
            term, grad = wpl_penalty_and_gradient(theta, f, a, state.strength)
            terms.append(term)
            if self._wpl_l2:
                terms.append(0.5 * self._wpl_l2 * tf.reduce_sum(tf.square(theta)))
                grad = grad + self._wpl_l2 * theta
            grads.append(grad)
        return tf.add_n(terms), grads

    def _update_fisher_from_data_gradients(self, grads) -> None:
        """``F ← (1 − η) F + η g²`` from per-replica data-loss gradients aligned with the
        protected variables (all-reduced across replicas, loss scaling undone)."""
        state = self.wpl_state
        if not any(g is not None for g in grads):
            return
        unscale = None
        if isinstance(self.optimizer, keras.optimizers.LossScaleOptimizer):
            unscale = 1.0 / tf.cast(self.optimizer.dynamic_scale, tf.float32)
        ctx = tf.distribute.get_replica_context()
        dense = [tf.convert_to_tensor(g) if g is not None else None for g in grads]
        if ctx is not None and ctx.num_replicas_in_sync > 1:
            reduced = ctx.all_reduce(tf.distribute.ReduceOp.SUM, [g for g in dense if g is not None])
            it = iter(reduced)
            dense = [next(it) if g is not None else None for g in dense]
        data_grads = []
        for g in dense:
            if g is not None:
                g = tf.cast(g, tf.float32)
                if unscale is not None:
                    g = g * unscale
            data_grads.append(g)
        state.update_fisher(data_grads)

    def _proximal_step(self) -> None:
        state = self.wpl_state
        lr = tf.cast(self.optimizer.learning_rate, tf.float32)
        alpha = tf.convert_to_tensor(state.strength)

        def pull_all(strategy=None):
            for v, f, a in zip(state.protected_variables, state.fisher, state.anchors):
                target = getattr(v, "value", v)

                def pull(var, f=f, a=a):
                    new = proximal_pull(
                        tf.convert_to_tensor(var), tf.convert_to_tensor(f), tf.convert_to_tensor(a), alpha, lr
                    )
                    return var.assign(new)

                if strategy is None:
                    pull(target)
                else:
                    strategy.extended.update(target, pull)

        ctx = tf.distribute.get_replica_context()
        if ctx is not None and ctx.num_replicas_in_sync > 1:
            ctx.merge_call(lambda strategy: pull_all(strategy))
        else:
            pull_all()


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


def check_finite_loss(loss: float, *, strength: float, learning_rate: float, step: int) -> None:
    """Raises :class:`WPLDivergenceError` naming ``α`` and the learning rate if ``loss`` is bad."""
    if not (loss == loss) or loss in (float("inf"), float("-inf")):
        raise WPLDivergenceError(
            f"Training diverged at step {step}: loss is {loss} with WPL strength alpha={strength:g} "
            f"and learning rate {learning_rate:g}. A gradient step on the penalty is stable only "
            "while lr * alpha * max(F) < 2(1 + momentum) (see max_stable_strength); lower alpha "
            "or the learning rate, or use mode='proximal'."
        )

