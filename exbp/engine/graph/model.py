"""The graph the walker reads: nodes with clean attributes, constants, shapes and adjacency.

An ONNX NodeProto's attributes are read here, once, with the defaults of the op's schema at the
model's opset, so that every rule sees plain Python values (``strides=(1, 1)``, ``auto_pad="NOTSET"``)
and never an AttributeProto. Constant nodes become constants.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Any, Iterable, Mapping, Optional

import numpy as np
import onnx
from onnx import helper, numpy_helper

from ...errors import ModelError
from .constant_folding import fold_constants

Shape = tuple  # of int, or None for a dimension unknown before run time


@dataclass(frozen=True)
class Node:
    op_type: str
    name: str
    inputs: tuple[str, ...]      # "" marks an omitted optional input
    outputs: tuple[str, ...]
    attrs: Mapping[str, Any] = field(default_factory=dict)
    domain: str = ""
    proto: Optional[onnx.NodeProto] = field(default=None, compare=False, repr=False)  # as read

    def with_changes(self, **changes) -> "Node":
        return replace(self, **changes)


@dataclass(frozen=True)
class Graph:
    nodes: tuple[Node, ...]              # topological order
    constants: Mapping[str, np.ndarray]
    input_name: str
    input_shape: Shape
    output_name: str                     # the first graph output
    shapes: Mapping[str, Shape]          # from shape inference; may be incomplete
    float_tensors: frozenset[str]        # tensors known to hold floating-point values
    opset: int
    inference_model: Optional[onnx.ModelProto] = field(default=None, compare=False, repr=False)

    def __post_init__(self):
        producer, consumers = {}, {}
        for node in self.nodes:
            for name in node.outputs:
                producer[name] = node
            for name in node.inputs:
                if name:
                    consumers.setdefault(name, []).append(node)
        object.__setattr__(self, "producer", MappingProxyType(producer))
        object.__setattr__(self, "consumers",
                           MappingProxyType({k: tuple(v) for k, v in consumers.items()}))

    def is_constant(self, name: str) -> bool:
        return name in self.constants

    def constant(self, name: str) -> np.ndarray | None:
        return self.constants.get(name)

    def consumers_of(self, name: str) -> tuple[Node, ...]:
        return self.consumers.get(name, ())

    def with_nodes(self, nodes: Iterable[Node], constants: Mapping[str, np.ndarray]) -> "Graph":
        return replace(self, nodes=topological_order(nodes, set(constants) | {self.input_name}),
                       constants=MappingProxyType(dict(constants)))

    @classmethod
    def from_model(cls, model: onnx.ModelProto, opset: int) -> "Graph":
        graph = model.graph
        constants = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
        nodes = fold_constants([read_node(proto, opset, i) for i, proto in enumerate(graph.node)],
                               constants, opset)

        inputs = [v for v in graph.input if v.name not in constants]
        if len(inputs) != 1:
            names = ", ".join(v.name for v in inputs) or "none"
            raise ModelError(f"exbp explains models with exactly one image input; this model's "
                             f"inputs are: {names}")
        if not graph.output:
            raise ModelError("the model has no graph output; exbp explains models whose first "
                             "output is the logits")

        inference_model = _folded_model(model, nodes, constants, inputs[0])
        shapes, float_tensors = inferred_shapes(inference_model)
        for name, value in constants.items():
            shapes[name] = value.shape
            if value.dtype.kind == "f":
                float_tensors.add(name)
        return cls(nodes=topological_order(nodes, set(constants) | {inputs[0].name}),
                   constants=MappingProxyType(constants), input_name=inputs[0].name,
                   input_shape=shapes.get(inputs[0].name, ()),
                   output_name=graph.output[0].name, shapes=MappingProxyType(shapes),
                   float_tensors=frozenset(float_tensors), opset=opset,
                   inference_model=inference_model)


def read_node(proto: onnx.NodeProto, opset: int, index: int) -> Node:
    attrs = _schema_defaults(proto.op_type, proto.domain, opset)
    attrs.update({a.name: _plain(helper.get_attribute_value(a)) for a in proto.attribute})
    # a copy, not a reference: protobuf keeps a whole model's memory, weights included, for as
    # long as any part of it is referenced
    own = onnx.NodeProto()
    own.CopyFrom(proto)
    return Node(op_type=proto.op_type, name=proto.name or f"{proto.op_type}#{index}",
                inputs=tuple(proto.input), outputs=tuple(proto.output),
                attrs=MappingProxyType(attrs), domain=proto.domain if proto.domain != "ai.onnx" else "",
                proto=own)


def _schema_defaults(op_type: str, domain: str, opset: int) -> dict[str, Any]:
    if domain not in ("", "ai.onnx"):
        return {}
    try:
        schema = onnx.defs.get_schema(op_type, opset)
    except onnx.defs.SchemaError:
        return {}
    return {name: _plain(helper.get_attribute_value(attribute.default_value))
            for name, attribute in schema.attributes.items()
            if attribute.default_value.type != onnx.AttributeProto.UNDEFINED}


def _plain(value: Any) -> Any:
    """An attribute value as plain Python: str for bytes, tuples for lists, arrays for tensors."""
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, onnx.TensorProto):
        return numpy_helper.to_array(value)
    if isinstance(value, list):
        return tuple(_plain(v) for v in value)
    return value


def topological_order(nodes: Iterable[Node], available: set[str]) -> tuple[Node, ...]:
    """Kahn's order; ONNX requires it already, but canonicalisation rewires edges."""
    pending = list(nodes)
    produced = {name for node in pending for name in node.outputs}
    ready = set(available) | {""}
    ordered: list[Node] = []
    while pending:
        remaining = []
        for node in pending:
            if all(name in ready or name not in produced for name in node.inputs):
                ordered.append(node)
                ready.update(node.outputs)
            else:
                remaining.append(node)
        if len(remaining) == len(pending):
            raise ModelError(f"the graph has a cycle through node {remaining[0].name!r}")
        pending = remaining
    return tuple(ordered)


_FLOAT_TYPES = {onnx.TensorProto.FLOAT, onnx.TensorProto.DOUBLE, onnx.TensorProto.FLOAT16,
                onnx.TensorProto.BFLOAT16}


def inferred_shapes(model: onnx.ModelProto) -> tuple[dict[str, Shape], set[str]]:
    """(shape of every tensor shape inference could type, names of floating-point tensors)."""
    try:
        inferred = onnx.shape_inference.infer_shapes(model, data_prop=True)
    except Exception:  # inference is a convenience: the walk reads shapes recorded at run time
        inferred = model
    shapes, float_tensors = {}, set()
    graph = inferred.graph
    for info in (*graph.input, *graph.value_info, *graph.output):
        tensor_type = info.type.tensor_type
        if tensor_type.elem_type in _FLOAT_TYPES:
            float_tensors.add(info.name)
        if tensor_type.HasField("shape"):
            shapes[info.name] = tuple(d.dim_value if d.HasField("dim_value") else None
                                      for d in tensor_type.shape.dim)
    return shapes, float_tensors


# Constants up to this size keep their values for shape inference (they may be shapes or pads);
# larger ones are weights, whose shape is all inference needs.
_INFERENCE_VALUE_LIMIT = 4096


def _folded_model(model: onnx.ModelProto, nodes, constants, image_input) -> onnx.ModelProto:
    """The model after constant folding, for shape inference only: large constants become
    typed inputs so that no weight is copied."""
    small = [numpy_helper.from_array(np.asarray(value), name) for name, value in constants.items()
             if np.asarray(value).size <= _INFERENCE_VALUE_LIMIT]
    large = [helper.make_tensor_value_info(name, helper.np_dtype_to_tensor_dtype(value.dtype),
                                           value.shape)
             for name, value in constants.items() if np.asarray(value).size > _INFERENCE_VALUE_LIMIT]
    graph = helper.make_graph([node.proto for node in nodes], model.graph.name, [image_input, *large],
                              list(model.graph.output), small)
    folded = helper.make_model(graph, opset_imports=list(model.opset_import))
    folded.ir_version = model.ir_version
    return folded


def shapes_for_input(model: onnx.ModelProto, input_name: str, shape: tuple) -> dict[str, Shape]:
    """Inferred shapes when the input has the concrete ``shape`` (for symbolic models)."""
    fixed = onnx.ModelProto()
    fixed.CopyFrom(model)
    for value in fixed.graph.input:
        if value.name == input_name:
            for dim, size in zip(value.type.tensor_type.shape.dim, shape):
                dim.Clear()
                dim.dim_value = int(size)
    shapes, _ = inferred_shapes(fixed)
    shapes[input_name] = tuple(shape)
    return shapes
