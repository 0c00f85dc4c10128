"""PNG: a heatmap of the map resized to the image, and an overlay of it on the image (alpha 0.5)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from .colormaps import colorize

OVERLAY_ALPHA = 0.5


def write_png(image_map, base: Path) -> list[Path]:
    heat = colorize(image_map.resized)
    heatmap, overlay = (base.with_name(base.name + suffix) for suffix in ("_heatmap.png", "_overlay.png"))
    Image.fromarray(heat).save(heatmap)
    photo = np.asarray(image_map.image.convert("RGB"), dtype=np.float32)
    blended = (1 - OVERLAY_ALPHA) * photo + OVERLAY_ALPHA * heat
    Image.fromarray(np.clip(np.rint(blended), 0, 255).astype(np.uint8)).save(overlay)
    return [heatmap, overlay]
