"""Maps for image files: read, preprocess, explain, and bring each map back to the original image.

:func:`explain_image` is what the CLI runs for every file, usable as is by a service: it returns one
:class:`ImageMap` per (target, method), with the map at the layer's resolution, the same map
resized (bilinear) to the original image, and its maximum point in original-image pixels — the
point the pointing game scores. It uses the Explainer's public API only.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
from PIL import Image

from .preprocessing import Preprocessing, load_image


@dataclass(frozen=True)
class ImageMap:
    image_path: Path
    image: Image.Image            # the original image, as read
    target: int
    label: str                    # the class name, or the index when no labels are known
    method: str
    layer: str
    logit: float
    probability: float            # softmax of the logits over classes
    map: np.ndarray               # float32, at the layer's spatial size
    resized: np.ndarray           # float32 (image height, image width)
    max_point: Optional[tuple[int, int]]   # (x, y) in original-image pixels; None for an empty map
    seconds: float                # time taken for this image, shared by its maps


def explain_image(explainer, path: str | Path, preprocessing: Preprocessing,
                  targets: Sequence = ("top1",), methods: Sequence[str] = ("mwp", "cmwp"),
                  layer: Optional[str] = None) -> list[ImageMap]:
    """Maps of ``methods`` for ``targets`` (as Explainer.explain takes them) on one image; a
    target that repeats (top1 also named by index) is explained once."""
    started = time.perf_counter()
    path = Path(path)
    image = load_image(path)
    x = preprocessing.to_input(image, preprocessing.channels_for(explainer.input_spec.shape))
    results = explainer.explain_methods(x, targets=list(targets), layer=layer, methods=methods)
    first = next(iter(results.values()))
    logits, probabilities = first.scores()[0], first.probabilities()[0]
    chosen = list(dict.fromkeys(int(t) for t in first.targets[0]))
    resized = {name: result.resized((image.height, image.width)) for name, result in results.items()}
    points = {name: result.max_points()[0] for name, result in resized.items()}
    seconds = time.perf_counter() - started
    labels = explainer.labels
    maps = []
    for target in chosen:
        column = list(first.targets[0]).index(target)
        for name, result in results.items():
            maps.append(ImageMap(
                image_path=path, image=image, target=target,
                label=labels.name(target) if labels else str(target), method=name,
                layer=result.layer, logit=float(logits[target]),
                probability=float(probabilities[target]), map=result.maps[0, column],
                resized=resized[name].maps[0, column], max_point=points[name][column],
                seconds=seconds))
    return maps
