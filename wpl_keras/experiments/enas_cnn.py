"""ENAS micro-CNN search on CIFAR-10: presets and the registry entry of its task config.

:data:`CNN_SPACE` is the :class:`~wpl_keras.experiments.enas.SpaceSpec` that
:mod:`wpl_keras.experiments.enas` imports lazily for ``space="cnn"``; :func:`build_task`
builds a :class:`~wpl_keras.nas.spaces.cnn.task.CNNSearchTask` straight from a config and a data
folder.

Presets:

* ``paper``: ENAS's micro search (melodyguan/enas ``scripts/cifar10_micro_search.sh``, which
  the paper's App. C says it uses) with WPL as the paper's §3.2 and the WPL release's CNN
  command: the search child of 5 nodes, 2 normal cells per stage, 20 filters, batch 160,
  dropout 0.1, SGD cosine 0.05 → 0.0005, L2 1e-4 (as ``2e-4 θ`` in the gradient), no gradient
  clip (ENAS's per-tensor clip returns the unclipped gradients); the controller of ENAS
  (LSTM 64, no temperature, tanh 1.1, Adam 0.0035, EMA 0.99, entropy 1e-4 in the reward, 300
  sampled architectures per epoch); WPL from epoch 3 at the release's effective strength
  (Fisher normalised per tensor to norm 10, α 60 decaying by 1 per epoch from epoch 15),
  flushed every 3 epochs, 7 batches per architecture. The final training is ENAS's
  (``scripts/cifar10_micro_final.sh``: :class:`~wpl_keras.nas.spaces.cnn.model.FinalConfig`'s
  defaults, 630 epochs). Every value, its source and each difference from ENAS, the paper
  and the release: ``wpl_keras/experiments/paper_presets.json`` (checked by
  ``tests/experiments/test_paper_presets.py``, shown in the README). Sized for a GPU.
* ``cpu-small``: minutes on 2 CPU cores (3 nodes, 1 cell per stage, 2 stages, 8 filters, 5,000
  training images, 1,000 held-out validation images; 20 epochs of 30 architectures x 5
  batches, WPL from epoch 3, α 1e6 with the proximal step; its 2-epoch final training uses
  plain cosine, shorter than one restart cycle).
* ``tiny``: seconds, for tests; not a measurement.

Validation always comes from a split held out from train (``num_valid`` images), never test.
"""

from __future__ import annotations

import dataclasses
from typing import Optional

from wpl_keras.experiments.enas import ControllerConfig, ENASExperimentConfig, SpaceSpec
from wpl_keras.nas.spaces.cnn.model import FinalConfig
from wpl_keras.nas.spaces.cnn.task import CNNOptimizerConfig, CNNTaskConfig
from wpl_keras.nas.spaces.cnn.supernet import SupernetConfig
from wpl_keras.nas.search.enas import SearchConfig
from wpl_keras.wpl.config import WPLConfig
from wpl_keras.experiments.presets import cpu_small_search, paper_search

_CNN_CONTROLLER = ControllerConfig(units=100, temperature=8.0, tanh_constant=1.1,
                                   learning_rate=3.5e-3, baseline_decay=0.99,
                                   entropy_weight=1e-4)


def _preset(name: str) -> ENASExperimentConfig:
    if name == "paper":
        # ENAS's micro search (scripts/cifar10_micro_search.sh) with WPL as the paper (§3.2:
        # on from epoch 3, flush every 3 epochs) and the release's CNN command (α 60 decaying by
        # 1 per epoch from epoch 15, B = 7) at the release's effective strength (tensor_norm,
        # clip 10). 40 architectures x 7 batches of 160 is about one pass over the 45,000
        # search-train images, ENAS's epoch. Every value and its source:
        # wpl_keras/experiments/paper_presets.json.
        search = paper_search(shared_steps_per_epoch=40, controller_steps=300,
                                    wpl_start_epoch=3, flush_every=3)
        task = CNNTaskConfig(
            num_nodes=5,
            # ENAS search child: child_num_layers 6 (2 normal cells per stage), out_filters
            # 20, keep_prob 0.9 before the classifier.
            supernet=SupernetConfig(num_cells=2, filters=20, num_stages=3, dropout=0.1),
            # ENAS's loss term 1e-4 Σ w² is 2e-4 θ in the gradient; its "norm" clip mode
            # returns the unclipped gradients.
            optimizer=CNNOptimizerConfig(lr_max=0.05, lr_min=0.0005, momentum=0.9,
                                         nesterov=True, weight_decay=2e-4, grad_clip=None),
            wpl=WPLConfig(fisher_momentum=0.9, clip_norm=10.0, mode="proximal",
                          fisher_normalization="tensor_norm", fisher_source="train"),
            batch_size=160, eval_batch_size=160, fixed_valid_size=500, augment=True,
            num_valid=5000, final=FinalConfig(),
        )
        # ENAS's micro controller (src/cifar10/main.py: LSTM 64, no temperature; the search
        # script's tanh 1.1, lr 0.0035, entropy 1e-4 added to the reward; baseline from 0).
        controller = ControllerConfig(units=64, temperature=None, tanh_constant=1.1,
                                      learning_rate=3.5e-3, baseline_decay=0.99,
                                      entropy_weight=1e-4, entropy_mode="reward_sum",
                                      baseline_init="zero", baseline_reset_each_epoch=False)
        return ENASExperimentConfig(space="cnn", preset="paper", task=task,
                                    search=search, controller=controller,
                                    derive_samples=100, train_epochs=630,
                                    train_max_batches=None, seed=0, data_check=True)
    if name == "cpu-small":
        task = CNNTaskConfig(
            num_nodes=3, supernet=SupernetConfig(num_cells=1, filters=8, num_stages=2),
            batch_size=32, eval_batch_size=100, fixed_valid_size=200, num_valid=1000,
            train_size=5000, final=FinalConfig(num_cells=1, filters=16, num_stages=3,
                                               batch_size=64, lr_schedule="cosine"),
            final_train_size=10000,
        )
        # 20 epochs x 30 architectures x 5 batches. Proximal WPL (stable for any alpha) at
        # alpha 1e6: with lr 0.05, lr alpha F exceeds 1 only on the weights with the largest
        # Fisher values, which the pull holds near their anchors.
        search = cpu_small_search(epochs=20, shared_steps_per_epoch=30, flush_every=3,
                                        strength=1e6)
        return ENASExperimentConfig(space="cnn", preset="cpu-small", task=task, search=search,
                                    controller=dataclasses.replace(_CNN_CONTROLLER, units=32),
                                    derive_samples=20, train_epochs=2)
    if name == "tiny":
        task = CNNTaskConfig(
            num_nodes=2, supernet=SupernetConfig(num_cells=1, filters=4, num_stages=1),
            batch_size=8, eval_batch_size=8, fixed_valid_size=16, num_valid=16, augment=False,
            strategy="default",
            final=FinalConfig(num_cells=1, filters=4, num_stages=1, batch_size=8, aux_weight=0.0,
                              cutout=2),
        )
        search = SearchConfig(epochs=3, shared_steps_per_epoch=3, batches_per_arch=2,
                              controller_steps=2, wpl_start_epoch=1, strength_decay=None,
                              flush_every=2, verbose=0)
        return ENASExperimentConfig(space="cnn", preset="tiny", task=task, search=search,
                                    controller=dataclasses.replace(_CNN_CONTROLLER, units=8),
                                    derive_samples=3, train_epochs=1, data_check=False)
    raise ValueError(f"unknown CNN preset {name!r}; available: paper, cpu-small, tiny.")


def preset(name: str) -> ENASExperimentConfig:
    """The named preset (``paper``, ``cpu-small`` or ``tiny``)."""
    return _preset(name.replace("_", "-"))


# --------------------------------------------------------------------------- builders
def load_data(data_dir: Optional[str], config: Optional[ENASExperimentConfig] = None, *,
              verify: bool = True):
    """CIFAR-10 arrays: tensorflow-datasets when ``data_dir`` is None, else the folder (see
    :func:`wpl_keras.data.cifar10.load_cifar10`; ``verify``: check standard files' md5)."""
    from wpl_keras.data.cifar10 import load_cifar10

    return load_cifar10(data_dir, verify=verify)


def _space(config: ENASExperimentConfig):
    from wpl_keras.nas.spaces.cnn.space import MicroCellSpace

    return MicroCellSpace(num_nodes=config.task.num_nodes)


def _task_from_data(arrays, config: ENASExperimentConfig, seed: Optional[int] = None):
    from wpl_keras.data.cifar10 import SearchSplits, search_splits, subsample
    from wpl_keras.nas.spaces.cnn.task import CNNSearchTask
    from wpl_keras.nas.search.distribute import make_strategy

    t = config.task
    seed = config.seed if seed is None else int(seed)
    splits = search_splits(arrays, num_valid=t.num_valid, seed=seed)
    x, y = subsample(splits.x_train, splits.y_train, t.train_size, seed)
    splits = SearchSplits(x, y, splits.x_valid, splits.y_valid)
    return CNNSearchTask(_space(config), t, splits, epochs=config.search.epochs,
                         strategy=make_strategy(t.strategy), seed=seed)


def build_task(config: ENASExperimentConfig, data_dir: Optional[str] = None, seed: int = 0):
    """Loads CIFAR-10 from ``data_dir`` and builds the search task of ``config``.

    The search trains on train minus ``num_valid`` held-out images and validates on those.
    """
    return _task_from_data(load_data(data_dir, config), config, seed)


def _train_best(arrays, arch, config: ENASExperimentConfig, out_dir: str, *, checkpoint):
    from wpl_keras.nas.spaces.cnn.model import train_final
    from wpl_keras.nas.search.distribute import make_strategy

    t = config.task
    return train_final(_space(config), arch, t.final, arrays,
                       epochs=max(int(config.train_epochs), 1),
                       strategy=make_strategy(t.strategy), seed=config.seed,
                       train_size=t.final_train_size, checkpoint=checkpoint)


def _build_model(arch, config: ENASExperimentConfig):
    """The untrained final model of ``arch`` (CIFAR-10's 32×32×3 images) that
    :func:`_train_best` trains."""
    from wpl_keras.nas.spaces.cnn.model import build_final_model

    return build_final_model(_space(config), arch, config.task.final, (32, 32, 3))


def _export(model, arch, space, export_dir: str, files=None) -> str:
    from wpl_keras.nas.spaces.cnn.model import export_classifier

    return export_classifier(model, arch, space, export_dir)["saved_model"]


CNN_SPACE = SpaceSpec(
    name="cnn",
    data_subdir="cifar10",
    task_config_type=CNNTaskConfig,
    presets={p: (lambda p=p: _preset(p)) for p in ("paper", "cpu-small", "tiny")},
    load_data=load_data,
    build_task=lambda data, config: _task_from_data(data, config),
    train_best=_train_best,
    export=_export,
    build_model=_build_model,
    build_space=_space,
    error_name="error_percent",
    dataset="CIFAR-10",
    data_files="cifar-10-batches-py/ (data_batch_1 to data_batch_5 and test_batch), "
               "cifar-10-python.tar.gz, train/<class>/ and test/<class>/ image folders, or "
               "cifar10-jpeg-train.tar.gz with cifar10-jpeg-test.tar.gz",
)
