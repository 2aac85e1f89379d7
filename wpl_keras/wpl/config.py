"""One config for how a trainer forms the Weight Plasticity Loss step.

Every weight-sharing task (the ENAS RNN and micro-CNN supernets, and NAO through the RNN task)
holds one :class:`WPLConfig`. What it does not hold, on purpose:

* ``α`` (``strength``): a search's α changes per epoch and belongs to its schedule
  (:class:`~wpl_keras.nas.search.schedule.ScheduleConfig`); ``apply_wpl`` takes it as an argument.
* which weights are covered: that is the task's (an RNN's ``wpl_scope``, a CNN's usage masks).
"""

from __future__ import annotations

import dataclasses
from typing import Optional

from wpl_keras.utils.config import JsonConfig
from wpl_keras.utils.validation import check_fields
from wpl_keras.wpl.core import check_fisher_normalization
from wpl_keras.wpl.penalty import check_wpl_mode

#: The values of :attr:`WPLConfig.fisher_source`.
FISHER_SOURCES = ("train", "valid")


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
    """

    fisher_momentum: float = 0.9
    clip_norm: Optional[float] = 10.0
    mode: str = "proximal"
    fisher_normalization: str = "none"
    fisher_source: str = "train"

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
        if self.fisher_source not in FISHER_SOURCES:
            raise ValueError(
                f"WPLConfig.fisher_source must be one of {FISHER_SOURCES} (\"train\": the last "
                "training batch's gradient; \"valid\": one extra backward pass on a validation "
                f"batch), got {self.fisher_source!r}."
            )
