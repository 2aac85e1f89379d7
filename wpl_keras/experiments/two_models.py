"""Two models sharing weights on MNIST (paper §4.1, Figure 2): forgetting with and without WPL.

Models (all ``Dense`` layers have ``hidden_units`` ReLU units; "operation" = one such layer):

* **A**: ``x (28×28) → flatten → W_A1 → W_A2 → W_A3 → W_A4 → head_A (10 logits)``.
* **B**: ``x → flatten → W_A1 → W_A2 → W_A3 → W_A4 → W_B5 → W_B6 → head_B (10 logits)``.
  Its first four operations *are* A's layer objects (the same variables, ``θs``), so training B
  moves A's weights; ``W_B5``, ``W_B6`` and ``head_B`` belong to B only (``θ2``).

This matches the paper's description ("two feed-forward networks with 4 (model A) and 6 (model B)
layers ... all the layers of A are shared by B"): A's 4 layers are B's first 4, B has 2 more, and
each network keeps its own classifier head (a shared head would force B's 6-layer features into
A's 4-layer readout, which is not what "A's layers are shared" describes). ReLU layers without
normalisation are positively homogeneous, the property the paper invokes for the MLE argument.

Fewer shared layers (paper Figure 1): with ``shared_layers = k`` (1 ≤ k ≤ 4, default 4 = the
above) B is ``W_A1 … W_Ak → W_B(k+1) … W_B6 → head_B``: still 6 layers, its first ``k`` are A's
layer objects (``θs``), the other ``6 − k`` its own; A is unchanged and only its first ``k``
layers get a Fisher and a WPL penalty. :func:`train_a` trains A once, and :func:`run_case` with
``trained_a`` starts every count from that same A, so that only ``k`` varies between counts.

Protocol for one seed and one convergence level (§4.1):

1. Train A: *strict* = to convergence (plain SGD, early stopping on validation accuracy); *loose* =
   plain SGD stopped as soon as validation top-1 reaches a level (e.g. 0.56, 0.44, 0.36).
2. ``F = estimate_fisher(A, 200 validation images, variables=θs)`` (empirical Fisher).
3. Snapshot all weights; train B for ``iterations`` SGD steps twice from that same start:
   without WPL, then with WPL (``θs* = θs`` of A, ``F`` from step 2), evaluating A's and B's
   test accuracy every ``eval_every`` iterations.
4. Forgetting ``d = acc_A(before) − acc_A(after)`` for both runs and the reduction
   ``(d_without − d_with) / d_without``.

Why forgetting is real here: B is trained with SGD + momentum 0.9 at lr 0.1, which moves the
shared weights far from A's solution (A falls from ~97% to ~20-60%); plain SGD at the same lr
barely moves them, so it would show little forgetting to remove (``benchmarks/README.md``).

Stable form of WPL used: the proximal step of ``training.WPLTrainingMixin`` (``mode="proximal"``):
after each optimiser step ``θ ← (θ + η α F θ*) / (1 + η α F)``, the exact minimiser of the
penalty's proximal problem, stable for every ``α``. A gradient step on ``(α/2) F (θ − θ*)²`` is
stable only while ``η α max F < 2 (1 + β)``; with ``mode="gradient"`` and a larger ``α``
a :class:`~wpl_keras.wpl.callbacks.DivergenceGuard` stops training with a
:class:`~wpl_keras.wpl.training.WPLDivergenceError` naming ``α`` and the learning rate.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from typing import Callable, Mapping, Optional, Sequence

import keras
import numpy as np
import tensorflow as tf

from wpl_keras.data.mnist import make_dataset
from wpl_keras.utils.validation import check_fields, check_number
from wpl_keras.wpl.callbacks import DivergenceGuard
from wpl_keras.wpl.core import check_wpl_mode
from wpl_keras.wpl.fisher_estimation import estimate_fisher
from wpl_keras.wpl.penalty import max_stable_strength
from wpl_keras.wpl.training import WPLModel, apply_wpl

A_LAYER_NAMES = ("W_A1", "W_A2", "W_A3", "W_A4")
B_DEPTH = 6  # hidden layers of B: its shared prefix of A's layers, then its own W_B<i>


@dataclasses.dataclass(frozen=True)
class TwoModelsConfig:
    """Settings of the two-model experiment (saved as ``config.json`` next to the results).

    Attributes:
        hidden_units: units of every ReLU layer.
        batch_size: examples per training step (A and B).
        a_optimizer: ``"sgd"`` (plain SGD) or ``"adam"`` for strict training of A.
        a_learning_rate: learning rate for strict training of A.
        a_max_epochs: epochs at most for strict training of A.
        a_patience: epochs without validation improvement before A counts as converged.
        a_steps_per_epoch: steps per epoch for A (None: one pass over the training split).
        loose_levels: validation top-1 accuracies at which loose training of A stops.
        loose_learning_rate: plain-SGD learning rate of loose training (slow enough to stop
            near a level).
        loose_check_every: steps between validation checks in loose training.
        loose_max_steps: give up reaching a level after this many steps (error).
        iterations: SGD steps of B (paper: 1,500).
        b_learning_rate: SGD learning rate of B.
        b_momentum: heavy-ball momentum of B (0.9 makes the forgetting real, see module doc).
        eval_every: evaluate A and B on the test set every this many iterations.
        fisher_samples: validation images for the Fisher (paper: 200).
        fisher_kind: ``"empirical"`` (true labels) or ``"true"`` (sampled labels).
        strength: WPL strength ``α`` (the apps' ``--alpha``).
        wpl_mode: ``"proximal"`` (stable for any α) or ``"gradient"`` (penalty in the loss).
        l2: ``λ`` of eq. 8 on the shared weights (0 in our runs).
        eval_examples: test examples used for the curves (None: all).
        seeds: one full repetition per seed.
        validation_size: training examples held out for validation.
        shared_layers: ``k``, how many of A's layers (the first ``k``) B shares; B has
            ``6 − k`` own layers after them (paper Figure 1; 4 = all of A, Figure 2).
    """

    hidden_units: int = 64
    batch_size: int = 64
    a_optimizer: str = "sgd"
    a_learning_rate: float = 0.1
    a_max_epochs: int = 8
    a_patience: int = 2
    a_steps_per_epoch: Optional[int] = None
    loose_levels: tuple = (0.56, 0.44, 0.36)
    loose_learning_rate: float = 0.01
    loose_check_every: int = 5
    loose_max_steps: int = 5000
    iterations: int = 1500
    b_learning_rate: float = 0.1
    b_momentum: float = 0.9
    eval_every: int = 100
    fisher_samples: int = 200
    fisher_kind: str = "empirical"
    strength: float = 1e8
    wpl_mode: str = "proximal"
    l2: float = 0.0
    eval_examples: Optional[int] = None
    seeds: tuple = (0, 1, 2)
    validation_size: int = 5000
    shared_layers: int = len(A_LAYER_NAMES)

    def __post_init__(self):
        count, positive = dict(integer=True, minimum=1), dict(minimum=0, exclusive_minimum=True)
        optional_count = dict(integer=True, minimum=1, optional=True)
        check_wpl_mode(self.wpl_mode, "TwoModelsConfig.wpl_mode")
        check_fields(self, {
            "hidden_units": count, "batch_size": count, "a_learning_rate": positive,
            "a_max_epochs": count, "a_patience": dict(integer=True, minimum=0),
            "a_steps_per_epoch": optional_count, "loose_learning_rate": positive,
            "loose_check_every": count, "loose_max_steps": count, "iterations": count,
            "b_learning_rate": positive,
            "b_momentum": dict(minimum=0, maximum=1, exclusive_maximum=True),
            "eval_every": count, "fisher_samples": count,
            # α = inf holds every weight with F > 0 at its anchor in the proximal mode
            "strength": dict(minimum=0, allow_inf=self.wpl_mode == "proximal"),
            "l2": dict(minimum=0), "eval_examples": optional_count, "validation_size": count,
            "shared_layers": dict(integer=True, minimum=1, maximum=len(A_LAYER_NAMES)),
        })
        if not self.seeds:
            raise ValueError("TwoModelsConfig.seeds must name at least one seed, got ().")
        if self.iterations % self.eval_every:
            raise ValueError(
                f"iterations ({self.iterations}) must be a multiple of eval_every ({self.eval_every})."
            )
        if self.a_optimizer not in ("sgd", "adam"):
            raise ValueError(f"a_optimizer must be 'sgd' or 'adam', got {self.a_optimizer!r}.")
        if self.fisher_kind not in ("empirical", "true"):
            raise ValueError(f"fisher_kind must be 'empirical' or 'true', got {self.fisher_kind!r}.")
        # loose levels are top-1 accuracies in (0, 1)
        object.__setattr__(self, "loose_levels", tuple(
            check_number(f"TwoModelsConfig.loose_levels[{i}]", level, minimum=0, maximum=1,
                         exclusive_minimum=True, exclusive_maximum=True)
            for i, level in enumerate(self.loose_levels)))
        object.__setattr__(self, "seeds", tuple(
            check_number(f"TwoModelsConfig.seeds[{i}]", seed, integer=True, minimum=0)
            for i, seed in enumerate(self.seeds)))

    def to_json(self) -> dict:
        """JSON-serialisable dict of every field."""
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> "TwoModelsConfig":
        """Inverse of :meth:`to_json`; an unknown field is refused with its name (a file
        written before ``alpha`` was renamed ``strength`` is told so)."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            hint = " ('alpha' is now 'strength')" if "alpha" in unknown else ""
            raise ValueError(f"unknown TwoModelsConfig fields: {unknown}{hint}.")
        return cls(**data)


# --------------------------------------------------------------------------- pure helpers
def forgetting(acc_before: float, acc_after: float) -> float:
    """``d = acc_A(before B) − acc_A(after B)`` (positive: A forgot)."""
    return float(acc_before) - float(acc_after)


def forgetting_reduction(d_without: float, d_with: float) -> float:
    """``(d_without − d_with) / d_without``; NaN when there was no forgetting to reduce."""
    if d_without <= 0:
        return float("nan")
    return (float(d_without) - float(d_with)) / float(d_without)


def mean_std(values: Sequence[float]) -> dict:
    """``{"mean", "std", "min", "max", "values"}`` (population std) of finite values."""
    values = [float(v) for v in values]
    finite = [v for v in values if math.isfinite(v)]
    if not finite:
        return {"mean": float("nan"), "std": float("nan"), "min": float("nan"),
                "max": float("nan"), "values": values}
    arr = np.asarray(finite)
    return {"mean": float(arr.mean()), "std": float(arr.std()), "min": float(arr.min()),
            "max": float(arr.max()), "values": values}


# --------------------------------------------------------------------------- models
def build_models(input_shape, config: TwoModelsConfig, num_classes: int = 10):
    """Builds A and B with A's first ``k = config.shared_layers`` layers shared by B (same
    layer objects, same variables); B's other ``6 − k`` layers are its own.

    With the same seed, A (and B's ``W_B5``, ``W_B6``, ``head_B``) start from the same weights
    whatever ``k``; for ``k = 4`` the models are those of the Figure 2 experiment.

    Returns:
        ``(model_a, make_b, shared_layers)``; ``shared_layers`` are the ``k`` shared layer
        objects (``θs``); ``make_b()`` returns a new :class:`WPLModel` B over the same layer
        objects (a fresh model per run, so a WPL state never leaks from one run into the next
        while every weight stays shared).
    """
    def dense(name):
        return keras.layers.Dense(config.hidden_units, activation="relu", name=name)

    # A Keras initialiser draws its seed when its layer is constructed, so the construction
    # order fixes the initial weights: A's layers, B's W_B5 and W_B6, the heads, and only then
    # the own layers that replace A's unshared ones (k < 4). A, W_B5 and W_B6 thus start from
    # the same weights for every k.
    n_a = len(A_LAYER_NAMES)
    layers_a = [dense(n) for n in A_LAYER_NAMES]
    tail_b = [dense(f"W_B{i}") for i in range(n_a + 1, B_DEPTH + 1)]
    head_a = keras.layers.Dense(num_classes, name="head_A")
    head_b = keras.layers.Dense(num_classes, name="head_B")
    shared = layers_a[: config.shared_layers]
    own_b = [dense(f"W_B{i}") for i in range(config.shared_layers + 1, n_a + 1)] + tail_b

    inputs_a = keras.Input(tuple(input_shape), name="image_A")
    h = keras.layers.Flatten(name="flatten_A")(inputs_a)
    for layer in layers_a:
        h = layer(h)
    model_a = keras.Model(inputs_a, head_a(h), name="model_A")

    def make_b():
        inputs_b = keras.Input(tuple(input_shape), name="image_B")
        h = keras.layers.Flatten(name="flatten_B")(inputs_b)
        for layer in shared + own_b:
            h = layer(h)
        return WPLModel(inputs_b, head_b(h), name="model_B")

    make_b()  # builds B's own layers now, so that their initial weights depend only on the seed
    return model_a, make_b, shared


def accuracy(model: keras.Model, x: np.ndarray, y: np.ndarray, batch_size: int = 2000) -> float:
    """Top-1 accuracy of a logits model on arrays."""
    correct = 0
    for start in range(0, len(y), batch_size):
        logits = model(x[start : start + batch_size], training=False)
        correct += int(np.sum(np.argmax(np.asarray(logits), -1) == y[start : start + batch_size]))
    return correct / max(1, len(y))


def _dataset(x, y, batch_size, seed):
    """The endless training stream: reshuffled each pass, full batches only."""
    return make_dataset(x, y, batch_size=batch_size, shuffle=True, repeat=True, seed=seed,
                        drop_remainder=True)


def _loss():
    return keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def train_a_strict(model_a, data, config: TwoModelsConfig, seed: int) -> dict:
    """Trains A to convergence: early stopping on validation accuracy, best weights kept."""
    optimizer = (keras.optimizers.SGD if config.a_optimizer == "sgd" else keras.optimizers.Adam)(
        config.a_learning_rate
    )
    model_a.compile(optimizer=optimizer, loss=_loss(), metrics=["accuracy"])
    steps = config.a_steps_per_epoch or max(1, len(data.y_train) // config.batch_size)
    stop = keras.callbacks.EarlyStopping(
        monitor="val_accuracy", patience=config.a_patience, restore_best_weights=True, mode="max"
    )
    history = model_a.fit(
        _dataset(data.x_train, data.y_train, config.batch_size, seed),
        steps_per_epoch=steps,
        epochs=config.a_max_epochs,
        validation_data=(data.x_val, data.y_val),
        callbacks=[stop],
        verbose=0,
        shuffle=False,  # the tf.data pipeline shuffles
    )
    return {"epochs": len(history.history["loss"]), "steps": steps * len(history.history["loss"])}


class _StopAtAccuracy(keras.callbacks.Callback):
    def __init__(self, x, y, level):
        super().__init__()
        self.x, self.y, self.level = x, y, level
        self.reached = None

    def on_epoch_end(self, epoch, logs=None):
        acc = accuracy(self.model, self.x, self.y)
        if acc >= self.level:
            self.reached = acc
            self.model.stop_training = True


def train_a_loose(model_a, data, level: float, config: TwoModelsConfig, seed: int) -> dict:
    """Trains A with plain SGD and stops at the first check where validation top-1 >= ``level``.

    Raises:
        RuntimeError: if A does not reach ``level`` within ``loose_max_steps`` steps.
    """
    model_a.compile(optimizer=keras.optimizers.SGD(config.loose_learning_rate), loss=_loss())
    stop = _StopAtAccuracy(data.x_val, data.y_val, level)
    epochs = max(1, config.loose_max_steps // config.loose_check_every)
    history = model_a.fit(
        _dataset(data.x_train, data.y_train, config.batch_size, seed),
        steps_per_epoch=config.loose_check_every,
        epochs=epochs,
        callbacks=[stop],
        verbose=0,
        shuffle=False,  # the tf.data pipeline shuffles
    )
    if stop.reached is None:
        raise RuntimeError(
            f"loose training of A did not reach validation accuracy {level} in "
            f"{config.loose_max_steps} steps (lr {config.loose_learning_rate})."
        )
    return {"steps": config.loose_check_every * len(history.history["loss"]),
            "val_accuracy": stop.reached}


class _Curves(keras.callbacks.Callback):
    """Records A's and B's test accuracy at the end of every (eval_every-step) epoch."""

    def __init__(self, model_a, model_b, x, y, eval_every):
        super().__init__()
        self.model_a, self.model_b, self.x, self.y = model_a, model_b, x, y
        self.eval_every = eval_every
        self.iterations, self.a, self.b = [], [], []

    def record(self, iteration):
        self.iterations.append(int(iteration))
        self.a.append(accuracy(self.model_a, self.x, self.y))
        self.b.append(accuracy(self.model_b, self.x, self.y))

    def on_epoch_end(self, epoch, logs=None):
        self.record((epoch + 1) * self.eval_every)


def train_b(model_a, model_b, shared, data, fisher, config: TwoModelsConfig, *, wpl: bool,
            seed: int, x_eval, y_eval) -> dict:
    """Trains B for ``config.iterations`` SGD steps (with or without WPL), recording curves.

    Raises:
        WPLDivergenceError: (through :class:`DivergenceGuard`) if the loss becomes NaN or
            explodes, e.g. a gradient-mode penalty with ``α`` beyond the stable bound.
    """
    state = None
    if wpl:
        state = apply_wpl(model_b, shared, strength=config.strength, l2=config.l2, mode=config.wpl_mode)
        state.assign_fisher(fisher)
    model_b.compile(
        optimizer=keras.optimizers.SGD(config.b_learning_rate, momentum=config.b_momentum),
        loss=_loss(),
    )
    curves = _Curves(model_a, model_b, x_eval, y_eval, config.eval_every)
    curves.record(0)
    model_b.fit(
        _dataset(data.x_train, data.y_train, config.batch_size, seed + 1),
        steps_per_epoch=config.eval_every,
        epochs=config.iterations // config.eval_every,
        callbacks=[curves, DivergenceGuard(state)],
        verbose=0,
        shuffle=False,  # the tf.data pipeline shuffles
    )
    out = {"iterations": curves.iterations, "acc_a": curves.a, "acc_b": curves.b}
    if state is not None:
        out["penalty_final"] = float(state.penalty().numpy())
    return out


@dataclasses.dataclass(frozen=True)
class TrainedA:
    """Model A after its training, so that several runs (e.g. one per shared-layer count) start
    from the same A.

    Attributes:
        seed: the seed A was built and trained with.
        level: the loose level it was trained to (None: strict convergence).
        weights: A's weights, in ``model_a.weights`` order.
        info: what :func:`train_a_strict` or :func:`train_a_loose` returned.
    """

    seed: int
    level: Optional[float]
    weights: tuple
    info: dict


def _fit_a(model_a, data, config: TwoModelsConfig, seed: int, level: Optional[float]) -> dict:
    if level is None:
        return train_a_strict(model_a, data, config, seed)
    return train_a_loose(model_a, data, level, config, seed)


def train_a(data, config: TwoModelsConfig, seed: int, level: Optional[float] = None) -> TrainedA:
    """Builds A from ``seed`` exactly as :func:`run_case` does and trains it (strict when
    ``level`` is None, else loose to ``level``); A does not depend on ``config.shared_layers``."""
    keras.utils.set_random_seed(seed)
    model_a, _, _ = build_models(data.x_train.shape[1:], config)
    info = _fit_a(model_a, data, config, seed, level)
    return TrainedA(seed=seed, level=level, weights=tuple(np.array(v) for v in model_a.weights),
                    info=info)


def _load_a(model_a, trained_a: TrainedA, seed: int, level: Optional[float]) -> dict:
    """Assigns ``trained_a``'s weights to ``model_a``; returns its training info.

    Raises:
        ValueError: if ``trained_a`` was trained for another seed or level, or for another
            ``hidden_units`` / input shape (its weight shapes differ from A's).
    """
    if (trained_a.seed, trained_a.level) != (seed, level):
        raise ValueError(
            f"trained_a is A for seed {trained_a.seed}, level {trained_a.level}, but the case is "
            f"seed {seed}, level {level}; pass train_a(data, config, {seed}, {level})."
        )
    want = [tuple(v.shape) for v in model_a.weights]
    have = [tuple(np.shape(w)) for w in trained_a.weights]
    if want != have:
        raise ValueError(
            f"trained_a holds weights of shapes {have}, model A has {want}; train A with the "
            f"same hidden_units and data (train_a with this config)."
        )
    for variable, value in zip(model_a.weights, trained_a.weights):
        variable.assign(value)
    return trained_a.info


def run_case(data, config: TwoModelsConfig, seed: int, level: Optional[float] = None,
             trained_a: Optional[TrainedA] = None, validation: bool = False,
             without_from: Optional[dict] = None) -> dict:
    """One seed, one convergence level (None = strict): train A, Fisher, B without / with WPL.

    ``trained_a`` (from :func:`train_a` with the same seed and level) replaces A's training:
    A starts from those weights, B's own layers from the same seed as without it, so the result
    equals a run that trained A itself.

    ``validation=True`` also evaluates on the validation split (the data the WPL strength is
    chosen on, :func:`sweep_strengths`) and adds ``a_baseline_val``, ``a_final_without_val``,
    ``a_final_with_val``, ``b_final_without_val``, ``b_final_with_val`` and
    ``forgetting_reduction_val`` to the result; the other results are the same either way.

    ``without_from`` (an earlier result of this function for the same seed, level, data and
    B settings, e.g. another WPL strength) supplies B's run without WPL instead of training it
    again: that run does not depend on the WPL settings, and B's run with WPL starts from the
    same weights either way (A's and B's weights are reset before it).
    """
    keras.utils.set_random_seed(seed)
    model_a, make_b, shared = build_models(data.x_train.shape[1:], config)
    started = time.time()
    if trained_a is None:
        a_info = _fit_a(model_a, data, config, seed, level)
    else:
        a_info = _load_a(model_a, trained_a, seed, level)
    x_eval, y_eval = data.x_test, data.y_test
    if config.eval_examples is not None:
        x_eval, y_eval = x_eval[: config.eval_examples], y_eval[: config.eval_examples]
    baseline = accuracy(model_a, x_eval, y_eval)
    val = {"a_baseline_val": accuracy(model_a, data.x_val, data.y_val)} if validation else {}
    shared_vars = [v for layer in shared for v in layer.trainable_weights]
    fisher = estimate_fisher(
        model_a,
        (data.x_val, data.y_val),
        shared_vars,
        num_samples=config.fisher_samples,
        kind=config.fisher_kind,
        from_logits=True,
        seed=seed,
    )
    max_f = float(max(float(tf.reduce_max(f)) for f in fisher))
    runs = _train_b_both_ways(model_a, make_b, shared, data, fisher, config, seed, level,
                              (x_eval, y_eval), val if validation else None, without_from)
    if validation:
        val["forgetting_reduction_val"] = forgetting_reduction(
            forgetting(val["a_baseline_val"], val["a_final_without_val"]),
            forgetting(val["a_baseline_val"], val["a_final_with_val"]))
    d_without = forgetting(baseline, runs["without"]["acc_a"][-1])
    d_with = forgetting(baseline, runs["with"]["acc_a"][-1])
    return {
        "seed": seed,
        "level": level,
        "shared_layers": config.shared_layers,
        "a_training": a_info,
        "a_baseline": baseline,
        "fisher_max": max_f,
        "gradient_mode_max_stable_alpha": max_stable_strength(
            config.b_learning_rate, max_f, config.b_momentum
        ),
        "runs": runs,
        "a_final_without": runs["without"]["acc_a"][-1],
        "a_final_with": runs["with"]["acc_a"][-1],
        "b_final_without": runs["without"]["acc_b"][-1],
        "b_final_with": runs["with"]["acc_b"][-1],
        "d_without": d_without,
        "d_with": d_with,
        "forgetting_reduction": forgetting_reduction(d_without, d_with),
        "a_drop_without": 100.0 * d_without,
        "a_drop_with": 100.0 * d_with,
        "b_accuracy_gap": 100.0 * (runs["without"]["acc_b"][-1] - runs["with"]["acc_b"][-1]),
        **val,
        "seconds": time.time() - started,
    }


def _train_b_both_ways(model_a, make_b, shared, data, fisher, config: TwoModelsConfig,
                       seed: int, level: Optional[float], evaluation, val: Optional[dict],
                       without_from: Optional[dict]) -> dict:
    """B trained without and with WPL from the same start (A's and B's weights reset before
    each run); ``{"without": curves, "with": curves}``. With ``val`` (a dict), A's and B's
    final validation accuracies are added to it; ``without_from`` supplies the run without
    WPL (see :func:`run_case`)."""
    reference_b = make_b()
    start_weights = [np.array(v) for v in reference_b.weights]  # B's weights include θs
    runs = {}
    for name, wpl in (("without", False), ("with", True)):
        if name == "without" and without_from is not None:
            runs[name] = _reuse_without(without_from, seed, level, val is not None,
                                        val if val is not None else {})
            continue
        for v, w in zip(reference_b.weights, start_weights):
            v.assign(w)
        model_b = make_b()
        runs[name] = train_b(model_a, model_b, shared, data, fisher, config, wpl=wpl,
                             seed=seed, x_eval=evaluation[0], y_eval=evaluation[1])
        if val is not None:
            val[f"a_final_{name}_val"] = accuracy(model_a, data.x_val, data.y_val)
            val[f"b_final_{name}_val"] = accuracy(model_b, data.x_val, data.y_val)
    return runs


def _reuse_without(earlier: dict, seed: int, level: Optional[float], validation: bool,
                   val: dict) -> dict:
    """B's run without WPL from an earlier :func:`run_case` result (``without_from``)."""
    if (earlier["seed"], earlier["level"]) != (seed, level):
        raise ValueError(
            f"without_from is a result for seed {earlier['seed']}, level {earlier['level']}, "
            f"but the case is seed {seed}, level {level}."
        )
    if validation:
        if "b_final_without_val" not in earlier:
            raise ValueError("without_from was run without validation=True; its validation "
                             "accuracies are missing.")
        val["a_final_without_val"] = earlier["a_final_without_val"]
        val["b_final_without_val"] = earlier["b_final_without_val"]
    return earlier["runs"]["without"]


def summarize(cases: Sequence[dict]) -> dict:
    """Mean/std over seeds of the scalar results of :func:`run_case` for one level."""
    keys = ("a_baseline", "a_final_without", "a_final_with", "b_final_without", "b_final_with",
            "d_without", "d_with", "forgetting_reduction", "a_drop_without", "b_accuracy_gap")
    return {k: mean_std([c[k] for c in cases]) for k in keys}


def case_name(level: Optional[float]) -> str:
    """``"strict"`` or ``"loose_0.56"``."""
    return "strict" if level is None else f"loose_{level:g}"


@dataclasses.dataclass(frozen=True)
class CaseStrength:
    """The WPL strength ``α`` one case runs at, and where that value came from.

    Attributes:
        strength: ``α`` (>= 0; ``inf`` only in the proximal mode, as
            :attr:`TwoModelsConfig.strength`).
        source: one phrase naming its origin, e.g. ``"TwoModelsConfig.strength"`` or
            ``"validation choice, wpl_keras/experiments/two_models_strengths.json"``; written
            into ``results.json`` beside the case.
    """

    strength: float
    source: str

    def __post_init__(self):
        object.__setattr__(self, "strength", check_number(
            "CaseStrength.strength", self.strength, minimum=0, allow_inf=True))
        if not isinstance(self.source, str) or not self.source.strip():
            raise ValueError("CaseStrength.source must say where the strength came from "
                             f"(a non-empty string), got {self.source!r}.")

    def to_json(self) -> dict:
        """``{"strength", "source"}``."""
        return dataclasses.asdict(self)


def case_strengths_or_config(config: TwoModelsConfig, names: Sequence[str],
                             strengths: Optional[Mapping[str, CaseStrength]]) -> dict:
    """``{case name: CaseStrength}`` for every case of ``names``: from ``strengths`` when
    given, else ``config.strength`` for every case (source ``"TwoModelsConfig.strength"``).

    Raises:
        ValueError: if ``strengths`` lacks one of ``names`` (naming it and the cases it has).
    """
    if strengths is None:
        return {name: CaseStrength(config.strength, "TwoModelsConfig.strength")
                for name in names}
    missing = [name for name in names if name not in strengths]
    if missing:
        raise ValueError(f"strengths has no entry for the cases {missing} (it has "
                         f"{sorted(strengths)}); give one CaseStrength per case run, or "
                         "strengths=None to run every case at config.strength.")
    return {name: strengths[name] for name in names}


def run_experiment(
    data,
    config: TwoModelsConfig,
    *,
    strict: bool = True,
    levels: Optional[Sequence[float]] = None,
    progress: Optional[Callable[[str], None]] = None,
    strengths: Optional[Mapping[str, CaseStrength]] = None,
) -> dict:
    """Runs every seed for the strict case and each loose level.

    Args:
        data: an object with ``x_train, y_train, x_val, y_val, x_test, y_test`` arrays
            (e.g. :class:`~wpl_keras.data.mnist.MnistSplits`).
        config: the settings.
        strict: include the strict-convergence case.
        levels: loose levels (default ``config.loose_levels``).
        progress: called with a one-line message after each case.
        strengths: ``{case name: CaseStrength}``, the WPL strength of each case run
            (e.g. :func:`~wpl_keras.experiments.strength_sweep.recorded_case_strengths`);
            None runs every case at ``config.strength``.

    Returns:
        ``{"config", "source", "cases": {name: {"level", "seeds": [...], "summary",
        "strength", "strength_source"}}, "overview"}`` (:func:`case_overview`).

    Raises:
        ValueError: if ``strengths`` misses a case that runs.
    """
    levels = config.loose_levels if levels is None else tuple(levels)
    wanted = ([None] if strict else []) + list(levels)
    chosen = case_strengths_or_config(config, [case_name(v) for v in wanted], strengths)
    results = {"config": config.to_json(), "source": getattr(data, "source", "arrays"), "cases": {}}
    for level in wanted:
        name = case_name(level)
        case_config = dataclasses.replace(config, strength=chosen[name].strength)
        per_seed = []
        for seed in config.seeds:
            case = run_case(data, case_config, seed, level)
            per_seed.append(case)
            if progress is not None:
                progress(
                    f"{name} seed {seed} strength {case_config.strength:g}: A "
                    f"{case['a_baseline']:.4f} -> {case['a_final_without']:.4f} without / "
                    f"{case['a_final_with']:.4f} with WPL; B {case['b_final_without']:.4f} / "
                    f"{case['b_final_with']:.4f}; reduction "
                    f"{case['forgetting_reduction']:.4f} ({case['seconds']:.0f}s)"
                )
        results["cases"][name] = {
            "level": level, "seeds": per_seed, "summary": summarize(per_seed),
            "strength": chosen[name].strength, "strength_source": chosen[name].source,
        }
    results["overview"] = case_overview(results)
    return results


def case_overview(results: dict) -> dict:
    """Per case, the strength it ran at and the two figures that judge it side by side: the
    forgetting reduction ``(d_without − d_with) / d_without`` and B's cost
    ``b_accuracy_gap = 100 · (acc_B without WPL − acc_B with WPL)`` (accuracy points;
    positive: B lost accuracy with WPL), seed means and population std.

    Returns:
        ``{case name: {"strength", "strength_source", "forgetting_reduction",
        "forgetting_reduction_std", "b_accuracy_gap", "b_accuracy_gap_std", "a_baseline",
        "a_drop_without", "seeds"}}``; ``strength`` and ``strength_source`` are None for a case without them.
    """
    out = {}
    for name, case in results["cases"].items():
        s = case["summary"]
        out[name] = {
            "strength": case.get("strength"), "strength_source": case.get("strength_source"),
            "forgetting_reduction": s["forgetting_reduction"]["mean"],
            "forgetting_reduction_std": s["forgetting_reduction"]["std"],
            "b_accuracy_gap": s["b_accuracy_gap"]["mean"],
            "b_accuracy_gap_std": s["b_accuracy_gap"]["std"],
            "a_baseline": s["a_baseline"]["mean"],
            "a_drop_without": s["a_drop_without"]["mean"],
            "seeds": len(case["seeds"]),
        }
    return out


def loosest_helpful_level(results: dict, min_reduction: float = 0.5, min_drop: float = 5.0):
    """Name of the loose case with the lowest level whose mean reduction >= ``min_reduction``
    and mean A drop without WPL >= ``min_drop`` points; None if no loose case qualifies."""
    best = None
    for name, case in results["cases"].items():
        if case["level"] is None:
            continue
        s = case["summary"]
        if s["forgetting_reduction"]["mean"] >= min_reduction and s["a_drop_without"]["mean"] >= min_drop:
            if best is None or case["level"] < results["cases"][best]["level"]:
                best = name
    return best


def to_jsonable(obj):
    """Converts NumPy scalars to Python and non-finite floats to None (strict JSON)."""
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, (np.floating, float)):
        return None if not math.isfinite(float(obj)) else float(obj)
    if isinstance(obj, np.integer):
        return int(obj)
    return obj


def _panel_title(name: str, case: dict) -> str:
    """A case's panel title: its name and strength, then the reduction beside B's gap."""
    s = case["summary"]
    strength = case.get("strength")
    head = name.replace("_", " ") + ("" if strength is None else f", α {strength:g}")
    return (f"{head}\nreduction {s['forgetting_reduction']['mean']:.2f}, "
            f"B gap {s['b_accuracy_gap']['mean']:+.1f} pts")


def plot_results(results: dict, path: str) -> None:
    """Figure-2-style plot: per case, A's (top) and B's (bottom) test accuracy vs iterations;
    baseline green, without WPL blue, with WPL orange (mean over seeds, band = ±1 std). Each
    column's title gives the case's strength α, its forgetting reduction and B's
    ``b_accuracy_gap`` (without minus with WPL, points), seed means."""
    from wpl_keras.utils.plotting import new_figure

    names = list(results["cases"])
    fig, axes = new_figure(2, len(names), figsize=(3.6 * len(names), 5.6), squeeze=False)
    for col, name in enumerate(names):
        seeds = results["cases"][name]["seeds"]
        its = np.asarray(seeds[0]["runs"]["without"]["iterations"])
        for row, key in enumerate(("acc_a", "acc_b")):
            ax = axes[row][col]
            if key == "acc_a":
                base = np.mean([s["a_baseline"] for s in seeds])
                ax.axhline(base, color="tab:green", label="Baseline (A before B)")
            for run, color, label in (("without", "tab:blue", "w/o WPL"),
                                      ("with", "tab:orange", "with WPL")):
                curves = np.asarray([s["runs"][run][key] for s in seeds])
                mean, std = curves.mean(0), curves.std(0)
                ax.plot(its, mean, color=color, label=label)
                ax.fill_between(its, mean - std, mean + std, color=color, alpha=0.25)
            ax.set_ylim(0, 1)
            ax.set_xlabel("Iterations (training B)")
            ax.set_ylabel(f"Model {'A' if key == 'acc_a' else 'B'} test accuracy")
            if row == 0:
                ax.set_title(_panel_title(name, results["cases"][name]), fontsize=9)
            ax.grid(alpha=0.3)
    axes[0][0].legend(loc="lower left", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def save_results(results: dict, out_dir: str, *, plot: bool = True) -> dict:
    """Writes ``results.json``, ``config.json`` and (optionally) ``two_models.png`` to ``out_dir``.

    Returns:
        The written paths.
    """
    os.makedirs(out_dir, exist_ok=True)
    paths = {
        "results": os.path.join(out_dir, "results.json"),
        "config": os.path.join(out_dir, "config.json"),
    }
    with open(paths["results"], "w") as handle:
        json.dump(to_jsonable(results), handle, indent=1)
    with open(paths["config"], "w") as handle:
        json.dump(to_jsonable(results["config"]), handle, indent=1)
    if plot:
        paths["figure"] = os.path.join(out_dir, "two_models.png")
        plot_results(results, paths["figure"])
    return paths
