"""Values for strict JSON output (``json.dumps(..., allow_nan=False)``)."""

from __future__ import annotations

import math
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
