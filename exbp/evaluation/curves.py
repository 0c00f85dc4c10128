"""Deletion and insertion (Petsiuk et al., RISE, 2018; as Quantus defines them): a map is judged by
what the model does when the pixels it ranks highest are removed from the image, or added to a
blank one.

The pixels of the model's input are ranked by the map (resized to the input, bilinear; ties in
row-major order) and changed in ``steps`` equal portions, most salient first. **Deletion** sets them
to 0 in the model's input space — the dataset mean under the usual normalisations — and
**insertion** copies them from the image into a blurred copy of it (a 1/8-image box blur). After
each portion the target's softmax probability is recorded; the area under the curve is the mean of
the ``steps + 1`` probabilities (trapezoidal, over a unit x-axis). Lower deletion and higher
insertion are better.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..engine.walk.maps import class_probabilities

STEPS = 16


@dataclass(frozen=True)
class Curves:
    deletion: np.ndarray       # (steps + 1,) probabilities, from the image to all pixels deleted
    insertion: np.ndarray      # (steps + 1,) from the blurred image to the image

    @property
    def deletion_auc(self) -> float:
        return _area(self.deletion)

    @property
    def insertion_auc(self) -> float:
        return _area(self.insertion)


def _area(curve: np.ndarray) -> float:
    return float((curve[:-1] + curve[1:]).mean() / 2)


def blurred(x: np.ndarray, spatial_axes: tuple[int, ...]) -> np.ndarray:
    """A box blur over ``spatial_axes`` of a (1, ...) input, 1/8 of each axis wide."""
    out = x.astype(np.float64)
    for axis in spatial_axes:
        width = max(1, x.shape[axis] // 8) | 1
        padded = np.pad(out, [(width // 2, width // 2) if a == axis else (0, 0) for a in range(x.ndim)],
                        mode="edge")
        cumulative = np.cumsum(padded, axis=axis)
        cumulative = np.concatenate([np.zeros_like(np.take(cumulative, [0], axis=axis)), cumulative], axis=axis)
        out = (np.take(cumulative, range(width, cumulative.shape[axis]), axis=axis)
               - np.take(cumulative, range(0, cumulative.shape[axis] - width), axis=axis)) / width
    return out.astype(np.float32)


def deletion_insertion(explainer, x: np.ndarray, target: int, saliency: np.ndarray,
                       steps: int = STEPS) -> Curves:
    """The two curves for one image ``x`` (1, ...) as the model takes it, and ``saliency`` at its
    spatial size (H, W)."""
    spec = explainer.input_spec
    spatial = spec.spatial_axes
    order = np.argsort(-saliency.reshape(-1), kind="stable")
    cuts = np.linspace(0, order.size, steps + 1).round().astype(int)
    start = blurred(x, spatial)
    deleted, inserted = [], []
    for cut in cuts:
        mask = np.zeros(order.size, bool)
        mask[order[:cut]] = True
        mask = mask.reshape(saliency.shape)
        shape = [1] * x.ndim
        for axis, size in zip(spatial, saliency.shape):
            shape[axis] = size
        chosen = mask.reshape(shape)
        deleted.append(np.where(chosen, 0.0, x))
        inserted.append(np.where(chosen, x, start))
    batch = np.concatenate(deleted + inserted).astype(np.float32)
    probabilities = class_probabilities(explainer.logits(batch))[:, target]
    return Curves(deletion=probabilities[:steps + 1], insertion=probabilities[steps + 1:])
