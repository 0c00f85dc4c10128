"""The public API: :class:`Explainer` and :class:`Explanation`.

    ex = exbp.Explainer("model.onnx")              # or an onnx.ModelProto; device="cpu"
    r = ex.explain(x, targets=[281], layer=None, method="cmwp", resize=False)
    r.maps     # float32 (N, K, h, w)      r.targets  # int64 (N, K)
    r.logits   # float32 (N, classes)      r.layer    # the tensor the maps are at

The model is loaded, checked and canonicalised once; its onnxruntime session, walk plans and
backend copies of the weights (with their positive and negative parts) are built once and reused
by every call.
"""

from __future__ import annotations

import difflib
import os
from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np
import onnx

from ..errors import InputError, LayerError, MethodError, ModelError, UnsupportedOpError
from .backends import backend_for
from .canonicalize import canonicalize
from .graph import Graph, shapes_for_input
from .layers import LayerInfo, build_catalogue
from .loading import default_opset, load_model
from .maps import channel_sum, resize
from .planning import (WalkPlan, descendants, find_logits, plan_walk, reaching_logits,
                       refusal_of, require_classifier)
from . import precompute
from .recording import Recorder, without_initializer_data
from .targets import resolve_targets, top_signal
from .tensors import ConstantCache, TensorStore
from .walker import walk

METHODS = ("mwp", "cmwp")


@dataclass(frozen=True)
class Explanation:
    maps: np.ndarray       # float32 (N, K, *spatial): at the layer, or at the input's size if resized
    targets: np.ndarray    # int64 (N, K)
    logits: np.ndarray     # float32 (N, classes) — (N, classes, *spatial) for a convolutional head
    layer: str             # the tensor the maps were computed at
    method: str            # "mwp" or "cmwp"


class Explainer:
    """Excitation Backprop maps for one ONNX model.

    ``model``: a path to an .onnx file or an onnx.ModelProto. ``device``: "cpu" (NumPy) or, with
    the ``gpu`` extra, "cuda" / "cuda:N" / "auto"."""

    def __init__(self, model: str | os.PathLike | onnx.ModelProto, device: str = "cpu"):
        loaded = load_model(model)
        self.original = Graph.from_model(loaded, default_opset(loaded))
        # the weights now live in self.original.constants: ``model`` keeps the structure only
        self.model, released = without_initializer_data(loaded, self.original.constants)
        del loaded
        self.metadata = {prop.key: prop.value for prop in self.model.metadata_props}
        self.canonical = canonicalize(self.original)
        self.graph = self.canonical.graph
        self.backend = backend_for(device)
        self.device = self.backend.name
        self.logits_name = find_logits(self.graph)
        self.catalogue = build_catalogue(self.graph, self.logits_name)
        self._host_constants = dict(self.graph.constants)
        self._constants = ConstantCache(self.backend, self._host_constants)
        self._plans: dict[str, WalkPlan] = {}
        self._shapes_by_input: dict[tuple, dict] = {}
        self._original_tensors = {self.original.input_name} | {
            name for node in self.original.nodes for name in node.outputs}
        self._released = released
        self._non_negative = frozenset(precompute.non_negative_tensors(self.graph))
        self._recorders: dict[str, tuple[Recorder, dict]] = {}
        self._fixed_batch = self.graph.input_shape[0] if self.graph.input_shape else None

    # ---- what the model offers ----------------------------------------------------------------

    def layers(self) -> list[LayerInfo]:
        """Every tensor that can carry a map as (name, op type, shape), in topological order,
        then the logits."""
        logits_op = self.graph.producer.get(self.logits_name)
        return [*self.catalogue.layers,
                LayerInfo(self.logits_name, logits_op.op_type if logits_op else "Input",
                          self.graph.shapes.get(self.logits_name))]

    def default_layer(self, input_shape: Optional[Sequence[int]] = None) -> str:
        """The layer used when none is named (REFERENCE §5), for inputs of ``input_shape``."""
        shapes = self.graph.shapes
        static = shapes.get(self.graph.input_name) or ()
        if input_shape is not None and tuple(static[1:]) != tuple(input_shape[1:]):
            input_shape = tuple(int(d) for d in input_shape)
            if input_shape not in self._shapes_by_input:
                self._shapes_by_input[input_shape] = shapes_for_input(
                    self.graph.inference_model, self.graph.input_name, input_shape)
            shapes = {**shapes, **self._shapes_by_input[input_shape]}
        return self.catalogue.default_layer(shapes, self.graph.input_name)

    @property
    def classes(self) -> Optional[int]:
        """The number of classes, when the logits' shape is known before running."""
        shape = self.graph.shapes.get(self.logits_name) or ()
        return shape[1] if len(shape) > 1 and isinstance(shape[1], int) else None

    def resolve_layer(self, layer: str) -> str:
        """The tensor a layer name (tensor, node or removed tensor) means; LayerError if none."""
        return self._resolve_layer(layer, None)

    def refusal(self, layer: Optional[str] = None, method: str = "mwp",
                input_shape: Optional[Sequence[int]] = None) -> Optional[str]:
        """Why explaining with ``method`` at ``layer`` would be refused, or None if it would run."""
        try:
            plan = self._plan(self._resolve_layer(layer, input_shape))
            if method == "cmwp":
                require_classifier(plan)
        except (LayerError, MethodError, UnsupportedOpError) as exc:
            return str(exc)
        return None

    def unsupported_nodes(self) -> list[tuple[str, str, str, bool]]:
        """(op type, node name, reason, on the input-to-logits path) for every node the walk
        could not pass; nodes after the logits (the final Softmax) are never walked."""
        on_path = reaching_logits(self.graph, self.logits_name)
        after_logits = descendants(self.graph, self.logits_name) - {self.logits_name}
        found = []
        for node in self.graph.nodes:
            if all(name in after_logits for name in node.outputs):
                continue
            reason = refusal_of(node, self.graph)
            if reason:
                found.append((node.op_type, node.name, reason,
                              any(name in on_path for name in node.outputs)))
        return found

    # ---- explaining ---------------------------------------------------------------------------

    def explain(self, x, targets="top1", layer: Optional[str] = None, method: str = "cmwp",
                resize: bool = False) -> Explanation:
        """Maps of ``method`` ("mwp" or "cmwp") for ``targets`` at ``layer``.

        ``x``: float32 (N, C, H, W) as the model takes it. ``targets``: an int, a list of ints (the
        same for every image), an (N, K) array of ints, or "top1"/"top5". ``layer``: a tensor name
        (a node name means its first output); None picks :meth:`default_layer`. ``resize``: maps
        at the input's spatial size instead of the layer's."""
        if not isinstance(method, str):
            raise MethodError(f"method must be one of {', '.join(METHODS)}; for several use "
                              "explain_methods")
        return self.explain_methods(x, targets, layer, (method,), resize)[method]

    def explain_methods(self, x, targets="top1", layer: Optional[str] = None,
                        methods: Sequence[str] = METHODS, resize: bool = False) -> dict[str, Explanation]:
        """Like :meth:`explain`, for several methods from one forward pass and one walk."""
        methods = _checked_methods(methods)
        x = self._checked_input(x)
        plan = self._plan(self._resolve_layer(layer, x.shape))
        with self.backend.computing():
            if self._fixed_batch == 1 and x.shape[0] > 1:
                parts = [self._explain_batch(x[i:i + 1], targets if np.ndim(targets) < 2 else
                                             np.asarray(targets)[i:i + 1], plan, methods, resize)
                         for i in range(x.shape[0])]
                return {m: _concatenated([p[m] for p in parts]) for m in methods}
            return self._explain_batch(x, targets, plan, methods, resize)

    def propagate(self, x, top, layer: Optional[str] = None,
                  methods: Sequence[str] = ("mwp",)) -> np.ndarray:
        """The whole signal at ``layer`` for an arbitrary signal ``top`` at the logits.

        ``top``: (K, N, *logits shape), e.g. one-hots or a class's spatial mask. Returns
        (len(methods)·K, N, *layer shape): a block of K rows per method, before the channel sum and
        the c-MWP clamp. For research and for tests; :meth:`explain` is the everyday call."""
        methods = _checked_methods(methods)
        x = self._checked_input(x)
        plan = self._plan(self._resolve_layer(layer, x.shape, needs_map=False))
        with self.backend.computing():
            logits, tensors = self._record(x, plan)
            top = self.backend.asarray(top)
            if tuple(top.shape[1:]) != logits.shape:
                raise InputError(f"top has shape {tuple(top.shape)}; it must be (K,) + the "
                                 f"logits' shape {logits.shape}")
            return self.backend.to_host(self._walk(plan, tensors, top, methods))

    def _record(self, x, plan: WalkPlan) -> tuple[np.ndarray, TensorStore]:
        recorder, owners = self._recorder(plan)
        recorded, shapes = recorder.run(x, plan.values | {self.logits_name} | set(owners),
                                        plan.shapes)
        logits = self.backend.to_host(recorded[self.logits_name]).astype(np.float32, copy=False)
        values = {name: self.backend.asarray(value) for name, value in recorded.items()}
        return logits, TensorStore(self._constants, values, shapes, owners, self._non_negative)

    def _recorder(self, plan: WalkPlan) -> tuple[Recorder, dict]:
        """The recording session of a walk plan, built on first use."""
        if plan.layer not in self._recorders:
            nodes, arrays, owners = [], {}, {}
            if self.backend.records_precomputed:
                nodes, arrays, owners = precompute.plan_helpers(
                    [step.node for step in plan.steps], self.graph, self._non_negative)
            recorder = Recorder(self.model, self.graph.input_name,
                                plan.values | {self.logits_name} | set(owners), plan.shapes,
                                shared={**self._released, **arrays}, extra_nodes=nodes,
                                backend=self.backend)
            self._recorders[plan.layer] = (recorder, owners)
        return self._recorders[plan.layer]

    def _walk(self, plan: WalkPlan, tensors: TensorStore, top, methods: tuple[str, ...]):
        if "cmwp" in methods:
            require_classifier(plan)
        contrast = None if methods == ("mwp",) else tuple(float(m == "cmwp") for m in methods)
        return walk(plan, tensors, top, contrast)

    def _explain_batch(self, x, targets, plan: WalkPlan, methods, resize_maps):
        backend, xp = self.backend, self.backend.xp
        logits, tensors = self._record(x, plan)
        if logits.ndim < 2 or logits.shape[0] != x.shape[0]:
            raise ModelError(f"the logits {self.logits_name!r} have shape {logits.shape}; exbp "
                             "needs (N, classes) or (N, classes, *spatial)")
        target_array = resolve_targets(targets, logits)
        top = top_signal(xp, tensors.value(self.logits_name), target_array)
        signal = self._walk(plan, tensors, top, methods)
        if signal.ndim < 4:
            raise LayerError(f"layer {plan.layer!r} has shape {tuple(signal.shape[1:])}, with no "
                             "spatial axes; choose a tensor from Explainer.layers()")
        summed = channel_sum(signal, self.catalogue.channel_axis(plan.layer))
        count = target_array.shape[1]
        results = {}
        for block, method in enumerate(methods):
            maps = xp.moveaxis(summed[block * count:(block + 1) * count], 0, 1)   # (N, K, *spatial)
            if method == "cmwp":
                maps = xp.maximum(maps, 0)
            if resize_maps:
                maps = resize(xp, maps, self.catalogue.spatial(self.graph.input_name, x.shape))
            results[method] = Explanation(maps=backend.to_host(maps).astype(np.float32),
                                          targets=target_array, logits=logits, layer=plan.layer,
                                          method=method)
        return results

    # ---- helpers -------------------------------------------------------------------------------

    def _plan(self, layer: str) -> WalkPlan:
        if layer not in self._plans:
            plan = plan_walk(self.graph, layer, self.logits_name)
            if plan.dual_weight is not None:
                negated, weight = plan.dual_weight
                self._host_constants[negated] = -self._host_constants[weight]
            self._plans[layer] = plan
        return self._plans[layer]

    def _resolve_layer(self, layer: Optional[str], input_shape, needs_map: bool = True) -> str:
        """The canonical tensor for a layer name; with ``needs_map``, one that can carry a map."""
        if layer is None:
            return self.default_layer(input_shape)
        if not isinstance(layer, str):
            raise LayerError(f"layer must be a tensor or node name, got {layer!r}")
        name = layer
        if name not in self._original_tensors:
            node = next((n for n in self.original.nodes if n.name == name), None)
            if node is None:
                close = difflib.get_close_matches(name, self.catalogue.names(), n=3)
                hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else \
                    "; list them with Explainer.layers() or `exbp layers MODEL`"
                raise LayerError(f"unknown layer {name!r}{hint}")
            name = node.outputs[0]
        name = self.canonical.resolve(name)
        if needs_map and name not in self.catalogue.names():
            raise LayerError(f"layer {layer!r} cannot carry a map: it is not a tensor with "
                             "spatial axes on the path from the input to the logits; list the "
                             "layers with Explainer.layers() or `exbp layers MODEL`")
        return name

    def _checked_input(self, x):
        """The input as float32: a NumPy array, or a CuPy array that stays on the GPU when the
        backend is CUDA (a CPU backend brings it to the host)."""
        on_device = hasattr(x, "__cuda_array_interface__")
        if on_device and not hasattr(self.backend, "device_id"):
            x, on_device = x.get(), False
        xp = self.backend.xp if on_device else np
        try:
            x = xp.asarray(x)
        except Exception:
            raise InputError(f"the input must be an array, got {type(x).__name__}") from None
        expected = self.graph.input_shape
        if x.dtype.kind not in "fiu":
            raise InputError(f"the input must hold numbers, got dtype {x.dtype}")
        shown = "(" + ", ".join("N" if i == 0 else str(d if d is not None else "?")
                                for i, d in enumerate(expected)) + ")"
        if expected and (x.ndim != len(expected) or any(
                d is not None and i > 0 and d != s for i, (d, s) in enumerate(zip(expected, x.shape)))):
            raise InputError(f"the input has shape {tuple(x.shape)}; the model's input "
                             f"{self.graph.input_name!r} takes {shown}")
        if x.shape[0] == 0:
            raise InputError("the input holds no images (batch size 0)")
        if not bool(xp.all(xp.isfinite(x))):
            raise InputError("the input contains NaN or infinite values")
        return x.astype(xp.float32, copy=False)


def _checked_methods(methods: Sequence[str]) -> tuple[str, ...]:
    methods = tuple(dict.fromkeys(methods)) if not isinstance(methods, str) else (methods,)
    unknown = [m for m in methods if m not in METHODS]
    if unknown or not methods:
        raise MethodError(f"unknown method {unknown[0] if unknown else None!r}; use one of "
                          f"{', '.join(METHODS)}")
    return methods


def _concatenated(parts: list[Explanation]) -> Explanation:
    first = parts[0]
    return Explanation(maps=np.concatenate([p.maps for p in parts]),
                       targets=np.concatenate([p.targets for p in parts]),
                       logits=np.concatenate([p.logits for p in parts]),
                       layer=first.layer, method=first.method)
