"""Neural Architecture Optimization (NAO, Luo et al. 2018): encoder, predictor, decoder.

NAO searches in a continuous space. An architecture ``a = (a_0, …, a_{D−1})`` (one int per
decision of a :class:`~wpl_keras.nas.base.SearchSpace`) is written as tokens
``t_k = o_k + a_k`` with per-position offsets ``o_k = Σ_{j<k} n_j`` (``n_j`` choices of
decision ``j``), so every position has its own vocabulary inside one table of ``V = Σ_k n_k``
tokens. Then:

* **encoder** ``E``: an LSTM over the token embeddings; the architecture embedding is the mean
  of its L2-normalised outputs, ``z = (1/D) Σ_k h_k / ‖h_k‖``;
* **predictor** ``f``: an MLP on ``z`` with a sigmoid output, ``f(z) ∈ (0, 1)``, trained to
  the architecture's normalised score ``y`` (higher is better);
* **decoder** ``D``: an LSTM whose initial state is ``tanh(W z)`` and whose input at step
  ``k`` is ``[embed(t_{k−1}), z]`` (a start token for ``k = 0``); the logits of step ``k`` are
  masked to the ``n_k`` tokens of position ``k``, so every decoded architecture is valid.

Joint training on ``(a, y)`` pairs minimises (NAO's trade-off ``λ = 0.8``)

    ``L = λ · mean((f(E(a)) − y)²) + (1 − λ) · mean_k CE(t_k, softmax(logits_k))``.

New architectures come from gradient ascent on the predicted score in embedding space,

    ``z' = z + η ∇_z f(z)``,

decoded greedily by ``D``. As in NAO, ``η`` grows (``η, 2η, 3η, …``) until enough
architectures that are new (not in the pool, not duplicates) were found.

Pure functions first (:func:`token_offsets`, :func:`archs_to_tokens`,
:func:`tokens_to_archs`, :func:`position_mask`, :func:`normalize_scores`, :func:`nao_loss`),
then the Keras model :class:`NAOController`. Its randomness (initialisers, mini-batch
shuffling) is seeded, and its weights, optimizer state and random stream are all in
:meth:`NAOController.checkpoint_items`, so a restored controller continues identically.
"""

from __future__ import annotations

import dataclasses
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

import keras
import numpy as np
import tensorflow as tf

from wpl_keras.nas.base import (
    Architecture,
    InvalidArchitectureError,
    check_architecture,
    check_sizes,
)
from wpl_keras.utils.config import JsonConfig
from wpl_keras.utils.validation import check_fields, check_number
from wpl_keras.utils.checkpoint import VariableBundle

_NEG = -1e9


# ---------------------------------------------------------------------------------------------
# Pure functions.


def token_offsets(decision_sizes: Sequence[int]) -> np.ndarray:
    """``o_k = Σ_{j<k} n_j``: where position ``k``'s vocabulary starts in the token table.

    Raises:
        InvalidSpaceError: (a ``ValueError``) for an empty space or a size that is not an int
            ``>= 1`` (see :func:`~wpl_keras.nas.base.check_sizes`).
    """
    sizes = np.asarray(check_sizes(decision_sizes), dtype=np.int64)
    return np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)


def _architecture_rows(archs) -> list:
    """``archs`` as a list of architectures: one flat architecture becomes a list of one."""
    if hasattr(archs, "numpy") and callable(archs.numpy):  # an eager tf.Tensor
        archs = archs.numpy()
    if isinstance(archs, np.ndarray):
        return [archs] if archs.ndim == 1 and archs.size else list(archs)
    if isinstance(archs, (str, bytes, dict)) or not hasattr(archs, "__iter__"):
        raise InvalidArchitectureError(
            f"expected a sequence of architectures (sequences of ints), got {archs!r}."
        )
    rows = list(archs)
    flat = rows and not any(isinstance(r, (list, tuple, np.ndarray)) or hasattr(r, "numpy")
                            for r in rows)
    return [rows] if flat else rows


def archs_to_tokens(archs: Sequence[Sequence[int]], decision_sizes: Sequence[int]) -> np.ndarray:
    """``t[i, k] = o_k + a[i, k]`` as an int32 array ``[N, D]`` (one flat architecture is
    ``N = 1``).

    Raises:
        InvalidArchitectureError: (a ``ValueError``) for a wrong length, a decision that is
            not an integer (booleans, floats and strings are rejected, never truncated) or a
            decision out of ``[0, n_k)``.
    """
    sizes = check_sizes(decision_sizes)
    rows = [check_architecture(a, sizes, owner=f"architecture {i}")
            for i, a in enumerate(_architecture_rows(archs))]
    a = np.asarray(rows, dtype=np.int64).reshape(len(rows), len(sizes))
    return (a + token_offsets(sizes)[None, :]).astype(np.int32)


def tokens_to_archs(tokens, decision_sizes: Sequence[int]) -> List[Architecture]:
    """Inverse of :func:`archs_to_tokens`: ``a[i, k] = t[i, k] − o_k``, as tuples of ints.

    Raises:
        InvalidArchitectureError: for tokens that are not ``[N, D]`` integers, or a token
            outside position ``k``'s vocabulary ``[o_k, o_k + n_k)``.
    """
    sizes = check_sizes(decision_sizes)
    t = np.asarray(tokens)
    if t.ndim != 2 or t.shape[1] != len(sizes) or not np.issubdtype(t.dtype, np.integer):
        raise InvalidArchitectureError(
            f"tokens must be an integer array [N, {len(sizes)}], got {t.dtype} {t.shape}."
        )
    a = t.astype(np.int64) - token_offsets(sizes)[None, :]
    return [check_architecture(list(row), sizes, owner=f"tokens row {i}")
            for i, row in enumerate(a)]


def position_mask(decision_sizes: Sequence[int]) -> np.ndarray:
    """``[D, V]`` additive logit mask: 0 on position ``k``'s tokens ``[o_k, o_k + n_k)``,
    ``−1e9`` elsewhere (so a decoded token is always a valid choice of its position)."""
    sizes = check_sizes(decision_sizes)
    offsets = token_offsets(sizes)
    mask = np.full((len(sizes), int(sum(sizes))), _NEG, dtype=np.float32)
    for k, (o, n) in enumerate(zip(offsets, sizes)):
        mask[k, o : o + n] = 0.0
    return mask


def normalize_scores(errors: Sequence[float], *, lower_is_better: bool = True) -> np.ndarray:
    """Min-max scores in ``[0, 1]``, higher is better (the predictor's targets, as NAO).

    ``y = (max(e) − e) / (max(e) − min(e))`` when lower errors are better, else
    ``(e − min(e)) / (max(e) − min(e))``; all ``0.5`` when every value is equal.

    Raises:
        ValueError: for an empty or non-finite input.
    """
    e = np.asarray(errors, dtype=np.float64).reshape(-1)
    if e.size == 0:
        raise ValueError("normalize_scores needs at least one value.")
    if not np.all(np.isfinite(e)):
        raise ValueError("normalize_scores got NaN or Inf (did the task diverge?).")
    span = e.max() - e.min()
    if span == 0:
        return np.full(e.shape, 0.5)
    return (e.max() - e) / span if lower_is_better else (e - e.min()) / span


def nao_loss(
    predicted: tf.Tensor,
    target: tf.Tensor,
    logits: tf.Tensor,
    tokens: tf.Tensor,
    trade_off: float,
) -> Tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """``L = λ · mean((f − y)²) + (1 − λ) · mean CE(t, logits)``.

    Args:
        predicted: ``f(z)``, shape ``[N]``.
        target: ``y``, shape ``[N]``.
        logits: decoder logits ``[N, D, V]`` (already masked).
        tokens: target tokens ``[N, D]``.
        trade_off: ``λ`` in ``[0, 1]``.

    Returns:
        ``(L, mse, ce)``.
    """
    mse = tf.reduce_mean(tf.square(predicted - target))
    ce = tf.reduce_mean(
        tf.nn.sparse_softmax_cross_entropy_with_logits(labels=tokens, logits=logits)
    )
    return trade_off * mse + (1.0 - trade_off) * ce, mse, ce


# ---------------------------------------------------------------------------------------------
# Configuration.


@dataclasses.dataclass(frozen=True)
class NAOConfig(JsonConfig):
    """Settings of the NAO controller.

    The NAO release (ENAS-like spaces) uses 96 encoder/decoder units, an MLP of 200 units,
    ``λ = 0.8``, Adam at 1e-3 and ``η`` grown 1, 2, 3, …; the defaults here are smaller
    for CPUs and say so.

    Args:
        token_embedding: size of the token embedding.
        units: LSTM units of the encoder and the decoder (= size of ``z``).
        predictor_layers: hidden layers of the predictor MLP.
        predictor_units: units per hidden layer.
        trade_off: ``λ`` of :func:`nao_loss`.
        learning_rate: Adam learning rate.
        epochs: passes over the pool per :meth:`NAOController.fit`.
        batch_size: mini-batch size for fit.
        grad_clip: global-norm gradient clipping (NAO: 5).
        step_size: ``η`` of the first gradient-ascent round.
        max_rounds: rounds ``η, 2η, …`` tried by :meth:`NAOController.generate`.
    """

    token_embedding: int = 32
    units: int = 64
    predictor_layers: int = 1
    predictor_units: int = 64
    trade_off: float = 0.8
    learning_rate: float = 1e-3
    epochs: int = 60
    batch_size: int = 32
    grad_clip: float = 5.0
    step_size: float = 1.0
    max_rounds: int = 20

    def __post_init__(self):
        size, positive = dict(integer=True, minimum=1), dict(minimum=0, exclusive_minimum=True)
        check_fields(self, {
            "token_embedding": size, "units": size, "predictor_units": size, "epochs": size,
            "batch_size": size, "max_rounds": size,
            "predictor_layers": dict(integer=True, minimum=0),
            "trade_off": dict(minimum=0, maximum=1), "learning_rate": positive,
            "step_size": positive, "grad_clip": positive,
        })



# ---------------------------------------------------------------------------------------------
# The Keras model.


class NAOController(keras.Model):
    """NAO encoder + performance predictor + decoder over one space's decisions.

    Example:

    >>> nao = NAOController([3, 2, 4], NAOConfig(units=8, token_embedding=4), seed=1)
    >>> archs = [(0, 1, 3), (2, 0, 1)]
    >>> _ = nao.fit(archs, [0.0, 1.0], epochs=2)
    >>> all(len(a) == 3 for a in nao.generate(archs, num_new=2))
    True

    Args:
        decision_sizes: choices per decision (``space.decision_sizes``).
        config: a :class:`NAOConfig`.
        seed: seeds the initialisers and the shuffling stream.
        name: model name.
    """

    def __init__(
        self,
        decision_sizes: Sequence[int],
        config: Optional[NAOConfig] = None,
        *,
        seed: int = 0,
        name: str = "nao_controller",
        **kwargs,
    ):
        super().__init__(name=name, **kwargs)
        self.decision_sizes = check_sizes(decision_sizes)
        self.offsets = token_offsets(self.decision_sizes)
        self.nao_config = config or NAOConfig()
        self.seed = int(seed)
        c = self.nao_config
        D, V = len(self.decision_sizes), int(sum(self.decision_sizes))
        self.num_decisions, self.vocab_size = D, V
        init = lambda k: keras.initializers.GlorotUniform(seed=self.seed * 1009 + k)

        # Token V is the decoder's start token.
        self.token_embed = keras.layers.Embedding(
            V + 1, c.token_embedding, embeddings_initializer=init(0), name="token_embed"
        )
        self.token_embed.build((None,))
        self.encoder_cell = keras.layers.LSTMCell(
            c.units, kernel_initializer=init(1), recurrent_initializer=init(2),
            seed=self.seed, name="encoder"
        )
        self.encoder_cell.build((None, c.token_embedding))
        for k in range(c.predictor_layers):
            layer = keras.layers.Dense(
                c.predictor_units, activation="relu", kernel_initializer=init(10 + k),
                name=f"predictor_hidden_{k}",
            )
            layer.build((None, c.units if k == 0 else c.predictor_units))
            setattr(self, f"predictor_hidden_{k}", layer)
        self.predictor_out = keras.layers.Dense(1, kernel_initializer=init(3), name="predictor_out")
        self.predictor_out.build((None, c.predictor_units if c.predictor_layers else c.units))
        self.decoder_init = keras.layers.Dense(
            2 * c.units, activation="tanh", kernel_initializer=init(4), name="decoder_init"
        )
        self.decoder_init.build((None, c.units))
        self.decoder_cell = keras.layers.LSTMCell(
            c.units, kernel_initializer=init(5), recurrent_initializer=init(6),
            seed=self.seed + 1, name="decoder"
        )
        self.decoder_cell.build((None, c.token_embedding + c.units))
        self.decoder_out = keras.layers.Dense(V, kernel_initializer=init(7), name="decoder_out")
        self.decoder_out.build((None, c.units))
        self.built = True

        self._mask = tf.constant(position_mask(self.decision_sizes))
        self._offsets_t = tf.constant(self.offsets.astype(np.int32))
        self.optimizer_ = keras.optimizers.Adam(
            c.learning_rate, global_clipnorm=c.grad_clip, name="nao_adam"
        )
        self.optimizer_.build(self.trainable_variables)
        self.generator = tf.random.Generator.from_seed(self.seed)

        tokens = tf.TensorSpec([None, D], tf.int32)
        vec = tf.TensorSpec([None, c.units], tf.float32)
        self._encode_fn = tf.function(self._encode, input_signature=[tokens])
        self._predict_fn = tf.function(self._predict, input_signature=[vec])
        self._decode_fn = tf.function(self._greedy_decode, input_signature=[vec])
        self._train_fn = tf.function(
            self._train_step,
            input_signature=[tokens, tf.TensorSpec([None], tf.float32)],
        )
        self._ascent_fn = tf.function(
            self._ascent, input_signature=[vec, tf.TensorSpec([], tf.float32)]
        )

    # ------------------------------------------------------------------ core
    @property
    def predictor_layers(self) -> List[keras.layers.Layer]:
        return [getattr(self, f"predictor_hidden_{k}")
                for k in range(self.nao_config.predictor_layers)]

    def _encode(self, tokens: tf.Tensor) -> tf.Tensor:
        """``z = (1/D) Σ_k h_k / ‖h_k‖`` over the encoder LSTM outputs."""
        n = tf.shape(tokens)[0]
        units = self.nao_config.units
        state = [tf.zeros([n, units]), tf.zeros([n, units])]
        x = self.token_embed(tokens)
        outputs = []
        for k in range(self.num_decisions):
            h, state = self.encoder_cell(x[:, k, :], state)
            outputs.append(tf.math.l2_normalize(h, axis=-1))
        return tf.add_n(outputs) / float(self.num_decisions)

    def _predict(self, z: tf.Tensor) -> tf.Tensor:
        """``f(z) = sigmoid(MLP(z))``, shape ``[N]``."""
        h = z
        for layer in self.predictor_layers:
            h = layer(h)
        return tf.sigmoid(self.predictor_out(h))[:, 0]

    def _decoder_start(self, z: tf.Tensor):
        init = self.decoder_init(z)
        units = self.nao_config.units
        return [init[:, :units], init[:, units:]]

    def _decoder_step(self, previous: tf.Tensor, z: tf.Tensor, state, k: int):
        x = tf.concat([self.token_embed(previous), z], axis=-1)
        h, state = self.decoder_cell(x, state)
        return self.decoder_out(h) + self._mask[k], state

    def _teacher_logits(self, z: tf.Tensor, tokens: tf.Tensor) -> tf.Tensor:
        """Masked decoder logits ``[N, D, V]`` with the true previous tokens as inputs."""
        n = tf.shape(tokens)[0]
        state = self._decoder_start(z)
        previous = tf.fill([n], self.vocab_size)
        logits = []
        for k in range(self.num_decisions):
            step, state = self._decoder_step(previous, z, state, k)
            logits.append(step)
            previous = tokens[:, k]
        return tf.stack(logits, axis=1)

    def _greedy_decode(self, z: tf.Tensor) -> tf.Tensor:
        """Greedy tokens ``[N, D]``; the mask keeps each token in its position's range."""
        n = tf.shape(z)[0]
        state = self._decoder_start(z)
        previous = tf.fill([n], self.vocab_size)
        tokens = []
        for k in range(self.num_decisions):
            step, state = self._decoder_step(previous, z, state, k)
            previous = tf.argmax(step, axis=-1, output_type=tf.int32)
            tokens.append(previous)
        return tf.stack(tokens, axis=1)

    def _loss_terms(self, tokens: tf.Tensor, target: tf.Tensor):
        z = self._encode(tokens)
        return nao_loss(
            self._predict(z), target, self._teacher_logits(z, tokens), tokens,
            self.nao_config.trade_off,
        )

    def _train_step(self, tokens: tf.Tensor, target: tf.Tensor):
        with tf.GradientTape() as tape:
            loss, mse, ce = self._loss_terms(tokens, target)
        variables = self.trainable_variables
        grads = tape.gradient(loss, variables)
        self.optimizer_.apply_gradients(zip(grads, variables))
        return loss, mse, ce

    def _ascent(self, z: tf.Tensor, step_size: tf.Tensor):
        """``z' = z + η ∇_z f(z)`` (each row's own gradient; the rows are independent)."""
        with tf.GradientTape() as tape:
            tape.watch(z)
            score = tf.reduce_sum(self._predict(z))
        grad = tape.gradient(score, z)
        return z + step_size * grad

    # ---------------------------------------------------------------- public
    def call(self, tokens, training=False):
        """``(f(z), logits)`` for int32 tokens ``[N, D]`` (teacher-forced logits)."""
        z = self._encode(tokens)
        return self._predict(z), self._teacher_logits(z, tokens)

    def tokens(self, archs: Sequence[Sequence[int]]) -> tf.Tensor:
        """Validated int32 tokens ``[N, D]`` of ``archs`` (see :func:`archs_to_tokens`)."""
        return tf.constant(archs_to_tokens(archs, self.decision_sizes))

    def encode(self, archs: Sequence[Sequence[int]]) -> tf.Tensor:
        """Embeddings ``z`` ``[N, units]`` of ``archs``."""
        return self._encode_fn(self.tokens(archs))

    def predict_embedding(self, z) -> np.ndarray:
        """``f(z)`` for embeddings ``[N, units]``."""
        return self._predict_fn(tf.convert_to_tensor(z, tf.float32)).numpy()

    def predict_score(self, archs: Sequence[Sequence[int]]) -> np.ndarray:
        """Predicted normalised score ``f(E(a))`` (higher is better) of each architecture."""
        return self.predict_embedding(self.encode(archs))

    def decode(self, z) -> List[Architecture]:
        """Greedy decoding of embeddings ``[N, units]`` into (always valid) architectures."""
        tokens = self._decode_fn(tf.convert_to_tensor(z, tf.float32))
        return tokens_to_archs(tokens.numpy(), self.decision_sizes)

    def reconstruct(self, archs: Sequence[Sequence[int]]) -> List[Architecture]:
        """``D(E(a))`` for each architecture (the identity once trained)."""
        return self.decode(self.encode(archs))

    def gradient_step(self, archs: Sequence[Sequence[int]], step_size: float):
        """One ascent step from each architecture's embedding.

        Returns:
            ``(z', f(z) before, f(z') after)``.
        """
        z = self.encode(archs)
        moved = self._ascent_fn(z, tf.constant(float(step_size), tf.float32))
        return moved, self.predict_embedding(z), self.predict_embedding(moved)

    def evaluate_losses(self, archs, scores) -> Dict[str, float]:
        """``{"loss", "mse", "ce"}`` of :func:`nao_loss` on ``(archs, scores)``, no update."""
        tokens = self.tokens(archs)
        target = tf.constant(np.asarray(scores, np.float32).reshape(-1))
        loss, mse, ce = self._loss_terms(tokens, target)
        return {"loss": float(loss), "mse": float(mse), "ce": float(ce)}

    def fit(  # noqa: D417 - keras.Model.fit is replaced on purpose
        self,
        archs: Sequence[Sequence[int]],
        scores: Sequence[float],
        *,
        epochs: Optional[int] = None,
        batch_size: Optional[int] = None,
    ) -> Dict[str, float]:
        """Trains encoder, predictor and decoder jointly on ``(archs, scores)``.

        Each epoch shuffles the pairs with the controller's own generator and takes Adam
        steps on :func:`nao_loss` over mini-batches.

        Args:
            archs: architectures (each a sequence of ``D`` ints).
            scores: their normalised scores in ``[0, 1]`` (higher is better; see
                :func:`normalize_scores`).
            epochs: passes over the data (default ``config.epochs``).
            batch_size: mini-batch size (default ``config.batch_size``).

        Returns:
            The last epoch's mean ``loss``, ``mse`` and ``ce``.

        Raises:
            ValueError: for mismatched lengths, an empty pool or scores outside ``[0, 1]``.
        """
        tokens = archs_to_tokens(archs, self.decision_sizes)
        y = np.asarray(scores, dtype=np.float32).reshape(-1)
        if tokens.shape[0] == 0:
            raise ValueError("fit needs at least one architecture.")
        if y.shape[0] != tokens.shape[0]:
            raise ValueError(f"{tokens.shape[0]} architectures but {y.shape[0]} scores.")
        if not np.all((y >= 0) & (y <= 1)):
            raise ValueError("scores must be normalised to [0, 1] (see normalize_scores).")
        epochs = check_number("NAOController.fit: epochs", epochs, minimum=1, integer=True,
                              optional=True) or self.nao_config.epochs
        batch = check_number("NAOController.fit: batch_size", batch_size, minimum=1,
                             integer=True, optional=True) or self.nao_config.batch_size
        tokens_t, y_t = tf.constant(tokens), tf.constant(y)
        n = tokens.shape[0]
        last: Dict[str, float] = {}
        for _ in range(epochs):
            order = tf.argsort(self.generator.uniform([n]))
            sums = np.zeros(3)
            steps = 0
            for start in range(0, n, batch):
                idx = order[start : start + batch]
                out = self._train_fn(tf.gather(tokens_t, idx), tf.gather(y_t, idx))
                sums += [float(v) for v in out]
                steps += 1
            last = dict(zip(("loss", "mse", "ce"), (sums / steps).tolist()))
        return last

    def generate(
        self,
        seed_archs: Sequence[Sequence[int]],
        num_new: int,
        *,
        exclude: Iterable[Sequence[int]] = (),
        step_size: Optional[float] = None,
        max_rounds: Optional[int] = None,
    ) -> List[Architecture]:
        """New architectures by gradient ascent from ``seed_archs`` (NAO's inference).

        Round ``r = 1, 2, …`` moves every seed's embedding by ``z + r·η ∇_z f(z)``, decodes
        it and keeps the architectures not in ``exclude``, not a seed and not already kept,
        until ``num_new`` are found or ``max_rounds`` rounds were tried (then fewer return).

        Returns:
            Up to ``num_new`` new architectures, in the order found.
        """
        num_new = check_number("NAOController.generate: num_new", num_new, minimum=0,
                               integer=True)
        step_size = check_number("NAOController.generate: step_size", step_size, minimum=0,
                                 exclusive_minimum=True, optional=True)
        max_rounds = check_number("NAOController.generate: max_rounds", max_rounds, minimum=1,
                                  integer=True, optional=True)
        seeds = [tuple(int(v) for v in a) for a in seed_archs]
        if not seeds or num_new == 0:
            return []
        eta = self.nao_config.step_size if step_size is None else step_size
        rounds = self.nao_config.max_rounds if max_rounds is None else max_rounds
        seen = {tuple(int(v) for v in a) for a in exclude} | set(seeds)
        z = self.encode(seeds)
        new: List[Architecture] = []
        for r in range(1, rounds + 1):
            moved = self._ascent_fn(z, tf.constant(r * eta, tf.float32))
            for arch in self.decode(moved):
                if arch not in seen:
                    seen.add(arch)
                    new.append(arch)
                    if len(new) == num_new:
                        return new
        return new

    def checkpoint_items(self) -> Dict[str, object]:
        """Weights, Adam state and the shuffling generator, for ``tf.train.Checkpoint``."""
        return {
            "nao_weights": VariableBundle(self.variables, name="nao_weights"),
            "nao_optimizer": VariableBundle(self.optimizer_.variables, name="nao_optimizer"),
            "nao_generator": self.generator,
        }

    @property
    def tracing_counts(self) -> Dict[str, int]:
        return {
            "encode": self._encode_fn.experimental_get_tracing_count(),
            "train": self._train_fn.experimental_get_tracing_count(),
            "decode": self._decode_fn.experimental_get_tracing_count(),
        }

    def get_config(self):
        return {
            "decision_sizes": list(self.decision_sizes),
            "config": self.nao_config.to_json(),
            "seed": self.seed,
            "name": self.name,
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["config"] = NAOConfig.from_json(config["config"])
        return cls(**config)
