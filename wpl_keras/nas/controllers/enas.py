"""The ENAS controller: an LSTM that emits an architecture one decision at a time.

At step ``k`` the LSTM reads an input ``x_k`` (a learned start vector for ``k = 0``, else the
embedding of decision ``k − 1``), and a softmax head of size ``decision_sizes[k]`` turns its
output ``h_k`` into logits, post-processed in the ENAS order:

    ``z_k = W_k h_k + b_k``
    ``z_k ← z_k / temperature``                 (when ``temperature`` is set)
    ``z_k ← tanh_constant · tanh(z_k)``         (when ``tanh_constant`` is set)
    ``π(a_k | a_<k) = softmax(z_k)[a_k]``

The log-probability of an architecture is ``log π(a) = Σ_k log softmax(z_k)[a_k]`` and its
entropy term is the sum of the per-step entropies ``H = Σ_k −Σ_j p_kj log p_kj`` (exact
per-step entropies of the conditional distributions along the sampled path).

The architecture travels as an int32 tensor ``[D]``: :meth:`Controller.sample` and
:meth:`Controller.log_prob_and_entropy` are each traced once and serve every architecture.
Sampling draws from a ``tf.random.Generator`` owned by the controller, so a
``tf.train.Checkpoint`` of the controller restores its weights and its random stream.
"""

from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

import keras
import numpy as np
import tensorflow as tf

from wpl_keras.nas.base import check_size, check_sizes
from wpl_keras.utils.validation import check_number


class Controller(keras.Model):
    """ENAS-style LSTM controller over a space of ``len(decision_sizes)`` decisions.

    Example:

    >>> controller = Controller([3, 4, 2], units=8, seed=1)
    >>> arch = controller.sample_architecture()
    >>> len(arch)
    3

    Args:
        decision_sizes: number of choices of each decision, in emission order.
        units: LSTM units (ENAS: 100).
        temperature: logits are divided by it when set (ENAS RNN: 5, CNN: 8).
        tanh_constant: logits become ``c · tanh(logits)`` when set (ENAS: 2.5).
        seed: seeds the weight initialisers and the sampling generator.
        name: model name.

    Raises:
        ValueError: for an empty space, a decision with fewer than 1 choice, or
            non-positive ``units``/``temperature``/``tanh_constant``.
    """

    def __init__(
        self,
        decision_sizes: Sequence[int],
        *,
        units: int = 100,
        temperature: Optional[float] = None,
        tanh_constant: Optional[float] = None,
        seed: int = 0,
        name: str = "controller",
        **kwargs,
    ):
        super().__init__(name=name, **kwargs)
        sizes = check_sizes(decision_sizes, "Controller decision_sizes")
        units = check_size(units, "Controller units", 1)
        positive = dict(minimum=0, exclusive_minimum=True, optional=True)
        self.decision_sizes = sizes
        self.units = int(units)
        self.temperature = check_number("Controller temperature", temperature, **positive)
        self.tanh_constant = check_number("Controller tanh_constant", tanh_constant, **positive)
        self.seed = check_number("Controller seed", seed, integer=True, minimum=0)

        init = lambda k: keras.initializers.RandomUniform(-0.1, 0.1, seed=self.seed * 1009 + k)
        self.cell = keras.layers.LSTMCell(
            self.units,
            kernel_initializer=init(0),
            recurrent_initializer=init(1),
            name="lstm_cell",
        )
        self.cell.build((1, self.units))
        # The cell's dropout seed state (a Keras SeedGenerator, which tf.train.Checkpoint does
        # not traverse) as an attribute, so that a checkpoint holds every variable.
        self.cell_seed_state = self.cell.seed_generator.state
        self.start = self.add_weight(
            shape=(1, self.units), initializer=init(2), name="start_input", trainable=True
        )
        heads, embeddings = [], []
        for k, size in enumerate(sizes):
            head = keras.layers.Dense(size, kernel_initializer=init(10 + 2 * k), name=f"head_{k}")
            head.build((1, self.units))
            # One attribute per layer: tf.train.Checkpoint tracks attributes, not Keras lists.
            setattr(self, f"head_{k}", head)
            heads.append(head)
            # Decision k is embedded as the input of step k + 1; the last one is never read,
            # so it gets no table (every weight then receives a gradient).
            if k < len(sizes) - 1:
                emb = keras.layers.Embedding(
                    size, self.units, embeddings_initializer=init(11 + 2 * k), name=f"embed_{k}"
                )
                emb.build((1,))
                setattr(self, f"embed_{k}", emb)
                embeddings.append(emb)
        object.__setattr__(self, "heads", tuple(heads))
        object.__setattr__(self, "embeddings", tuple(embeddings))
        self.generator = tf.random.Generator.from_seed(self.seed)
        self.built = True

        spec = tf.TensorSpec([len(sizes)], tf.int32)
        mask_spec = tf.TensorSpec([len(sizes)], tf.float32)
        self._sample_fn = tf.function(self._sample, input_signature=[])
        self._log_prob_fn = tf.function(self._log_prob_and_entropy, input_signature=[spec])
        self._masked_log_prob_fn = tf.function(
            self._masked_log_prob_and_entropy, input_signature=[spec, mask_spec])
        self._probs_fn = tf.function(self._probabilities, input_signature=[spec])

    # ------------------------------------------------------------------ core
    @property
    def num_decisions(self) -> int:
        return len(self.decision_sizes)

    def _logits(self, h: tf.Tensor, k: int) -> tf.Tensor:
        """Head ``k`` with the ENAS post-processing: ``c·tanh((W h + b) / T)``."""
        z = self.heads[k](h)
        if self.temperature is not None:
            z = z / self.temperature
        if self.tanh_constant is not None:
            z = self.tanh_constant * tf.tanh(z)
        return z

    def _step_inputs(self, k: int, previous: Optional[tf.Tensor]) -> tf.Tensor:
        if k == 0:
            return tf.convert_to_tensor(self.start)
        return self.embeddings[k - 1](tf.reshape(previous, [1]))

    def _initial_state(self):
        zeros = tf.zeros([1, self.units])
        return [zeros, zeros]

    def _run(self, arch: Optional[tf.Tensor]):
        """Runs the LSTM; samples decisions when ``arch`` is None, else teacher-forces ``arch``.

        Returns (decisions [D] int32, list of per-step logits [1, size_k]).
        """
        state = self._initial_state()
        previous = None
        decisions, all_logits = [], []
        for k in range(self.num_decisions):
            h, state = self.cell(self._step_inputs(k, previous), state)
            logits = self._logits(h, k)
            if arch is None:
                seed = self.generator.make_seeds(1)[:, 0]
                choice = tf.random.stateless_categorical(logits, 1, seed, dtype=tf.int32)[0, 0]
            else:
                choice = arch[k]
            decisions.append(choice)
            all_logits.append(logits)
            previous = choice
        return tf.stack(decisions), all_logits

    @staticmethod
    def _score(decisions: tf.Tensor, all_logits: List[tf.Tensor]):
        log_prob = tf.constant(0.0)
        entropy = tf.constant(0.0)
        for k, logits in enumerate(all_logits):
            log_p = tf.nn.log_softmax(logits[0])
            log_prob += log_p[decisions[k]]
            entropy += -tf.reduce_sum(tf.exp(log_p) * log_p)
        return log_prob, entropy

    @staticmethod
    def _decision_scores(decisions: tf.Tensor, all_logits: List[tf.Tensor]):
        """Per decision ``k``: ``log π(a_k | a_<k)`` and ``H_k = −Σ_j p_kj log p_kj``
        (each ``[D]``)."""
        log_probs, entropies = [], []
        for k, logits in enumerate(all_logits):
            log_p = tf.nn.log_softmax(logits[0])
            log_probs.append(log_p[decisions[k]])
            entropies.append(-tf.reduce_sum(tf.exp(log_p) * log_p))
        return tf.stack(log_probs), tf.stack(entropies)

    def _sample(self):
        decisions, all_logits = self._run(None)
        log_prob, entropy = self._score(decisions, all_logits)
        return decisions, log_prob, entropy

    def _log_prob_and_entropy(self, arch: tf.Tensor):
        arch = tf.cast(tf.reshape(arch, [self.num_decisions]), tf.int32)
        decisions, all_logits = self._run(arch)
        return self._score(decisions, all_logits)

    def _decision_log_probs_and_entropies(self, arch: tf.Tensor):
        """``([log π(a_k | a_<k)]_k, [H_k]_k)`` along ``arch``, each ``[D]`` (differentiable);
        their sums are :meth:`log_prob_and_entropy`."""
        arch = tf.cast(tf.reshape(arch, [self.num_decisions]), tf.int32)
        decisions, all_logits = self._run(arch)
        return self._decision_scores(decisions, all_logits)

    def _masked_log_prob_and_entropy(self, arch: tf.Tensor, mask: tf.Tensor):
        """``(Σ_k m_k log π(a_k | a_<k), Σ_k m_k H_k)`` along ``arch``."""
        log_probs, entropies = self._decision_log_probs_and_entropies(arch)
        return tf.reduce_sum(mask * log_probs), tf.reduce_sum(mask * entropies)

    def _probabilities(self, arch: tf.Tensor):
        arch = tf.cast(tf.reshape(arch, [self.num_decisions]), tf.int32)
        _, all_logits = self._run(arch)
        return [tf.nn.softmax(z[0]) for z in all_logits]

    # ---------------------------------------------------------------- public
    def call(self, arch, training=False):
        """``(log π(arch), H)`` for an int32 architecture ``[D]`` (differentiable)."""
        return self._log_prob_and_entropy(arch)

    def sample(self) -> Tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
        """Samples an architecture: ``(arch int32 [D], log π(arch), H)``; one trace."""
        return self._sample_fn()

    def log_prob_and_entropy(self, arch, mask=None) -> Tuple[tf.Tensor, tf.Tensor]:
        """``log π(arch) = Σ_k log softmax(z_k)[a_k]`` and ``H = Σ_k entropy(softmax(z_k))``.

        With a ``mask`` ``m ∈ {0, 1}^D`` (a decision that is inactive, e.g. a conditional
        hyperparameter whose parent took another value, has ``m_k = 0``): the masked sums
        ``Σ_k m_k log π(a_k | a_<k)`` and ``Σ_k m_k H_k``. The LSTM still reads every ``a_k``
        along the path (teacher forcing), so an inactive draw conditions the later steps as
        it did when sampled; only its own terms leave the sums. The mask is a tensor input of
        its own traced function: one trace serves every architecture and mask, and the
        unmasked path is unchanged.

        Differentiable with respect to the controller weights (REINFORCE uses it inside a
        ``GradientTape``).

        Raises:
            ValueError: if ``arch`` has the wrong length or a decision out of range, or
                ``mask`` is not ``D`` values in [0, 1].
        """
        arch = self._check_arch(arch)
        if mask is None:
            return self._log_prob_fn(arch)
        return self._masked_log_prob_fn(arch, self.check_mask(mask))

    def check_mask(self, mask) -> tf.Tensor:
        """``mask`` as a float32 tensor ``[D]`` after checking its length and range."""
        if isinstance(mask, tf.Tensor) and not tf.executing_eagerly():
            return tf.cast(mask, tf.float32)
        values = np.asarray(mask, dtype=np.float32).reshape(-1)
        if values.shape[0] != self.num_decisions:
            raise ValueError(
                f"mask has {values.shape[0]} values, controller expects {self.num_decisions}."
            )
        if not np.all((values >= 0.0) & (values <= 1.0)):
            raise ValueError(f"mask values must be in [0, 1], got {values.tolist()}.")
        return tf.constant(values)

    def grown(self, decision_sizes: Sequence[int]) -> "Controller":
        """A controller over ``decision_sizes`` (this one's sizes followed by new decisions)
        that keeps every weight of this one.

        The LSTM cell, the start input, the heads ``0 … D−1``, the embeddings ``0 … D−2`` and
        the sampler's state are copied exactly; the new heads, and the embedding of decision
        ``D − 1`` (which the old controller never read), are initialised as a fresh
        controller with the same seed would initialise them. Decision ``k < D`` then has the
        same distribution as before, and the new decisions come after it in emission order.

        Raises:
            ValueError: if ``decision_sizes`` does not start with this controller's sizes.
        """
        sizes = check_sizes(decision_sizes, "Controller.grown decision_sizes")
        old = self.decision_sizes
        if len(sizes) < len(old) or tuple(sizes[: len(old)]) != tuple(old):
            raise ValueError(
                f"Controller.grown: decision_sizes {list(sizes)} must start with the current "
                f"sizes {list(old)} (new decisions are appended)."
            )
        config = {**self.get_config(), "decision_sizes": list(sizes)}
        grown = type(self).from_config(config)
        pairs = [(grown.cell, self.cell)]
        pairs += list(zip(grown.heads, self.heads)) + list(zip(grown.embeddings, self.embeddings))
        for new_layer, old_layer in pairs:
            for new_var, old_var in zip(new_layer.weights, old_layer.weights):
                new_var.assign(old_var)
        grown.start.assign(self.start)
        grown.generator.state.assign(self.generator.state)
        grown.cell_seed_state.assign(self.cell_seed_state)
        return grown

    def sample_architecture(self) -> Tuple[int, ...]:
        """A sampled architecture as a tuple of Python ints."""
        arch, _, _ = self.sample()
        return tuple(int(a) for a in arch.numpy())

    def decision_probabilities(self, arch) -> List[np.ndarray]:
        """Per-decision probability vectors ``softmax(z_k)`` along the path ``arch``."""
        arch = self._check_arch(arch)
        return [p.numpy() for p in self._probs_fn(arch)]

    def _check_arch(self, arch) -> tf.Tensor:
        if isinstance(arch, tf.Tensor) and not tf.executing_eagerly():
            return tf.cast(arch, tf.int32)
        values = np.asarray(arch).reshape(-1)
        if values.shape[0] != self.num_decisions:
            raise ValueError(
                f"architecture has {values.shape[0]} decisions, controller expects "
                f"{self.num_decisions}."
            )
        for k, (v, size) in enumerate(zip(values, self.decision_sizes)):
            if not 0 <= int(v) < size:
                raise ValueError(f"decision {k} is {int(v)}, must be in [0, {size}).")
        return tf.constant(values.astype(np.int32))

    @property
    def tracing_counts(self) -> dict:
        """Number of traces of each traced function (tests check they stay at 1)."""
        return {
            "sample": self._sample_fn.experimental_get_tracing_count(),
            "log_prob_and_entropy": self._log_prob_fn.experimental_get_tracing_count(),
        }

    @property
    def masked_tracing_count(self) -> int:
        """Number of traces of the masked log-probability (tests check it stays at 1)."""
        return self._masked_log_prob_fn.experimental_get_tracing_count()

    def get_config(self):
        return {
            "decision_sizes": list(self.decision_sizes),
            "units": self.units,
            "temperature": self.temperature,
            "tanh_constant": self.tanh_constant,
            "seed": self.seed,
            "name": self.name,
        }

    @classmethod
    def from_config(cls, config):
        return cls(**config)
