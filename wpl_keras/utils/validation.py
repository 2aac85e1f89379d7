"""One check for every public numeric argument: α, η, clip norms, L2, learning rates,
tolerances and counts.

:func:`check_number` accepts a Python number, a NumPy scalar, a 0-d (or one-element) NumPy
array, and a concrete TensorFlow or Keras tensor or variable alike, and returns a plain Python
``float`` (``int`` with ``integer=True``), so what is stored or written to JSON is a Python
number whatever the caller passed. It refuses, with an error that names the argument, the value
and the allowed range:

* ``TypeError``: anything that is not a real number: a string, ``None`` (unless
  ``optional``), a bool (also a NumPy or tensor bool), a complex number, an array or tensor with
  more than one element, a symbolic tensor (no value while a function is traced), and a
  non-integer where ``integer=True`` asks for a count (``2.0`` is refused for a count: counts
  are ints);
* ``ValueError``: NaN, an infinity unless ``allow_inf`` (then only ``+inf``, and only where the
  range admits it), and a number outside ``[minimum, maximum]`` (ends open with
  ``exclusive_minimum`` / ``exclusive_maximum``).

:func:`check_fields` applies it to the fields of a frozen dataclass config in its
``__post_init__`` and writes the returned Python numbers back.
"""

from __future__ import annotations

import numbers
from typing import Mapping, Optional, Union

import numpy as np

Number = Union[int, float]


def check_number(
    name: str,
    value,
    *,
    minimum: Optional[Number] = None,
    maximum: Optional[Number] = None,
    exclusive_minimum: bool = False,
    exclusive_maximum: bool = False,
    integer: bool = False,
    allow_inf: bool = False,
    optional: bool = False,
) -> Optional[Number]:
    """``value`` as a Python number after checking it is a real number in the allowed range.

    The allowed range is ``minimum ≤ value ≤ maximum`` (``<`` at an end flagged exclusive; no
    bound where ``None``), finite unless ``allow_inf`` (which admits ``+inf`` only; NaN never).

    Args:
        name: what the error calls the argument, e.g. ``"apply_wpl: strength (α)"`` or
            ``"WPLConfig.fisher_momentum"``.
        value: a Python ``int``/``float``, a NumPy scalar or one-element array, or a concrete
            (eager) TensorFlow/Keras tensor or variable with one element.
        minimum, maximum: the bounds, or None.
        exclusive_minimum, exclusive_maximum: make that bound strict.
        integer: a count: the value must have an integer type (Python or NumPy int, or an
            integer tensor); the result is an ``int``.
        allow_inf: ``+inf`` is a meaningful value (e.g. ``α = inf`` of the proximal step).
        optional: ``None`` is allowed and returned as ``None``.

    Returns:
        A Python ``float`` (``int`` with ``integer=True``), or ``None`` for an optional None.

    Raises:
        TypeError: ``value`` is not a real number (or not an integer where one is needed).
        ValueError: NaN, a refused infinity, or a value outside the range.

    >>> check_number("lr", np.float32(0.5), minimum=0, exclusive_minimum=True)
    0.5
    """
    allowed = describe_range(minimum=minimum, maximum=maximum,
                             exclusive_minimum=exclusive_minimum,
                             exclusive_maximum=exclusive_maximum, integer=integer,
                             allow_inf=allow_inf, optional=optional)
    if value is None and optional:
        return None
    number = _to_number(name, value, allowed, integer)
    if number != number:
        raise ValueError(f"{name} must be {allowed}, got NaN ({_show(value)}).")
    if number in (float("inf"), float("-inf")) and not (allow_inf and number > 0):
        raise ValueError(f"{name} must be {allowed}, got {_show(value)}.")
    too_low = minimum is not None and (number <= minimum if exclusive_minimum
                                       else number < minimum)
    too_high = maximum is not None and (number >= maximum if exclusive_maximum
                                        else number > maximum)
    if too_low or too_high:
        raise ValueError(f"{name} must be {allowed}, got {_show(value)}.")
    return number


def check_fields(config, rules: Mapping[str, Mapping]) -> None:
    """In a frozen dataclass's ``__post_init__``: each field named in ``rules`` goes through
    :func:`check_number` with that rule's keyword arguments, under the name
    ``"<Class>.<field>"``, and is replaced by the Python number returned."""
    owner = type(config).__name__
    for field, rule in rules.items():
        checked = check_number(f"{owner}.{field}", getattr(config, field), **rule)
        object.__setattr__(config, field, checked)


def describe_range(*, minimum: Optional[Number] = None, maximum: Optional[Number] = None,
                   exclusive_minimum: bool = False, exclusive_maximum: bool = False,
                   integer: bool = False, allow_inf: bool = False,
                   optional: bool = False) -> str:
    """The allowed range in words, e.g. ``"a finite number > 0"``, ``"a number in (0, 1]"``,
    ``"an integer >= 1 or None"``, ``"a number >= 0 (inf allowed)"``."""
    kind = "an integer" if integer else ("a number" if allow_inf else "a finite number")
    if minimum is not None and maximum is not None:
        text = (f"{kind} in {'(' if exclusive_minimum else '['}{minimum}, "
                f"{maximum}{')' if exclusive_maximum else ']'}")
    elif minimum is not None:
        text = f"{kind} {'>' if exclusive_minimum else '>='} {minimum}"
    elif maximum is not None:
        text = f"{kind} {'<' if exclusive_maximum else '<='} {maximum}"
    else:
        text = kind
    if allow_inf and not integer:
        text += " (inf allowed)"
    return text + (" or None" if optional else "")


def _to_number(name: str, value, allowed: str, integer: bool) -> Number:
    """The Python int/float held by ``value``; ``TypeError`` for anything else."""
    def refuse(why: str) -> TypeError:
        return TypeError(f"{name} must be {allowed}, got {_show(value)} ({why}).")

    if isinstance(value, (bool, np.bool_)):
        raise refuse("a bool, not a number")
    if isinstance(value, (str, bytes)):
        raise refuse("a string, not a number")
    if value is None:
        raise refuse("None is not allowed here")
    if isinstance(value, (list, tuple, dict, set)):
        raise refuse(f"a {type(value).__name__}, not a number")
    if isinstance(value, numbers.Real) and not isinstance(value, np.generic):
        if integer and not isinstance(value, numbers.Integral):
            raise refuse("a count must be an int")
        return int(value) if integer else float(value)
    try:
        array = np.asarray(value)
    except Exception as error:  # a symbolic tensor (KerasTensor, tf.function graph tensor)
        raise refuse(f"it has no concrete value: {type(error).__name__}") from None
    if array.size != 1:
        raise refuse(f"shape {array.shape}: one number is needed")
    kind = array.dtype.kind
    if kind == "b":
        raise refuse("a bool, not a number")
    if kind not in "iuf":
        raise refuse(f"dtype {array.dtype} is not a real number")
    if integer and kind not in "iu":
        raise refuse(f"dtype {array.dtype}: a count must be an integer")
    item = array.reshape(()).item()
    return int(item) if integer else float(item)


def _show(value) -> str:
    """A short description of ``value`` for an error message: its repr, or for a tensor or
    array its type, dtype, shape and (small) contents."""
    if isinstance(value, (numbers.Number, str, bytes, np.generic, list, tuple, dict, set)) \
            or value is None:
        return repr(value)
    dtype = getattr(value, "dtype", None)
    shape = getattr(value, "shape", None)
    if dtype is None:
        text = repr(value)
        return text if len(text) <= 80 else text[:77] + "..."
    try:
        contents = np.asarray(value)
        contents = contents.tolist() if contents.size <= 4 else "..."
    except Exception:  # symbolic
        contents = "symbolic"
    try:
        shape = () if shape is None else tuple(shape)
    except (TypeError, ValueError):  # unknown rank
        shape = "unknown"
    dtype = getattr(dtype, "name", dtype)
    return f"{type(value).__name__}({contents}, dtype={dtype}, shape={shape})"
