"""SavedModel exports that serve through every SavedModel loader, in TensorFlow Serving's layout.

**Layout.** An export folder is a TensorFlow Serving *model base path*. Each export writes the
next *version folder* ``<export_dir>/<n>/`` (``n`` is one more than the largest integer-named
folder already there, 1 in a new folder) holding the SavedModel (``saved_model.pb``,
``variables/``, ``assets/``) and the export's side files (e.g. ``cell.json``), which every
SavedModel loader ignores. The version is written under a hidden temporary name first and
renamed when complete, so a server watching ``<export_dir>`` never loads half an export.

**Why the captured variables are tracked.** On the TensorFlow backend a Keras 3 variable
wraps a ``tf.Variable``. When a ``tf.Module`` tracks the Keras variable (directly, or through
a tracked Keras layer or model), ``tf.saved_model.save`` writes the wrapper as a variable of
its own, and the SavedModel's saver restores that one. The serving functions, though, read the
wrapped ``tf.Variable`` they captured, and no saver op restores it. TF2's
``tf.saved_model.load`` rebinds the captures through the object graph, which hides the gap.
The session-based loader (``tf.compat.v1.saved_model.loader.load``, ``saved_model_cli run``,
TensorFlow Serving's C++ server) restores through the saver and then fails with
``Could not find variable <name>``. :func:`save_serving_module` makes the module track
exactly the ``tf.Variable`` objects its signatures capture, as ``keras.export.ExportArchive``
does, so the saver restores the handles the graphs read. It refuses a module that tracks a
Keras variable: reach Keras models through a closure instead.
"""

from __future__ import annotations

import os
import shutil
from typing import Callable, Dict, Iterable, List, Mapping, Optional, Tuple

import keras
import tensorflow as tf

SAVED_MODEL_FILE = "saved_model.pb"


def captured_variables(functions: Iterable) -> Tuple[tf.Variable, ...]:
    """The ``tf.Variable`` objects that ``functions`` capture, each once, in first-use order.

    Args:
        functions: concrete functions, or ``tf.function`` objects with an input signature
            (their one concrete function is taken).
    """
    seen, found = set(), []
    for function in functions:
        if not hasattr(function, "variables"):
            function = function.get_concrete_function()
        for variable in function.variables:
            if id(variable) not in seen:
                seen.add(id(variable))
                found.append(variable)
    return tuple(found)


def version_numbers(export_dir: str) -> List[int]:
    """The integer-named version folders of ``export_dir``, ascending (empty when none)."""
    if not os.path.isdir(export_dir):
        return []
    return sorted(int(name) for name in os.listdir(export_dir)
                  if name.isdigit() and os.path.isdir(os.path.join(export_dir, name)))


def latest_version_dir(export_dir: str) -> Optional[str]:
    """The highest version folder of ``export_dir`` holding a SavedModel, or None."""
    for number in reversed(version_numbers(export_dir)):
        path = os.path.join(export_dir, str(number))
        if os.path.exists(os.path.join(path, SAVED_MODEL_FILE)):
            return path
    return None


def _tracked_keras_variables(module: tf.Module) -> List[str]:
    return [getattr(obj, "path", None) or obj.name
            for obj in tf.train.TrackableView(module).descendants()
            if isinstance(obj, keras.Variable)]


def save_serving_module(module: tf.Module, export_dir: str, signatures: Mapping[str, object],
                        *, side_files: Optional[Callable[[str], None]] = None) -> str:
    """Writes ``module`` as the next version folder of ``export_dir``; returns its path.

    Args:
        module: the module to save. It must reach Keras models through closures (no tracked
            Keras layer, model or variable); the variables its signatures capture are
            tracked here, as ``module.serving_variables``.
        export_dir: the model base path (created when missing).
        signatures: signature name → ``tf.function`` with an input signature, or concrete
            function.
        side_files: called with the version folder's temporary path after the SavedModel is
            written there, to add files (e.g. ``cell.json``).

    Raises:
        ValueError: ``module`` tracks Keras variables (named).
    """
    tracked = _tracked_keras_variables(module)
    if tracked:
        raise ValueError(
            f"save_serving_module: the module tracks Keras variables ({', '.join(tracked[:5])}"
            f"{', ...' if len(tracked) > 5 else ''}); the session-based loader would not "
            "restore what the signatures read. Reach the Keras model through a closure.")
    concrete: Dict[str, object] = {
        name: fn if hasattr(fn, "variables") else fn.get_concrete_function()
        for name, fn in signatures.items()}
    module.serving_variables = list(captured_variables(concrete.values()))
    os.makedirs(export_dir, exist_ok=True)
    number = (version_numbers(export_dir) or [0])[-1] + 1
    final = os.path.join(export_dir, str(number))
    partial = os.path.join(export_dir, f".partial-{number}-{os.getpid()}")
    try:
        tf.saved_model.save(module, partial, signatures=concrete)
        if side_files is not None:
            side_files(partial)
        os.rename(partial, final)
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    return final
