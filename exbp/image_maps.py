"""Maps for image files: read, preprocess, explain, and bring each map back to the original image.

:func:`explain_image` is what the CLI runs for every file, usable as is by a service: it returns one
:class:`ImageMap` per (target, method), with the map at the layer's resolution, the same map
resized (bilinear) to the original image, and its maximum point in original-image pixels — the
point the pointing game scores.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
from PIL import Image

from .engine import Explainer
from .engine.maps import resize
from .engine.targets import class_scores
from .labels import Labels
from .preprocessing import Preprocessing, load_image, model_channels


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


def explain_image(explainer: Explainer, path: str | Path, preprocessing: Preprocessing,
                  targets: Sequence = ("top1",), methods: Sequence[str] = ("mwp", "cmwp"),
                  layer: Optional[str] = None, labels: Optional[Labels] = None) -> list[ImageMap]:
    """Maps of ``methods`` for ``targets`` (ints and "topK", see Explainer.explain) on one image;
    a target that repeats (top1 also named by index) is explained once."""
    started = time.perf_counter()
    path = Path(path)
    image = load_image(path)
    channels = model_channels(explainer.graph.input_shape, preprocessing.layout)
    x = preprocessing.to_input(image, channels)
    results = explainer.explain_methods(x, targets=list(targets), layer=layer, methods=methods)
    first = results[methods[0]]
    logits = class_scores(first.logits)[0]
    probabilities = np.exp(logits - logits.max())
    probabilities /= probabilities.sum()
    chosen = list(dict.fromkeys(int(t) for t in first.targets[0]))
    seconds = time.perf_counter() - started
    maps = []
    for target in chosen:
        column = list(first.targets[0]).index(target)
        for method in methods:
            layer_map = results[method].maps[0, column]
            resized = resize(np, layer_map, (image.height, image.width)).astype(np.float32)
            maps.append(ImageMap(
                image_path=path, image=image, target=target,
                label=labels.name(target) if labels else str(target), method=method,
                layer=results[method].layer, logit=float(logits[target]),
                probability=float(probabilities[target]), map=layer_map, resized=resized,
                max_point=max_point(resized), seconds=seconds))
    return maps


def max_point(resized: np.ndarray) -> Optional[tuple[int, int]]:
    """(x, y) of the first maximum in row-major order; None when the map holds no mass."""
    if not resized.size or resized.max() <= 0:
        return None
    y, x = np.unravel_index(int(np.argmax(resized)), resized.shape)
    return int(x), int(y)
