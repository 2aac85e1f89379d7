"""A wall-clock budget for any KerasTuner tuner, with the anytime curve it produced.

:func:`with_wall_clock_budget` returns a subclass of a tuner class (``keras_tuner.RandomSearch``,
``keras_tuner.Hyperband``, :class:`~wpl_keras.tuner.weight_sharing.WeightSharingTuner`, ...)
whose ``search`` stops after the first trial that ends once ``budget_s`` seconds of search have
been spent, counted over every run of the project (a resumed search continues the count).
``clock="wall"`` counts wall-clock seconds; ``clock="process"`` counts this process's CPU
seconds (all its threads, ``time.process_time``): the compute a search spent, unchanged when
other jobs share the machine (on an otherwise idle machine with ``n`` busy cores it runs about
``n`` times faster than the wall clock). After
each trial it appends ``{"trial_id", "elapsed_s", "score", "best"}`` to the project's
``wall_clock.json`` (written atomically), where ``best`` is the best objective seen so far:
the anytime curve ``best(t)``.

Example:

>>> Budgeted = with_wall_clock_budget(keras_tuner.RandomSearch)          # doctest: +SKIP
>>> tuner = Budgeted(build, objective="val_accuracy", max_trials=10_000,  # doctest: +SKIP
...                  budget_s=600, directory="runs", project_name="rs")
>>> tuner.search(x, y, validation_data=(xv, yv), epochs=3)               # doctest: +SKIP
>>> tuner.wall_clock["curve"][-1]["best"]                                # doctest: +SKIP
"""

from __future__ import annotations

import json
import math
import os
import time
from typing import Callable, Dict, Type

from wpl_keras.utils.strict_json import write_json_atomic
from wpl_keras.utils.validation import check_number

WALL_CLOCK_FILE = "wall_clock.json"
CLOCKS: Dict[str, Callable[[], float]] = {"wall": time.monotonic, "process": time.process_time}


class WallClockBudget:
    """Mixin for a KerasTuner tuner: ``budget_s`` seconds of search (see the module docstring).

    Args:
        budget_s: seconds of search, summed over every ``search`` call on the project.
        clock: ``"wall"`` or ``"process"`` (see the module docstring).
        *args, **kwargs: the tuner's own arguments.
    """

    def __init__(self, *args, budget_s: float, clock: str = "wall", **kwargs):
        self.budget_s = check_number("WallClockBudget budget_s (seconds)", budget_s, minimum=0,
                                     exclusive_minimum=True)
        if clock not in CLOCKS:
            raise ValueError(f"WallClockBudget clock must be one of {sorted(CLOCKS)}, "
                             f"got {clock!r}.")
        self.clock = clock
        self._now = CLOCKS[clock]
        self._search_started = None
        self._elapsed_before = 0.0
        super().__init__(*args, **kwargs)
        self.wall_clock = self._read_wall_clock()
        self._elapsed_before = float(self.wall_clock["elapsed_s"])

    def _wall_clock_path(self) -> str:
        return os.path.join(self.project_dir, WALL_CLOCK_FILE)

    def _read_wall_clock(self) -> Dict[str, object]:
        path = self._wall_clock_path()
        if os.path.exists(path):
            with open(path) as f:
                saved = json.load(f)
            if saved.get("clock", "wall") != self.clock:
                raise ValueError(f"{path} counts the {saved.get('clock', 'wall')!r} clock; "
                                 f"this tuner counts {self.clock!r}: a resumed search keeps "
                                 "its clock.")
            return saved
        return {"budget_s": self.budget_s, "clock": self.clock, "elapsed_s": 0.0, "curve": []}

    @property
    def elapsed_s(self) -> float:
        """Seconds of search so far, over every run of the project."""
        if self._search_started is None:
            return self._elapsed_before
        return self._elapsed_before + self._now() - self._search_started

    @property
    def budget_spent(self) -> bool:
        return self.elapsed_s >= self.budget_s

    def search(self, *fit_args, **fit_kwargs):
        """The tuner's ``search``, stopped once the budget is spent (at a trial's end); the
        time counted is saved when it returns, so a later run continues the count."""
        if self.budget_spent:
            return None
        self._search_started = self._now()
        try:
            return super().search(*fit_args, **fit_kwargs)
        except _BudgetSpent:
            self.on_search_end()
            return None
        finally:
            self._elapsed_before = self.elapsed_s
            self._search_started = None
            self._save_wall_clock()

    def _save_wall_clock(self) -> None:
        self.wall_clock["elapsed_s"] = self.elapsed_s
        write_json_atomic(self._wall_clock_path(), self.wall_clock)

    def on_trial_end(self, trial):
        super().on_trial_end(trial)
        score = trial.score
        curve = self.wall_clock["curve"]
        better = max if self.oracle.objective.direction == "max" else min
        scores = [p["score"] for p in curve if p["score"] is not None]
        if score is not None and math.isfinite(score):
            scores.append(float(score))
        curve.append({
            "trial_id": trial.trial_id, "elapsed_s": round(self.elapsed_s, 3),
            "time": round(time.time(), 3),
            "score": None if score is None or not math.isfinite(score) else float(score),
            "best": better(scores) if scores else None,
        })
        self._save_wall_clock()
        if self.budget_spent:
            raise _BudgetSpent()


class _BudgetSpent(Exception):
    """Raised at a trial's end once the budget is spent; ``search`` catches it."""


def with_wall_clock_budget(tuner_class: Type) -> Type:
    """``tuner_class`` with :class:`WallClockBudget` mixed in (its constructor takes
    ``budget_s``)."""
    return type(f"WallClock{tuner_class.__name__}", (WallClockBudget, tuner_class), {})
