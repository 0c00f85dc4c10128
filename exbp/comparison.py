"""Whether two ONNX models — one network before and after export, conversion or quantisation —
predict and attend alike: :func:`compare`.

Per input and target (model A's top classes, explained in both models): the logits' largest
difference relative to A's largest logit, whether the top-k classes agree, and per method the
maps' agreement at corresponding layers (each model's default layer, or the ones named) — their
correlation, their difference Σ|a − b| / Σ|a| and the distance between their maximum points, in
the image's pixels. Maps are compared after bilinear resizing to the image, so the two layers may
have different layouts (channels first or last) and even different sizes.

Each figure is held against :class:`Tolerances`; the defaults are met by float32 re-exports of one
network (measured differences ~1e-6), and the float16 and int8 presets by the conversions that
README's "Frameworks" section measures.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Optional, Sequence, Union

import numpy as np
from PIL import Image

from .engine.explainer import Explainer
from .engine.walk.maps import max_point
from .errors import InputError, ModelError
from .preprocessing import MAX_IMAGE_PIXELS, load_image, resolve_preprocessing


@dataclass(frozen=True)
class Tolerances:
    logits: float = 1e-4              # max |Δ logit| / max |logit of A|, at most
    correlation: float = 0.999        # the maps' Pearson correlation, at least
    map_difference: float = 1e-3      # Σ|a − b| / Σ|a|, at most
    max_point: float = 0.01           # distance of the maps' maxima / the image's diagonal, at most
    top_k: bool = True                # the top-k classes must be the same, in the same order


TOLERANCES = {
    "float32": Tolerances(),
    "float16": Tolerances(logits=1e-2, correlation=0.999, map_difference=0.02, max_point=0.05),
    "int8": Tolerances(logits=0.3, correlation=0.95, map_difference=0.3, max_point=0.25, top_k=False),
}


@dataclass(frozen=True)
class MapAgreement:
    method: str
    correlation: float
    difference: float
    max_point_a: Optional[tuple[int, int]]
    max_point_b: Optional[tuple[int, int]]
    max_point_distance: Optional[float]      # None when either map holds no mass


@dataclass(frozen=True)
class ComparedTarget:
    image: str
    target: int
    label: str
    logits_difference: float
    top_a: tuple[int, ...]
    top_b: tuple[int, ...]
    maps: tuple[MapAgreement, ...]
    beyond: tuple[str, ...]                  # the figures beyond their tolerance

    @property
    def within(self) -> bool:
        return not self.beyond


@dataclass
class Comparison:
    model_a: str
    model_b: str
    layer_a: str                      # the layers compared (the first method's; see layers)
    layer_b: str
    tolerances: Tolerances
    rows: list[ComparedTarget] = field(default_factory=list)
    failures: dict[str, str] = field(default_factory=dict)     # input -> why it was not compared
    maps: dict = field(default_factory=dict, repr=False)   # (image, target) -> {method: (a, b)} resized
    layers: dict = field(default_factory=dict)             # method -> (layer of A, layer of B)

    @property
    def within(self) -> bool:
        return bool(self.rows) and all(row.within for row in self.rows)

    def to_dict(self) -> dict:
        return {"model_a": self.model_a, "model_b": self.model_b, "layer_a": self.layer_a,
                "layer_b": self.layer_b, "layers": {m: list(pair) for m, pair in self.layers.items()},
                "tolerances": asdict(self.tolerances),
                "within_tolerances": self.within, "failures": self.failures,
                "results": [{**asdict(row), "within": row.within} for row in self.rows]}

    def table(self) -> str:
        """One line per input, target and method, as markdown."""
        lines = ["| input | target | logits Δ | top-k | method | correlation | map Δ | max-point px | within |",
                 "| --- | --- | ---: | --- | --- | ---: | ---: | ---: | --- |"]
        for row in self.rows:
            top = "same" if row.top_a == row.top_b else f"{list(row.top_a)} vs {list(row.top_b)}"
            for agreement in row.maps:
                distance = ("—" if agreement.max_point_distance is None
                            else f"{agreement.max_point_distance:.1f}")
                lines.append(f"| {row.image} | {row.label} | {row.logits_difference:.2e} | {top} | "
                             f"{agreement.method} | {agreement.correlation:.6f} | "
                             f"{agreement.difference:.2e} | {distance} | "
                             f"{'yes' if row.within else 'no: ' + ', '.join(row.beyond)} |")
        return "\n".join(lines) + "\n"


Model = Union[str, os.PathLike, Explainer]
Input = Union[str, os.PathLike, Image.Image, np.ndarray]


def compare(model_a: Model, model_b: Model, inputs: Sequence[Input], *, methods=("mwp", "cmwp"),
            layer_a: Optional[str] = None, layer_b: Optional[str] = None, top_k: int = 5,
            targets: int = 1, tolerances: Union[Tolerances, str] = "float32", preset: Optional[str] = None,
            max_image_pixels: int = MAX_IMAGE_PIXELS, **preprocessing) -> Comparison:
    """Compare two models on ``inputs``: image files or Pillow images (each preprocessed the way
    its model takes it, with ``preset`` and ``preprocessing`` overrides as
    :func:`~exbp.resolve_preprocessing` takes them), or arrays laid out for model A's input (given
    to B transposed where B's channels come on the other side). ``targets``: explain A's top
    ``targets`` classes in both; ``top_k``: the classes whose order must agree. An input that
    cannot be read is recorded in ``failures`` and the others go on."""
    a, b = (model if isinstance(model, Explainer) else Explainer(model) for model in (model_a, model_b))
    if a.classes and b.classes and a.classes != b.classes:
        raise ModelError(f"model A has {a.classes} classes and model B {b.classes}; compare two "
                         "models of one network (the same classes)")
    if isinstance(tolerances, str):
        if tolerances not in TOLERANCES:
            raise InputError(f"unknown tolerances {tolerances!r}; use one of {', '.join(TOLERANCES)}")
        tolerances = TOLERANCES[tolerances]
    if targets < 1 or top_k < 1:
        raise InputError("targets and top_k must be at least 1")
    settings = [resolve_preprocessing(e.input_spec, e.metadata, preset, **preprocessing) for e in (a, b)]
    layers = [e.resolve_layer(layer) if layer is not None else None for e, layer in ((a, layer_a), (b, layer_b))]
    comparison = Comparison(str(_name_of(model_a)), str(_name_of(model_b)), "", "", tolerances)
    for index, item in enumerate(inputs):
        name = _input_name(item, index)
        try:
            pair, size = _model_inputs(item, (a, b), settings, max_image_pixels)
            _compare_one(comparison, name, (a, b), pair, size, layers, methods, targets, top_k)
        except InputError as exc:
            comparison.failures[name] = str(exc)
    return comparison


def _compare_one(comparison, name, explainers, pair, size, layers, methods, targets, top_k):
    a, b = explainers
    logits = [e.logits(x) for e, x in zip(explainers, pair)]
    if logits[0].shape != logits[1].shape:
        raise ModelError(f"model A's logits have shape {logits[0].shape} and model B's "
                         f"{logits[1].shape}; compare two models of one network")
    classes = [int(c) for c in np.argsort(-logits[0][0], kind="stable")[:targets]]
    results = [e.explain_methods(x, targets=classes, layer=layer, methods=methods)
               for e, x, layer in zip(explainers, pair, layers)]
    comparison.layers = {method: (results[0][method].layer, results[1][method].layer) for method in methods}
    comparison.layer_a, comparison.layer_b = comparison.layers[methods[0]]
    scale = float(np.abs(logits[0]).max()) or 1.0
    difference = float(np.abs(logits[0] - logits[1]).max()) / scale
    top = [tuple(int(c) for c in np.argsort(-l[0], kind="stable")[:top_k]) for l in logits]
    tolerances = comparison.tolerances
    for column, target in enumerate(classes):
        agreements, resized = [], {}
        for method in methods:
            maps = [r[method].resized(size).maps[0, column] for r in results]
            resized[method] = maps
            agreements.append(_agreement(method, *maps))
        beyond = []
        if difference > tolerances.logits:
            beyond.append("logits")
        if tolerances.top_k and top[0] != top[1]:
            beyond.append("top-k")
        for agreement in agreements:
            if agreement.correlation < tolerances.correlation:
                beyond.append(f"{agreement.method} correlation")
            if agreement.difference > tolerances.map_difference:
                beyond.append(f"{agreement.method} map")
            if (agreement.max_point_distance or 0.0) > tolerances.max_point * np.hypot(*size):
                beyond.append(f"{agreement.method} max point")
        label = a.labels.name(target) if a.labels else str(target)
        comparison.rows.append(ComparedTarget(name, target, label, difference, top[0], top[1],
                                              tuple(agreements), tuple(beyond)))
        comparison.maps[(name, target)] = resized


def _agreement(method: str, a: np.ndarray, b: np.ndarray) -> MapAgreement:
    a64, b64 = a.astype(np.float64).ravel(), b.astype(np.float64).ravel()
    if a64.std() == 0 or b64.std() == 0:
        correlation = 1.0 if np.array_equal(a64, b64) else 0.0
    else:
        correlation = float(np.corrcoef(a64, b64)[0, 1])
    total = float(np.abs(a64).sum())
    difference = float(np.abs(a64 - b64).sum()) / total if total else float(np.abs(b64).sum() > 0)
    points = [max_point(m) for m in (a, b)]
    distance = (None if None in points else
                float(np.hypot(points[0][0] - points[1][0], points[0][1] - points[1][1])))
    return MapAgreement(method, correlation, difference, points[0], points[1], distance)


def _model_inputs(item, explainers, settings, max_image_pixels):
    """(A's input, B's input) and the size maps are compared at (the image's, or the array's)."""
    if isinstance(item, np.ndarray):
        a, b = (e.input_spec for e in explainers)
        x = item[None] if item.ndim == len(a.shape) - 1 else item
        if x.ndim != len(a.shape) or x.shape[0] != 1:
            raise InputError(f"an input array has shape {item.shape}; model A takes {a.described()}, "
                             "and compare takes one image per array")
        other = np.moveaxis(x, 1, -1) if (b.channels_last and not a.channels_last) else (
            np.moveaxis(x, -1, 1) if (a.channels_last and not b.channels_last) else x)
        return (x, np.ascontiguousarray(other)), a.spatial(x.shape)
    image = item if isinstance(item, Image.Image) else load_image(item, max_image_pixels)
    pair = tuple(s.to_input(image, s.channels_for(e.input_spec.shape))
                 for e, s in zip(explainers, settings))
    return pair, (image.height, image.width)


def _input_name(item, index: int) -> str:
    if isinstance(item, (str, os.PathLike)):
        return str(item)
    return f"input {index}"


def _name_of(model) -> str:
    return Path(model).name if isinstance(model, (str, os.PathLike)) else "model"
