"""Datasets beyond one machine: exbp as a Ray Data transform (extra ``ray``).

:class:`ExplainBatch` is a callable class for ``ray.data.Dataset.map_batches``: each Ray actor
loads the model once, then maps batches of images to maps, max points and top classes. A batch
holds a ``path`` column (image files, read on the worker), an ``image`` column (decoded images,
as ``ray.data.read_images`` gives them), or an ``input`` column (arrays already preprocessed for
the model). Rows keep their order and their other columns; a row that cannot be explained keeps
its place with its ``error`` and empty maps, so no row is lost::

    import ray
    from exbp.ray import ExplainBatch

    paths = ray.data.from_items([{"path": p} for p in image_paths])
    maps = paths.map_batches(ExplainBatch, fn_constructor_kwargs={"model": "model.onnx"},
                             batch_size=16, concurrency=4)
    maps.write_parquet("maps/")

On a cluster the same code runs after ``ray.init(address="auto")`` (or with ``RAY_ADDRESS`` set);
the model file and the images must be readable from every node (a shared file system or object
storage paths that Pillow's ``open`` reads through fsspec are the caller's to provide).
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence

import numpy as np
from PIL import Image

from .engine.explainer import Explainer
from .errors import ExbpError, InputError
from .image_maps import explain_images
from .preprocessing import resolve_preprocessing

COLUMNS = ("path", "image", "input")


class ExplainBatch:
    """``map_batches`` transform: one Explainer per actor, maps per batch (see the module)."""

    def __init__(self, model, methods: Sequence[str] = ("mwp", "cmwp"), targets: Sequence = ("top1",),
                 layer: Optional[str] = None, preset: Optional[str] = None, **preprocessing):
        self.explainer = Explainer(model)
        self.methods, self.targets, self.layer = tuple(methods), list(targets), layer
        self.settings = resolve_preprocessing(self.explainer.input_spec, self.explainer.metadata,
                                              preset, **preprocessing)

    def __call__(self, batch: dict) -> dict:
        column = next((name for name in COLUMNS if name in batch), None)
        if column is None:
            raise InputError(f"a batch needs a column named one of {', '.join(COLUMNS)}; it has "
                             f"{', '.join(batch) or 'none'}")
        items = list(batch[column])
        if column == "input":
            rows = [self._explain_input(np.asarray(x)) for x in items]
        else:
            images = [Image.fromarray(np.asarray(x)) if column == "image" else Path(str(x)) for x in items]
            rows = [self._row(result) for result in explain_images(
                self.explainer, images, self.settings, self.targets, self.methods, self.layer)]
        return {**batch, **_columns(rows, self.methods)}

    def _explain_input(self, x):
        try:
            results = self.explainer.explain_methods(x[None], targets=self.targets, layer=self.layer,
                                                     methods=self.methods)
        except ExbpError as exc:
            return {"error": str(exc)}
        first = next(iter(results.values()))
        size = self.explainer.input_spec.spatial(x[None].shape)      # max points in input pixels
        resized = {name: result.resized(size) for name, result in results.items()}
        return {"error": "", "target": first.targets[0],
                "probability": first.probabilities()[0][first.targets[0]],
                **{name: result.maps[0] for name, result in results.items()},
                **{f"{name}_max_point": np.asarray(resized[name].max_points()[0], dtype=np.float64)
                   for name in results}}

    def _row(self, result):
        if isinstance(result, InputError):
            return {"error": str(result)}
        return {"error": "", "target": np.array([m.target for m in result if m.method == self.methods[0]]),
                "probability": np.array([m.probability for m in result if m.method == self.methods[0]]),
                **{name: np.stack([m.map for m in result if m.method == name]) for name in self.methods},
                **{f"{name}_max_point": np.array([m.max_point or (np.nan, np.nan) for m in result
                                                  if m.method == name], dtype=np.float64)
                   for name in self.methods}}


def _columns(rows: list[dict], methods: Sequence[str]) -> dict:
    """Rows -> columns, a failed row's arrays zero-filled like a good row's (NaN max points)."""
    good = next((row for row in rows if not row["error"]), None)
    names = ["target", "probability", *methods, *(f"{m}_max_point" for m in methods)]
    columns = {"error": np.array([row["error"] for row in rows], dtype=object)}
    for name in names:
        if good is None:
            continue
        template = np.asarray(good[name])
        filler = np.full_like(template, np.nan if template.dtype.kind == "f" else -1)
        columns[name] = np.stack([np.asarray(row[name]) if not row["error"] else filler for row in rows])
    return columns
