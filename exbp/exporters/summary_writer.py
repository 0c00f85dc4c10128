"""``summary.json``: one per run, a record for every (image, target, method) and every failure."""

from __future__ import annotations

import json
from pathlib import Path


def map_record(image_map, files: list[Path]) -> dict:
    x_y = image_map.max_point
    return {
        "image": str(image_map.image_path),
        "target": image_map.target,
        "label": image_map.label,
        "logit": round(image_map.logit, 6),
        "probability": round(image_map.probability, 6),
        "method": image_map.method,
        "layer": image_map.layer,
        "map_shape": list(image_map.map.shape),
        "image_size": {"width": image_map.image.width, "height": image_map.image.height},
        "max_point": None if x_y is None else {"x": x_y[0], "y": x_y[1]},
        "files": [str(path) for path in files],
        "seconds": round(image_map.seconds, 4),
    }


def write_summary(path: Path, run: dict, records: list[dict], failures: list[dict]) -> Path:
    path.write_text(json.dumps({**run, "results": records, "failures": failures}, indent=2) + "\n")
    return path
