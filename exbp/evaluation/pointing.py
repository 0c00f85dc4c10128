"""The pointing game (docs/method.md §6): is a map's maximum within 15 pixels of the class's boxes?

For each (image, class present): a hit when the map's maximum point, in image pixels, lies within
``TOLERANCE`` pixels (inclusive) of any box of that class. Accuracy is the mean over classes of
each class's hit rate. VOC pairs whose boxes are all difficult are skipped. The difficult subset:
pairs whose class's boxes cover less than a quarter of the image while another class is present.
The baseline points at the image centre.
"""

from __future__ import annotations

from typing import Iterable, Optional

import numpy as np

from ..errors import InputError, TargetError
from ..engine.walk.maps import resize_map
from ..image_maps import explain_image
from .curves import deletion_insertion
from .datasets import Annotation, Box

TOLERANCE = 15.0
CENTRE = "centre"


def hit(point: Optional[tuple[float, float]], boxes: Iterable[Box], tolerance: float = TOLERANCE) -> bool:
    """Whether ``point`` (x, y) lies within ``tolerance`` px of any box; an empty map (None) misses."""
    if point is None:
        return False
    x, y = point
    for x0, y0, x1, y1 in boxes:
        dx, dy = max(x0 - x, 0.0, x - x1), max(y0 - y, 0.0, y - y1)
        if dx * dx + dy * dy <= tolerance * tolerance:
            return True
    return False


def is_difficult(annotation: Annotation, name: str) -> bool:
    """The class's boxes (their union) cover under a quarter of the image, and another class is in it."""
    if len(annotation.boxes) < 2:
        return False
    covered = np.zeros((annotation.height, annotation.width), bool)
    for x0, y0, x1, y1 in annotation.boxes[name]:
        covered[max(int(y0), 0):int(y1) + 1, max(int(x0), 0):int(x1) + 1] = True
    return bool(covered.mean() < 0.25)


def pairs(annotation: Annotation) -> list[str]:
    """The classes the game scores on this image."""
    return [name for name in annotation.boxes if name not in annotation.all_difficult]


def centre(annotation: Annotation) -> tuple[float, float]:
    return (annotation.width - 1) / 2, (annotation.height - 1) / 2


def _areas(explainer, by_pair, target: int, method: str, any_map) -> dict:
    x = any_map.model_input
    size = explainer.input_spec.spatial(x.shape)
    if method == CENTRE:
        rows, columns = np.mgrid[:size[0], :size[1]]
        saliency = -np.hypot(rows - (size[0] - 1) / 2, columns - (size[1] - 1) / 2)
    else:
        saliency = resize_map(by_pair[target, method].map, size)
    found = deletion_insertion(explainer, x, target, saliency)
    return {"deletion": found.deletion_auc, "insertion": found.insertion_auc}


def accuracy(records: list[dict], subset: str = "all") -> dict[str, float]:
    """Per method, the mean over classes of the per-class hit rate (%); ``subset``: "all" or
    "difficult". ``records``: {"method", "class", "hit", "difficult"} per scored pair."""
    rates: dict[str, dict[str, list[bool]]] = {}
    for record in records:
        if subset == "difficult" and not record["difficult"]:
            continue
        rates.setdefault(record["method"], {}).setdefault(record["class"], []).append(record["hit"])
    return {method: 100.0 * float(np.mean([np.mean(hits) for hits in by_class.values()]))
            for method, by_class in rates.items()}


def table(records: list[dict]) -> list[dict]:
    """Rows {"method", "all", "difficult", "pairs"} (and the mean "deletion" and "insertion"
    areas where the records have them), the centre baseline last."""
    everything, difficult = accuracy(records, "all"), accuracy(records, "difficult")
    methods = sorted(everything, key=lambda m: (m == CENTRE, m))
    rows = []
    for m in methods:
        own = [r for r in records if r["method"] == m]
        row = {"method": m, "all": everything[m], "difficult": difficult.get(m), "pairs": len(own)}
        for area in ("deletion", "insertion"):
            if own and all(area in r for r in own):
                row[area] = float(np.mean([r[area] for r in own]))
        rows.append(row)
    return rows


def _columns(rows: list[dict]) -> list[str]:
    return ["all", "difficult", "pairs"] + [a for a in ("deletion", "insertion") if all(a in r for r in rows)]


def markdown(rows: list[dict]) -> str:
    columns = _columns(rows)
    titles = {"all": "all (%)", "difficult": "difficult (%)", "pairs": "pairs",
              "deletion": "deletion AUC (↓)", "insertion": "insertion AUC (↑)"}
    lines = ["| method | " + " | ".join(titles[c] for c in columns) + " |",
             "| --- |" + " ---: |" * len(columns)]
    for row in rows:
        cells = [_cell(row.get(c), c) for c in columns]
        lines.append(f"| {row['method']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _cell(value, column: str) -> str:
    if value is None:
        return "–"
    if column == "pairs":
        return str(value)
    return f"{value:.1f}" if column in ("all", "difficult") else f"{value:.3f}"


def csv(rows: list[dict]) -> str:
    columns = _columns(rows)
    lines = [",".join(["method"] + columns)]
    for row in rows:
        lines.append(",".join([row["method"]] + ["" if row.get(c) is None else str(row[c]) for c in columns]))
    return "\n".join(lines) + "\n"


def model_targets(annotations: list[Annotation], mapping: dict[str, str], explainer) -> dict[str, int]:
    """Each dataset class's model class index (``mapping``: dataset class -> model class index or
    name; a class it does not map names the model's class itself), checked against the model."""
    targets = {}
    for name in sorted({name for annotation in annotations for name in annotation.boxes}):
        text = mapping.get(name, name)
        if text.lstrip("-").isdigit():
            target = int(text)
        elif explainer.labels is None:
            raise TargetError(f"dataset class {name!r} names no class of the model, which has no "
                              "labels; give a class mapping ('dataset class: model class index')")
        else:
            target = explainer.labels.index(text)
        explainer.check_targets([target])
        targets[name] = target
    return targets


def play(explainer, annotations: list[Annotation], preprocessing, methods, layer,
         targets: dict[str, int], done: dict[str, list[dict]], on_image=None, curves: bool = False):
    """Score every annotation not in ``done`` (image -> its records); returns (the records of every
    image, {image: error} for the images that failed). ``on_image(image, records)`` is called after
    each image scored here. With ``curves``, every record also holds its map's deletion and
    insertion areas (:mod:`exbp.evaluation.curves`; the centre baseline's map peaks at the centre)."""
    records, failures = [], {}
    for annotation in annotations:
        key = str(annotation.image)
        if key in done:
            records.extend(done[key])
            continue
        scored = pairs(annotation)
        image_records = []
        if scored:
            try:
                maps = explain_image(explainer, annotation.image, preprocessing,
                                     [targets[name] for name in scored], methods, layer)
            except InputError as exc:
                failures[key] = str(exc)
                continue
            by_pair = {(m.target, m.method): m for m in maps}
            for name in scored:
                difficult = is_difficult(annotation, name)
                found = {method: by_pair[targets[name], method].max_point for method in methods}
                found[CENTRE] = centre(annotation)
                for method, point in found.items():
                    record = {"image": key, "class": name, "method": method,
                              "hit": hit(point, annotation.boxes[name]), "difficult": difficult,
                              "point": None if point is None else list(point)}
                    if curves:
                        record.update(_areas(explainer, by_pair, targets[name], method, maps[0]))
                    image_records.append(record)
        records.extend(image_records)
        if on_image is not None:
            on_image(key, image_records)
    return records, failures
