"""Colour maps as 256-entry lookup tables, interpolated in RGB between anchor colours.

``inferno`` (the default), ``viridis`` and ``turbo``: ordered dark to bright, for non-negative maps
(MWP, c-MWP); ``gray``; ``diverging``: blue through light grey to red, centred on 0, used for signed
data whatever the chosen map.

Values are shown relative to a robust peak, the 99.5th percentile of the map's positive values
(never below a hundredth of its maximum): a map at the pixels puts much of its mass on a few
pixels, and scaling to its maximum alone would leave the rest invisible. Values above the peak
saturate.
"""

from __future__ import annotations

import numpy as np

_ANCHORS = {
    # each sampled from the named colour map at 0, 1/8, ..., 1
    "inferno": [(0, 0, 4), (31, 12, 72), (85, 15, 109), (136, 34, 106), (186, 54, 85),
                (227, 89, 51), (249, 140, 10), (249, 201, 50), (252, 255, 164)],
    "viridis": [(68, 1, 84), (71, 44, 122), (59, 81, 139), (44, 113, 142), (33, 144, 141),
                (39, 173, 129), (92, 200, 99), (170, 220, 50), (253, 231, 37)],
    "turbo": [(48, 18, 59), (70, 107, 227), (40, 187, 235), (50, 241, 153), (164, 252, 60),
              (237, 208, 58), (251, 128, 34), (212, 50, 8), (122, 4, 3)],
    "gray": [(0, 0, 0), (255, 255, 255)],
    "diverging": [(59, 76, 192), (141, 176, 254), (221, 221, 221), (244, 154, 123), (180, 4, 38)],
}
COLORMAPS = ("inferno", "viridis", "turbo", "gray")
PEAK_PERCENTILE = 99.5


def lookup_table(name: str) -> np.ndarray:
    anchors = np.asarray(_ANCHORS[name], dtype=np.float64)
    positions = np.linspace(0, 1, len(anchors))
    samples = np.linspace(0, 1, 256)
    return np.stack([np.interp(samples, positions, anchors[:, c]) for c in range(3)],
                    axis=1).round().astype(np.uint8)


def display_peak(values: np.ndarray) -> float:
    """The value shown at the top of the colour map (see the module's docstring)."""
    magnitude = np.abs(np.asarray(values, dtype=np.float64))
    positive = magnitude[magnitude > 0]
    if not positive.size:
        return 0.0
    return float(max(np.percentile(positive, PEAK_PERCENTILE), positive.max() / 100))


def colorize(values: np.ndarray, cmap: str = "inferno") -> np.ndarray:
    """uint8 RGB (H, W, 3): ``cmap`` scaled to the map's display peak, or, where the map has
    negative values, the diverging map scaled symmetrically."""
    values = np.asarray(values, dtype=np.float64)
    peak = display_peak(values)
    if values.min(initial=0.0) < 0:
        unit = 0.5 + 0.5 * values / peak
        table = lookup_table("diverging")
    else:
        unit = values / peak if peak > 0 else np.zeros_like(values)
        table = lookup_table(cmap)
    return table[np.clip(np.rint(unit * 255), 0, 255).astype(np.uint8)]
