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
(locked).

The search task that trains it, :class:`~wpl_keras.nas.rnn_search.RNNSearchTask`, is in
:mod:`wpl_keras.nas.rnn_search` (also importable from here).
"""

from __future__ import annotations

import dataclasses
import json

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
from wpl_keras.nas.rnn_space import RNNCellSpace
from wpl_keras.utils.config import JsonConfig
from wpl_keras.wpl.config import WPLConfig
from wpl_keras.wpl.fisher import read_rows

# --------------------------------------------------------------------------- config
WPL_SCOPES = ("cell", "all")

# Fields of earlier versions of RNNSupernetConfig and where their values live now.
_MOVED_FIELDS = {
    "wpl_strength": "the search schedule's `strength` (SearchConfig / NAOSearchConfig)",
    "wpl_momentum": "`wpl.fisher_momentum`",
    "wpl_clip_norm": "`wpl.clip_norm`",
    "wpl_mode": "`wpl.mode`",
}


@dataclasses.dataclass(frozen=True)
class RNNSupernetConfig(JsonConfig):
    """Settings of the RNN supernet and its search task (defaults: the WPL release's RNN search).

    Attributes:
        num_nodes: nodes per cell (12).
        vocab_size: vocabulary (10,000 for PTB).
        embedding_size, hidden_size: must be equal (tied decoder); 1000 in the reference.
        batch_size, bptt: training batch rows and BPTT window (64, 35).
        eval_batch_size: rows of the fixed validation batch and of reward minibatches.
        eval_bptt: steps of those validation windows.
        learning_rate: SGD step (20); ``lr · lr_decay^(epoch − lr_decay_start_epoch)`` after
            ``lr_decay_start_epoch`` (0.96 from epoch 15).
        grad_clip: global gradient-norm clip (0.25).
        l2: L2 weight ``λ`` on the weights a step uses (1e-7).
        weight_drop, output_dropout, embedding_dropout, input_dropout: 0.5 / 0.4 / 0.1 / 0.65.
        init_range: weights start uniform in ``[−init_range, init_range]``.
        hidden_max_norm: every step's hidden state rows (and so the carried state) are
            rescaled to at most this norm (ENAS: 25), which keeps ReLU/identity cells from
            exploding.
        wpl: how the WPL step is formed (:class:`~wpl_keras.wpl.config.WPLConfig`: the Fisher
            momentum ``η_F`` (0.9), the Fisher clip norm (10) and the mode, ``"proximal"`` or
            ``"gradient"``). ``α`` is not here: the search schedule writes it into the task's
            ``wpl_state.strength`` each epoch. A dict is read as ``WPLConfig.from_json``.
        wpl_scope: which shared weights WPL covers. ``"cell"``: the rows of the node-to-node
            matrices the architecture uses. ``"all"``: those rows and every weight all
            architectures share (embedding = tied decoder, ``w_x``, ``w_h``, decoder bias),
            each with its own Fisher and anchor, updated from the same gradients and at the
            same moments.
        reward_constant: reward ``= reward_constant / valid_ppl`` (80).
        jit_compile: XLA-compile the traced train/eval steps.
    """

    num_nodes: int = 12
    vocab_size: int = 10000
    embedding_size: int = 1000
    hidden_size: int = 1000
    batch_size: int = 64
    bptt: int = 35
    eval_batch_size: int = 64
    eval_bptt: int = 35
    learning_rate: float = 20.0
    lr_decay: float = 0.96
    lr_decay_start_epoch: int = 15
    grad_clip: float = 0.25
    l2: float = 1e-7
    weight_drop: float = 0.5
    output_dropout: float = 0.4
    embedding_dropout: float = 0.1
    input_dropout: float = 0.65
    init_range: float = 0.04
    hidden_max_norm: float = 25.0
    wpl: WPLConfig = WPLConfig()
    wpl_scope: str = "cell"
    reward_constant: float = 80.0
    jit_compile: bool = False

    def __post_init__(self):
        if isinstance(self.wpl, dict):
            object.__setattr__(self, "wpl", WPLConfig.from_json(self.wpl))
        if not isinstance(self.wpl, WPLConfig):
            raise TypeError(
                "RNNSupernetConfig.wpl must be a WPLConfig (or its JSON dict), got "
                f"{type(self.wpl).__name__}."
            )
        if self.embedding_size != self.hidden_size:
            raise ValueError(
                "RNNSupernetConfig: the decoder is tied to the embedding, so embedding_size "
                f"({self.embedding_size}) must equal hidden_size ({self.hidden_size})."
            )
        for name in ("num_nodes", "vocab_size", "hidden_size", "batch_size", "bptt",
                     "eval_batch_size", "eval_bptt"):
            if int(getattr(self, name)) <= 0:
                raise ValueError(f"RNNSupernetConfig.{name} must be positive.")
        if self.wpl_scope not in WPL_SCOPES:
            raise ValueError(
                f"RNNSupernetConfig.wpl_scope must be one of {WPL_SCOPES}, got "
                f"{self.wpl_scope!r}."
            )
        if self.num_nodes < 2:
            raise ValueError("RNNSupernetConfig.num_nodes must be >= 2.")
        for name in ("weight_drop", "output_dropout", "embedding_dropout", "input_dropout"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"RNNSupernetConfig.{name} must be in [0, 1).")

    @classmethod
    def from_json(cls, obj) -> "RNNSupernetConfig":
        """The config of a JSON object (or string); a field of an earlier version that moved
        is named with where it lives now."""
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
        BPTT 35, vocabulary 10k."""
        return dataclasses.replace(cls(), **overrides)

    @classmethod
    def cpu_small(cls, **overrides) -> "RNNSupernetConfig":
        """Hidden 256 (otherwise the reference): the small size of
        ``benchmarks/supernet_step.py``, which reports its step time."""
        base = cls(embedding_size=256, hidden_size=256, eval_batch_size=32)
        return dataclasses.replace(base, **overrides)


# --------------------------------------------------------------------------- dropouts
def _dropout_mask(shape, rate, seed_gen, dtype=tf.float32):
    """Inverted-dropout mask: ``1/keep`` with probability ``keep = 1 − rate``, else 0."""
    keep = 1.0 - rate
    return tf.cast(keras.random.uniform(shape, seed=seed_gen) < keep, dtype) / keep


def apply_input_dropouts(x, tokens, w_h, w_nodes, cfg: "RNNSupernetConfig", seed_gen):
    """ENAS training-time dropouts on the inputs and recurrent weights.

    Embedding dropout drops whole words (``x ⊙ m[token]``, ``m ∈ {0, 1/keep}^V``); input dropout
    is one mask per batch row shared over time; weight-drop (DropConnect) masks ``W_h`` and the
    node matrices once per batch. Returns ``(x, w_h, w_nodes)``.
    """
    batch = tf.shape(tokens)[0]
    if cfg.embedding_dropout > 0:
        word_mask = _dropout_mask([cfg.vocab_size], cfg.embedding_dropout, seed_gen)
        x = x * tf.gather(word_mask, tf.transpose(tokens))[..., None]
    if cfg.input_dropout > 0:
        x = x * _dropout_mask([batch, cfg.embedding_size], cfg.input_dropout, seed_gen)[None]
    if cfg.weight_drop > 0:
        w_h = w_h * _dropout_mask(tf.shape(w_h), cfg.weight_drop, seed_gen)
        w_nodes = w_nodes * _dropout_mask(tf.shape(w_nodes), cfg.weight_drop, seed_gen)
    return x, w_h, w_nodes


# --------------------------------------------------------------------------- supernet
class RNNSupernet(keras.Model):
    """All shared weights of the ENAS RNN search and the forward pass of any cell.

    Weights: ``embedding [V, E]`` (tied decoder), ``w_x [E, 2H]``, ``w_h [H, 2H]``,
    ``w_nodes [N(N−1)/2, H, 2H]`` (one matrix per (node, input) pair) and ``decoder_bias [V]``.

    Args:
        config: sizes and dropout rates.
        seed: seed of the dropout masks (its state is a variable, saved with the model).
    """

    def __init__(self, config: RNNSupernetConfig, *, seed: int = 0, name: str = "rnn_supernet"):
        super().__init__(name=name)
        self.cfg = config
        self.space = RNNCellSpace(config.num_nodes)
        e, h, v = config.embedding_size, config.hidden_size, config.vocab_size
        init = keras.initializers.RandomUniform(-config.init_range, config.init_range, seed=seed)
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
                                   self.cfg.num_nodes)[3]

    def initial_state(self, batch_size: int) -> tf.Tensor:
        return tf.zeros([batch_size, self.cfg.hidden_size], tf.float32)

    def call(self, tokens, architecture, state=None, training=False):
        """Next-word logits of the cell ``architecture``.

        Args:
            tokens: int ``[B, T]`` word ids.
            architecture: int32 tensor of the architecture's decisions.
            state: ``[B, H]`` hidden state carried from the previous window (zeros if None).
            training: apply the dropouts.

        Returns:
            ``(logits [B, T, V], new_state [B, H])``.
        """
        cfg = self.cfg
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
        if training:
            x, w_h, w_nodes = apply_input_dropouts(x, tokens, w_h, w_nodes, cfg,
                                                   self.seed_generator)
        steps = tf.shape(x)[0]
        xp = tf.reshape(
            tf.matmul(tf.reshape(x, [-1, cfg.embedding_size]), self.w_x),
            [steps, batch, 2 * cfg.hidden_size],
        )
        outputs, new_state = enas_cell_sequence(xp, state, w_h, w_nodes, arch, cfg.num_nodes,
                                                max_norm=cfg.hidden_max_norm)
        outputs = tf.transpose(outputs, [1, 0, 2])  # [B, T, H]
        if training and cfg.output_dropout > 0:
            outputs = outputs * _dropout_mask([batch, 1, cfg.hidden_size], cfg.output_dropout,
                                              self.seed_generator)
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
