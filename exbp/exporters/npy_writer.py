"""``.npy``: the raw float32 map at the layer's resolution (``npy``), and on request the map resized
to the image (``npy-resized``; a full-resolution array per map, 8 MB for a 1.5-megapixel photo)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .atomic import write_atomically


def write_npy(image_map, base: Path, style=None) -> list[Path]:
    return [_save(base.with_name(base.name + ".npy"), image_map.map)]


def write_resized_npy(image_map, base: Path, style=None) -> list[Path]:
    return [_save(base.with_name(base.name + "_resized.npy"), image_map.resized)]


def _save(path: Path, values: np.ndarray) -> Path:
    return write_atomically(path, lambda file: np.save(file, values.astype(np.float32)))
