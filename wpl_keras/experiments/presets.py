"""Preset configs of the search, the NAO search and the RNN task (the one home of presets).

The experiment presets (:func:`wpl_keras.experiments.enas.get_preset`,
:func:`wpl_keras.experiments.nao.nao_preset`) are built from these; every function takes
``overrides``, fields of the config it returns (for the RNN task, ``model=`` and
``optimizer=`` take a nested config or a JSON object of one, which replaces all of it). The
sources of the ``paper`` values are in ``wpl_keras/experiments/paper_presets.json``.
"""

from __future__ import annotations

import dataclasses

from wpl_keras.nas.search.enas import SearchConfig
from wpl_keras.nas.search.nao import NAOSearchConfig
from wpl_keras.nas.spaces.rnn.config import RNNModelConfig, RNNOptimizerConfig, RNNSupernetConfig
from wpl_keras.wpl.config import WPLConfig


def paper_search(**overrides) -> SearchConfig:
    """The WPL release's RNN run command (150 epochs, 60 architectures × 7 batches, WPL
    from epoch 5, α 60 decaying by 1 per epoch from epoch 15, ``α(e) = max(60 − (e − 14),
    0)``, flush every 2 epochs, 2000 controller steps per epoch), best-5 as the paper's
    §4.2. Sized for a GPU."""
    base = SearchConfig(
        epochs=150, shared_steps_per_epoch=60, batches_per_arch=7, best_k=5,
        controller_steps=2000, wpl=True, wpl_start_epoch=5, strength=60.0,
        strength_decay="linear", strength_decay_start=15, strength_decay_rate=1.0,
        strength_floor=0.0, flush_every=2,
    )
    return dataclasses.replace(base, **overrides)


def cpu_small_search(**overrides) -> SearchConfig:
    """Minutes on 2 CPU cores: 10 epochs of 10 architectures × 5 batches and 10 controller
    steps; WPL from epoch 3, α 60 constant, flush every 2 epochs."""
    base = SearchConfig(epochs=10, shared_steps_per_epoch=10, batches_per_arch=5,
                        controller_steps=10, wpl_start_epoch=3, strength_decay=None,
                        flush_every=2)
    return dataclasses.replace(base, **overrides)


def cpu_small_nao_search(**overrides) -> NAOSearchConfig:
    """Minutes on 2 CPU cores: 6 epochs of 10 pool architectures × 3 batches, a pool of
    16 random seeds growing by 6 every 2 epochs; WPL from epoch 2, α 60, flush every 2."""
    base = NAOSearchConfig(
        epochs=6, shared_steps_per_epoch=10, batches_per_arch=3, seed_archs=16,
        controller_every=2, new_archs=6, top_k_seeds=6, max_pool=40, wpl_start_epoch=2,
    )
    return dataclasses.replace(base, **overrides)


def paper_rnn_model(**overrides) -> RNNModelConfig:
    """The release's search supernet (``models/shared_rnn.py``, mode ``train``): init
    ±0.025, weight-drop on ``W_h`` only, BatchNorm on the cell output (``γ``, ``β``
    uniform like every weight), the last node carried to the next step, no path
    dropping; the release's sizes and rates (12 nodes, embedding = hidden = 1000,
    dropouts 0.5 / 0.4 / 0.1 / 0.65, hidden norm 25)."""
    base = dict(num_nodes=12, vocab_size=10000, embedding_size=1000, hidden_size=1000,
                weight_drop=0.5, output_dropout=0.4, embedding_dropout=0.1,
                input_dropout=0.65, hidden_max_norm=25.0,
                init_range=0.025, weight_drop_scope="recurrent", output_batch_norm=True,
                batch_norm_init="uniform", recurrent_state="last_node", path_keep=1.0)
    return RNNModelConfig(**{**base, **overrides})


def paper_rnn_task(**overrides) -> RNNSupernetConfig:
    """The WPL release's RNN search: embedding = hidden = 1000, 12 nodes, batch 64,
    BPTT 35, vocabulary 10k, the release's search supernet (:func:`paper_rnn_model`:
    init ±0.025, weight-drop on ``W_h`` only, output BatchNorm, the last node as the
    carried state), its SGD (lr 20, ×0.96 per epoch after 15, clip 0.25, L2 1e-7), reward
    80 / ppl, WPL on the node matrices (``wpl_scope="cell"``) at the release's effective
    strength: each node matrix's Fisher normalised to norm 10
    (``fisher_normalization="tensor_norm"``, ``clip_norm=10``, so ``α = 60`` gives
    ``‖αF‖ = 600``), estimated from a validation batch (``fisher_source="valid"``), with
    the proximal step."""
    base = RNNSupernetConfig(
        model=paper_rnn_model(),
        optimizer=RNNOptimizerConfig(learning_rate=20.0, lr_decay=0.96,
                                     lr_decay_start_epoch=15, grad_clip=0.25, l2=1e-7),
        batch_size=64, bptt=35, eval_batch_size=64, eval_bptt=35,
        wpl=WPLConfig(fisher_momentum=0.9, clip_norm=10.0, mode="proximal",
                      fisher_normalization="tensor_norm", fisher_source="valid"),
        wpl_scope="cell", reward_constant=80.0,
    )
    return dataclasses.replace(base, **overrides)


def cpu_small_rnn_task(**overrides) -> RNNSupernetConfig:
    """Hidden 256 (otherwise the reference sizes and rates, with the model's defaults:
    init ±0.04, weight-drop on every matrix, no output BatchNorm, the loose-end mean
    carried, no path dropping): the small size of ``benchmarks/supernet_step.py``, which
    reports its step time."""
    base = RNNSupernetConfig(model=RNNModelConfig(embedding_size=256, hidden_size=256),
                             eval_batch_size=32)
    return dataclasses.replace(base, **overrides)
