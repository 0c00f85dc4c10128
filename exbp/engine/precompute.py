"""What the walk needs that onnxruntime can compute during the recording run itself.

Two quantities depend only on the activations, never on the target, so the recording session of a
walk plan computes them beside the activations, at onnxruntime's speed, on activations still in
its own layouts, and without a call per op:

* the **normaliser** ``Z`` of a Conv (REFERENCE §1): the same convolution with the positive weights
  and no bias, ``Z = Conv(x⁺, W⁺) + Conv(x⁻, W⁻)`` — the second term only where the input may be
  negative (the image, a residual sum without a ReLU after it);
* the **winners** of a MaxPool: the flat input index of each window's first maximum, from a
  MaxPool twin that outputs its Indices.

The rules use them when the recording has them (``tensors.precomputed(node, kind)``) and compute
them otherwise, as on the CuPy backend; the oracle tests cover both paths.
"""

from __future__ import annotations

from typing import AbstractSet, Callable, Iterable, Mapping

import numpy as np
from onnx import helper

from .graph import Graph, Node
from .ort_kernels import weight_part_nodes

NORMALISER, WINNERS = "normaliser", "winners"

# Ops whose output is ≥ 0 whatever their input, and ops that keep an input's sign (≥ 0 in, ≥ 0 out).
_NON_NEGATIVE_OUTPUT = {"Relu", "Sigmoid", "Softmax", "Softplus", "HardSigmoid", "Abs", "Exp"}
_SIGN_KEEPING = {"MaxPool", "AveragePool", "GlobalAveragePool", "GlobalMaxPool", "Reshape",
                 "Flatten", "Squeeze", "Unsqueeze", "Transpose", "Identity", "Dropout", "Slice",
                 "Gather", "Split", "Concat", "Add", "Sum", "Mul", "Cast", "ReduceMean",
                 "ReduceSum", "ReduceMax", "LRN"}


def helper_name(node: Node, kind: str) -> str:
    return f"{node.outputs[0]}::exbp_{kind}"


def kinds_for(node: Node) -> tuple[str, ...]:
    if node.domain != "":
        return ()
    if node.op_type == "Conv":
        return (NORMALISER,)
    if node.op_type == "MaxPool" and node.attrs.get("storage_order", 0) == 0:
        return (WINNERS,)
    return ()


def non_negative_tensors(graph: Graph) -> set[str]:
    """Tensors that are provably ≥ 0 for every input."""
    found = {name for name, value in graph.constants.items()
             if value.dtype.kind in "fiu" and (value.size == 0 or value.min() >= 0)}
    for node in graph.nodes:
        inputs = [name for name in node.inputs if name]
        if node.op_type in _NON_NEGATIVE_OUTPUT:
            keeps = True
        elif node.op_type == "Clip":
            low = node.attrs.get("min")
            if low is None and len(node.inputs) > 1 and node.inputs[1]:
                value = graph.constant(node.inputs[1])
                low = None if value is None else float(value)
            keeps = low is not None and low >= 0
        elif node.op_type == "Pad":   # the fill value (an input, or before opset 11 an attribute)
            fill = [node.inputs[2]] if len(node.inputs) > 2 and node.inputs[2] else []
            keeps = (all(name in found for name in inputs[:1] + fill)
                     and (node.attrs.get("value") or 0) >= 0)
        elif node.op_type == "Resize":  # cubic interpolation overshoots below 0
            keeps = inputs[0] in found and node.attrs.get("mode") != "cubic"
        elif node.op_type in _SIGN_KEEPING:
            data = inputs[:1] if node.op_type in ("Reshape", "Slice", "Gather", "Split",
                                                  "Squeeze", "Unsqueeze") else inputs
            keeps = all(name in found for name in data)
        else:
            keeps = False
        if keeps:
            found.update(name for name in node.outputs if name)
    return found


def helper_nodes(node: Node, kind: str, input_non_negative: bool,
                 constant: Callable[[str], np.ndarray]) -> tuple[list, Mapping[str, np.ndarray]]:
    """ONNX nodes computing ``kind`` for ``node`` in the recording graph, and the arrays of the
    initializers they read (``constant(name)``: the canonical graph's constant). W⁺ and W⁻ are
    nodes over the weight, which onnxruntime folds into constants when the session is built."""
    out = helper_name(node, kind)
    if kind == WINNERS:
        attrs = {k: v for k, v in node.attrs.items() if v is not None and k != "storage_order"}
        return [helper.make_node("MaxPool", [node.inputs[0]], [out + "_values", out],
                                 name=out, **_listed(attrs))], {}
    x, weight = node.inputs[0], node.inputs[1]
    attrs = _listed({k: v for k, v in node.attrs.items() if v is not None})
    positive, negative = f"{out}_weight_positive", f"{out}_weight_negative"
    arrays = {weight: constant(weight)}
    if input_non_negative:
        return [*weight_part_nodes(weight, "positive", positive),
                helper.make_node("Conv", [x, positive], [out], name=out, **attrs)], arrays
    x_pos, x_neg = out + "_input_positive", out + "_input_negative"
    nodes = [*weight_part_nodes(weight, "positive", positive),
             *weight_part_nodes(weight, "negative", negative),
             helper.make_node("Relu", [x], [x_pos], name=x_pos),
             helper.make_node("Sub", [x, x_pos], [x_neg], name=x_neg),
             helper.make_node("Conv", [x_pos, positive], [out + "_positive"], name=out + "_positive", **attrs),
             helper.make_node("Conv", [x_neg, negative], [out + "_negative"], name=out + "_negative", **attrs),
             helper.make_node("Add", [out + "_positive", out + "_negative"], [out], name=out)]
    return nodes, arrays


def _listed(attrs: dict) -> dict:
    """Attribute values as onnx.helper.make_node takes them (lists, not tuples)."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in attrs.items()}


def plan_helpers(nodes: Iterable[Node], graph: Graph, non_negative: AbstractSet[str]):
    """(extra nodes, their arrays, {output name: the node it belongs to}) for a walk's nodes;
    ``non_negative``: the graph's :func:`non_negative_tensors`."""
    built, arrays, owners = [], {}, {}
    for node in nodes:
        for kind in kinds_for(node):
            new_nodes, new_arrays = helper_nodes(node, kind, node.inputs[0] in non_negative,
                                                 graph.constant)
            built.extend(new_nodes)
            arrays.update(new_arrays)
            owners[helper_name(node, kind)] = node
    return built, arrays, owners
