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
weight-drop (DropConnect on ``W_h`` and the node matrices, one mask per batch) and output
(locked). Their masks are drawn in one fixed order (:func:`draw_dropout_masks`) and applied
separately, so a step under ``tf.distribute`` draws them once for the global batch and each
replica applies its rows of them.

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
    activation_and_slope,
    clamp_rows,
    decode_architecture,
    enas_cell_sequence,
    enas_cell_sequence_inference,
    sequence_loss,
)
from wpl_keras.nas.distribute import KINDS as STRATEGY_KINDS
from wpl_keras.nas.rnn_space import RNNCellSpace
from wpl_keras.utils.config import JsonConfig
from wpl_keras.wpl.config import WPLConfig
from wpl_keras.wpl.fisher import read_rows

# --------------------------------------------------------------------------- config
WPL_SCOPES = ("cell", "all")


def _check_int(owner: str, name: str, value, minimum: int) -> None:
    """Raise unless ``value`` is an int (not a bool) ``>= minimum``, naming ``owner.name``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{owner}.{name} must be an int >= {minimum}, got {value!r}.")


def _check_real(owner: str, name: str, value, low: float, high: float, *,
                low_open: bool = False, high_open: bool = False) -> None:
    """Raise unless ``value`` is a real number in the interval ``low .. high`` (ends open as
    flagged), naming ``owner.name`` and the interval."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    if ok:
        ok = (value > low if low_open else value >= low) and (
            value < high if high_open else value <= high)
    if not ok:
        interval = f"{'(' if low_open else '['}{low}, {high}{')' if high_open else ']'}"
        raise ValueError(f"{owner}.{name} must be a number in {interval}, got {value!r}.")


@dataclasses.dataclass(frozen=True)
class RNNModelConfig(JsonConfig):
    """Shape, initialisation and dropouts of the ENAS recurrent cell and its language model
    (defaults: the WPL release's RNN search).

    Attributes:
        num_nodes: nodes per cell (12, at least 2).
        vocab_size: vocabulary (10,000 for PTB).
        embedding_size, hidden_size: must be equal (tied decoder); 1000 in the reference.
        weight_drop, output_dropout, embedding_dropout, input_dropout: rates in ``[0, 1)``,
            0.5 / 0.4 / 0.1 / 0.65.
        init_range: weights start uniform in ``[−init_range, init_range]`` (> 0).
        hidden_max_norm: every step's hidden state rows (and so the carried state) are
            rescaled to at most this norm (ENAS: 25), which keeps ReLU/identity cells from
            exploding.
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

    def __post_init__(self):
        owner = "RNNModelConfig"
        _check_int(owner, "num_nodes", self.num_nodes, 2)
        for name in ("vocab_size", "embedding_size", "hidden_size"):
            _check_int(owner, name, getattr(self, name), 1)
        if self.embedding_size != self.hidden_size:
            raise ValueError(
                "RNNModelConfig: the decoder is tied to the embedding, so embedding_size "
                f"({self.embedding_size}) must equal hidden_size ({self.hidden_size})."
            )
        for name in ("weight_drop", "output_dropout", "embedding_dropout", "input_dropout"):
            _check_real(owner, name, getattr(self, name), 0.0, 1.0, high_open=True)
        for name in ("init_range", "hidden_max_norm"):
            _check_real(owner, name, getattr(self, name), 0.0, float("inf"), low_open=True,
                        high_open=True)


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
        owner = "RNNOptimizerConfig"
        inf = float("inf")
        _check_real(owner, "learning_rate", self.learning_rate, 0.0, inf, low_open=True,
                    high_open=True)
        _check_real(owner, "lr_decay", self.lr_decay, 0.0, 1.0, low_open=True)
        _check_int(owner, "lr_decay_start_epoch", self.lr_decay_start_epoch, 0)
        _check_real(owner, "grad_clip", self.grad_clip, 0.0, inf, low_open=True,
                    high_open=True)
        _check_real(owner, "l2", self.l2, 0.0, inf, high_open=True)

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
            architectures share (embedding = tied decoder, ``w_x``, ``w_h``, decoder bias),
            each with its own Fisher and anchor, updated from the same gradients and at the
            same moments.
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
        for name in ("batch_size", "bptt", "eval_batch_size", "eval_bptt"):
            _check_int("RNNSupernetConfig", name, getattr(self, name), 1)
        if self.wpl_scope not in WPL_SCOPES:
            raise ValueError(
                f"RNNSupernetConfig.wpl_scope must be one of {WPL_SCOPES}, got "
                f"{self.wpl_scope!r}."
            )
        _check_real("RNNSupernetConfig", "reward_constant", self.reward_constant, 0.0,
                    float("inf"), low_open=True, high_open=True)
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
        """Reference sizes (WPL release): embedding = hidden = 1000, 12 nodes, batch 64,
        BPTT 35, vocabulary 10k. ``overrides`` are fields of this class (``model=`` and
        ``optimizer=`` take a nested config or a JSON object of one)."""
        return dataclasses.replace(cls(), **overrides)

    @classmethod
    def cpu_small(cls, **overrides) -> "RNNSupernetConfig":
        """Hidden 256 (otherwise the reference): the small size of
        ``benchmarks/supernet_step.py``, which reports its step time. ``overrides`` as
        :meth:`paper`."""
        base = cls(model=RNNModelConfig(embedding_size=256, hidden_size=256),
                   eval_batch_size=32)
        return dataclasses.replace(base, **overrides)


# --------------------------------------------------------------------------- dropouts
def _dropout_mask(shape, rate, seed_gen, dtype=tf.float32):
    """Inverted-dropout mask: ``1/keep`` with probability ``keep = 1 − rate``, else 0."""
    keep = 1.0 - rate
    return tf.cast(keras.random.uniform(shape, seed=seed_gen) < keep, dtype) / keep


# Masks whose first axis is the batch row (a replica takes its rows of them); the others
# (the word mask and the weight-drop masks) are shared by every row.
ROW_MASKS = ("input", "output")


def draw_dropout_masks(batch, cfg: RNNModelConfig, seed_gen, *, node_shape,
                       output: bool = True) -> Dict[str, tf.Tensor]:
    """The training-time dropout masks of one batch, drawn in a fixed order from ``seed_gen``.

    Every mask is inverted dropout, ``m ∈ {0, 1/keep}`` with ``keep = 1 − rate``. Only masks
    of positive rate are drawn, in this order: ``"word"`` ``[V]`` (embedding dropout, whole
    words), ``"input"`` ``[batch, E]`` (one per row, shared over time), ``"w_h"`` ``[H, 2H]``
    and ``"w_nodes"`` ``node_shape`` (weight drop), then, with ``output``, ``"output"``
    ``[batch, 1, H]`` (locked over time). A mask's values depend only on the generator's state
    and its shape, so masks drawn once for the global batch and split by rows
    (:data:`ROW_MASKS`) equal the masks of one device.

    Args:
        batch: rows of the (global) batch, an int or a scalar tensor.
        cfg: the model config (rates and sizes).
        seed_gen: the supernet's ``keras.random.SeedGenerator``.
        node_shape: shape of the node matrices the step reads (``[rows, H, 2H]``).
        output: also draw the output mask.

    Returns:
        ``{name: mask}`` for the masks drawn.
    """
    masks = {}
    h = cfg.hidden_size
    if cfg.embedding_dropout > 0:
        masks["word"] = _dropout_mask([cfg.vocab_size], cfg.embedding_dropout, seed_gen)
    if cfg.input_dropout > 0:
        masks["input"] = _dropout_mask([batch, cfg.embedding_size], cfg.input_dropout, seed_gen)
    if cfg.weight_drop > 0:
        masks["w_h"] = _dropout_mask([h, 2 * h], cfg.weight_drop, seed_gen)
        masks["w_nodes"] = _dropout_mask(node_shape, cfg.weight_drop, seed_gen)
    if output and cfg.output_dropout > 0:
        masks["output"] = _dropout_mask([batch, 1, h], cfg.output_dropout, seed_gen)
    return masks


def slice_dropout_masks(masks: Dict[str, tf.Tensor], start, size) -> Dict[str, tf.Tensor]:
    """The masks of batch rows ``[start, start + size)``: the row masks (:data:`ROW_MASKS`)
    sliced on their first axis, the others whole."""
    return {
        name: (tf.slice(m, tf.concat([[start], tf.zeros([tf.rank(m) - 1], tf.int32)], 0),
                        tf.concat([[size], tf.fill([tf.rank(m) - 1], -1)], 0))
               if name in ROW_MASKS else m)
        for name, m in masks.items()
    }


def apply_dropout_masks(x, tokens, w_h, w_nodes, masks: Dict[str, tf.Tensor]):
    """``(x, w_h, w_nodes)`` with the input-side masks of :func:`draw_dropout_masks` applied:
    ``x ⊙ m_word[token] ⊙ m_input[row]`` (``x`` is ``[T, B, E]``), ``W_h ⊙ m_{w_h}``,
    ``W_nodes ⊙ m_{w_nodes}``; absent masks leave their tensor as it is."""
    if "word" in masks:
        x = x * tf.gather(masks["word"], tf.transpose(tokens))[..., None]
    if "input" in masks:
        x = x * masks["input"][None]
    if "w_h" in masks:
        w_h = w_h * masks["w_h"]
        w_nodes = w_nodes * masks["w_nodes"]
    return x, w_h, w_nodes


def apply_input_dropouts(x, tokens, w_h, w_nodes, cfg: RNNModelConfig, seed_gen):
    """ENAS training-time dropouts on the inputs and recurrent weights, masks drawn here.

    Embedding dropout drops whole words (``x ⊙ m[token]``, ``m ∈ {0, 1/keep}^V``); input dropout
    is one mask per batch row shared over time; weight-drop (DropConnect) masks ``W_h`` and the
    node matrices once per batch (:func:`draw_dropout_masks` without the output mask, then
    :func:`apply_dropout_masks`). Returns ``(x, w_h, w_nodes)``.
    """
    masks = draw_dropout_masks(tf.shape(tokens)[0], cfg, seed_gen, node_shape=tf.shape(w_nodes),
                               output=False)
    return apply_dropout_masks(x, tokens, w_h, w_nodes, masks)


# --------------------------------------------------------------------------- supernet
class RNNSupernet(keras.Model):
    """All shared weights of the ENAS RNN search and the forward pass of any cell.

    Weights: ``embedding [V, E]`` (tied decoder), ``w_x [E, 2H]``, ``w_h [H, 2H]``,
    ``w_nodes [N(N−1)/2, H, 2H]`` (one matrix per (node, input) pair) and ``decoder_bias [V]``.

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
        self.seed_generator = keras.random.SeedGenerator(seed)
        self.built = True

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
        architecture reads). Under ``tf.distribute``, draw them in cross-replica context for
        the global batch and give each replica its rows (:func:`slice_dropout_masks`)."""
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
                                                max_norm=cfg.hidden_max_norm)
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
