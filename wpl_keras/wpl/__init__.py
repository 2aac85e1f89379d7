"""Weight Plasticity Loss: penalty, Fisher/anchor state, training integration, callbacks."""

from wpl_keras.wpl import core
from wpl_keras.wpl.callbacks import (
    DivergenceGuard,
    FisherFlush,
    SnapshotAnchors,
    StrengthScheduler,
    WPLMonitor,
    strength_schedule,
)
from wpl_keras.wpl.fisher import WPLState, momentum_fisher
from wpl_keras.wpl.fisher_estimation import estimate_fisher, fisher_to_numpy
from wpl_keras.wpl.penalty import (
    WeightPlasticity,
    max_stable_strength,
    numpy_wpl_penalty,
    proximal_pull,
    wpl_penalty,
    wpl_penalty_and_gradient,
)
from wpl_keras.wpl.training import (
    WPLDivergenceError,
    WPLModel,
    WPLSequential,
    WPLSettings,
    WPLTrainingMixin,
    apply_wpl,
    check_finite_loss,
    resolve_shared_variables,
)
from wpl_keras.wpl.saving import load_wpl_model, restore_wpl

__all__ = [
    "core",
    "DivergenceGuard",
    "FisherFlush",
    "SnapshotAnchors",
    "StrengthScheduler",
    "WPLDivergenceError",
    "WPLModel",
    "WPLSequential",
    "WPLSettings",
    "WPLMonitor",
    "WPLState",
    "WPLTrainingMixin",
    "WeightPlasticity",
    "apply_wpl",
    "check_finite_loss",
    "estimate_fisher",
    "fisher_to_numpy",
    "load_wpl_model",
    "max_stable_strength",
    "momentum_fisher",
    "numpy_wpl_penalty",
    "proximal_pull",
    "resolve_shared_variables",
    "restore_wpl",
    "strength_schedule",
    "wpl_penalty",
    "wpl_penalty_and_gradient",
]
