"""``summary.json``: one per run, a record for every (image, target, method), the top classes of
every image, and every failure. Written atomically and strictly (no NaN: it is JSON)."""

from __future__ import annotations

import json
from pathlib import Path

from .atomic import write_atomically


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


def write_summary(path: Path, run: dict, records: list[dict], failures: list[dict],
                  **sections) -> Path:
    """The run's settings, its records and failures, and any further ``sections`` (the images'
    top classes, whether the run was interrupted)."""
    return write_json(path, {**run, **sections, "results": records, "failures": failures})


def write_json(path: Path, data: dict) -> Path:
    """``data`` as indented JSON (no NaN), written atomically."""
    text = json.dumps(data, indent=2, allow_nan=False) + "\n"
    return write_atomically(Path(path), lambda file: file.write(text.encode("utf-8")))


def read_summary(path: Path) -> dict:
    return json.loads(Path(path).read_text(encoding="utf-8"))
