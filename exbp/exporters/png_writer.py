"""PNG: a heatmap of the map resized to the image, and an overlay of it on the image (alpha 0.5)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from .colormaps import colorize

OVERLAY_ALPHA = 0.5


def overlay(image: Image.Image, resized_map: np.ndarray, alpha: float = OVERLAY_ALPHA) -> Image.Image:
    """The map (at the image's size) in its colour map, blended over the image with ``alpha``."""
    return _blend(image, colorize(resized_map), alpha)


def _blend(image: Image.Image, heat: np.ndarray, alpha: float) -> Image.Image:
    photo = np.asarray(image.convert("RGB"), dtype=np.float32)
    blended = (1 - alpha) * photo + alpha * heat
    return Image.fromarray(np.clip(np.rint(blended), 0, 255).astype(np.uint8))


def write_png(image_map, base: Path) -> list[Path]:
    heat = colorize(image_map.resized)
    heatmap, blended = (base.with_name(base.name + suffix) for suffix in ("_heatmap.png", "_overlay.png"))
    Image.fromarray(heat).save(heatmap)
    _blend(image_map.image, heat, OVERLAY_ALPHA).save(blended)
    return [heatmap, blended]
