"""The ENAS recurrent supernet's settings: the cell and language model (:class:`RNNModelConfig`),
its optimizer (:class:`RNNOptimizerConfig`) and the whole search supernet
(:class:`RNNSupernetConfig`, with the WPL settings of :class:`~wpl_keras.wpl.config.WPLConfig`).
"""

from __future__ import annotations

import dataclasses
import json

from wpl_keras.nas.search.distribute import KINDS as STRATEGY_KINDS
from wpl_keras.utils.config import JsonConfig
from wpl_keras.utils.validation import check_fields
from wpl_keras.wpl.config import WPLConfig

WPL_SCOPES = ("cell", "all")
WEIGHT_DROP_SCOPES = ("recurrent", "all")
BATCH_NORM_INITS = ("uniform", "unit")
RECURRENT_STATES = ("loose_mean", "last_node")


def _check_choice(owner: str, name: str, value, choices) -> None:
    """Raise unless ``value`` is one of ``choices``, naming ``owner.name`` and the choices."""
    if value not in choices:
        raise ValueError(f"{owner}.{name} must be one of {choices}, got {value!r}.")


@dataclasses.dataclass(frozen=True)
class RNNModelConfig(JsonConfig):
    """Shape, initialisation and dropouts of the ENAS recurrent cell and its language model.

    Defaults: the WPL release's RNN search for sizes and rates; ``init_range``,
    ``weight_drop_scope``, ``output_batch_norm`` and ``recurrent_state`` default to this
    package's earlier behaviour (which the CPU presets were sized with) and the paper preset
    sets the release's search values (``models/shared_rnn.py`` of the public WPL release,
    mode ``train``).

    Attributes:
        num_nodes: nodes per cell (12, at least 2).
        vocab_size: vocabulary (10,000 for PTB).
        embedding_size, hidden_size: must be equal (tied decoder); 1000 in the reference.
        weight_drop, output_dropout, embedding_dropout, input_dropout: rates in ``[0, 1)``,
            0.5 / 0.4 / 0.1 / 0.65.
        init_range: weights start uniform in ``[−init_range, init_range]`` (> 0). Default
            0.04 (the release's fixed-cell training); the release's search uses 0.025
            (the paper preset).
        hidden_max_norm: every step's hidden state rows (and so the carried state) are
            rescaled to at most this norm (ENAS: 25), which keeps ReLU/identity cells from
            exploding.
        weight_drop_scope: which matrices weight-drop masks. ``"recurrent"``: ``W_h`` only
            (``[W_hc | W_hh]``, the release's ``w_hc_raw`` / ``w_hh_raw``; the paper preset).
            ``"all"`` (default): ``W_h`` and the architecture's node matrices.
        output_batch_norm: batch-normalise the cell output, ``y = γ (h − μ) / sqrt(σ² + ε) + β``
            per step over the batch rows (the release's search supernet,
            ``BatchNorm1d(hidden)`` after the mean of the loose ends; the paper preset). The
            statistics are always the batch's, in training and evaluation (the release
            computes its rewards and forgetting evaluations with the supernet in train mode,
            and no moving average mixes architectures); under ``tf.distribute`` they are over
            the global batch. Only the output is normalised; the carried state is not.
            Default False.
        batch_norm_init: ``γ``, ``β`` start ``"uniform"`` in ``[−init_range, init_range]``
            like every other weight (default; the release's ``reset_parameters`` draws every
            parameter, BatchNorm's included, that way) or ``"unit"`` (``γ = 1``, ``β = 0``).
        recurrent_state: what a step carries to the next. ``"loose_mean"`` (default): the
            mean of the loose ends, which is also the output. ``"last_node"``: the last node's
            state ``s_{N−1}`` (clamped to ``hidden_max_norm``), the output being the loose-end
            mean (the release's ``cell`` returns ``(BN(mean of loose ends), h[N − 1])``;
            the paper preset).
        path_keep: keep probability of random path dropping, in ``(0, 1]``: in training, each
            node ``i ≥ 1``'s input from its chosen previous node is kept with this
            probability and scaled by ``1 / path_keep``, else zeroed, one draw per node and
            training step for the whole batch (as ENAS's CNN drop-path drops a whole path;
            the paper's Figure 4 comparison for NAO). 1.0 (default) disables it; never at
            evaluation.
    """

    num_nodes: int = 12
    vocab_size: int = 10000
    embedding_size: int = 1000
    hidden_size: int = 1000
    weight_drop: float = 0.5
    output_dropout: float = 0.4
    embedding_dropout: float = 0.1
    input_dropout: float = 0.65
    init_range: float = 0.04
    hidden_max_norm: float = 25.0
    weight_drop_scope: str = "all"
    output_batch_norm: bool = False
    batch_norm_init: str = "uniform"
    recurrent_state: str = "loose_mean"
    path_keep: float = 1.0

    def __post_init__(self):
        owner = "RNNModelConfig"
        size, rate = dict(integer=True, minimum=1), dict(minimum=0, maximum=1,
                                                         exclusive_maximum=True)
        positive = dict(minimum=0, exclusive_minimum=True)
        check_fields(self, {
            "num_nodes": dict(integer=True, minimum=2), "vocab_size": size,
            "embedding_size": size, "hidden_size": size, "weight_drop": rate,
            "output_dropout": rate, "embedding_dropout": rate, "input_dropout": rate,
            "init_range": positive, "hidden_max_norm": positive,
            "path_keep": dict(minimum=0, maximum=1, exclusive_minimum=True),
        })
        if self.embedding_size != self.hidden_size:
            raise ValueError(
                "RNNModelConfig: the decoder is tied to the embedding, so embedding_size "
                f"({self.embedding_size}) must equal hidden_size ({self.hidden_size})."
            )
        _check_choice(owner, "weight_drop_scope", self.weight_drop_scope, WEIGHT_DROP_SCOPES)
        _check_choice(owner, "batch_norm_init", self.batch_norm_init, BATCH_NORM_INITS)
        _check_choice(owner, "recurrent_state", self.recurrent_state, RECURRENT_STATES)
        if not isinstance(self.output_batch_norm, bool):
            raise ValueError(f"{owner}.output_batch_norm must be a bool, got "
                             f"{self.output_batch_norm!r}.")


@dataclasses.dataclass(frozen=True)
class RNNOptimizerConfig(JsonConfig):
    """The plain SGD of the shared weights (defaults: the WPL release's RNN search).

    Attributes:
        learning_rate: SGD step ``lr₀`` (20, > 0).
        lr_decay: ``d ∈ (0, 1]``; epoch ``e`` steps with ``lr₀ · d^max(0, e − s)`` (0.96).
        lr_decay_start_epoch: ``s`` (15, an int >= 0).
        grad_clip: global gradient-norm clip (0.25, > 0).
        l2: L2 weight ``λ >= 0`` on the weights a step uses, added as ``λ θ`` to their
            gradient (1e-7).
    """

    learning_rate: float = 20.0
    lr_decay: float = 0.96
    lr_decay_start_epoch: int = 15
    grad_clip: float = 0.25
    l2: float = 1e-7

    def __post_init__(self):
        positive = dict(minimum=0, exclusive_minimum=True)
        check_fields(self, {
            "learning_rate": positive,
            "lr_decay": dict(minimum=0, maximum=1, exclusive_minimum=True),
            "lr_decay_start_epoch": dict(integer=True, minimum=0),
            "grad_clip": positive, "l2": dict(minimum=0),
        })

    def rate(self, epoch: int) -> float:
        """Learning rate of ``epoch``: ``lr₀ · d^max(0, epoch − s)``."""
        return self.learning_rate * self.lr_decay ** max(
            0, int(epoch) - self.lr_decay_start_epoch)


_NESTED = {"model": RNNModelConfig, "optimizer": RNNOptimizerConfig, "wpl": WPLConfig}


def _moved_fields() -> dict:
    """Fields of earlier versions of RNNSupernetConfig and where their values live now."""
    moved = {
        "wpl_strength": "the search schedule's `strength` (SearchConfig / NAOSearchConfig)",
        "wpl_momentum": "`wpl.fisher_momentum`",
        "wpl_clip_norm": "`wpl.clip_norm`",
        "wpl_mode": "`wpl.mode`",
    }
    for group in ("model", "optimizer"):
        for field in dataclasses.fields(_NESTED[group]):
            moved[field.name] = f"`{group}.{field.name}`"
    return moved


_MOVED_FIELDS = _moved_fields()


@dataclasses.dataclass(frozen=True)
class RNNSupernetConfig(JsonConfig):
    """Settings of the RNN supernet and its search task (defaults: the WPL release's RNN search).

    Nested by concern: a JSON object in place of ``model``, ``optimizer`` or ``wpl`` is read
    through that config's ``from_json`` (unknown fields refused; an object replaces all of it).

    Attributes:
        model: the cell and language model (:class:`RNNModelConfig`: sizes, dropouts,
            initialisation, hidden-state norm).
        optimizer: the shared weights' SGD (:class:`RNNOptimizerConfig`: learning rate and its
            decay, gradient clip, L2).
        batch_size, bptt: training batch rows and BPTT window (64, 35).
        eval_batch_size: rows of the fixed validation batch and of reward minibatches.
        eval_bptt: steps of those validation windows.
        wpl: how the WPL step is formed (:class:`~wpl_keras.wpl.config.WPLConfig`: the Fisher
            momentum ``η_F`` (0.9), the Fisher clip norm (10) and the mode, ``"proximal"`` or
            ``"gradient"``). ``α`` is not here: the search schedule writes it into the task's
            ``wpl_state.strength`` each epoch.
        wpl_scope: which shared weights WPL covers. ``"cell"``: the rows of the node-to-node
            matrices the architecture uses. ``"all"``: those rows and every weight all
            architectures share (embedding = tied decoder, ``w_x``, ``w_h``, decoder bias and,
            with output BatchNorm, its ``γ`` and ``β``), each with its own Fisher and anchor,
            updated from the same gradients and at the same moments.
        reward_constant: reward ``= reward_constant / valid_ppl`` (80).
        jit_compile: XLA-compile the traced train/eval steps (one replica only: a step
            under several replicas is not XLA-compiled; the task refuses the combination).
        strategy: the ``tf.distribute`` strategy the search runs under, one of
            :data:`wpl_keras.nas.search.distribute.KINDS` (``"auto"``: multi-worker when
            ``TF_CONFIG`` lists several workers, mirrored over the GPUs when more than one is
            visible, else one device); the experiment builds it with
            :func:`~wpl_keras.nas.search.distribute.make_strategy` and hands it to the task.
    """

    model: RNNModelConfig = RNNModelConfig()
    optimizer: RNNOptimizerConfig = RNNOptimizerConfig()
    batch_size: int = 64
    bptt: int = 35
    eval_batch_size: int = 64
    eval_bptt: int = 35
    wpl: WPLConfig = WPLConfig()
    wpl_scope: str = "cell"
    reward_constant: float = 80.0
    jit_compile: bool = False
    strategy: str = "auto"

    def __post_init__(self):
        self._coerce_nested()  # dicts from JSON or overrides become the nested configs
        size = dict(integer=True, minimum=1)
        check_fields(self, {
            "batch_size": size, "bptt": size, "eval_batch_size": size, "eval_bptt": size,
            "reward_constant": dict(minimum=0, exclusive_minimum=True),
        })
        if self.wpl_scope not in WPL_SCOPES:
            raise ValueError(
                f"RNNSupernetConfig.wpl_scope must be one of {WPL_SCOPES}, got "
                f"{self.wpl_scope!r}."
            )
        if not isinstance(self.jit_compile, bool):
            raise ValueError(
                f"RNNSupernetConfig.jit_compile must be a bool, got {self.jit_compile!r}.")
        if self.strategy not in STRATEGY_KINDS:
            raise ValueError(
                f"RNNSupernetConfig.strategy must be one of {STRATEGY_KINDS}, got "
                f"{self.strategy!r}."
            )

    @classmethod
    def from_json(cls, obj) -> "RNNSupernetConfig":
        """The config of a JSON object (or string); a field of an earlier (flat) version that
        moved is named with where it lives now."""
        if isinstance(obj, str):
            obj = json.loads(obj)
        moved = sorted(set(obj) & set(_MOVED_FIELDS)) if isinstance(obj, dict) else []
        if moved:
            where = "; ".join(f"{name} -> {_MOVED_FIELDS[name]}" for name in moved)
            raise ValueError(
                f"RNNSupernetConfig fields {moved} were removed ({where}); edit the saved "
                "config accordingly."
            )
        return super().from_json(obj)
