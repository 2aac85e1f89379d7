"""Whole weights laid end to end: one flat vector per quantity of a WPL step.

The formulas of :mod:`wpl_keras.wpl.core` are elementwise, so the pull, the penalty and the
Fisher update of many weights can run as a few ops over one vector each of ``θ``, ``F``,
``θ*``, ``g`` and the coverage ``c``, instead of the same ops once per weight. A step that
covers many weights pays for each weight's own small ops (the micro-CNN supernet covers 241:
every op of the per-weight form appears 241 times in its traced graph, and is traced,
optimised and launched that often); laid end to end it pays a reshape per weight in and a
slice per weight out.

:class:`FlatLayout` is the static part (each weight's shape and the size of its clip unit);
a Fisher clip per unit (a whole weight, or each slice over trailing axes) is a segment sum
over consecutive units (:meth:`FlatLayout.clip`).
"""

from __future__ import annotations

import dataclasses
import math
from typing import List, Optional, Sequence, Tuple

import numpy as np
import tensorflow as tf

MaybeTensor = Optional[tf.Tensor]

#: From this many weights on, :func:`grouped_layout` lays them end to end (below it the
#: concatenations cost more than the weights' own ops: ``benchmarks/README.md``).
GROUPED_FROM = 16


def unit_size(shape: Sequence[int], clip_axes: Optional[Sequence[int]]) -> Optional[int]:
    """Entries of one clip unit of a weight of ``shape``: the whole weight for ``clip_axes``
    None, ``prod(shape[a:])`` for the trailing axes ``[a, …, rank − 1]``; None for any other
    axes (such units are not consecutive in the flat order)."""
    shape = [int(d) for d in shape]
    if clip_axes is None:
        return math.prod(shape)
    axes = sorted(a % len(shape) if shape else a for a in clip_axes)
    if not axes or axes != list(range(axes[0], len(shape))):
        return None
    return math.prod(shape[axes[0]:])


@dataclasses.dataclass(frozen=True)
class FlatLayout:
    """Weights of static ``shapes`` laid end to end in that order.

    Attributes:
        shapes: each weight's shape.
        units: each weight's clip-unit size (:func:`unit_size`; it divides the weight's size).
    """

    shapes: Tuple[Tuple[int, ...], ...]
    units: Tuple[int, ...]

    @classmethod
    def of(cls, shapes: Sequence[Sequence[int]],
           clip_axes: Optional[Sequence[Optional[Sequence[int]]]] = None
           ) -> Optional["FlatLayout"]:
        """The layout of ``shapes`` (fully defined) with their clip axes; None when a shape is
        not fully defined or a weight's clip units are not consecutive (:func:`unit_size`)."""
        shapes = [tf.TensorShape(s) for s in shapes]
        if not all(s.is_fully_defined() for s in shapes):
            return None
        axes = [None] * len(shapes) if clip_axes is None else list(clip_axes)
        units = [unit_size(s.as_list(), a) for s, a in zip(shapes, axes)]
        if any(u is None for u in units):
            return None
        return cls(tuple(tuple(s.as_list()) for s in shapes), tuple(units))

    @property
    def sizes(self) -> List[int]:
        return [math.prod(s) for s in self.shapes]

    def flatten(self, tensors: Sequence[tf.Tensor], dtype=tf.float32) -> tf.Tensor:
        """``concat(reshape(T_k, [-1]))`` in ``dtype``."""
        return tf.concat([tf.reshape(tf.cast(t, dtype), [-1]) for t in tensors], axis=0)

    def flatten_coverage(self, masks: Sequence[MaybeTensor]) -> MaybeTensor:
        """Each coverage broadcast to its weight's shape, laid end to end (None entries: 1);
        None when every entry is None."""
        if all(m is None for m in masks):
            return None
        parts = []
        for m, shape, size in zip(masks, self.shapes, self.sizes):
            if m is None:
                parts.append(tf.ones([size], tf.float32))
            else:
                parts.append(tf.reshape(tf.broadcast_to(tf.cast(m, tf.float32), shape), [-1]))
        return tf.concat(parts, axis=0)

    def unflatten(self, flat: tf.Tensor) -> List[tf.Tensor]:
        """The weights back in their shapes (slices of ``flat``)."""
        return [tf.reshape(part, shape)
                for part, shape in zip(tf.split(flat, self.sizes), self.shapes)]

    def clip(self, flat: tf.Tensor, clip_norm: float) -> tf.Tensor:
        """``F · min(1, clip / ‖F_u‖)`` per clip unit ``u`` (the L2 norm of each unit,
        ``max(‖F_u‖, 1e-12)``), as :func:`~wpl_keras.wpl.core.clip_fisher` per weight."""
        counts = np.repeat(np.asarray(self.units, np.int64),  # a weight of size 0: no unit
                           [size // unit if unit else 0
                            for size, unit in zip(self.sizes, self.units)])
        ids = tf.repeat(tf.range(len(counts), dtype=tf.int32), counts)
        norm = tf.sqrt(tf.math.segment_sum(tf.square(flat), ids))
        factor = tf.minimum(1.0, clip_norm / tf.maximum(norm, 1e-12))
        return flat * tf.gather(factor, ids)


def grouped_layout(variables: Sequence, clip_axes: Optional[Sequence] = None
                   ) -> Optional[FlatLayout]:
    """The :class:`FlatLayout` of ``variables`` when a step should lay them end to end: at
    least :data:`GROUPED_FROM` of them, all of one dtype, with static shapes and clip units
    that are consecutive (:meth:`FlatLayout.of`); None otherwise (one weight at a time)."""
    if len(variables) < GROUPED_FROM or len({tf.as_dtype(v.dtype) for v in variables}) != 1:
        return None
    return FlatLayout.of([v.shape for v in variables], clip_axes)
