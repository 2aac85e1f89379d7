"""One config for how a trainer forms the Weight Plasticity Loss step.

Every weight-sharing task (the ENAS RNN and micro-CNN supernets, and NAO through the RNN task)
holds one :class:`WPLConfig`. What it does not hold, on purpose:

* ``α`` (``strength``): a search's α changes per epoch and belongs to its schedule
  (:class:`~wpl_keras.wpl.schedule.ScheduleConfig`); ``apply_wpl`` takes it as an argument.
* which weights are covered: that is the task's (an RNN's ``wpl_scope``, a CNN's usage masks).
"""

from __future__ import annotations

import dataclasses
from typing import Optional

from wpl_keras.utils.config import JsonConfig
from wpl_keras.utils.validation import check_fields
from wpl_keras.wpl.core import check_fisher_normalization, check_wpl_mode

#: The values of :attr:`WPLConfig.fisher_source`.
FISHER_SOURCES = ("train", "valid")
#: The values of :attr:`WPLConfig.fisher_gradient`.
FISHER_GRADIENTS = ("data", "total")
#: The values of :attr:`WPLConfig.l2_placement`.
L2_PLACEMENTS = ("before_wpl", "after_clip", "penalty")


@dataclasses.dataclass(frozen=True)
class WPLConfig(JsonConfig):
    """How the Fisher is estimated and how the penalty acts in a step.

    Attributes:
        fisher_momentum: ``η`` of the Fisher update from the gradient already computed,
            ``F ← (1 − η) F + η g²`` (paper §3.2: 0.9).
        clip_norm: after each update, the updated part of each Fisher tensor is rescaled to
            at most this L2 norm (WPL release: 10): a whole weight; for the RNN node matrices,
            the rows of the trained architecture as one block; for the CNN's stacked op
            weights, each op's slice. ``None`` leaves it unclipped. With
            ``fisher_normalization="tensor_norm"`` it is instead the norm ``c`` every unit
            is scaled to.
        mode: ``"proximal"``: after the optimiser's step on the data gradient, the exact
            proximal step of the Fisher term ``θ ← (θ + η_lr α F θ*) / (1 + η_lr α F)``,
            stable for every ``α``; ``"gradient"``: ``α F (θ − θ*)`` is added to the
            gradient (the penalty ``(α/2) Σ F (θ − θ*)²`` in the loss, as the reference code
            does), which diverges on weights with ``η_lr α F > 2``.
        fisher_normalization: what ``F`` the penalty and the proximal pull use, per unit
            (the units of ``clip_norm``: a whole weight; each op slice of a CNN's stacked op
            weights; each row of a row-sliced update, i.e. each RNN node matrix):

            * ``"none"``: ``F = clip(R)``, ``R ← (1 − η) R + η g²`` (clipped at each update);
            * ``"tensor_norm"``: ``F = c R / ‖R‖`` with ``c = clip_norm`` (0 where
              ``‖R‖ = 0``), ``R`` the plain EMA of ``g²`` kept beside ``F``: each unit's
              ``F`` has norm ``c``, so ``α F`` has norm ``c α`` whatever the gradient scale.
              This is the per-tensor norm the WPL release's Fisher settles at (it stores
              ``α · clip_by_norm((1 − η) F + η g², 10)`` and feeds that back), so ``α = 60``,
              ``clip_norm = 10`` gives the paper's strength (``‖α F‖ ≈ 600``). Needs
              ``clip_norm``;
            * ``"mean"``: ``F = R / mean(R)`` (0 where the mean is 0): mean 1 per unit, so
              ``α`` is the mean per-entry strength whatever the unit's size and gradient
              scale; ``clip_norm`` is not used.
        fisher_source: which gradient ``g`` the Fisher update of an architecture uses (one
            update per trained architecture, with WPL on, before its anchors are set):

            * ``"train"``: the data-loss gradient of its last training batch (no extra cost);
            * ``"valid"``: the data-loss gradient of one extra forward and backward pass of
              the architecture, after its last training step, on the next small
              validation batch (paper §4.2; the WPL release's ``shared_valid_fisher``); no
              optimizer step is taken from it. Supported by the ENAS RNN task
              (:class:`~wpl_keras.nas.spaces.rnn.task.RNNSearchTask`, and NAO through it); the
              micro-CNN task does not support it yet and refuses it.
        fisher_gradient: which gradient of a training step ``g`` is in the Fisher update
            (:class:`~wpl_keras.wpl.step.WPLStep`):

            * ``"data"`` (default; paper §3.2: ``F ← (1 − η) F + η (∂L/∂θ)²`` with ``L`` the
              architectures' loss, "the derivatives already computed for back-propagation"):
              the raw data-loss gradient, all-reduced, before L2, the WPL term and the clip.
              The RNN task, NAO, ``WPLModel`` and the micro-CNN task use it;
            * ``"total"``: the gradient the optimiser is handed: the data gradient plus L2
              (``l2_placement="before_wpl"``) plus the WPL term (gradient mode), masked and
              clipped to the global norm (the micro-CNN task's Fisher before this option
              existed).
        l2_placement: where the L2 term ``λ θ`` (``λ`` the trainer's L2 / weight decay)
            enters the step:

            * ``"before_wpl"``: added to the data gradient of every weight of the step before
              the WPL term and the clip; not part of the reported penalty;
            * ``"after_clip"``: added after the clip, so it is not clipped and, with
              ``fisher_gradient="total"``, not in the Fisher;
            * ``"penalty"``: part of the WPL penalty of the covered weights,
              ``P = (α/2) Σ F (θ − θ*)² + (λ/2) Σ θ²``, its gradient scaled like the data
              gradient's (``1/replicas``, the loss scale), in both modes;
            * ``None`` (default): the trainer's own placement, as each had it before this
              option: ``"before_wpl"`` for the RNN task (its L2), ``"after_clip"`` for the
              micro-CNN task (its weight decay, as in ENAS), ``"penalty"`` for ``WPLModel``
              (``apply_wpl(..., l2=λ)``, eq. 8 of the paper).
    """

    fisher_momentum: float = 0.9
    clip_norm: Optional[float] = 10.0
    mode: str = "proximal"
    fisher_normalization: str = "none"
    fisher_source: str = "train"
    fisher_gradient: str = "data"
    l2_placement: Optional[str] = None

    def __post_init__(self):
        check_fields(self, {
            "fisher_momentum": dict(minimum=0, maximum=1, exclusive_minimum=True),
            "clip_norm": dict(minimum=0, exclusive_minimum=True, optional=True),
        })
        clip = self.clip_norm
        check_wpl_mode(self.mode, "WPLConfig.mode")
        check_fisher_normalization(self.fisher_normalization, "WPLConfig.fisher_normalization")
        if self.fisher_normalization == "tensor_norm" and clip is None:
            raise ValueError(
                "WPLConfig.fisher_normalization='tensor_norm' scales each Fisher unit to norm "
                "clip_norm, but clip_norm is None; set clip_norm (WPL release: 10)."
            )
        for name, choices in (("fisher_gradient", FISHER_GRADIENTS),
                              ("l2_placement", L2_PLACEMENTS + (None,))):
            if getattr(self, name) not in choices:
                raise ValueError(f"WPLConfig.{name} must be one of {choices}, got "
                                 f"{getattr(self, name)!r} (see the WPLConfig docstring).")
        if self.fisher_source not in FISHER_SOURCES:
            raise ValueError(
                f"WPLConfig.fisher_source must be one of {FISHER_SOURCES} (\"train\": the last "
                "training batch's gradient; \"valid\": one extra backward pass on a validation "
                f"batch), got {self.fisher_source!r}."
            )
