"""From the signal at a layer to maps (REFERENCE §5): channel sum, clamp, bilinear resize."""

from __future__ import annotations

import numpy as np


def channel_sum(signal, channel_axis: int):
    """(rows, N, C, *spatial) or (rows, N, *spatial, C) -> (rows, N, *spatial)."""
    return signal.sum(axis=2 if channel_axis == 1 else -1)


def bilinear_matrix(in_size: int, out_size: int) -> np.ndarray:
    """(out_size, in_size) weights of half-pixel bilinear interpolation (torch's
    ``align_corners=False``; edge samples are clamped)."""
    source = (np.arange(out_size) + 0.5) * (in_size / out_size) - 0.5
    source = np.clip(source, 0, in_size - 1)
    low = np.floor(source).astype(np.int64)
    high = np.minimum(low + 1, in_size - 1)
    fraction = source - low
    matrix = np.zeros((out_size, in_size), dtype=np.float64)
    np.add.at(matrix, (np.arange(out_size), low), 1 - fraction)
    np.add.at(matrix, (np.arange(out_size), high), fraction)
    return matrix.astype(np.float32)


def resize(xp, maps, size) -> object:
    """Bilinear resize of the trailing spatial axes of ``maps`` to ``size``."""
    first = maps.ndim - len(size)
    for offset, target in enumerate(size):
        axis = first + offset
        if maps.shape[axis] == target:
            continue
        matrix = xp.asarray(bilinear_matrix(maps.shape[axis], target))
        maps = xp.moveaxis(xp.tensordot(matrix, maps, axes=([1], [axis])), 0, axis)
    return maps
