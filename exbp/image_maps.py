"""Maps for image files: read, preprocess, explain, and bring each map back to the original image.

:func:`explain_image` is what the CLI runs for every file, usable as is by a service: it returns one
:class:`ImageMap` per (target, method), with the map at the layer's resolution, the same map
resized (bilinear) to the original image, and its maximum point in original-image pixels — the
point the pointing game scores. It uses the Explainer's public API only.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
from PIL import Image

from .errors import InputError
from .preprocessing import MAX_IMAGE_PIXELS, Preprocessing, load_image

TOP_CLASSES = 5        # the classes an image's summary lists


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
    top_classes: tuple = ()       # the image's most probable classes: ((class, label, probability), ...)
    model_input: Optional[np.ndarray] = None   # the preprocessed image as the model took it, (1, ...)


def explain_image(explainer, path: str | Path, preprocessing: Preprocessing,
                  targets: Sequence = ("top1",), methods: Sequence[str] = ("mwp", "cmwp"),
                  layer: Optional[str] = None, max_image_pixels: int = MAX_IMAGE_PIXELS) -> list[ImageMap]:
    """Maps of ``methods`` for ``targets`` (as Explainer.explain takes them) on one image; a
    target that repeats (top1 also named by index) is explained once. InputError where the image
    cannot be read or explained."""
    (result,) = explain_images(explainer, [path], preprocessing, targets, methods, layer,
                               max_image_pixels)
    if isinstance(result, InputError):
        raise result
    return result


def explain_images(explainer, paths: Sequence[str | Path | Image.Image], preprocessing: Preprocessing,
                   targets: Sequence = ("top1",), methods: Sequence[str] = ("mwp", "cmwp"),
                   layer: Optional[str] = None, max_image_pixels: int = MAX_IMAGE_PIXELS):
    """:func:`explain_image` for several images in one batch (the model runs once for all the
    images whose inputs have one shape); per path, its maps or the InputError that stopped it, so
    that one bad image loses nothing but itself. Errors that concern the model, the targets or
    the layer rather than an image are raised. A path may also be an image already decoded (a
    Pillow image), named by its ``filename`` or its place in ``paths``."""
    started = time.perf_counter()
    results: list = [None] * len(paths)
    inputs = {}
    channels = preprocessing.channels_for(explainer.input_spec.shape)
    for index, path in enumerate(paths):
        try:
            if isinstance(path, Image.Image):
                image, path = path, getattr(path, "filename", "") or f"image {index}"
            else:
                image = load_image(path, max_image_pixels)
            inputs[index] = (Path(path), image, preprocessing.to_input(image, channels))
        except InputError as exc:
            results[index] = exc
    by_shape: dict[tuple, list[int]] = {}
    for index, (_, _, x) in inputs.items():
        by_shape.setdefault(x.shape, []).append(index)

    def explain_group(group: list[int]) -> None:
        batch = np.concatenate([inputs[i][2] for i in group])
        explained = explainer.explain_methods(batch, targets=list(targets), layer=layer,
                                              methods=methods)
        seconds = (time.perf_counter() - started) / len(paths)
        for row, index in enumerate(group):
            path, image, x = inputs[index]
            results[index] = _image_maps(explainer, explained, row, path, image, seconds, x)

    for group in by_shape.values():
        try:
            explain_group(group)
        except InputError as exc:
            if len(group) == 1:
                results[group[0]] = exc
                continue
            for index in group:        # one image's input may fail the batch: each alone
                try:
                    explain_group([index])
                except InputError as single:
                    results[index] = single
    return results


def _image_maps(explainer, results, row: int, path: Path, image: Image.Image, seconds: float,
                model_input: np.ndarray):
    first = next(iter(results.values()))
    logits, probabilities = first.scores()[row], first.probabilities()[row]
    chosen = list(dict.fromkeys(int(t) for t in first.targets[row]))
    resized = {name: replace(result, maps=result.maps[row:row + 1]).resized((image.height, image.width))
               for name, result in results.items()}
    points = {name: result.max_points()[0] for name, result in resized.items()}
    labels = explainer.labels
    name_of = labels.name if labels else str
    top = tuple((int(c), name_of(int(c)), float(probabilities[c]))
                for c in np.argsort(-probabilities, kind="stable")[:TOP_CLASSES])
    maps = []
    for target in chosen:
        column = list(first.targets[row]).index(target)
        for name, result in results.items():
            maps.append(ImageMap(
                image_path=path, image=image, target=target,
                label=name_of(target), method=name,
                layer=result.layer, logit=float(logits[target]),
                probability=float(probabilities[target]), map=result.maps[row, column],
                resized=resized[name].maps[0, column], max_point=points[name][column],
                seconds=seconds, top_classes=top, model_input=model_input))
    return maps
