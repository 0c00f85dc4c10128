"""``.npy``: the raw float32 map at the layer's resolution, and resized to the image."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def write_npy(image_map, base: Path) -> list[Path]:
    raw, resized = base.with_name(base.name + ".npy"), base.with_name(base.name + "_resized.npy")
    np.save(raw, image_map.map.astype(np.float32))
    np.save(resized, image_map.resized.astype(np.float32))
    return [raw, resized]
