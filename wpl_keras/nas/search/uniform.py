"""Random search with weight sharing (Li & Talwalkar 2019), with the Weight Plasticity Loss.

No controller: each shared step of the search driver (:mod:`wpl_keras.nas.search.driver`)
trains an architecture drawn uniformly from the space,

    ``a = (a_1 .. a_D)``, ``a_k ~ U{0 .. n_k − 1}`` independently,

with ``n_k`` the space's ``decision_sizes``, so every architecture of the space has probability
``Π_k 1/n_k``. The draws come from :class:`UniformSampler`, a seeded, checkpointed
``tf.random.Generator``; :class:`UniformStrategy` supplies the sampler to the driver and has no
``CONTROLLER`` units. Everything else is the driver's, as for ENAS and NAO: the WPL schedule,
the forgetting metrics (mean / best-5 / max of ``err2 − err1``), checkpoints (the sampler's
state under the key ``sampler``), SIGINT/SIGTERM and kill -9 resumption (a resumed run draws
the same stream as an uninterrupted one) and several workers (every worker seeds the same
generator, so all train the same architectures).

The derive step of a uniform search (:func:`wpl_keras.nas.search.derive.derive_best`) ranks
``K`` further draws of the restored sampler by the supernet's validation error.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Dict, Optional, Sequence, Tuple

import numpy as np
import tensorflow as tf

from wpl_keras.nas.search.driver import (
    SearchResult,
    SearchStrategy,
    restore_checkpoint,
    run_driver,
)
from wpl_keras.nas.search.schedule import LoopConfig
from wpl_keras.utils.validation import check_number

Architecture = Tuple[int, ...]

# The sampler's name in experiment configs and the uniform search's search_config.json.
SAMPLER_NAME = "uniform"


class UniformSampler(tf.Module):
    """Draws architectures uniformly from a space of ``decision_sizes``.

    Each draw takes ``D`` 64-bit integers ``u_k`` from a ``tf.random.Generator`` seeded with
    ``seed`` and returns ``a_k = u_k mod n_k`` (the modulo bias is below ``n_k / 2^64``). The
    generator's state is a variable of this module, so a checkpoint of the sampler continues
    the same stream after a restore.

    >>> sampler = UniformSampler([3, 4, 2], seed=1)
    >>> arch = sampler.sample_architecture()
    >>> len(arch), all(0 <= a < n for a, n in zip(arch, [3, 4, 2]))
    (3, True)

    Args:
        decision_sizes: ``n_k``, the number of choices of each decision (each >= 1).
        seed: the generator's seed (>= 0).
    """

    def __init__(self, decision_sizes: Sequence[int], seed: int):
        super().__init__(name="uniform_sampler")
        sizes = tuple(decision_sizes)
        if not sizes:
            raise ValueError("UniformSampler: decision_sizes is empty; pass the space's "
                             "decision_sizes (one entry per decision).")
        self.decision_sizes = tuple(
            check_number(f"UniformSampler: decision_sizes[{k}]", n, integer=True, minimum=1)
            for k, n in enumerate(sizes))
        self.seed = check_number("UniformSampler: seed", seed, integer=True, minimum=0)
        self.generator = tf.random.Generator.from_seed(self.seed)

    def sample_architecture(self) -> Architecture:
        """One uniform draw: ``(u_1 mod n_1, .., u_D mod n_D)`` as Python ints."""
        draws = self.generator.uniform_full_int([len(self.decision_sizes)], dtype=tf.int64)
        words = draws.numpy().view(np.uint64)
        return tuple(int(u % np.uint64(n)) for u, n in zip(words, self.decision_sizes))


def loop_config(config: LoopConfig) -> LoopConfig:
    """The :class:`LoopConfig` fields of ``config`` (any subclass, e.g. ENAS's
    ``SearchConfig``) as a plain :class:`LoopConfig`: what a uniform search uses."""
    if not isinstance(config, LoopConfig):
        raise TypeError(f"config must be a LoopConfig, got {type(config).__name__}.")
    names = [f.name for f in dataclasses.fields(LoopConfig)]
    return LoopConfig(**{n: getattr(config, n) for n in names})


class UniformStrategy(SearchStrategy):
    """Random search with weight sharing: every ``SHARED`` unit trains the sampler's next draw;
    there are no ``CONTROLLER`` units."""

    def __init__(self, sampler: UniformSampler, config: LoopConfig):
        self.sampler, self.config = sampler, loop_config(config)

    def checkpoint_items(self) -> Dict[str, Any]:
        return {"sampler": self.sampler}

    def config_json(self) -> Dict[str, Any]:
        """``{"sampler": "uniform", "seed": the sampler's seed, **the loop's fields}``."""
        return {"sampler": SAMPLER_NAME, "seed": self.sampler.seed, **self.config.to_json()}

    def next_architecture(self) -> Architecture:
        return self.sampler.sample_architecture()


def restore_latest(task, sampler: UniformSampler, out_dir: str) -> Dict[str, Any]:
    """Restores the latest uniform-search checkpoint under ``out_dir/ckpt`` into ``task`` and
    ``sampler`` (see :func:`~wpl_keras.nas.search.driver.restore_checkpoint`).

    Returns:
        ``{"checkpoint": path, "epoch": completed epochs, "history": [...]}``.

    Raises:
        FileNotFoundError: if there is no checkpoint.
    """
    return restore_checkpoint(task, {"sampler": sampler}, out_dir)


def run_search(
    task,
    sampler: UniformSampler,
    config: LoopConfig,
    out_dir: str,
    *,
    resume: bool = False,
    handle_signals: bool = True,
    on_epoch_end: Optional[Callable[[Dict[str, Any]], None]] = None,
) -> SearchResult:
    """Runs (or resumes) a uniform weight-sharing search on ``task``; see the module docstring.

    Args:
        task: a :class:`~wpl_keras.nas.base.SharedWeightsTask` (with a ``wpl_state`` when
            ``config.wpl``).
        sampler: the :class:`UniformSampler` of the task's space.
        config: the loop settings; a subclass (ENAS's ``SearchConfig``) is accepted and only
            its :class:`LoopConfig` fields are used.
        out_dir: logs, TensorBoard scalars and checkpoints (see the driver).
        resume: continue from the latest checkpoint in ``out_dir``; without it, an existing
            checkpoint there is an error.
        handle_signals: defer SIGINT/SIGTERM to a clean save point (main thread only).
        on_epoch_end: called with each finished epoch's record.

    Raises:
        FileExistsError: ``out_dir`` holds a checkpoint and ``resume`` is False.
        SearchInterrupted: after saving, when SIGINT/SIGTERM arrived.
    """
    if not isinstance(sampler, UniformSampler):
        raise TypeError(f"sampler must be a UniformSampler, got {type(sampler).__name__}.")
    if tuple(sampler.decision_sizes) != tuple(task.space.decision_sizes):
        raise ValueError(f"the sampler draws from decision sizes {sampler.decision_sizes}, the "
                         f"task's space has {tuple(task.space.decision_sizes)}; build the "
                         "sampler from task.space.decision_sizes.")
    strategy = UniformStrategy(sampler, config)
    return run_driver(task, strategy, strategy.config, out_dir, resume=resume,
                      handle_signals=handle_signals, on_epoch_end=on_epoch_end)
