"""A tiny search space and SharedWeightsTask for the tuner tests (not part of the package).

Space: two layers, each picks one of ``num_ops`` candidate weight matrices (shared across
architectures), plus a target-matching synthetic objective. Task: a supernet MLP
``x → relu(x W0[a0]) → relu(· W1[a1]) → · H`` on synthetic blobs, trained with plain SGD and
the WPL penalty on the rows (candidates) the architecture uses.
"""

from __future__ import annotations

from typing import Dict, Sequence, Tuple

import keras
import numpy as np
import tensorflow as tf

from wpl_keras.nas.base import InvalidArchitectureError, SearchSpace, SharedWeightsTask
from wpl_keras.wpl.fisher import WPLState


class TinySpace(SearchSpace):
    """``len(sizes)`` decisions named ``layer{k}_op``."""

    name = "tiny"

    def __init__(self, sizes: Sequence[int] = (3, 3)):
        self._sizes = tuple(int(s) for s in sizes)

    @property
    def decision_sizes(self) -> Tuple[int, ...]:
        return self._sizes

    @property
    def decision_names(self) -> Tuple[str, ...]:
        return tuple(f"layer{k}_op" for k in range(len(self._sizes)))

    def to_string(self, arch) -> str:
        return " ".join(f"l{k}=op{a}" for k, a in enumerate(self.validate(arch)))

    def from_string(self, text: str):
        try:
            return self.validate([int(tok.split("=op")[1]) for tok in text.split()])
        except (IndexError, ValueError) as error:
            raise InvalidArchitectureError(f"cannot parse {text!r}") from error


def match_score(arch, target) -> float:
    """Fraction of decisions equal to ``target`` (the synthetic objective)."""
    return float(np.mean([a == t for a, t in zip(arch, target)]))


class TinyTask(SharedWeightsTask):
    """Supernet MLP with ``num_ops`` candidate matrices per layer on synthetic blobs."""

    def __init__(self, num_ops: int = 3, hidden: int = 8, seed: int = 0, batch: int = 32):
        self.space = TinySpace((num_ops, num_ops))
        rng = np.random.default_rng(seed)
        centers = rng.normal(size=(3, 4)) * 2.0
        def blobs(n):
            y = rng.integers(0, 3, size=n)
            return (centers[y] + rng.normal(size=(n, 4))).astype("float32"), y.astype("int32")
        self.train_x, self.train_y = blobs(512)
        self.val_x, self.val_y = blobs(128)
        self.batch = batch
        init = lambda *shape: tf.Variable(rng.normal(size=shape).astype("float32") * 0.5)
        self.module = tf.Module()
        self.module.w0 = init(num_ops, 4, hidden)
        self.module.w1 = init(num_ops, hidden, hidden)
        self.module.head = init(hidden, 3)
        self.module.position = tf.Variable(0, dtype=tf.int64)
        self.variables = [self.module.w0, self.module.w1, self.module.head]
        self.wpl_state = WPLState(self.variables, strength=10.0)
        self.supernet = self.module
        self.optimizer = None  # plain SGD, lr below
        self.lr = 0.1
        self._train_step = tf.function(self._step)

    def _logits(self, arch, x):
        h = tf.nn.relu(x @ tf.gather(self.module.w0, arch[0]))
        h = tf.nn.relu(h @ tf.gather(self.module.w1, arch[1]))
        return h @ self.module.head

    def _step(self, arch, x, y, wpl_active):
        rows = {0: tf.reshape(arch[0], [1]), 1: tf.reshape(arch[1], [1])}
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(
                tf.nn.sparse_softmax_cross_entropy_with_logits(y, self._logits(arch, x))
            )
            penalty = (
                self.wpl_state.penalty(index=0, rows=rows[0])
                + self.wpl_state.penalty(index=1, rows=rows[1])
                + self.wpl_state.penalty(index=2, rows=tf.range(tf.shape(self.module.head)[0]))
            )
            total = loss + tf.where(wpl_active, penalty, 0.0)
        grads = tape.gradient(total, self.variables)
        for v, g in zip(self.variables, grads):
            if isinstance(g, tf.IndexedSlices):
                v.scatter_sub(tf.IndexedSlices(self.lr * g.values, g.indices))
            else:
                v.assign_sub(self.lr * g)
        return loss, penalty, grads

    def train_architecture(self, arch, num_batches: int, *, wpl_active: bool) -> Dict[str, float]:
        arch_t = tf.constant(self.space.validate(arch), tf.int32)
        losses, penalties = [], []
        for _ in range(num_batches):
            start = int(self.module.position.numpy()) % (len(self.train_x) - self.batch)
            self.module.position.assign_add(self.batch)
            x = self.train_x[start : start + self.batch]
            y = self.train_y[start : start + self.batch]
            loss, penalty, grads = self._train_step(arch_t, x, y, tf.constant(wpl_active))
            losses.append(float(loss))
            penalties.append(float(penalty))
        if wpl_active:
            self.wpl_state.update_fisher(grads)
            self.wpl_state.snapshot_anchors(
                rows={0: [arch[0]], 1: [arch[1]], 2: np.arange(self.module.head.shape[0])}
            )
        return {"loss": float(np.mean(losses)), "penalty": float(np.mean(penalties))}

    def validation_error(self, arch) -> float:
        logits = self._logits(tf.constant(self.space.validate(arch)), self.val_x)
        return float(100.0 * np.mean(np.argmax(logits.numpy(), -1) != self.val_y))

    def reward(self, arch) -> float:
        return 1.0 - self.validation_error(arch) / 100.0

    def checkpoint_items(self):
        return {"supernet": self.module, "wpl_state": self.wpl_state}

    def build_standalone(self, arch) -> keras.Model:
        """A plain Keras MLP with ``arch``'s shared weights copied in."""
        arch = self.space.validate(arch)
        hidden = int(self.module.head.shape[0])
        model = keras.Sequential(
            [
                keras.Input((4,)),
                keras.layers.Dense(hidden, activation="relu", use_bias=False),
                keras.layers.Dense(hidden, activation="relu", use_bias=False),
                keras.layers.Dense(3, use_bias=False),
            ]
        )
        model.set_weights(
            [
                self.module.w0[arch[0]].numpy(),
                self.module.w1[arch[1]].numpy(),
                self.module.head.numpy(),
            ]
        )
        return model
