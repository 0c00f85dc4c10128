"""One model as the engine holds it: loaded, checked and canonicalised once, with everything built
from it on first use and kept — its constants on the backend, a walk plan and a recording session
per map layer. The only state of an :class:`~exbp.engine.explainer.Explainer`; safe to share
between threads (what is built on first use is built under a lock, and a run's state lives in
its own TensorStore).

Data flows one way: file → graph (:mod:`.graph`) → recording (:mod:`.record`) → walk and maps
(:mod:`.walk`), the arrays living on a backend (:mod:`.compute`).
"""

from __future__ import annotations

import difflib
import os
import threading
from typing import Optional, Sequence

import numpy as np
import onnx

from ..errors import LayerError, MethodError, ModelError, UnsupportedOpError
from ..graph_rules import Propagation, rule_for
from .compute.backends import backend_for
from .compute.constants import ConstantStore
from .graph.canonicalize import canonicalize
from .graph.layers import build_catalogue
from .graph.loading import default_opset, load_model
from .graph.model import Graph, shapes_for_input
from .graph.paths import descendants, find_logits, head_tensors, reaching_logits, refusal_of
from .graph.signs import non_negative_tensors, rectified_tensors
from .record.recorded import derived_nodes
from .record.recording import Recorder, without_initializer_data
from .walk.methods import Method
from .walk.planning import WalkPlan, plan_walk, pooled_layer, require_classifier
from .walk.tensors import TensorStore


def _check_finite_weights(graph: Graph) -> None:
    """ModelError for a weight or bias holding NaN or infinity: its maps would be NaN, silently.
    (Other constants may be infinite on purpose: a Clip bound, a padding value.)"""
    for node in graph.nodes:
        rule = rule_for(node)
        if rule is None or rule.weight_input is None:
            continue
        for name in node.inputs:
            value = graph.constant(name) if name else None
            if value is not None and value.dtype.kind == "f" and not np.isfinite(value).all():
                raise ModelError(f"the model's constant {name!r} ({node.op_type} {node.name!r}) "
                                 "holds NaN or infinite values; exbp explains models whose "
                                 "weights are finite numbers")


def _reduced_precision(graph: Graph) -> bool:
    """Whether the model computes in float16 (a float16 conversion's weights, or its input)."""
    return (any(value.dtype == np.float16 for value in graph.constants.values())
            or _input_elem_type(graph) == onnx.TensorProto.FLOAT16)


def _input_elem_type(graph: Graph) -> int:
    for value in graph.inference_model.graph.input:
        if value.name == graph.input_name:
            return value.type.tensor_type.elem_type
    return onnx.TensorProto.UNDEFINED


class ModelSession:
    def __init__(self, source: str | os.PathLike | onnx.ModelProto, device: str = "cpu"):
        loaded = load_model(source)
        original = Graph.from_model(loaded, default_opset(loaded))
        # the weights now live in the graph's constants: ``model`` keeps the structure only
        self.model = without_initializer_data(loaded, original.constants)
        del loaded
        self.metadata = {prop.key: prop.value for prop in self.model.metadata_props}
        self.canonical = canonicalize(original)
        self.graph = self.canonical.graph
        # a float16 model's derived quantities are computed by the rules, in float32 (§1.1)
        self._derived_in_recording = not _reduced_precision(original)
        _check_finite_weights(self.graph)
        # names a user may give a layer by: the original tensors and node names
        self._original_tensors = frozenset({original.input_name} | {
            name for node in original.nodes for name in node.outputs})
        self._node_outputs = {node.name: node.outputs[0] for node in original.nodes}
        self.backend = backend_for(device)
        self.constants = ConstantStore(self.backend, self.graph.constants)
        self.logits = find_logits(self.graph)
        self.catalogue = build_catalogue(self.graph, self.logits)
        self.non_negative = non_negative_tensors(self.graph)
        self.no_negative_signal = rectified_tensors(self.graph) | head_tensors(self.graph, self.logits)
        self._plans: dict[tuple, WalkPlan] = {}
        self._recordings: dict[frozenset, tuple[Recorder, dict, frozenset, frozenset]] = {}
        self._shapes_by_input: dict[tuple, dict] = {}
        self._forward: Optional[Recorder] = None
        self._lock = threading.Lock()

    @property
    def classes(self) -> Optional[int]:
        """The number of classes, when the logits' shape is known before running."""
        shape = self.graph.shapes.get(self.logits) or ()
        return shape[1] if len(shape) > 1 and isinstance(shape[1], int) else None

    # ---- layers -------------------------------------------------------------------------------

    def shapes(self, input_shape: Optional[Sequence[int]] = None):
        """Inferred shapes, for inputs of ``input_shape`` where it differs from the declared one."""
        static = self.graph.shapes.get(self.graph.input_name) or ()
        if input_shape is None or tuple(static[1:]) == tuple(input_shape[1:]):
            return self.graph.shapes
        input_shape = tuple(int(d) for d in input_shape)
        if input_shape not in self._shapes_by_input:
            self._shapes_by_input[input_shape] = shapes_for_input(
                self.graph.inference_model, self.graph.input_name, input_shape)
        return {**self.graph.shapes, **self._shapes_by_input[input_shape]}

    def default_layer(self, input_shape: Optional[Sequence[int]] = None) -> str:
        return self.catalogue.default_layer(self.shapes(input_shape), self.graph.input_name)

    def resolve_layer(self, layer: Optional[str], input_shape=None, needs_map: bool = True) -> str:
        """The canonical tensor a layer name means (a tensor, a node's first output, a tensor
        canonicalisation removed); None means the default; with ``needs_map``, one that can carry
        a map. LayerError otherwise."""
        if layer is None:
            return self.default_layer(input_shape)
        if not isinstance(layer, str):
            raise LayerError(f"layer must be a tensor or node name, got {layer!r}")
        name = layer
        if name not in self._original_tensors:
            if name not in self._node_outputs:
                close = difflib.get_close_matches(name, self.catalogue.names(), n=3)
                hint = (f"; did you mean {', '.join(repr(c) for c in close)}?" if close
                        else "; choose a layer from Explainer.layers()")
                raise LayerError(f"unknown layer {name!r}{hint}")
            name = self._node_outputs[name]
        name = self.canonical.resolve(name)
        if needs_map and name in self.catalogue.no_map:
            raise LayerError(f"layer {layer!r} cannot carry a map: {self.catalogue.no_map[name]}; "
                             "choose a layer from Explainer.layers()")
        if needs_map and name not in self.catalogue.names():
            raise LayerError(f"layer {layer!r} cannot carry a map: it is not a tensor with "
                             "spatial axes on the path from the input to the logits; choose a "
                             "layer from Explainer.layers()")
        return name

    # ---- walks --------------------------------------------------------------------------------

    def plan(self, layer: str, kind: Propagation = Propagation.EXCITATION, reads_layer: bool = False,
             purpose: str = "") -> WalkPlan:
        """The plan of a walk of ``kind`` to the canonical tensor ``layer`` (recording the layer's
        activation too with ``reads_layer``); ``purpose`` ends a refusal's message."""
        key = (layer, kind, reads_layer)
        if key not in self._plans:
            with self._lock:
                if key not in self._plans:
                    plan = plan_walk(self.graph, layer, self.logits, kind, reads_layer, purpose)
                    if plan.dual_weight is not None:
                        self.constants.add_negation(*plan.dual_weight)
                    self._plans[key] = plan
        return self._plans[key]

    def method_layer(self, method: Method, layer: Optional[str], input_shape=None) -> str:
        """The canonical tensor ``method`` maps at: ``layer``, or its default (docs/method.md §9);
        CAM only at the global average pooling's input. LayerError or MethodError otherwise."""
        if method.reduction == "cam" or (layer is None and method.default_layer == "pooled"):
            pooled, why = pooled_layer(self.graph, self.logits, self.catalogue.layout)
            if method.reduction == "cam" and pooled is None:
                raise MethodError(f"{method.title} needs a global average pooling followed by the "
                                  f"classifier, and {why}; use another method")
            if layer is None:
                return pooled if pooled is not None else self.default_layer(input_shape)
            named = self.resolve_layer(layer, input_shape)
            if named != pooled:
                raise MethodError(f"{method.title} maps only at the global average pooling's input "
                                  f"{pooled!r}, not at layer {layer!r}; name that layer or none")
            return named
        if layer is None and method.default_layer == "input":
            return self.graph.input_name
        return self.resolve_layer(layer, input_shape)

    def plans_for(self, methods, layer: Optional[str], input_shape=None) -> list[tuple[WalkPlan, tuple]]:
        """(plan, its methods) for ``methods``: one walk per layer, propagation kind and top
        signal, recording the layer's activation where a method reads it. MethodError where a
        method cannot be explained there."""
        groups: dict[tuple, list[Method]] = {}
        for method in methods:
            key = (self.method_layer(method, layer, input_shape), method.propagation, method.top)
            groups.setdefault(key, []).append(method)
        plans = []
        for (name, kind, _), members in groups.items():
            purpose = f", for {', '.join(m.title for m in members)}"
            plan = self.plan(name, kind, any(m.reads_layer for m in members), purpose)
            for method in members:
                require_classifier(plan, method)
            plans.append((plan, tuple(members)))
        return plans

    def recorder(self, plans) -> Recorder:
        """The recording session of one walk plan, or of several recorded by one forward pass."""
        return self._recording(plans)[0]

    def _recording(self, plans):
        plans = (plans,) if isinstance(plans, WalkPlan) else tuple(plans)
        key = frozenset(plan.key for plan in plans)
        if key not in self._recordings:
            with self._lock:
                if key not in self._recordings:
                    self._recordings[key] = self._build_recording(plans)
        return self._recordings[key]

    def _build_recording(self, plans):
        nodes, owners = [], {}
        if self.backend.records_derived and self._derived_in_recording:
            nodes, owners = derived_nodes([step for plan in plans for step in plan.steps],
                                          self.non_negative)
        values = frozenset().union(*(plan.values for plan in plans)) | {self.logits} | set(owners)
        shapes = frozenset().union(*(plan.shapes for plan in plans))
        recorder = Recorder(self.model, self.graph.input_name, values, shapes,
                            shared=self.constants.host, extra_nodes=nodes, backend=self.backend,
                            recorded_as=self.canonical.recorded_as)
        return recorder, owners, values, shapes

    def logits_of(self, x) -> np.ndarray:
        """The logits alone, from a recording session that records nothing else."""
        if self._forward is None:
            with self._lock:
                if self._forward is None:
                    self._forward = Recorder(self.model, self.graph.input_name, {self.logits}, (),
                                             shared=self.constants.host, backend=self.backend,
                                             recorded_as=self.canonical.recorded_as)
        recorded, _ = self._forward.run(x, {self.logits}, ())
        return self.backend.to_host(recorded[self.logits]).astype(np.float32, copy=False)

    def record(self, x, plans) -> tuple[np.ndarray, TensorStore]:
        """(the logits on the host, what the rules read) for one forward pass that serves one
        walk plan or several."""
        recorder, owners, values, shapes = self._recording(plans)
        recorded, shapes = recorder.run(x, values, shapes)
        logits = self.backend.to_host(recorded[self.logits]).astype(np.float32, copy=False)
        values = {name: self.backend.asarray(value) for name, value in recorded.items()}
        return logits, TensorStore(self.constants, values, shapes, owners, self.non_negative,
                                   self.no_negative_signal)

    def refusal(self, layer: Optional[str], method: Method, input_shape=None) -> Optional[str]:
        """Why explaining with ``method`` at ``layer`` would be refused, or None if it would run."""
        try:
            self.plans_for((method,), layer, input_shape)
        except (LayerError, MethodError, UnsupportedOpError) as exc:
            return str(exc)
        return None

    def unsupported_nodes(self) -> list[tuple[str, str, str, bool]]:
        """(op type, node name, reason, on the input-to-logits path) for every node the walk
        could not pass; nodes after the logits (the final Softmax) are never walked."""
        on_path = reaching_logits(self.graph, self.logits)
        after_logits = descendants(self.graph, self.logits) - {self.logits}
        found = []
        for node in self.graph.nodes:
            if all(name in after_logits for name in node.outputs):
                continue
            reason = refusal_of(node, self.graph)
            if reason:
                found.append((node.op_type, node.name, reason,
                              any(name in on_path for name in node.outputs)))
        return found
