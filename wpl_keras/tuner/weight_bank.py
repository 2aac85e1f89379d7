"""The ENAS-style bank of weights that the trials of a weight-sharing search share, by key.

A trial's model is a fresh Keras model built from its hyperparameters; what makes two trials
share a weight is its key (:func:`weight_key`): the variable's path inside the model (the
layer's name and the variable's path within the layer, e.g. ``"dense_0/kernel"``; a top-level
model's own name is not part of it) and its shape. Same key, one weight; a layer that changes
shape under the same name is a different key, so a separate weight (as a new ENAS operation
would be), and :meth:`WeightBank.check_shapes` warns once per such path.

The bank keeps, per key, one value of each kind:

* ``"weight"``: the shared value ``θ`` (trainable weights and floating non-trainable ones such
  as a BatchNormalization's moving statistics);
* ``"slot/<name>"``: an optimizer slot of the weight (``"slot/momentum"``, ``"slot/velocity"``
  of Adam), keyed by the weight's path and the slot's shape;
* ``"fisher"``, ``"fisher_raw"``, ``"anchor"``: the WPL state of the weight (``F``, the raw EMA
  ``R`` under a Fisher normalisation, ``θ*``);

and integer counters (the optimizer's shared iteration count). A trial copies the values of
its keys into its model (:meth:`WeightBank.pull`) and back at its end
(:meth:`WeightBank.push`); keys a trial does not use keep their values untouched.

Saving (:meth:`WeightBank.save`) writes one ``.npz`` file atomically (a temporary file in the
same folder, then ``os.replace``): the arrays and a JSON manifest of every entry's kind, path,
shape and dtype, which :meth:`WeightBank.restore` checks each array against.
"""

from __future__ import annotations

import json
import os
import tempfile
import warnings
from typing import Dict, Iterable, List, NamedTuple, Optional, Sequence, Tuple

import numpy as np

#: The kinds of per-key values the bank holds besides optimizer slots (``"slot/<name>"``).
KINDS = ("weight", "anchor", "fisher", "fisher_raw")
_MANIFEST = "manifest"
_FORMAT = 1


class WeightKey(NamedTuple):
    """Where a weight sits in a trial's model: ``path`` (``"<layer name>/<variable path within
    the layer>"``) and ``shape``. Two variables with equal keys are one shared weight."""

    path: str
    shape: Tuple[int, ...]

    def label(self) -> str:
        return f"{self.path}{list(self.shape)}"


def weight_key(model, variable) -> WeightKey:
    """The key of ``variable`` in ``model``: its ``variable.path`` without the leading
    ``"<model.name>/"`` (a Sequential model prefixes its layers' paths with its own name, a
    functional model does not), and its shape."""
    path = str(getattr(variable, "path", None) or variable.name)
    prefix = f"{model.name}/"
    if path.startswith(prefix):
        path = path[len(prefix):]
    return WeightKey(path, tuple(int(d) for d in variable.shape))


def _check_kind(kind: str) -> str:
    if kind in KINDS or (kind.startswith("slot/") and len(kind) > 5):
        return kind
    raise ValueError(f"WeightBank: kind must be one of {KINDS} or 'slot/<name>', got {kind!r}.")


class WeightBank:
    """Values by ``(kind, WeightKey)`` plus integer counters (module docstring)."""

    def __init__(self):
        self.values: Dict[Tuple[str, WeightKey], np.ndarray] = {}
        self.counters: Dict[str, int] = {}
        self._warned: set = set()

    # ------------------------------------------------------------------ access
    def __contains__(self, item: Tuple[str, WeightKey]) -> bool:
        return item in self.values

    def get(self, kind: str, key: WeightKey) -> Optional[np.ndarray]:
        """The stored value (None when the key has none of this kind)."""
        return self.values.get((_check_kind(kind), key))

    def keys(self, kind: str) -> List[WeightKey]:
        """The keys that hold a value of ``kind``, in insertion order."""
        _check_kind(kind)
        return [k for (c, k) in self.values if c == kind]

    def pull(self, kind: str, pairs: Iterable[Tuple[WeightKey, object]]) -> List[bool]:
        """``v ← bank[kind, key]`` for each ``(key, variable)`` whose key the bank holds with
        the variable's shape; returns, per pair, whether it did (False: the variable keeps its
        own value, a new weight)."""
        _check_kind(kind)
        found = []
        for key, variable in pairs:
            value = self.values.get((kind, key))
            hit = value is not None and tuple(value.shape) == tuple(variable.shape)
            if hit:
                variable.assign(value)
            found.append(hit)
        return found

    def push(self, kind: str, pairs: Iterable[Tuple[WeightKey, object]]) -> None:
        """``bank[kind, key] ← v`` (a copy) for each ``(key, variable)``."""
        _check_kind(kind)
        for key, variable in pairs:
            value = np.array(variable.numpy() if hasattr(variable, "numpy") else variable)
            if tuple(value.shape) != tuple(key.shape) and not kind.startswith("slot/"):
                raise ValueError(f"WeightBank.push: {kind} of {key.label()} has shape "
                                 f"{list(value.shape)}, not the key's shape.")
            self.values[(kind, key)] = value

    def reset(self, kind: str) -> None:
        """``bank[kind, ·] ← 0`` for every key (the Fisher flush)."""
        _check_kind(kind)
        for item, value in self.values.items():
            if item[0] == kind:
                self.values[item] = np.zeros_like(value)

    def check_shapes(self, keys: Sequence[WeightKey]) -> List[WeightKey]:
        """Warns once per path that ``keys`` use with a shape other than the bank's weights
        of that path (a separate weight under the same name: name layers by role and keep a
        role's shape fixed, or accept the separate weight), in one warning per call; returns
        those keys."""
        shapes: Dict[str, set] = {}
        for key in self.keys("weight"):
            shapes.setdefault(key.path, set()).add(key.shape)
        odd = [k for k in keys if k.path in shapes and k.shape not in shapes[k.path]]
        new = [k for k in odd if k.path not in self._warned]
        if new:
            self._warned.update(k.path for k in new)
            described = "; ".join(f"{k.path!r} has shape {list(k.shape)}, earlier "
                                  f"{sorted(list(s) for s in shapes[k.path])}" for k in new)
            warnings.warn(
                f"WeightBank: {described}. Each shape is a separate shared weight (the key is "
                "the layer path and the shape); name layers by role and shape (e.g. "
                "name=f'dense_{i}_{units}') to make this explicit. Warned once per path.",
                stacklevel=3)
        return odd

    # ------------------------------------------------------------------ saving
    def manifest(self) -> dict:
        """What :meth:`save` writes beside the arrays: every entry's kind, path, shape and
        dtype (in the order of the arrays ``a0, a1, ...``) and the counters."""
        entries = [{"kind": kind, "path": key.path, "shape": list(key.shape),
                    "value_shape": list(value.shape), "dtype": str(value.dtype)}
                   for (kind, key), value in self.values.items()]
        return {"format": _FORMAT, "entries": entries, "counters": dict(self.counters)}

    def save(self, path: str) -> None:
        """Writes the bank to ``path`` (an ``.npz``) atomically: a reader sees the old file
        or the new one, never a part of it (a temporary file, fsync, ``os.replace``)."""
        folder = os.path.dirname(os.path.abspath(path))
        os.makedirs(folder, exist_ok=True)
        arrays = {f"a{k}": value for k, value in enumerate(self.values.values())}
        manifest = np.frombuffer(json.dumps(self.manifest()).encode("utf-8"), np.uint8)
        handle, temporary = tempfile.mkstemp(dir=folder, prefix=".bank-", suffix=".npz")
        try:
            with os.fdopen(handle, "wb") as f:
                np.savez(f, **arrays, **{_MANIFEST: manifest})
                f.flush()
                os.fsync(f.fileno())
            os.replace(temporary, path)
        except BaseException:
            if os.path.exists(temporary):
                os.remove(temporary)
            raise

    def restore(self, path: str) -> None:
        """Replaces the bank's contents with the file :meth:`save` wrote, after checking
        every array's shape and dtype against the manifest."""
        with np.load(path, allow_pickle=False) as data:
            manifest = json.loads(bytes(data[_MANIFEST]).decode("utf-8"))
            if manifest.get("format") != _FORMAT:
                raise ValueError(f"{path}: weight bank format {manifest.get('format')!r}, "
                                 f"this version reads {_FORMAT}.")
            values = {}
            for k, entry in enumerate(manifest["entries"]):
                value = np.array(data[f"a{k}"])
                if (list(value.shape) != entry["value_shape"]
                        or str(value.dtype) != entry["dtype"]):
                    raise ValueError(
                        f"{path}: entry {k} ({entry['kind']} of {entry['path']}) holds "
                        f"{value.dtype}{list(value.shape)}, the manifest says "
                        f"{entry['dtype']}{entry['value_shape']}; the file is damaged.")
                key = WeightKey(entry["path"], tuple(entry["shape"]))
                values[(_check_kind(entry["kind"]), key)] = value
        self.values = values
        self.counters = {str(k): int(v) for k, v in manifest.get("counters", {}).items()}
