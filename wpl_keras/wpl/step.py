"""One training step with the Weight Plasticity Loss, composed once for every trainer.

:class:`WPLStep` is the step ``WPLModel`` (``WPLTrainingMixin.train_step``), the ENAS RNN
search task (and NAO through it) and the micro-CNN search task all call: each computes its data
gradients, names the weights the step covers (:class:`Covered`: whole weights, usage masks or
row slices) and hands the optimiser's step over as a callable. The step, with ``θ, F, θ*``
read at its start and its choices in :class:`~wpl_keras.wpl.config.WPLConfig`:

1. ``g = ∇L`` (the data gradient; ``l2_placement="before_wpl"``: ``g + λ θ`` on every
   weight of the step);
2. gradient mode: ``g + s α c F (θ − θ*)`` on the covered weights (``s``: the factor the data
   gradient carries, ``1/replicas`` times the loss scale; ``l2_placement="penalty"`` adds
   ``s λ θ`` here, and ``(λ/2) Σ θ²`` to the penalty);
3. ``g ← c g`` on masked weights, then ``g`` clipped to global norm ``grad_clip``;
4. ``l2_placement="after_clip"``: ``g + λ θ`` handed to the optimiser (weight decay);
5. the optimiser's step (the caller's ``apply``), which says whether it applied an update;
6. proximal mode: ``θ ← (θ + η α c F θ*) / (1 + η α c F)`` on the covered weights;
7. the Fisher update ``F ← F + u c (clip((1 − η_F) F + η_F g_F²) − F)`` with ``g_F`` the data
   gradient of step 1 before L2 (``fisher_gradient="data"``) or the clipped ``g`` of step 3
   (``"total"``).

The reported penalty is ``P = (α/2) Σ c F (θ − θ*)²`` (plus ``(λ/2) Σ θ²`` with
``l2_placement="penalty"``) at the weights the step's loss saw, in both modes.

Gating: ``active`` (WPL on this step: steps 2 and 6) and ``update_fisher`` (step 7) are a
python bool (decided when tracing) or a bool tensor (a ``tf.cond``: a step with WPL off costs
what a plain step costs, and a traced step serves both values: no retracing). Steps 6 and 7
take effect only where the optimiser applied the update (``apply`` returns ``applied``: a
python bool, or a bool tensor such as ``optimizer.iterations`` having grown: a 0/1 factor of
the pull's coverage, one select for the Fisher): a skipped step of a ``LossScaleOptimizer`` or a micro-step of
gradient accumulation changes no WPL state.

Layout: a step that covers at least :data:`~wpl_keras.wpl.flat.GROUPED_FROM` whole weights of one dtype (the
micro-CNN supernet's 241) computes steps 2, 6 and 7 and the penalty over the weights laid end
to end (:class:`~wpl_keras.wpl.flat.FlatLayout`): the same elementwise formulas as a few ops
over one vector, instead of the same ops once per weight in the traced graph (sums, such as
``P`` and the clip norms, are taken in another order). Fewer weights and row slices are
computed weight by weight, and so is the pull of several replicas in a replica context
(written to each replica's copy in a merge call).
"""

from __future__ import annotations

from typing import Callable, List, NamedTuple, Optional, Sequence, Union

import tensorflow as tf

import wpl_keras.wpl.core as core
from wpl_keras.wpl.config import L2_PLACEMENTS, WPLConfig
from wpl_keras.wpl.fisher import WPLState, read_rows
from wpl_keras.wpl.flat import FlatLayout, grouped_layout

Flag = Union[bool, tf.Tensor]
MaybeTensor = Optional[tf.Tensor]


class Covered(NamedTuple):
    """One weight of a step that WPL covers.

    Attributes:
        position: its index among the step's weights (``params`` / ``data`` of the step).
        index: the index of the weight in the :class:`WPLState`.
        rows: distinct row ids when the step's value is a block of rows of the weight
            (``params[position]`` is ``θ[rows]``, its gradient aligned with ``rows``); None
            for the whole weight.
        mask: coverage ``c`` (0/1 float tensor broadcast against the weight), None for 1.
        clip_axes: axes over which its Fisher is clipped (None: the whole tensor, or each row
            of a block of rows under a Fisher normalisation).
    """

    position: int
    index: int
    rows: MaybeTensor = None
    mask: MaybeTensor = None
    clip_axes: Optional[Sequence[int]] = None


class StepResult(NamedTuple):
    """Output of :meth:`WPLStep.__call__`.

    Attributes:
        penalty: ``P`` at the weights the step's loss saw (float32 scalar; 0 with WPL off).
        grad_norm: the global norm of ``g`` before the clip (None without ``grad_clip``).
        applied: what ``apply`` returned (python True when it returned None).
    """

    penalty: tf.Tensor
    grad_norm: MaybeTensor
    applied: Flag


def _zero() -> tf.Tensor:
    return tf.constant(0.0)


def _plus(g: MaybeTensor, extra: tf.Tensor, like: tf.Tensor) -> tf.Tensor:
    """``g + extra`` in ``g``'s dtype (``extra`` in ``like``'s dtype where ``g`` is None)."""
    if g is None:
        return tf.cast(extra, like.dtype)
    g = tf.convert_to_tensor(g)
    return g + tf.cast(extra, g.dtype)


def _cond(flag: Flag, on: Callable, off: Callable):
    """``on()`` / ``off()`` for a python bool (when tracing), ``tf.cond`` for a tensor."""
    if isinstance(flag, bool):
        return on() if flag else off()
    return tf.cond(tf.cast(flag, tf.bool), on, off)


class WPLStep:
    """The WPL step of the module docstring, for one :class:`WPLState` and one config.

    Args:
        state: the anchors, Fisher and ``α`` (``state.strength``) of the covered weights.
        config: the step's choices (mode, Fisher gradient, L2 placement); its Fisher
            momentum, clip and normalisation are the state's (set when the state is made).
        default_l2_placement: the trainer's L2 placement, used where
            ``config.l2_placement`` is None (the RNN task: ``"before_wpl"``; the micro-CNN
            task: ``"after_clip"``; ``WPLModel``: ``"penalty"``).
    """

    def __init__(self, state: WPLState, config: WPLConfig, *,
                 default_l2_placement: str = "before_wpl"):
        if not isinstance(config, WPLConfig):
            raise TypeError(f"WPLStep: config must be a WPLConfig, got {type(config).__name__}.")
        if default_l2_placement not in L2_PLACEMENTS:
            raise ValueError(f"WPLStep: default_l2_placement must be one of {L2_PLACEMENTS}, "
                             f"got {default_l2_placement!r}.")
        self.state = state
        self.config = config
        #: The L2 placement this step uses (``config.l2_placement`` or the trainer's).
        self.l2_placement = config.l2_placement or default_l2_placement

    # ----------------------------------------------------------------- the step
    def __call__(
        self,
        params: Sequence[tf.Tensor],
        data: Sequence[MaybeTensor],
        apply: Callable[[List[MaybeTensor]], Optional[Flag]],
        *,
        covered: Sequence[Covered],
        learning_rate: Union[float, tf.Tensor, None] = None,
        l2: float = 0.0,
        grad_clip: Optional[float] = None,
        active: Flag = True,
        update_fisher: Flag = True,
        scale: MaybeTensor = None,
        fisher_gradients: Optional[Callable[[list, Flag], list]] = None,
    ) -> StepResult:
        """One step (module docstring).

        Args:
            params: ``θ`` of the step's weights as read at its start (blocks of rows where a
                :class:`Covered` entry has ``rows``).
            data: the data gradients, aligned with ``params`` (dense; None: no gradient).
            apply: the optimiser's step on the gradients to apply (aligned with ``params``);
                returns whether it applied an update (python bool or bool tensor; None: True).
            covered: the weights WPL covers.
            learning_rate: ``η`` of this step, read before ``apply`` (proximal mode).
            l2: ``λ``; grad_clip: the global-norm clip of ``g`` (None: no clip).
            active, update_fisher: WPL on, Fisher update on (python bool or bool tensor).
            scale: ``s``, the factor the data gradients carry (None: 1).
            fisher_gradients: ``f(gradients, applied) -> gradients``, applied to ``g_F`` of
                the covered weights before the Fisher update (e.g. all-reduce, undo the loss
                scale, average accumulated micro-batches).
        """
        cfg, l2 = self.config, float(l2)
        if cfg.mode == "proximal" and learning_rate is None:
            raise ValueError("WPLStep: mode='proximal' needs the step's learning_rate.")
        grads = list(data)
        held = self._read_once(covered, active)
        if l2 and self.l2_placement == "before_wpl":
            grads = [_plus(g, l2 * tf.cast(p, tf.float32), p) for g, p in zip(grads, params)]
        penalty = None
        core_l2 = l2 if self.l2_placement == "penalty" else 0.0
        if cfg.mode == "gradient" or core_l2:
            penalty, grads = self._gradient_terms(params, grads, covered, active, core_l2, scale,
                                                  held)
        for c in covered:
            if c.mask is not None and grads[c.position] is not None:
                g = grads[c.position]
                grads[c.position] = tf.cast(c.mask, g.dtype) * g
        grad_norm = None
        if grad_clip:
            grads, grad_norm = tf.clip_by_global_norm(grads, grad_clip)
            grads = list(grads)
        step_grads = grads
        if l2 and self.l2_placement == "after_clip":
            step_grads = [g if g is None else g + l2 * tf.cast(p, g.dtype)
                          for g, p in zip(grads, params)]
        applied = apply(step_grads)
        applied = True if applied is None else applied
        if cfg.mode == "proximal":
            pulled = self._pull(params, covered, learning_rate, active, applied,
                                with_penalty=penalty is None, held=held)
            penalty = pulled if penalty is None else penalty
        source = data if cfg.fisher_gradient == "data" else grads
        self.update_fisher(source, covered, update=update_fisher, applied=applied,
                           fisher_gradients=fisher_gradients,
                           current=None if held is None else held[0])
        return StepResult(_zero() if penalty is None else penalty, grad_norm, applied)

    # ----------------------------------------------------------------- its parts
    def read(self, covered: Sequence[Covered]) -> tuple:
        """``(F, θ*)`` of the covered weights (blocks of rows read by resource gathers)."""
        fisher, anchors = [], []
        for c in covered:
            f, a = self.state.fisher[c.index], self.state.anchors[c.index]
            if c.rows is None:
                fisher.append(tf.convert_to_tensor(f))
                anchors.append(tf.convert_to_tensor(a))
            else:
                fisher.append(read_rows(f, c.rows))
                anchors.append(read_rows(a, c.rows))
        return fisher, anchors

    def _read_once(self, covered: Sequence[Covered], active: Flag) -> Optional[tuple]:
        """``(F, θ*)`` read once for the whole step (its terms, pull and Fisher update) when
        WPL is on when tracing (``active`` python True) and every covered entry is a whole
        weight; None otherwise (each part reads what it needs, inside its ``tf.cond``)."""
        if active is not True or any(c.rows is not None for c in covered):
            return None
        return self.read(covered)

    def penalty(self, params: Sequence[tf.Tensor], covered: Sequence[Covered],
                held: Optional[tuple] = None) -> tf.Tensor:
        """``(α/2) Σ c F (θ − θ*)²`` at ``params`` (:func:`~wpl_keras.wpl.core.wpl_penalty`);
        ``held``: ``(F, θ*)`` of :meth:`read` already read in this step (None: read here)."""
        fisher, anchors = self.read(covered) if held is None else held
        theta, masks = [params[c.position] for c in covered], [c.mask for c in covered]
        layout = self.layout(covered)
        if layout is not None:
            theta, fisher, anchors, masks = _laid_flat(layout, theta, fisher, anchors, masks)
        return core.wpl_penalty(theta, fisher, anchors, self.state.strength, masks=masks)

    def layout(self, covered: Sequence[Covered]) -> Optional[FlatLayout]:
        """The :class:`~wpl_keras.wpl.flat.FlatLayout` of the covered weights when the step
        lays them end to end: whole weights (no row slices) that
        :func:`~wpl_keras.wpl.flat.grouped_layout` groups; None otherwise (each weight is
        computed on its own)."""
        if any(c.rows is not None for c in covered):
            return None
        return grouped_layout([self.state.protected_variables[c.index] for c in covered],
                              [c.clip_axes for c in covered])

    def _gradient_terms(self, params, grads, covered, active, l2, scale, held):
        """Step 2: ``(P, grads)``, the covered gradients plus ``s (α c F (θ − θ*) + λ θ)``
        (the Fisher term in gradient mode only); ``(0, grads)`` with WPL off."""
        gradient_mode = self.config.mode == "gradient"

        def on():
            theta = [params[c.position] for c in covered]
            fisher, anchors = self.read(covered) if held is None else held
            masks, layout = [c.mask for c in covered], self.layout(covered)
            flat = theta, fisher, anchors, masks
            if layout is not None:
                flat = _laid_flat(layout, *flat)
            value, terms = core.wpl_penalty(*flat[:3], self.state.strength, l2=l2,
                                            masks=flat[3], with_gradients=True)
            if layout is not None:
                terms = layout.unflatten(terms[0])
            out = []
            for c, t, term in zip(covered, theta, terms):
                extra = term if gradient_mode else None
                if l2:
                    decay = l2 * tf.cast(t, tf.float32)
                    extra = decay if extra is None else extra + decay
                if extra is not None and scale is not None:
                    extra = extra * tf.cast(scale, tf.float32)
                g = grads[c.position]
                out.append(g if extra is None else _plus(g, extra, t))
            return value, out

        def off():
            return _zero(), [grads[c.position] for c in covered]

        penalty, new = _cond(active, on, off)
        grads = list(grads)
        for c, g in zip(covered, new):
            grads[c.position] = g
        return penalty, grads

    def _pull(self, params, covered, learning_rate, active, applied, with_penalty,
              held) -> tf.Tensor:
        """Step 6 where ``active``: the pull of every covered weight (only where ``applied``);
        returns ``P`` at ``params`` when ``with_penalty``, else 0."""
        layout = self.layout(covered)
        ctx = tf.distribute.get_replica_context()
        if layout is not None and (ctx is None or ctx.num_replicas_in_sync == 1):
            return _cond(active, lambda: self._pull_flat(
                params, covered, learning_rate, applied, with_penalty, held, layout), _zero)

        def on():
            value = self.penalty(params, covered, held) if with_penalty else _zero()
            self._assign_pulls(covered, learning_rate, applied, held)
            return value

        return _cond(active, on, _zero)

    def _pull_flat(self, params, covered, learning_rate, applied, with_penalty, held,
                   layout: FlatLayout) -> tf.Tensor:
        """:meth:`_pull` on one replica over the covered weights laid end to end (``F``,
        ``θ*`` and the coverage laid out once for the penalty and the pull)."""
        state = self.state
        variables = [state.protected_variables[c.index] for c in covered]
        fisher, anchors = self.read(covered) if held is None else held
        dtype = tf.float64 if variables[0].dtype == tf.float64 else tf.float32  # as the pull
        fisher, anchors = layout.flatten(fisher, dtype), layout.flatten(anchors, dtype)
        mask = layout.flatten_coverage([c.mask for c in covered])
        value = _zero()
        if with_penalty:
            theta = layout.flatten([params[c.position] for c in covered], dtype)
            value = core.wpl_penalty([theta], [fisher], [anchors], state.strength, masks=[mask])
        if applied is not True:
            gate = tf.cast(applied, tf.float32)
            mask = gate if mask is None else gate * mask
        theta = layout.flatten([tf.convert_to_tensor(v) for v in variables], dtype)
        pulled = core.proximal_pull(theta, fisher, anchors, state.strength, learning_rate,
                                    coverage=mask)
        for v, new in zip(variables, layout.unflatten(pulled)):
            v.assign(tf.cast(new, v.dtype))
        return value

    def _assign_pulls(self, covered, learning_rate, applied, held) -> None:
        """Writes the pulled weights: on one device (or in cross-replica context) through
        :meth:`WPLState.apply_proximal`; in a replica context of several replicas on every
        replica's copy (``strategy.extended.update`` in a ``merge_call``)."""
        state = self.state
        gate = None if applied is True else tf.cast(applied, tf.float32)

        def coverage(c):
            if gate is None:
                return c.mask
            return gate if c.mask is None else gate * tf.cast(c.mask, tf.float32)

        fisher, anchors = ([None] * len(covered),) * 2 if held is None else held
        ctx = tf.distribute.get_replica_context()
        if ctx is None or ctx.num_replicas_in_sync == 1:
            for c, f, a in zip(covered, fisher, anchors):
                state.apply_proximal(c.index, learning_rate, rows=c.rows, mask=coverage(c),
                                     fisher=f, anchor=a)
            return
        if held is None:
            fisher, anchors = self.read(covered)

        def pull_all(strategy):
            for c, f, a in zip(covered, fisher, anchors):
                target = state.protected_variables[c.index]
                target = getattr(target, "value", target)

                def pull(v, f=f, a=a, m=coverage(c)):
                    return v.assign(core.proximal_pull(v, tf.cast(f, v.dtype), a, state.strength,
                                                       learning_rate, coverage=m))

                strategy.extended.update(target, pull)

        ctx.merge_call(pull_all)

    def update_fisher(
        self,
        gradients: Sequence[MaybeTensor],
        covered: Sequence[Covered],
        *,
        update: Flag = True,
        applied: Flag = True,
        fisher_gradients: Optional[Callable[[list, Flag], list]] = None,
        current: Optional[Sequence[tf.Tensor]] = None,
    ) -> None:
        """Step 7: :meth:`WPLState.update_fisher` from ``gradients`` (aligned with the step's
        weights; a block of rows as a row slice) with each covered weight's mask and clip
        axes, where ``update`` (``tf.cond`` for a tensor) and only where ``applied`` (one
        select per weight: a step the optimiser skipped keeps ``F`` exactly). ``current``:
        ``F`` of the covered whole weights as read at the step's start (aligned with
        ``covered``; None: read here). Also the Fisher-only pass of a
        ``fisher_source="valid"`` task."""
        state = self.state

        def run():
            values = [gradients[c.position] for c in covered]
            if fisher_gradients is not None:
                values = fisher_gradients(values, applied)
            n = len(state.protected_variables)
            per_weight, masks, axes = [None] * n, [None] * n, [None] * n
            for c, g in zip(covered, values):
                if g is not None and c.rows is not None:
                    shape = [int(d) for d in state.protected_variables[c.index].shape]
                    g = tf.IndexedSlices(g, c.rows, tf.constant(shape, tf.int32))
                per_weight[c.index], masks[c.index], axes[c.index] = g, c.mask, c.clip_axes
            now = [None] * n
            for c, f in zip(covered, current or ()):
                now[c.index] = f
            state.update_fisher(per_weight, masks=masks, clip_axes=axes, update=applied,
                                current=now, grouped=self.layout(covered) is not None)
            return _zero()

        _cond(update, run, _zero)


def _laid_flat(layout: FlatLayout, theta, fisher, anchors, masks, dtype=tf.float32) -> tuple:
    """``([θ], [F], [θ*], [c])``, each one vector of ``layout`` (``c``: None when every
    coverage is None), in the argument lists of :func:`~wpl_keras.wpl.core.wpl_penalty`."""
    return ([layout.flatten(theta, dtype)], [layout.flatten(fisher, dtype)],
            [layout.flatten(anchors, dtype)], [layout.flatten_coverage(masks)])
