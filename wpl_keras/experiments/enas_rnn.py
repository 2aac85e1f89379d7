"""ENAS recurrent-cell search on PTB: presets, data, task, train-from-scratch, export, and
the registry entry.

:data:`RNN_SPACE` is the :class:`~wpl_keras.experiments.enas.SpaceSpec` that
:mod:`wpl_keras.experiments.enas` imports lazily for ``space="rnn"``: PTB from
:func:`~wpl_keras.data.ptb.load_ptb`, the supernet task
:class:`~wpl_keras.nas.spaces.rnn.task.RNNSearchTask`, a standalone language model trained from
scratch (:func:`~wpl_keras.nas.spaces.rnn.model.train_from_scratch`) and its SavedModel with the
corpus' vocabulary (:func:`~wpl_keras.nas.spaces.rnn.model.export_language_model`), which train-best
keeps next to the weights as ``train_best_vocab.txt``.

Presets: ``paper`` (the reference defaults of the public WPL release, sized for a GPU),
``cpu-small`` (minutes on 2 CPU cores) and ``tiny`` (seconds, for tests).
"""

from __future__ import annotations

import dataclasses
import os
from typing import Optional

from wpl_keras.experiments.enas import ControllerConfig, ENASExperimentConfig, SpaceSpec
from wpl_keras.nas.search.enas import SearchConfig
from wpl_keras.experiments.presets import cpu_small_rnn_task, cpu_small_search, paper_rnn_task, paper_search


def _rnn_load_data(data_dir: Optional[str], config: ENASExperimentConfig, *,
                   verify: bool = True):
    """PTB from ``data_dir`` (``verify``: check the files' standard md5)."""
    from wpl_keras.data.ptb import PTB_VOCAB_SIZE, load_ptb

    return load_ptb(data_dir, vocab_size=PTB_VOCAB_SIZE if config.data_check else None,
                    verify=verify)


def _rnn_adapt_config(corpus, config: ENASExperimentConfig) -> ENASExperimentConfig:
    if config.data_check or corpus.vocab_size == config.task.model.vocab_size:
        return config
    model = dataclasses.replace(config.task.model, vocab_size=corpus.vocab_size)
    return config.replace(task={"model": model})


def _rnn_build_task(corpus, config: ENASExperimentConfig):
    """The supernet task under the strategy ``config.task.strategy`` names
    (:func:`~wpl_keras.nas.search.distribute.make_strategy`; ``multi_worker`` needs ``TF_CONFIG``)."""
    from wpl_keras.nas.search.distribute import make_strategy
    from wpl_keras.nas.spaces.rnn.task import RNNSearchTask

    return RNNSearchTask(corpus, config.task, seed=config.seed,
                         strategy=make_strategy(config.task.strategy))


def _rnn_train_best(corpus, arch, config: ENASExperimentConfig, out_dir: str, *, checkpoint):
    from wpl_keras.nas.spaces.rnn.model import train_from_scratch

    result = dict(train_from_scratch(
        corpus, arch, config.task, config.train_epochs, seed=config.seed,
        max_batches_per_epoch=config.train_max_batches,
        max_eval_batches=config.train_max_batches, checkpoint=checkpoint,
    ))
    model = result.pop("model")
    return model, result


def _rnn_build_model(arch, config: ENASExperimentConfig):
    """The untrained language model of ``arch`` that :func:`_rnn_train_best` trains."""
    from wpl_keras.nas.spaces.rnn.model import build_language_model

    return build_language_model(_rnn_build_space(config), arch, config.task, seed=config.seed)


VOCAB_FILE = "train_best_vocab.txt"


def _rnn_model_files(corpus, out_dir: str):
    """Writes the corpus' vocabulary (line ``i``: the word of id ``i``) for the export's
    ``serve_words`` signature."""
    with open(os.path.join(out_dir, VOCAB_FILE), "w", encoding="utf-8") as f:
        f.write("".join(f"{word}\n" for word in corpus.vocab))
    return {"vocab": VOCAB_FILE}


def _rnn_export(model, arch, space, export_dir: str, files) -> str:
    """The SavedModel of the language model with the vocabulary train-best kept
    (``files["vocab"]``) as an asset and a signature that takes words (see
    :func:`~wpl_keras.nas.spaces.rnn.model.export_language_model`)."""
    from wpl_keras.nas.spaces.rnn.model import export_language_model

    with open(files["vocab"], encoding="utf-8") as f:
        vocab = f.read().splitlines()
    return export_language_model(model, arch, space, export_dir, vocab=vocab)


def _rnn_preset(name: str) -> ENASExperimentConfig:
    from wpl_keras.nas.spaces.rnn.config import RNNModelConfig, RNNOptimizerConfig

    if name == "paper":
        # The WPL release's run command and the ENAS RNN defaults, sized for a GPU; the
        # supernet is the release's (paper_rnn_model: init ±0.025, weight-drop on W_h
        # only, BatchNorm on the cell output, the last node carried), WPL at the release's
        # effective strength (tensor_norm, clip 10, α 60). The CPU presets keep the model
        # defaults. Every value, its source and each difference from the paper and the
        # release: wpl_keras/experiments/paper_presets.json (checked by
        # tests/experiments/test_paper_presets.py, shown in the README).
        return ENASExperimentConfig(
            space="rnn", preset="paper", task=paper_rnn_task(),
            search=paper_search(),
            # The release's controller and its update: entropy in each decision's reward,
            # baseline from the first reward, reset every epoch.
            controller=ControllerConfig(units=100, temperature=5.0, tanh_constant=2.5,
                                        learning_rate=3.5e-4, baseline_decay=0.95,
                                        entropy_weight=1e-4, entropy_mode="reward",
                                        baseline_init="first_reward",
                                        baseline_reset_each_epoch=True),
            derive_samples=100, train_epochs=150, train_max_batches=None, seed=0,
            data_check=True,
        )
    if name == "cpu-small":
        # Sized for 2 CPU cores: hidden 128 and batch 32 (a smaller step than
        # cpu_small_rnn_task's hidden 256, batch 64); 26 epochs x 10 architectures x 10
        # batches at lr 10. WPL from epoch 20 over every shared weight (wpl_scope="all": the
        # embedding / tied decoder, w_x, w_h and decoder bias as well as the node matrices),
        # in the default proximal mode (WPLConfig(), stable for any alpha), with alpha 1e6,
        # large against this supernet's small per-batch Fisher. The README's results say
        # what this preset gives.
        return ENASExperimentConfig(
            space="rnn", preset="cpu-small",
            task=cpu_small_rnn_task(
                model=RNNModelConfig(embedding_size=128, hidden_size=128),
                optimizer=RNNOptimizerConfig(learning_rate=10.0),
                batch_size=32, eval_batch_size=32, wpl_scope="all"),
            search=cpu_small_search(epochs=26, batches_per_arch=10, wpl_start_epoch=20,
                                          strength=1e6),
            controller=ControllerConfig(),
            derive_samples=20, train_epochs=1, train_max_batches=200,
        )
    if name == "tiny":
        # Seconds, for tests and the notebook's smoke run; not a measurement.
        task = _tiny_rnn_task_config()
        return ENASExperimentConfig(
            space="rnn", preset="tiny", task=task,
            search=SearchConfig(epochs=3, shared_steps_per_epoch=3, batches_per_arch=2,
                                controller_steps=2, wpl_start_epoch=1, strength_decay=None,
                                flush_every=2, verbose=0),
            controller=ControllerConfig(units=8), derive_samples=3, train_epochs=1,
            train_max_batches=2, data_check=False,
        )
    raise ValueError(f"unknown RNN preset {name!r}.")


def _tiny_rnn_task_config():
    """The smallest sensible RNN task config: cpu_small with 2 nodes, hidden 8, batches of 2
    rows and windows of 4 steps."""
    base = cpu_small_rnn_task()
    model = dataclasses.replace(base.model, num_nodes=2, embedding_size=8, hidden_size=8)
    return dataclasses.replace(base, model=model, batch_size=2, eval_batch_size=2, bptt=4,
                               eval_bptt=4)


def _rnn_build_space(config: ENASExperimentConfig):
    from wpl_keras.nas.spaces.rnn.space import RNNCellSpace

    return RNNCellSpace(num_nodes=config.task.model.num_nodes)


def _rnn_config_type():
    from wpl_keras.nas.spaces.rnn.config import RNNSupernetConfig

    return RNNSupernetConfig


class _LazyType:
    """Resolves the task config class on first call (keeps this module import-light) and
    builds the config from its JSON fields with the class's ``from_json`` (nested configs such
    as ``wpl`` read back, unknown or moved fields named)."""

    def __init__(self, resolve):
        self._resolve = resolve

    def __call__(self, **fields):
        return self._resolve().from_json(fields)


RNN_SPACE = SpaceSpec(
    name="rnn",
    data_subdir="ptb",
    task_config_type=_LazyType(_rnn_config_type),
    presets={p: (lambda p=p: _rnn_preset(p)) for p in ("paper", "cpu-small", "tiny")},
    load_data=_rnn_load_data,
    build_task=_rnn_build_task,
    train_best=_rnn_train_best,
    export=_rnn_export,
    build_model=_rnn_build_model,
    model_files=_rnn_model_files,
    build_space=_rnn_build_space,
    adapt_config=_rnn_adapt_config,
    error_name="perplexity",
    dataset="PTB",
    data_files="train.txt, valid.txt and test.txt (or ptb.train.txt, ptb.valid.txt and "
               "ptb.test.txt)",
)
