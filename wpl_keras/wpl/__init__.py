"""Weight Plasticity Loss: penalty, Fisher/anchor state, training integration, callbacks."""

import wpl_keras.wpl.core as core
from wpl_keras.wpl.callbacks import (
    DivergenceGuard,
    FisherFlush,
    SnapshotAnchors,
    StrengthScheduler,
    WPLMonitor,
)
from wpl_keras.wpl.config import WPLConfig
from wpl_keras.wpl.core import fisher_update, proximal_pull, wpl_penalty
from wpl_keras.wpl.fisher import WPLState
from wpl_keras.wpl.fisher_estimation import estimate_fisher, fisher_to_numpy
from wpl_keras.wpl.penalty import WeightPlasticity, max_stable_strength
from wpl_keras.wpl.step import Covered, StepResult, WPLStep
from wpl_keras.wpl.training import (
    WPLDivergenceError,
    WPLModel,
    WPLSequential,
    WPLTrainingMixin,
    apply_wpl,
    check_finite_loss,
    resolve_shared_variables,
)
from wpl_keras.wpl.saving import load_wpl_model, restore_wpl
from wpl_keras.wpl.schedule import (
    ScheduleConfig,
    flush_at,
    strength_at,
    strength_schedule,
    wpl_active_at,
)

__all__ = [
    "core",
    "Covered",
    "DivergenceGuard",
    "FisherFlush",
    "SnapshotAnchors",
    "ScheduleConfig",
    "StrengthScheduler",
    "WPLDivergenceError",
    "WPLModel",
    "WPLSequential",
    "WPLConfig",
    "WPLMonitor",
    "WPLState",
    "WPLStep",
    "StepResult",
    "WPLTrainingMixin",
    "WeightPlasticity",
    "apply_wpl",
    "check_finite_loss",
    "estimate_fisher",
    "fisher_to_numpy",
    "flush_at",
    "load_wpl_model",
    "max_stable_strength",
    "fisher_update",
    "proximal_pull",
    "resolve_shared_variables",
    "restore_wpl",
    "strength_at",
    "strength_schedule",
    "wpl_penalty",
    "wpl_active_at",
]
