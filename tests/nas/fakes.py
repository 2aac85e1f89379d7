"""Small fakes shared by the search-loop tests (ENAS and NAO)."""

import numpy as np
import tensorflow as tf

from wpl_keras.nas.base import SearchSpace, SharedWeightsTask
from wpl_keras.wpl.fisher import WPLState


class FakeSpace(SearchSpace):
    """Three decisions of three choices each; ``"a-b-c"`` strings."""

    def __init__(self, name: str = "fake"):
        self.name = name

    @property
    def decision_sizes(self):
        return (3, 3, 3)

    @property
    def decision_names(self):
        return ("a", "b", "c")

    def to_string(self, arch):
        return "-".join(str(a) for a in self.validate(arch))

    def from_string(self, text):
        return self.validate([int(t) for t in text.split("-")])


class RowTargetTask(SharedWeightsTask):
    """Rows ``W[3k + a_k]`` of one shared ``[9, dim]`` weight pulled towards an
    architecture-specific target: architectures that share a row fight over it (forgetting);
    the WPL penalty ``(α/2) Σ F (θ − θ*)²`` on the used rows resists that.

    Subclasses choose the target's seed (:meth:`target_seed`) and may count batches
    (:meth:`on_batch`).
    """

    def __init__(self, space_name, seed=0, dim=4, lr=0.3):
        self.space = FakeSpace(space_name)
        self.lr = lr
        self.dim = dim
        self.w = tf.Variable(tf.zeros([9, dim]), name="w")
        self.wpl_state = WPLState([self.w], strength=0.0, fisher_momentum=0.9,
                                  clip_norm=10.0)
        self.gen = tf.random.Generator.from_seed(seed)

    def target_seed(self, arch) -> int:
        raise NotImplementedError

    def on_batch(self) -> None:
        pass

    def _rows(self, arch):
        return tf.constant([3 * k + a for k, a in enumerate(arch)], tf.int32)

    def _target(self, arch):
        rng = np.random.default_rng(self.target_seed(arch))
        return tf.constant(rng.normal(size=(3, self.dim)), tf.float32)

    def train_rows(self, arch, num_batches, wpl_active):
        """SGD on the used rows (plus the WPL penalty when active); then, with WPL, the Fisher
        update from the last gradient and the anchors. Returns the per-batch losses."""
        rows, target = self._rows(arch), self._target(arch)
        losses = []
        for _ in range(num_batches):
            noise = 0.05 * self.gen.normal([3, self.dim])
            with tf.GradientTape() as tape:
                loss = tf.reduce_mean(tf.square(tf.gather(self.w, rows) - target - noise))
                total = loss + (self.wpl_state.penalty(index=0, rows=rows) if wpl_active else 0.0)
            dense = tf.convert_to_tensor(tape.gradient(total, self.w))
            self.w.assign_sub(self.lr * dense)
            self.on_batch()
            losses.append(float(loss))
        if wpl_active:
            self.wpl_state.update_fisher([tf.IndexedSlices(tf.gather(dense, rows), rows)])
            self.wpl_state.snapshot_anchors(rows={0: rows})
        return losses

    def validation_error(self, arch):
        used = tf.gather(self.w, self._rows(arch))
        return float(100.0 * tf.reduce_mean(tf.square(used - self._target(arch))))

    def reward(self, arch):
        return 1.0 / (1.0 + self.validation_error(arch))


def interrupt_at(task, call: int, action) -> None:
    """Wraps ``task.train_architecture`` so that its ``call``-th call (1-based) first runs
    ``action()`` (e.g. sends SIGTERM, or raises to stand for kill -9)."""
    calls = {"n": 0}
    original = task.train_architecture

    def train(*a, **k):
        calls["n"] += 1
        if calls["n"] == call:
            action()
        return original(*a, **k)

    task.train_architecture = train
