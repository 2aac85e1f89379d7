"""The ENAS recurrent supernet on PTB: its config, dropouts and the Keras layer that holds every
cell of :class:`RNNCellSpace` on shared weights.

``W_x ∈ R^{E×2H}`` (input matrix), ``W_h ∈ R^{H×2H}`` (hidden matrix) and one matrix
``W_{i,j} ∈ R^{H×2H}`` per (node, input) pair, stored as rows of one ``[N(N−1)/2, H, 2H]``
variable so a sampled architecture's matrices are a ``tf.gather`` (their gradient is a
``tf.IndexedSlices`` over those rows only). The decoder is tied to the embedding,
``logits = h_t Eᵀ + b``. The input projection ``x W_x`` for all steps is one matmul before the
cell's time loop and the tied softmax one matmul after it; the cell itself (equations, one
trace for every architecture, the hand-written backward loop) is :mod:`wpl_keras.nas.rnn_cell`.

Dropouts (ENAS / WPL release): embedding (whole words), input (locked over time),
weight-drop (DropConnect, one mask per batch, on ``W_h`` — the release's ``w_hc``/``w_hh`` —
and, with ``weight_drop_scope="all"``, on the node matrices too) and output (locked); and,
optionally, random path dropping (whole node inputs, one mask per batch). Their masks are
drawn in one fixed order (:func:`draw_dropout_masks`) and applied separately, so a step under
``tf.distribute`` draws them once for the global batch and each replica applies its rows of
them. Optionally the cell output is batch-normalised (``output_batch_norm``, as the release's
search supernet: ``output = BN(mean of loose ends)``), on batch statistics synchronised
across replicas, in training and in evaluation alike.

The search task that trains it, :class:`~wpl_keras.nas.rnn_search.RNNSearchTask`, is in
:mod:`wpl_keras.nas.rnn_search` (also importable from here).
"""

from __future__ import annotations

import dataclasses
import json
from typing import Dict, Optional

import keras
import tensorflow as tf

from wpl_keras.nas.rnn_cell import (  # noqa: F401  (re-exported: the cell's public names)
    ACTIVATION_TABLE,
    ROW_MASKS,
    activation_and_slope,
    apply_dropout_masks,
    apply_input_dropouts,
    batch_norm_rows,
    clamp_rows,
    decode_architecture,
    draw_dropout_masks,
    enas_cell_sequence,
    enas_cell_sequence_inference,
    sequence_loss,
    slice_dropout_masks,
)
from wpl_keras.nas.distribute import KINDS as STRATEGY_KINDS
from wpl_keras.nas.rnn_space import RNNCellSpace
from wpl_keras.utils.config import JsonConfig
from wpl_keras.utils.validation import check_fields
from wpl_keras.wpl.config import WPLConfig
from wpl_keras.wpl.fisher import read_rows

# --------------------------------------------------------------------------- config
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
    package's earlier behaviour (which the CPU presets were sized with) and :meth:`paper`
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
            (:meth:`paper`).
        hidden_max_norm: every step's hidden state rows (and so the carried state) are
            rescaled to at most this norm (ENAS: 25), which keeps ReLU/identity cells from
            exploding.
        weight_drop_scope: which matrices weight-drop masks. ``"recurrent"``: ``W_h`` only
            (``[W_hc | W_hh]``, the release's ``w_hc_raw`` / ``w_hh_raw``; :meth:`paper`).
            ``"all"`` (default): ``W_h`` and the architecture's node matrices.
        output_batch_norm: batch-normalise the cell output, ``y = γ (h − μ) / sqrt(σ² + ε) + β``
            per step over the batch rows (the release's search supernet,
            ``BatchNorm1d(hidden)`` after the mean of the loose ends; :meth:`paper`). The
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
            :meth:`paper`).
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

    @classmethod
    def paper(cls, **overrides) -> "RNNModelConfig":
        """The release's search supernet (``models/shared_rnn.py``, mode ``train``): init
        ±0.025, weight-drop on ``W_h`` only, BatchNorm on the cell output (``γ``, ``β``
        uniform like every weight), the last node carried to the next step, no path
        dropping; the release's sizes and rates (12 nodes, embedding = hidden = 1000,
        dropouts 0.5 / 0.4 / 0.1 / 0.65, hidden norm 25); ``overrides`` are fields.
        ``wpl_keras/experiments/paper_presets.json`` gives each value's source."""
        base = dict(num_nodes=12, vocab_size=10000, embedding_size=1000, hidden_size=1000,
                    weight_drop=0.5, output_dropout=0.4, embedding_dropout=0.1,
                    input_dropout=0.65, hidden_max_norm=25.0,
                    init_range=0.025, weight_drop_scope="recurrent", output_batch_norm=True,
                    batch_norm_init="uniform", recurrent_state="last_node", path_keep=1.0)
        return cls(**{**base, **overrides})


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
            :data:`wpl_keras.nas.distribute.KINDS` (``"auto"``: multi-worker when
            ``TF_CONFIG`` lists several workers, mirrored over the GPUs when more than one is
            visible, else one device); the experiment builds it with
            :func:`~wpl_keras.nas.distribute.make_strategy` and hands it to the task.
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

    @classmethod
    def paper(cls, **overrides) -> "RNNSupernetConfig":
        """The WPL release's RNN search: embedding = hidden = 1000, 12 nodes, batch 64,
        BPTT 35, vocabulary 10k, the release's search supernet (:meth:`RNNModelConfig.paper`:
        init ±0.025, weight-drop on ``W_h`` only, output BatchNorm, the last node as the
        carried state), its SGD (lr 20, ×0.96 per epoch after 15, clip 0.25, L2 1e-7), reward
        80 / ppl, WPL on the node matrices (``wpl_scope="cell"``) at the release's effective
        strength: each node matrix's Fisher normalised to norm 10
        (``fisher_normalization="tensor_norm"``, ``clip_norm=10``, so ``α = 60`` gives
        ``‖αF‖ = 600``), estimated from a validation batch (``fisher_source="valid"``), with
        the proximal step. Sources and the differences from the release:
        ``wpl_keras/experiments/paper_presets.json``. ``overrides`` are fields of this class
        (``model=`` and ``optimizer=`` take a nested config or a JSON object of one, which
        replaces all of it)."""
        base = cls(
            model=RNNModelConfig.paper(),
            optimizer=RNNOptimizerConfig(learning_rate=20.0, lr_decay=0.96,
                                         lr_decay_start_epoch=15, grad_clip=0.25, l2=1e-7),
            batch_size=64, bptt=35, eval_batch_size=64, eval_bptt=35,
            wpl=WPLConfig(fisher_momentum=0.9, clip_norm=10.0, mode="proximal",
                          fisher_normalization="tensor_norm", fisher_source="valid"),
            wpl_scope="cell", reward_constant=80.0,
        )
        return dataclasses.replace(base, **overrides)

    @classmethod
    def cpu_small(cls, **overrides) -> "RNNSupernetConfig":
        """Hidden 256 (otherwise the reference sizes and rates, with the model's defaults:
        init ±0.04, weight-drop on every matrix, no output BatchNorm, the loose-end mean
        carried, no path dropping): the
        small size of ``benchmarks/supernet_step.py``, which reports its step time.
        ``overrides`` as :meth:`paper`."""
        base = cls(model=RNNModelConfig(embedding_size=256, hidden_size=256),
                   eval_batch_size=32)
        return dataclasses.replace(base, **overrides)


def add_batch_norm_weights(layer: keras.layers.Layer, cfg: RNNModelConfig, seed: int):
    """``(γ, β)``, two ``[H]`` weights of ``layer`` for the output BatchNorm: uniform in
    ``[−init_range, init_range]`` (``batch_norm_init="uniform"``; seeds ``seed + 1`` and
    ``seed + 2``, so they differ from each other and from the matrices) or ``γ = 1``,
    ``β = 0`` (``"unit"``)."""
    inits = ("ones", "zeros")
    if cfg.batch_norm_init == "uniform":
        inits = tuple(keras.initializers.RandomUniform(-cfg.init_range, cfg.init_range,
                                                       seed=seed + k) for k in (1, 2))
    return tuple(layer.add_weight(shape=(cfg.hidden_size,), initializer=init, name=name)
                 for init, name in zip(inits, ("bn_gamma", "bn_beta")))


# --------------------------------------------------------------------------- supernet
class RNNSupernet(keras.Model):
    """All shared weights of the ENAS RNN search and the forward pass of any cell.

    Weights: ``embedding [V, E]`` (tied decoder), ``w_x [E, 2H]``, ``w_h [H, 2H]``,
    ``w_nodes [N(N−1)/2, H, 2H]`` (one matrix per (node, input) pair), ``decoder_bias [V]``
    and, with ``output_batch_norm``, ``bn_gamma [H]`` and ``bn_beta [H]``.

    Args:
        config: the search task's config; the supernet reads its ``model`` (sizes, dropout
            rates, initialisation, hidden-state norm).
        seed: seed of the dropout masks (its state is a variable, saved with the model).
    """

    def __init__(self, config: RNNSupernetConfig, *, seed: int = 0, name: str = "rnn_supernet"):
        super().__init__(name=name)
        self.cfg = config
        model = config.model
        self.space = RNNCellSpace(model.num_nodes)
        e, h, v = model.embedding_size, model.hidden_size, model.vocab_size
        init = keras.initializers.RandomUniform(-model.init_range, model.init_range, seed=seed)
        self.embedding = self.add_weight(shape=(v, e), initializer=init, name="embedding")
        self.w_x = self.add_weight(shape=(e, 2 * h), initializer=init, name="w_x")
        self.w_h = self.add_weight(shape=(h, 2 * h), initializer=init, name="w_h")
        self.w_nodes = self.add_weight(
            shape=(self.space.num_pairs, h, 2 * h), initializer=init, name="w_nodes"
        )
        self.decoder_bias = self.add_weight(shape=(v,), initializer="zeros", name="decoder_bias")
        self.bn_gamma = self.bn_beta = None
        if model.output_batch_norm:
            self.bn_gamma, self.bn_beta = add_batch_norm_weights(self, model, seed)
        self.seed_generator = keras.random.SeedGenerator(seed)
        self.built = True

    def dense_weights(self) -> list:
        """The weights every architecture uses, in a fixed order: ``embedding``, ``w_x``,
        ``w_h``, ``decoder_bias``, then (with output BatchNorm) ``bn_gamma``, ``bn_beta``."""
        extra = [self.bn_gamma, self.bn_beta] if self.bn_gamma is not None else []
        return [self.embedding, self.w_x, self.w_h, self.decoder_bias] + extra

    def wpl_rows(self, architecture) -> tf.Tensor:
        """Rows of ``w_nodes`` the architecture uses (the node rows a step reads, trains and
        covers with WPL), int32 ``[N − 1]``; row ``i − 1`` belongs to node ``i``."""
        return decode_architecture(tf.convert_to_tensor(architecture, tf.int32),
                                   self.cfg.model.num_nodes)[3]

    def initial_state(self, batch_size: int) -> tf.Tensor:
        return tf.zeros([batch_size, self.cfg.model.hidden_size], tf.float32)

    def dropout_masks(self, batch) -> Dict[str, tf.Tensor]:
        """The training dropout masks of a ``batch``-row step (:func:`draw_dropout_masks`
        from this supernet's seed generator, the node mask for the ``N − 1`` rows an
        architecture reads, the path mask if ``path_keep < 1``). Under ``tf.distribute``,
        draw them in cross-replica context for the global batch and give each replica its
        rows (:func:`slice_dropout_masks`)."""
        h = self.cfg.model.hidden_size
        node_shape = [self.cfg.model.num_nodes - 1, h, 2 * h]
        return draw_dropout_masks(batch, self.cfg.model, self.seed_generator,
                                  node_shape=node_shape)

    def call(self, tokens, architecture, state=None, training=False,
             dropout_masks: Optional[Dict[str, tf.Tensor]] = None):
        """Next-word logits of the cell ``architecture``.

        Args:
            tokens: int ``[B, T]`` word ids.
            architecture: int32 tensor of the architecture's decisions.
            state: ``[B, H]`` hidden state carried from the previous window (zeros if None).
            training: apply the dropouts.
            dropout_masks: with ``training``, the masks to apply (:meth:`dropout_masks` for
                these ``B`` rows); None draws them here.

        With output BatchNorm, the cell outputs are normalised on the batch's statistics
        (over every replica's rows under ``tf.distribute``), in training and evaluation,
        before the output dropout.

        Returns:
            ``(logits [B, T, V], new_state [B, H])``.
        """
        cfg = self.cfg.model
        tokens = tf.cast(tokens, tf.int32)
        batch = tf.shape(tokens)[0]
        if state is None:
            state = tf.zeros([batch, cfg.hidden_size], tf.float32)
        arch = tf.cast(tf.reshape(architecture, [-1]), tf.int32)
        rows = self.wpl_rows(arch)
        embedding = tf.convert_to_tensor(self.embedding)
        w_h = tf.convert_to_tensor(self.w_h)
        w_nodes = read_rows(self.w_nodes, rows)
        x = tf.gather(embedding, tf.transpose(tokens))  # [T, B, E]
        masks = {}
        if training:
            masks = self.dropout_masks(batch) if dropout_masks is None else dropout_masks
            x, w_h, w_nodes = apply_dropout_masks(x, tokens, w_h, w_nodes, masks)
        steps = tf.shape(x)[0]
        xp = tf.reshape(
            tf.matmul(tf.reshape(x, [-1, cfg.embedding_size]), self.w_x),
            [steps, batch, 2 * cfg.hidden_size],
        )
        outputs, new_state = enas_cell_sequence(xp, state, w_h, w_nodes, arch, cfg.num_nodes,
                                                max_norm=cfg.hidden_max_norm,
                                                path_mask=masks.get("path"),
                                                last_node=cfg.recurrent_state == "last_node")
        if self.bn_gamma is not None:
            outputs = batch_norm_rows(outputs, self.bn_gamma, self.bn_beta)
        outputs = tf.transpose(outputs, [1, 0, 2])  # [B, T, H]
        if "output" in masks:
            outputs = outputs * masks["output"]
        logits = tf.matmul(tf.reshape(outputs, [-1, cfg.hidden_size]), embedding, transpose_b=True)
        logits = tf.reshape(logits + self.decoder_bias, [batch, steps, cfg.vocab_size])
        return logits, new_state


def __getattr__(name: str):
    """``RNNSearchTask`` from :mod:`wpl_keras.nas.rnn_search`, imported on first use (that module
    imports this one)."""
    if name == "RNNSearchTask":
        from wpl_keras.nas.rnn_search import RNNSearchTask

        return RNNSearchTask
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
