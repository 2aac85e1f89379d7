"""Fisher information and anchor state for the Weight Plasticity Loss.

:class:`WPLState` keeps, for every shared weight ``θ``, two non-trainable variables created
beside it (the way optimizers keep slots): the anchor ``θ*`` and the diagonal Fisher ``F``,
and the scalar variable ``α``. It is a Keras layer and a TensorFlow trackable, and
:func:`~wpl_keras.wpl.training.apply_wpl` attaches it to the model as ``model.wpl_state`` (an
attribute Keras' saving walks and a checkpoint dependency ``tf.train.Checkpoint`` follows), so
every way the model is saved keeps them; loading checks the saved :meth:`WPLState.layout`
(Fisher normalisation, protected shapes) first. Its formulas are the pure functions of
:mod:`wpl_keras.wpl.core`; the estimate of ``F`` from data is
:func:`wpl_keras.wpl.fisher_estimation.estimate_fisher`.
"""

from __future__ import annotations

import json
from typing import Optional, Sequence, Union

import keras
import numpy as np
import tensorflow as tf

from wpl_keras.utils.validation import check_number
import wpl_keras.wpl.core as core
from wpl_keras.wpl.flat import FlatLayout

GradientLike = Union[tf.Tensor, tf.IndexedSlices, None]


@keras.saving.register_keras_serializable(package="wpl_keras")
class WPLState(keras.layers.Layer):
    """Anchors ``θ*`` and diagonal Fisher ``F`` for a set of shared weights.

    The penalty it serves is ``(α/2) Σ_i F_i (θ_i − θ*_i)²``; ``α`` is the non-trainable
    scalar variable ``strength`` so that schedules can change it inside a traced training
    step. It is a thin stateful wrapper: every formula is a pure function of
    :mod:`wpl_keras.wpl.core`, which this class reads its variables for and writes back.

    Operations:
      * :meth:`snapshot_anchors`: ``θ* ← θ`` (all rows, or only some rows of a weight).
      * :meth:`update_fisher`: ``F ← (1 − η_F) F + η_F g²`` from gradients that training already
        computed (dense tensors or ``tf.IndexedSlices``, in which case only the touched rows
        change), optionally clipping each updated Fisher tensor to an L2 norm.
      * :meth:`add_model`: fold the Fisher of one more earlier model in, ``F ← F + F_new``,
        moving the anchors to the Fisher-weighted mean
        ``θ* ← (F θ* + F_new θ) / (F + F_new)``, which equals the sum of the per-model
        penalties ``Σ_m F_m (θ − θ*_m)²`` up to a constant.
      * :meth:`reset_fisher`: ``F ← 0`` (the periodic flush of the paper's §3.2).

    Fisher normalisation (``fisher_normalization``, :func:`wpl_keras.wpl.core.normalize_fisher`):
    with ``"none"`` the variables :attr:`fisher` hold the running (clipped) EMA of ``g²``.
    With ``"tensor_norm"`` or ``"mean"`` the state keeps the plain EMA ``R`` of ``g²`` in
    :attr:`fisher_raw` (checkpointed, flushed with the Fisher) and writes into :attr:`fisher`,
    at every update and for the updated units only, the normalised value
    ``F = c R / ‖R‖`` (``c`` = ``clip_norm``) or ``F = R / mean(R)``. Everything that reads
    :attr:`fisher` (penalty, proximal pull, a task reading ``fisher[k]``) uses ``F`` unchanged.
    A unit is a whole weight, each slice over ``clip_axes``, or, for a row-slice
    (``tf.IndexedSlices``) gradient without ``clip_axes``, each updated row.

    Create it under the same ``tf.distribute`` strategy scope as the model. Its variables use
    ``aggregation="only_first_replica"``: every replica computes the same update from
    all-reduced gradients and the first replica's value is kept.

    Args:
        variables: the shared weights to protect (Keras or ``tf`` variables).
        strength: initial ``α``.
        fisher_momentum: ``η_F`` of the running Fisher update (paper: 0.9).
        clip_norm: if set, each updated Fisher tensor is clipped to this L2 norm (with
            ``fisher_normalization="tensor_norm"``: the norm ``c`` each unit is scaled to).
        name: layer name.
        momentum: former name of ``fisher_momentum`` (kept for existing callers).
        fisher_normalization: ``"none"``, ``"tensor_norm"`` (needs ``clip_norm``) or
            ``"mean"`` (see above and :class:`~wpl_keras.wpl.config.WPLConfig`).
    """

    def __init__(
        self,
        variables: Sequence,
        *,
        strength: float = 1.0,
        fisher_momentum: Optional[float] = None,
        clip_norm: Optional[float] = None,
        name: str = "wpl_state",
        momentum: Optional[float] = None,
        fisher_normalization: str = "none",
        **kwargs,
    ):
        super().__init__(name=name, **kwargs)
        variables = list(variables)
        if not variables:
            raise ValueError("WPLState needs at least one variable to protect.")
        fisher_momentum = _resolve_alias(fisher_momentum, momentum, 0.9,
                                         "WPLState: fisher_momentum (η_F)")
        clip_norm = check_number("WPLState: clip_norm", clip_norm, minimum=0,
                                 exclusive_minimum=True, optional=True)
        strength = check_number("WPLState: strength (α)", strength, minimum=0, allow_inf=True)
        core.check_fisher_normalization(fisher_normalization, "WPLState fisher_normalization")
        if fisher_normalization == "tensor_norm" and clip_norm is None:
            raise ValueError("WPLState: fisher_normalization='tensor_norm' scales each Fisher "
                             "unit to norm clip_norm; pass clip_norm (WPL release: 10).")
        self.fisher_momentum = float(fisher_momentum)
        self.clip_norm = None if clip_norm is None else float(clip_norm)
        self.fisher_normalization = fisher_normalization
        # The protected weights are referenced, not owned: keep them out of Keras/TF tracking
        # so that they are not saved twice.
        object.__setattr__(self, "_protected", tuple(variables))
        fisher, anchors, raw = [], [], []
        for k, v in enumerate(variables):
            base = _base_name(v, k)
            fisher.append(self._zeros_like(v, f"fisher_{base}"))
            anchor = self._zeros_like(v, f"anchor_{base}")
            anchor.assign(tf.convert_to_tensor(v))
            anchors.append(anchor)
            if self.normalized:
                raw.append(self._zeros_like(v, f"fisher_raw_{base}"))
        self.fisher = fisher
        self.anchors = anchors
        # The plain EMA of g² behind a normalised Fisher (empty with "none").
        self.fisher_raw = raw
        self.strength = self.add_weight(
            shape=(),
            initializer=keras.initializers.Constant(float(strength)),
            trainable=False,
            name="strength",
            aggregation="only_first_replica",
        )
        self.num_fisher_updates = self.add_weight(
            shape=(),
            initializer="zeros",
            dtype="int64",
            trainable=False,
            name="num_fisher_updates",
            aggregation="only_first_replica",
        )
        # The layout in tf.train.Checkpoint (see _trackable_children); not a Keras weight.
        object.__setattr__(self, "_layout_record", _LayoutRecord(self))
        self.built = True

    def _zeros_like(self, variable, name: str):
        """A non-trainable zero state variable shaped like ``variable``."""
        return self.add_weight(shape=tuple(variable.shape), initializer="zeros",
                               trainable=False, name=name, aggregation="only_first_replica")

    # ------------------------------------------------------------------ lookup
    @property
    def normalized(self) -> bool:
        """True when :attr:`fisher` holds a normalised Fisher of the EMA in :attr:`fisher_raw`."""
        return self.fisher_normalization != "none"

    @property
    def protected_variables(self) -> tuple:
        """The shared weights this state protects, in order."""
        return self._protected

    def index_of(self, variable) -> int:
        """Position of ``variable`` among the protected weights.

        Raises:
            KeyError: if the variable is not protected by this state (it has no anchor).
        """
        for k, v in enumerate(self._protected):
            if v is variable or _same_variable(v, variable):
                return k
        raise KeyError(
            f"Variable {getattr(variable, 'path', getattr(variable, 'name', variable))!r} "
            "has no WPL anchor/Fisher in this state; protected variables are: "
            f"{[_var_label(v) for v in self._protected]}."
        )

    @property
    def momentum(self) -> float:
        """Former name of :attr:`fisher_momentum` (``η_F``)."""
        return self.fisher_momentum

    # ----------------------------------------------------------------- reads
    def read(self, index: int, rows: Optional[tf.Tensor] = None) -> tuple:
        """``(θ, F, θ*)`` of protected weight ``index`` (only rows ``rows`` when given, read
        by resource gathers: the whole variables are never copied)."""
        if rows is None:
            read = tf.convert_to_tensor
            return (read(self._protected[index]), read(self.fisher[index]),
                    read(self.anchors[index]))
        rows = tf.cast(rows, tf.int32)
        return (read_rows(self._protected[index], rows), read_rows(self.fisher[index], rows),
                read_rows(self.anchors[index], rows))

    # --------------------------------------------------------------- penalty
    def penalty(self, strength=None, *, index: Optional[int] = None,
                rows: Optional[tf.Tensor] = None) -> tf.Tensor:
        """``(α/2) Σ F (θ − θ*)²`` (:func:`wpl_keras.wpl.core.wpl_penalty`) over every
        protected weight, or only weight ``index`` (and of it only rows ``rows``, leading
        axis, read by resource gathers). ``α`` is the ``strength`` variable unless given."""
        alpha = self.strength if strength is None else strength
        indices = range(len(self._protected)) if index is None else [index]
        if rows is not None and index is None:
            raise ValueError("WPLState.penalty: rows needs index (the weight they are rows of).")
        theta, fisher, anchors = zip(*[self.read(k, rows) for k in indices])
        return core.wpl_penalty(theta, fisher, anchors, alpha)

    def apply_proximal(self, index: int, learning_rate, rows: Optional[tf.Tensor] = None,
                       strength=None, mask: Optional[tf.Tensor] = None, *,
                       fisher: Optional[tf.Tensor] = None,
                       anchor: Optional[tf.Tensor] = None) -> None:
        """In place, the exact proximal step of the Fisher term on protected weight ``index``
        (only rows ``rows`` when given): ``θ ← (θ + η α m F θ*) / (1 + η α m F)``
        (:func:`wpl_keras.wpl.core.proximal_pull`), right after an optimiser's step with that
        step's learning rate ``η``. ``mask``: ``m``, 0/1 weights broadcast against ``F``
        (masked-out entries keep their values); None for 1. ``fisher``, ``anchor``: ``F``
        and ``θ*`` (of the same rows) as already read in this step; None: read here."""
        alpha = self.strength if strength is None else strength
        if fisher is None or anchor is None:
            theta, fisher, anchor = self.read(index, rows)
        elif rows is None:
            theta = tf.convert_to_tensor(self._protected[index])
        else:
            theta = read_rows(self._protected[index], tf.cast(rows, tf.int32))
        pulled = core.proximal_pull(theta, fisher, anchor, alpha, learning_rate, coverage=mask)
        self._write(self._protected[index], pulled, rows)

    def fisher_norm(self) -> tf.Tensor:
        """Global L2 norm of the Fisher over all protected weights."""
        return tf.sqrt(core.global_norm_squared([tf.convert_to_tensor(f) for f in self.fisher]))

    def max_fisher(self) -> tf.Tensor:
        """Largest Fisher value (used to bound a stable ``α``)."""
        return tf.reduce_max(
            tf.stack([tf.reduce_max(tf.convert_to_tensor(f)) for f in self.fisher])
        )

    # -------------------------------------------------------------- updates
    @staticmethod
    def _write(variable, value, rows=None) -> None:
        """``variable ← value`` (``variable[rows] ← value`` when ``rows`` is given)."""
        if rows is None:
            variable.assign(tf.cast(value, variable.dtype))
        else:
            _scatter_assign(variable, tf.cast(rows, tf.int32), tf.cast(value, variable.dtype))

    def snapshot_anchors(self, rows: Optional[dict] = None,
                         masks: Optional[Sequence[Optional[tf.Tensor]]] = None) -> None:
        """``θ* ← θ* + m (θ − θ*)`` (:func:`wpl_keras.wpl.core.snapshot`).

        Args:
            rows: ``{index: row_ids}``: only those weights, and of each only rows ``row_ids``
                (``None``: the whole weight). None: every weight.
            masks: coverage ``m`` per weight (0/1 floats broadcast against it), or None.
        """
        for k, anchor in enumerate(self.anchors):
            if rows is not None and k not in rows:
                continue
            r = None if rows is None else rows[k]
            theta, _, old = self.read(k, r)
            new = core.snapshot(theta, old, None if masks is None else masks[k])
            self._write(anchor, new, r)

    def update_fisher(
        self,
        gradients: Sequence[GradientLike],
        fisher_momentum: Optional[float] = None,
        clip_norm: Optional[float] = None,
        *,
        masks: Optional[Sequence[Optional[tf.Tensor]]] = None,
        clip_axes: Optional[Sequence[Optional[Sequence[int]]]] = None,
        update=True,
        momentum: Optional[float] = None,
        current: Optional[Sequence[Optional[tf.Tensor]]] = None,
        grouped: bool = False,
    ) -> None:
        """``F ← F + u m (clip((1 − η_F) F + η_F g²) − F)`` from gradients aligned with
        :attr:`protected_variables` (:func:`wpl_keras.wpl.core.fisher_update`).

        A ``None`` gradient leaves its Fisher unchanged. A ``tf.IndexedSlices`` gradient (from a
        ``tf.gather`` of some rows) updates only those rows; rows that appear several times are
        summed first (:func:`wpl_keras.wpl.core.unique_rows`). With ``clip_norm``, each updated
        Fisher tensor (or block of rows, or slice over ``clip_axes``) is clipped to that L2
        norm. ``masks`` (coverage ``m``) and ``update`` (``u``: python bool, bool or 0/1 float
        tensor) select what changes; :attr:`num_fisher_updates` counts the updates made.

        With a Fisher normalisation (``"tensor_norm"``, ``"mean"``) the same coverage applies
        to ``R ← R + u m ((1 − η_F) R + η_F g² − R)`` (:attr:`fisher_raw`, no clip) and to
        ``F ← F + u m (N(R) − F)``, ``N`` the normalisation of each unit
        (:func:`wpl_keras.wpl.core.normalized_fisher_update`; ``c`` = ``clip_norm``). A unit is
        a whole weight, each slice over ``clip_axes``, or each row of a row-slice gradient
        when ``clip_axes`` is not given.

        ``current``: ``F`` of each whole weight as already read in this step (aligned; a
        None entry, or a row-slice gradient, is read here), so that a step reads ``F`` once.
        Without a Fisher normalisation only.

        ``grouped``: compute the update of the whole-weight gradients laid end to end
        (:class:`~wpl_keras.wpl.flat.FlatLayout`: a few ops over one vector instead of the
        same ops per weight; the same formula, the clip norms summed in another order),
        where no Fisher normalisation is set, no gradient is a row slice and every weight's
        clip units are whole or trailing slices; otherwise (and by default) per weight.

        Call it with the all-reduced data gradient under ``tf.distribute``.
        """
        eta = _resolve_alias(fisher_momentum, momentum, self.fisher_momentum,
                             "WPLState.update_fisher: fisher_momentum (η_F)")
        clip = self.clip_norm if clip_norm is None else check_number(
            "WPLState.update_fisher: clip_norm", clip_norm, minimum=0, exclusive_minimum=True)
        if len(gradients) != len(self.fisher):
            raise ValueError(
                f"update_fisher got {len(gradients)} gradients for {len(self.fisher)} "
                "protected variables."
            )
        if update is False:
            return
        n = len(gradients)
        masks = [None] * n if masks is None else list(masks)
        clip_axes = [None] * n if clip_axes is None else list(clip_axes)
        current = [None] * n if current is None or self.normalized else list(current)
        if not (grouped and self._update_flat(gradients, eta, clip, masks, clip_axes, update,
                                              current)):
            self._update_each(gradients, eta, clip, masks, clip_axes, update, current)
        self.num_fisher_updates.assign_add(tf.cast(tf.cast(update, tf.bool), tf.int64))

    def _update_each(self, gradients, eta, clip, masks, clip_axes, update, current) -> None:
        """The update of :meth:`update_fisher`, one weight at a time."""
        for k, g in enumerate(gradients):
            rows = None
            if isinstance(g, tf.IndexedSlices):
                rows, g = core.unique_rows(g)
            if g is None:
                continue
            if self.normalized:
                self._update_normalized(k, g, rows, eta, clip, clip_axes[k], masks[k], update)
                continue
            fisher = current[k] if rows is None else None
            if fisher is None:
                fisher = (tf.convert_to_tensor(self.fisher[k]) if rows is None
                          else read_rows(self.fisher[k], tf.cast(rows, tf.int32)))
            new = core.fisher_update(fisher, g, eta, clip_norm=clip, clip_axes=clip_axes[k],
                                     coverage=masks[k], update=update)
            self._write(self.fisher[k], new, rows)

    def _update_flat(self, gradients, eta, clip, masks, clip_axes, update, current) -> bool:
        """The update of :meth:`update_fisher` over the weights laid end to end; False
        (nothing done) where that layout does not apply."""
        entries = [k for k, g in enumerate(gradients) if g is not None]
        if (self.normalized or not entries
                or any(isinstance(gradients[k], tf.IndexedSlices) for k in entries)):
            return False
        layout = FlatLayout.of([self.fisher[k].shape for k in entries],
                               [clip_axes[k] for k in entries])
        if layout is None:
            return False
        fisher = layout.flatten([tf.convert_to_tensor(self.fisher[k]) if current[k] is None
                                 else current[k] for k in entries])
        new = core.fisher_update(
            fisher, layout.flatten([gradients[k] for k in entries]), eta, clip_norm=clip,
            coverage=layout.flatten_coverage([masks[k] for k in entries]), update=update,
            layout=layout)
        for k, value in zip(entries, layout.unflatten(new)):
            self._write(self.fisher[k], value)
        return True

    def _update_normalized(self, k, gradient, rows, eta, target_norm, axes, mask,
                           update) -> None:
        """One weight's ``(R, F)`` update under the Fisher normalisation (rows when given)."""
        if rows is None:
            raw, fisher = (tf.convert_to_tensor(v) for v in (self.fisher_raw[k], self.fisher[k]))
        else:
            rows = tf.cast(rows, tf.int32)
            raw, fisher = (read_rows(v, rows) for v in (self.fisher_raw[k], self.fisher[k]))
            if axes is None:  # each row is one unit
                axes = list(range(1, len(self.fisher[k].shape)))
        new_raw, new = core.normalized_fisher_update(
            raw, fisher, gradient, eta, normalization=self.fisher_normalization,
            target_norm=target_norm, axes=axes, coverage=mask, update=update)
        self._write(self.fisher_raw[k], new_raw, rows)
        self._write(self.fisher[k], new, rows)

    def assign_fisher(self, values: Sequence[tf.Tensor],
                      clip_axes: Optional[Sequence[Optional[Sequence[int]]]] = None) -> None:
        """``F ← values`` (e.g. the output of :func:`estimate_fisher`), after checks.

        With a Fisher normalisation, ``R ← values`` and ``F ← N(values)`` per unit (a whole
        weight, or each slice over its ``clip_axes`` entry).
        """
        self._check_values(values, "assign_fisher")
        if self.normalized:
            self._assign_normalized([tf.cast(v, tf.float32) for v in values], clip_axes)
            return
        for f, value in zip(self.fisher, values):
            f.assign(tf.cast(value, f.dtype))

    def _assign_normalized(self, raw_values, clip_axes=None) -> None:
        """``R ← raw_values`` and ``F ← N(R)`` per unit, for every weight."""
        clip_axes = [None] * len(self.fisher) if clip_axes is None else list(clip_axes)
        for f, r, value, axes in zip(self.fisher, self.fisher_raw, raw_values, clip_axes):
            r.assign(tf.cast(value, r.dtype))
            f.assign(tf.cast(core.normalize_fisher(value, self.fisher_normalization,
                                                   target_norm=self.clip_norm, axes=axes),
                             f.dtype))

    def add_model(self, fisher_values: Sequence[tf.Tensor],
                  clip_axes: Optional[Sequence[Optional[Sequence[int]]]] = None) -> None:
        """Fold one more earlier model (trained to the current weights) into the state.

        ``F ← F + F_new`` and ``θ* ← (F θ* + F_new θ) / (F + F_new)`` elementwise (``θ*``
        unchanged where both are 0), so that ``F (θ − θ*)²`` equals
        ``F_old (θ − θ*_old)² + F_new (θ − θ_now)²`` up to a constant.

        With a Fisher normalisation the sum and the anchor weights use the raw ``R``
        (``R ← R + F_new``), then ``F ← N(R)`` per unit (a whole weight, or each slice over
        its ``clip_axes`` entry): a per-unit rescaling of the same sum, so the merged anchors
        stay exact.
        """
        self._check_values(fisher_values, "add_model")
        sums = self.fisher_raw if self.normalized else self.fisher
        for v, f, anchor, new in zip(self._protected, sums, self.anchors, fisher_values):
            new = tf.cast(new, f.dtype)
            old = tf.convert_to_tensor(f)
            total = old + new
            merged = tf.math.divide_no_nan(
                old * tf.convert_to_tensor(anchor) + new * tf.convert_to_tensor(v), total
            )
            anchor.assign(tf.where(total > 0, merged, tf.convert_to_tensor(anchor)))
            f.assign(total)
        if self.normalized:
            self._assign_normalized([tf.convert_to_tensor(r) for r in self.fisher_raw],
                                    clip_axes)

    def reset_fisher(self) -> None:
        """Flush: ``F ← 0`` (and the raw EMA ``R ← 0`` under a Fisher normalisation)."""
        for f in list(self.fisher) + list(self.fisher_raw):
            f.assign(tf.zeros_like(f))

    def _check_values(self, values, what):
        values = list(values)
        if len(values) != len(self.fisher):
            raise ValueError(f"{what} got {len(values)} tensors for {len(self.fisher)} variables.")
        for k, (f, value) in enumerate(zip(self.fisher, values)):
            value = tf.convert_to_tensor(value)
            if tuple(value.shape) != tuple(f.shape):
                raise ValueError(
                    f"{what}: Fisher for {_var_label(self._protected[k])} has shape "
                    f"{tuple(value.shape)}, expected {tuple(f.shape)}."
                )
            if not bool(tf.reduce_all(tf.math.is_finite(value))):
                raise ValueError(
                    f"{what}: Fisher for {_var_label(self._protected[k])} contains NaN or Inf; "
                    "the model it was estimated from has diverged or the data is invalid."
                )
            if bool(tf.reduce_any(value < 0)):
                raise ValueError(f"{what}: Fisher values must be >= 0.")

    # ----------------------------------------------------------------- saving
    def layout(self) -> dict:
        """What a saved state must match to load into this one: the Fisher normalisation
        (it decides whether the raw EMA ``R`` exists and what ``F`` means) and the shapes of
        the protected weights, in order. Saved beside the variables by Keras' saving and by
        ``tf.train.Checkpoint``."""
        return {"fisher_normalization": self.fisher_normalization,
                "shapes": [[int(d) for d in v.shape] for v in self._protected]}

    def check_layout(self, saved: dict, source: str) -> None:
        """Raises a ``ValueError`` naming the saved and the current :meth:`layout` and the
        fix when they differ (``source`` says what was being loaded)."""
        mine = self.layout()
        if saved == mine:
            return
        raise ValueError(
            f"{source} holds a WPL state saved with fisher_normalization="
            f"{saved.get('fisher_normalization')!r} over {len(saved.get('shapes', []))} "
            f"protected weights of shapes {saved.get('shapes')}, but the state {self.name!r} "
            f"being loaded has fisher_normalization={mine['fisher_normalization']!r} over "
            f"{len(mine['shapes'])} weights of shapes {mine['shapes']}. Create the state with "
            f"apply_wpl(model, shared, fisher_normalization="
            f"{saved.get('fisher_normalization')!r}, ...) over the same shared weights as "
            "when it was saved, then load."
        )

    def save_own_variables(self, store) -> None:
        """Keras' saving: the variables (as ``keras.layers.Layer`` does) and the
        :meth:`layout`, as UTF-8 JSON bytes under ``"layout"``."""
        super().save_own_variables(store)
        store["layout"] = np.frombuffer(json.dumps(self.layout()).encode("utf-8"), np.uint8)

    def load_own_variables(self, store) -> None:
        """Keras' loading (``load_weights``, ``load_model``): checks the saved :meth:`layout`
        (files written before it was saved are checked by the number of variables only), then
        loads every variable."""
        keys = [k for k in store.keys() if k != "layout"]
        own = self._trainable_variables + self._non_trainable_variables
        if not keys:
            raise ValueError(
                f"The file being loaded holds no WPL state for {self.name!r} (it was saved from "
                "a model without apply_wpl). Load such weights before calling apply_wpl (the "
                "anchors are then the loaded weights), or load a file saved with the WPL state."
            )
        if "layout" in store.keys():
            saved = json.loads(bytes(np.asarray(store["layout"], np.uint8)).decode("utf-8"))
            self.check_layout(saved, "The file being loaded")
        elif len(keys) != len(own):
            raise ValueError(
                f"The file being loaded holds {len(keys)} WPL state variables for {self.name!r}, "
                f"which has {len(own)} ({self.layout()}). Create the state with apply_wpl over "
                "the same shared weights and fisher_normalization as when it was saved."
            )
        for i, v in enumerate(own):
            v.assign(store[f"{i}"])

    def _trackable_children(self, save_type="checkpoint", **kwargs):
        # Keras keeps lists of variables in its own containers, which tf.train.Checkpoint does
        # not see; name every state variable explicitly so checkpoints hold all of them, and
        # the layout, which a restore checks (_LayoutRecord).
        children = dict(super()._trackable_children(save_type, **kwargs))
        for k, (f, a) in enumerate(zip(self.fisher, self.anchors)):
            children[f"fisher_{k}"] = f
            children[f"anchor_{k}"] = a
        for k, r in enumerate(self.fisher_raw):
            children[f"fisher_raw_{k}"] = r
        if save_type == "checkpoint":
            children["layout"] = self._layout_record
        return children

    def call(self, inputs=None):  # pragma: no cover - a state holder, not a transformation
        raise TypeError("WPLState holds WPL variables; use .penalty(), not call().")

    def get_config(self):
        raise NotImplementedError(
            "WPLState references the weights of another model and is recreated with "
            "apply_wpl(...); its variables are saved with the model's weights or a checkpoint."
        )


class _LayoutRecord(tf.train.experimental.PythonState):
    """The :meth:`WPLState.layout` in a ``tf.train.Checkpoint``: saved as JSON; a restore
    (immediate, or deferred until ``apply_wpl`` attaches the state) checks it against the
    state's own and raises the error of :meth:`WPLState.check_layout` on a mismatch."""

    def __init__(self, state: WPLState):
        self._state = state

    def serialize(self) -> str:
        return json.dumps(self._state.layout())

    def deserialize(self, string_value) -> None:
        if isinstance(string_value, bytes):
            string_value = string_value.decode("utf-8")
        self._state.check_layout(json.loads(string_value), "The checkpoint being restored")


def read_rows(variable, rows: tf.Tensor) -> tf.Tensor:
    """``variable[rows]`` by a resource gather on the variable itself.

    A variable that has seen sparse reads or updates is in TensorFlow's copy-on-read mode, so
    ``tf.gather(tf.convert_to_tensor(v), rows)`` would first copy the WHOLE variable; a
    supernet's 100M-parameter node tensor makes that the dominant cost of a step. The gradient
    of this read is a ``tf.IndexedSlices`` over ``rows``.
    """
    if not isinstance(variable, tf.Variable):  # a Keras variable: its backing tf.Variable
        variable = getattr(variable, "value", variable)
    return tf.gather(variable, rows)


def _scatter_assign(variable, rows, values):
    """``variable[rows] = values`` for Keras (TF backend) or tf variables."""
    target = getattr(variable, "value", variable)
    if isinstance(target, tf.Variable) or hasattr(target, "scatter_update"):
        target.scatter_update(tf.IndexedSlices(values, rows))
    else:  # pragma: no cover - other backends
        variable.assign(tf.tensor_scatter_nd_update(variable, rows[:, None], values))


def _base_name(v, k) -> str:
    name = getattr(v, "path", None) or getattr(v, "name", None) or f"var{k}"
    return name.replace("/", "_").replace(":", "_")


def _resolve_alias(fisher_momentum, momentum, default, name: str = "fisher_momentum") -> float:
    """``fisher_momentum``, or its former name ``momentum``, or ``default``; not both. The
    value is checked to be a number in ``(0, 1]`` (errors call it ``name``)."""
    if fisher_momentum is not None and momentum is not None:
        raise ValueError("give fisher_momentum only (momentum is its former name), not both.")
    value = fisher_momentum if fisher_momentum is not None else momentum
    return check_number(name, default if value is None else value, minimum=0, maximum=1,
                        exclusive_minimum=True)


def _var_label(v) -> str:
    return getattr(v, "path", None) or getattr(v, "name", repr(v))


def _same_variable(a, b) -> bool:
    """True when two handles refer to the same storage (Keras wrapper vs its tf.Variable)."""
    va = getattr(a, "value", a)
    vb = getattr(b, "value", b)
    try:
        return va is vb or (
            isinstance(va, tf.Variable) and isinstance(vb, tf.Variable) and va.handle is vb.handle
        )
    except (AttributeError, TypeError, ValueError):
        return False


# --------------------------------------------------------------------------- estimation
