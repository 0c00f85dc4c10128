"""From the signal at a layer to maps (docs/method.md §5, §9): the method's reduction over the
channels (a sum; the largest magnitude; Grad-CAM's and CAM's weighting of the layer's activation),
its positive part where the method keeps it (c-MWP, Grad-CAM), bilinear resize; and
:class:`Explanation`, what a caller gets back."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Optional, Sequence

import numpy as np

from ...graph_rules import Layout
from .methods import Method


@dataclass(frozen=True)
class Explanation:
    maps: np.ndarray       # float32 (N, K, *spatial): at the layer, or resized
    targets: np.ndarray    # int64 (N, K)
    logits: np.ndarray     # float32 (N, classes) — (N, classes, *spatial) for a convolutional head
    layer: str             # the tensor the maps were computed at
    method: str            # the method's name ("mwp", "cmwp", "gradient", ...)

    def resized(self, size: Sequence[int]) -> "Explanation":
        """The same explanation with its maps resized (bilinear, half-pixel) to ``size`` (H, W)."""
        return replace(self, maps=resize_map(self.maps, size))

    def scores(self) -> np.ndarray:
        """(N, classes): each class's logit (its maximum over positions for a convolutional head)."""
        return class_scores(self.logits)

    def probabilities(self) -> np.ndarray:
        """Softmax over the classes of :meth:`scores`, (N, classes)."""
        return class_probabilities(self.logits).astype(np.float32)

    def max_points(self) -> list[list[Optional[tuple[int, int]]]]:
        """(x, y) of each map's first maximum in row-major order, per image and target; None for
        a map without mass. On a :meth:`resized` explanation, in the pixels of that size."""
        return [[max_point(m) for m in per_image] for per_image in self.maps]


def resize_map(values: np.ndarray, size: Sequence[int]) -> np.ndarray:
    """Maps (..., h, w) resized to ``size`` (H, W) with half-pixel bilinear interpolation, float32."""
    return resize(np, np.asarray(values), tuple(size)).astype(np.float32)


def class_scores(logits: np.ndarray) -> np.ndarray:
    """(N, classes): spatial logits are scored by their maximum over positions."""
    return logits if logits.ndim == 2 else logits.reshape(logits.shape[:2] + (-1,)).max(axis=-1)


def class_probabilities(logits: np.ndarray) -> np.ndarray:
    """Softmax over the classes of :func:`class_scores`, (N, classes), in float64."""
    scores = class_scores(logits).astype(np.float64)
    exp = np.exp(scores - scores.max(axis=1, keepdims=True))
    return exp / exp.sum(axis=1, keepdims=True)


def max_point(resized: np.ndarray) -> Optional[tuple[int, int]]:
    """(x, y) of the first maximum in row-major order; None when the map holds no mass."""
    if not resized.size or resized.max() <= 0:
        return None
    y, x = np.unravel_index(int(np.argmax(resized)), resized.shape)
    return int(x), int(y)


def method_maps(xp, signal, methods: Sequence[Method], blocks: Sequence[int], layout: Layout,
                activation, count: int, size: Optional[Sequence[int]]) -> dict:
    """Each method's maps, (N, K, *spatial) backend arrays, from the walk's signal (``blocks[i]``:
    the block of ``count`` rows that ``methods[i]`` reads), resized to ``size`` when given;
    ``activation``: the layer's, for the methods that read it."""
    per_channel = channels_and_positions(xp, signal, layout)
    if activation is not None:
        activation = channels_and_positions(xp, activation[None], layout)[0]
    results = {}
    for method, block in zip(methods, blocks):
        reduced = REDUCE[method.reduction](xp, per_channel[block * count:(block + 1) * count], activation)
        maps = xp.moveaxis(xp.maximum(reduced, 0) if method.clamps else reduced, 0, 1)
        results[method.name] = resize(xp, maps, size) if size is not None else maps
    return results


def channels_and_positions(xp, signal, layout: Layout):
    """(rows, *the layer's axes) -> (rows, N, C, *spatial axes in the input's order), any axis of
    size one summed away."""
    kept = (0, layout.channel_axis) + layout.spatial_axes
    summed = signal.sum(axis=tuple(axis + 1 for axis in range(layout.rank) if axis not in kept))
    in_tensor_order = sorted(kept)
    return xp.transpose(summed, (0,) + tuple(1 + in_tensor_order.index(axis) for axis in kept))


def _grad_cam(xp, signal, activation):
    """Σ_c α_c A_c, α_c the gradient's mean over the positions (Selvaraju et al.)."""
    positions = tuple(range(3, signal.ndim))
    return (signal.mean(axis=positions, keepdims=True) * activation).sum(axis=2)


def _cam(xp, signal, activation):
    """Σ_c w_c A_c (Zhou et al.): at the global average pooling's input the gradient is w_c over
    the number of positions at every position (docs/method.md §9.6)."""
    positions = 1
    for dim in signal.shape[3:]:
        positions *= int(dim)
    return (signal * activation).sum(axis=2) * positions


# (rows, N, C, *spatial) signal, (N, C, *spatial) activation -> (rows, N, *spatial)
REDUCE = {
    "sum": lambda xp, signal, activation: signal.sum(axis=2),
    "max-abs": lambda xp, signal, activation: xp.abs(signal).max(axis=2),
    "grad-cam": _grad_cam,
    "cam": _cam,
}


def concatenated(parts: Sequence[Explanation]) -> Explanation:
    """Explanations of consecutive batches as one."""
    first = parts[0]
    return Explanation(maps=np.concatenate([p.maps for p in parts]),
                       targets=np.concatenate([p.targets for p in parts]),
                       logits=np.concatenate([p.logits for p in parts]),
                       layer=first.layer, method=first.method)


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
