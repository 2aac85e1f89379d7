"""Values for strict JSON output (``json.dumps(..., allow_nan=False)``), and files written
that way."""

from __future__ import annotations

import json
import math
import os
from typing import Any


def finite_or_null(obj: Any) -> Any:
    """``obj`` with every NaN or ±Inf float replaced by None (JSON null), recursively through
    dicts, lists and tuples (tuples become lists); other values unchanged."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: finite_or_null(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite_or_null(v) for v in obj]
    return obj


def write_json_atomic(path: str, obj: Any, *, indent: int = 1) -> None:
    """Writes ``finite_or_null(obj)`` as strict JSON to ``path`` through a temporary file and a
    rename, so an interruption leaves the old file or the new one, never half of one (parent
    folders created; a failed write removes its temporary file)."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    temporary = path + ".tmp"
    try:
        with open(temporary, "w") as handle:
            json.dump(finite_or_null(obj), handle, indent=indent, allow_nan=False)
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)
