"""Colour maps as 256-entry lookup tables, interpolated in RGB between anchor colours.

``inferno``: perceptually ordered, dark to bright, for non-negative maps (MWP, c-MWP).
``diverging``: blue through light grey to red, centred on 0, for signed data.
"""

from __future__ import annotations

import numpy as np

_ANCHORS = {
    # sampled from the inferno colour map at 0, 1/8, ..., 1
    "inferno": [(0, 0, 4), (31, 12, 72), (85, 15, 109), (136, 34, 106), (186, 54, 85),
                (227, 89, 51), (249, 140, 10), (249, 201, 50), (252, 255, 164)],
    "diverging": [(59, 76, 192), (141, 176, 254), (221, 221, 221), (244, 154, 123), (180, 4, 38)],
}


def lookup_table(name: str) -> np.ndarray:
    anchors = np.asarray(_ANCHORS[name], dtype=np.float64)
    positions = np.linspace(0, 1, len(anchors))
    samples = np.linspace(0, 1, 256)
    return np.stack([np.interp(samples, positions, anchors[:, c]) for c in range(3)],
                    axis=1).round().astype(np.uint8)


def colorize(values: np.ndarray) -> np.ndarray:
    """uint8 RGB (H, W, 3): inferno scaled to the map's maximum, or, where the map has negative
    values, the diverging map scaled symmetrically to its largest magnitude."""
    values = np.asarray(values, dtype=np.float64)
    if values.min(initial=0.0) < 0:
        scale = np.abs(values).max()
        unit = 0.5 + 0.5 * values / scale
        table = lookup_table("diverging")
    else:
        peak = values.max(initial=0.0)
        unit = values / peak if peak > 0 else np.zeros_like(values)
        table = lookup_table("inferno")
    return table[np.clip(np.rint(unit * 255), 0, 255).astype(np.uint8)]
