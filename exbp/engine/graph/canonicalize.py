"""Rewriting the graph before the walk so that the rules stay simple: :data:`PASSES`, in order.

* Shape arithmetic on statically known shapes is folded into constants (a Slice whose bounds come
  from ``Shape(x)[1]``, PyTorch's ``chunk``), even where the batch dim is dynamic.
* Identity and (inference-mode) Dropout are removed; their consumers read the input directly.
* QuantizeLinear→DequantizeLinear pairs on activations (a QDQ-quantised model's) are removed: their
  consumers read the float tensor the pair quantised, under the float model's name, and the
  recording gives that tensor the pair's dequantised values (``recorded_as``), which are what the
  quantised model computes (docs/method.md §3.6).
* Gemm's ``alpha`` is folded into its constant operand, so the linear rule never sees it.
* A per-output-channel affine op — BatchNormalization, or Mul/Add/Sub/Div by a per-channel
  constant — that is the only consumer of a Conv or Gemm with constant weights is folded into that
  op. A model exported with and without BN folding then gives the same maps: the folded weight
  ``W·γ/σ`` decides which contributions are positive. (Caffe and TorchRay pass BN through as identity;
  the two differ only in channels whose BN scale is negative.) An affine op that cannot be folded
  stays, and its rule passes the signal through.
* GELU written with Erf, ``x · 0.5 · (1 + Erf(x / √2))``, becomes one Gelu node (docs/method.md
  §3.5).
* Every op's parameters are read into one form whatever the opset (the rule's ``parameters``):
  where an opset moved an attribute into a constant input, the rule then reads ``node.attrs``.

The recording still runs the user's original model; every tensor the canonical graph keeps exists
there with the same values. A removed tensor carries the same signal as the tensor it was merged
into, which ``aliases`` records so that a user may still name it as the map layer.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Callable, Mapping, Optional

import numpy as np
import onnx

from ...graph_rules import entry_for
from .constant_folding import fold_static_shapes
from .model import Graph, Node, Shape, _folded_model, inferred_shapes


SQRT2 = float(np.sqrt(2.0))


@dataclass(frozen=True)
class CanonicalGraph:
    graph: Graph
    aliases: Mapping[str, str]   # removed tensor -> kept tensor with the same signal
    # canonical tensor -> the model's tensor whose recorded values it takes (a QDQ pair's output)
    recorded_as: Mapping[str, str] = field(default_factory=dict)

    def resolve(self, name: str) -> str:
        while name in self.aliases:
            name = self.aliases[name]
        return name


@dataclass
class Rewrite:
    """The graph as the passes rewrite it; a pass may replace ``nodes``, add ``constants`` and
    record in ``aliases`` each tensor it removes."""
    nodes: list[Node]
    constants: dict
    opset: int
    aliases: dict[str, str] = field(default_factory=dict)
    protected: frozenset[str] = frozenset()      # tensors that must keep their names
    recorded_as: dict[str, str] = field(default_factory=dict)
    shapes: Mapping[str, Shape] = field(default_factory=dict)   # inferred; None for unknown dims
    template: Optional[onnx.ModelProto] = None   # the graph's model for shape inference

    def constant(self, name: str):
        return self.constants.get(name)

    def is_constant(self, name: str) -> bool:
        return name in self.constants


def fold_static_shape_arithmetic(rewrite: Rewrite) -> None:
    """Folds, then infers the shapes again where something was folded: onnx's shape inference
    does not propagate values through Div, so the tensors after a chunk's Slice have unknown
    shapes until its bounds are constants, and the next chunk needs them."""
    shapes = dict(rewrite.shapes)
    while True:
        count = len(rewrite.constants)
        rewrite.nodes = fold_static_shapes(rewrite.nodes, rewrite.constants, shapes, rewrite.opset,
                                           rewrite.protected)
        if len(rewrite.constants) == count or rewrite.template is None:
            break
        model = _folded_model(rewrite.template, rewrite.nodes, rewrite.constants,
                              rewrite.template.graph.input[0])
        shapes.update(inferred_shapes(model)[0])
    # the graph's shapes are the last inference's: the layouts read them (a channel shuffle's
    # Reshape targets are known only once its shape arithmetic is folded)
    rewrite.shapes = {**shapes, **{name: value.shape for name, value in rewrite.constants.items()}}


def drop_identity_and_dropout(rewrite: Rewrite) -> None:
    kept = []
    renames: dict[str, str] = {}
    used = {name for node in rewrite.nodes for name in node.inputs}
    for node in rewrite.nodes:
        node = _renamed_inputs(node, renames)
        droppable = (node.op_type == "Identity" or (
            node.op_type == "Dropout" and not node.attrs.get("training_mode")
            and (len(node.outputs) < 2 or node.outputs[1] not in used)))
        if droppable and node.domain == "" and node.outputs[0] not in rewrite.protected:
            renames[node.outputs[0]] = node.inputs[0]
            rewrite.aliases[node.outputs[0]] = node.inputs[0]
        else:
            kept.append(node)
    rewrite.nodes = kept


def remove_activation_quantization(rewrite: Rewrite) -> None:
    """Each QuantizeLinear (constant scale and zero point) whose output only DequantizeLinears read,
    all with the same constants, leaves the graph with them. Where the Q's input ``x`` has no other
    reader, the DQs' readers read ``x`` and ``x`` is recorded from the DQ's output; where the DQ's
    output is the graph's output (a final Softmax quantised), ``x``'s producer writes it directly.
    A pair that fits neither (``x`` also read in float) stays, and the walk passes it through."""
    while True:
        producer = {out: node for node in rewrite.nodes for out in node.outputs}
        consumers: dict[str, list[Node]] = {}
        for node in rewrite.nodes:
            for name in node.inputs:
                consumers.setdefault(name, []).append(node)
        for quantize in rewrite.nodes:
            removal = _removable_pair(quantize, producer, consumers, rewrite)
            if removal is not None:
                rewrite.nodes = removal
                break
        else:
            return


def fold_gemm_alpha(rewrite: Rewrite) -> None:
    rewrite.nodes = [_gemm_without_alpha(node, rewrite.constants) for node in rewrite.nodes]


def fold_affine_into_linear(rewrite: Rewrite) -> None:
    rewrite.nodes = _fold_affine_into_linear(rewrite.nodes, rewrite.constants, rewrite.aliases,
                                             rewrite.protected)


def read_parameters(rewrite: Rewrite) -> None:
    """Each rule's ``parameters`` into ``node.attrs``; a node whose parameters are computed at run
    time stays as it is, and its rule's refusal names them."""
    nodes = []
    for node in rewrite.nodes:
        entry = entry_for(node)
        read = entry.parameters(node, rewrite) if entry is not None and entry.parameters else None
        nodes.append(node.with_changes(attrs={**node.attrs, **read}) if read else node)
    rewrite.nodes = nodes


def fuse_erf_gelu(rewrite: Rewrite) -> None:
    """``x · 0.5 · (1 + Erf(x / √2))`` (or ``x · (1/√2)`` inside the Erf, and the factors in any
    order) becomes ``Gelu(x)``, whose rule passes the signal through (docs/method.md §3.5).

    A pass rather than a Mul rule: the Erf form is one activation of one tensor written as six
    ops, not a gate between two signals. Recognised once, it is the op whose rule exists already,
    and the sign analysis and the walk see one activation. A Mul rule would have to tell from the
    gate's ancestry, at every Mul, that ``1 + Erf(·)`` is a non-negative function of the other
    operand, where the Erf's own output is signed. The intermediate tensors vanish; the product
    before the last factor carries the output's signal and is recorded as its alias."""
    while True:
        match = _erf_gelu(rewrite)
        if match is None:
            return
        removed, x, output, aliased = match
        gelu = Node(op_type="Gelu", name=removed[-1].name, inputs=(x,), outputs=(output,),
                    attrs={"approximate": "none"})
        for name in aliased:
            rewrite.aliases[name] = output
        rewrite.nodes = [gelu if node is removed[-1] else node for node in rewrite.nodes
                         if not any(node is r for r in removed[:-1])]


PASSES: tuple[Callable[[Rewrite], None], ...] = (
    fold_static_shape_arithmetic, drop_identity_and_dropout, remove_activation_quantization,
    fuse_erf_gelu, fold_gemm_alpha,
    fold_affine_into_linear, read_parameters)


def canonicalize(graph: Graph, passes=PASSES) -> CanonicalGraph:
    rewrite = Rewrite(nodes=list(graph.nodes), constants=dict(graph.constants), opset=graph.opset,
                      protected=frozenset({graph.output_name}), shapes=graph.shapes,
                      template=graph.inference_model)
    for rewrite_pass in passes:
        rewrite_pass(rewrite)
    canonical = graph.with_nodes(rewrite.nodes, rewrite.constants)
    if rewrite.shapes is not graph.shapes:
        canonical = replace(canonical, shapes=MappingProxyType(dict(rewrite.shapes)))
    return CanonicalGraph(graph=canonical, aliases=rewrite.aliases, recorded_as=rewrite.recorded_as)


def _scalar_constant(rewrite: Rewrite, name: str):
    value = rewrite.constant(name)
    if value is None or value.size != 1 or value.dtype.kind != "f":
        return None
    return float(value.reshape(-1)[0])


def _with_constant(node: Node, rewrite: Rewrite):
    """(the activation operand, the scalar constant, the operand's position) of a binary op with
    one scalar constant, else None."""
    if node.domain != "" or len(node.inputs) != 2:
        return None
    for own, other in ((0, 1), (1, 0)):
        value = _scalar_constant(rewrite, node.inputs[other])
        if value is not None and not rewrite.is_constant(node.inputs[own]):
            return node.inputs[own], value, own
    return None


def _erf_gelu(rewrite: Rewrite):
    """(nodes to remove in order, last one replaced; x; the GELU's output; aliased tensors) of the
    first Erf-written GELU in the graph, or None."""
    producer = {out: node for node in rewrite.nodes for out in node.outputs}
    consumers: dict[str, list[Node]] = {}
    for node in rewrite.nodes:
        for name in node.inputs:
            consumers.setdefault(name, []).append(node)

    def only_consumer(name: str):
        found = consumers.get(name, [])
        return found[0] if len(found) == 1 and name not in rewrite.protected else None

    for erf in rewrite.nodes:
        if erf.op_type != "Erf" or erf.domain != "" or erf.inputs[0] not in producer:
            continue
        scaled = producer[erf.inputs[0]]
        operand = _with_constant(scaled, rewrite)
        if (operand is None or only_consumer(scaled.outputs[0]) is not erf
                or not ((scaled.op_type == "Div" and operand[2] == 0 and abs(operand[1] - SQRT2) < 1e-4)
                        or (scaled.op_type == "Mul" and abs(operand[1] - 1 / SQRT2) < 1e-4))):
            continue
        x = operand[0]
        one = only_consumer(erf.outputs[0])
        plus_one = one and _with_constant(one, rewrite)
        if not plus_one or one.op_type != "Add" or plus_one[1] != 1.0:
            continue
        # the product of (1 + Erf), x and 0.5, in any order and grouping, one Mul after another
        removed, factor, has_x, current = [scaled, erf, one], 1.0, False, one.outputs[0]
        aliased = []
        while not (has_x and abs(factor - 0.5) < 1e-7):
            mul = only_consumer(current)
            if mul is None or mul.op_type != "Mul" or mul.domain != "" or len(mul.inputs) != 2:
                break
            other = mul.inputs[1] if mul.inputs[0] == current else mul.inputs[0]
            value = _scalar_constant(rewrite, other)
            half_x = producer.get(other)
            half_x_operand = half_x and _with_constant(half_x, rewrite)
            if value is not None:
                factor *= value
            elif other == x and not has_x:
                has_x = True
            elif (not has_x and half_x is not None and half_x.op_type == "Mul" and half_x_operand
                    and half_x_operand[0] == x and only_consumer(other) is mul):
                has_x, factor = True, factor * half_x_operand[1]
                removed.append(half_x)
            else:
                break
            removed.append(mul)
            current = mul.outputs[0]
            if has_x:
                aliased.append(current)
        if has_x and abs(factor - 0.5) < 1e-7:
            return removed, x, current, aliased[:-1]
    return None


def _renamed_inputs(node: Node, renames: Mapping[str, str]) -> Node:
    if not any(name in renames for name in node.inputs):
        return node
    return node.with_changes(inputs=tuple(renames.get(name, name) for name in node.inputs))


def _removable_pair(quantize: Node, producer, consumers, rewrite: Rewrite):
    """The nodes without ``quantize`` and its DequantizeLinears, rewired, or None if the pair
    cannot be removed."""
    if quantize.op_type != "QuantizeLinear" or quantize.domain != "" or not _constant_scale(
            quantize, rewrite):
        return None
    x, quantized = quantize.inputs[0], quantize.outputs[0]
    dequantizers = consumers.get(quantized, [])
    if (rewrite.is_constant(x) or quantized in rewrite.protected or not dequantizers
            or not all(node.op_type == "DequantizeLinear" and node.domain == ""
                       and node.inputs[0] == quantized and _constant_scale(node, rewrite)
                       for node in dequantizers)
            or not all(_same_constants(node, dequantizers[0], rewrite) for node in dequantizers)):
        return None
    outputs = [node.outputs[0] for node in dequantizers]
    removed = {id(quantize)} | {id(node) for node in dequantizers}
    if (len(consumers.get(x, [])) == 1 and x not in rewrite.protected
            and not any(name in rewrite.protected for name in outputs)):
        # the DQs' readers read x, which the recording fills with the dequantised values
        renames = dict.fromkeys(outputs, x)
        rewrite.recorded_as[x] = outputs[0]
        for name in (quantized, *outputs):
            rewrite.aliases[name] = x
        return [_renamed_inputs(node, renames) for node in rewrite.nodes if id(node) not in removed]
    source = producer.get(x)
    if (len(dequantizers) == 1 and outputs[0] in rewrite.protected and source is not None
            and len(consumers.get(x, [])) == 1 and x not in rewrite.protected):
        # the graph's output is the pair's: x's producer writes it, under its name
        written = source.with_changes(outputs=tuple(outputs[0] if name == x else name
                                                    for name in source.outputs))
        rewrite.aliases[x] = rewrite.aliases[quantized] = outputs[0]
        return [written if node is source else node for node in rewrite.nodes
                if id(node) not in removed]
    return None


def _constant_scale(node: Node, rewrite: Rewrite) -> bool:
    """Whether a Q's or DQ's scale and (present) zero point are constants."""
    return all(rewrite.is_constant(name) for name in node.inputs[1:3] if name) and len(node.inputs) > 1


def _same_constants(node: Node, other: Node, rewrite: Rewrite) -> bool:
    """Whether two DequantizeLinears dequantise alike (the same scale, zero point and axis)."""
    if node.attrs.get("axis", 1) != other.attrs.get("axis", 1) or len(node.inputs) != len(other.inputs):
        return False
    return all(a == b or np.array_equal(rewrite.constant(a), rewrite.constant(b))
               for a, b in zip(node.inputs[1:], other.inputs[1:]))


def _gemm_without_alpha(node: Node, constants: dict) -> Node:
    alpha = node.attrs.get("alpha", 1.0)
    if node.op_type != "Gemm" or alpha == 1.0:
        return node
    for index in (1, 0):
        name = node.inputs[index]
        if name in constants:
            folded = _unique(f"{name}::alpha", constants)
            constants[folded] = (constants[name] * np.float32(alpha)).astype(
                _folded_dtype(constants[name].dtype))
            inputs = list(node.inputs)
            inputs[index] = folded
            return node.with_changes(inputs=tuple(inputs), attrs={**node.attrs, "alpha": 1.0})
    return node


def _fold_affine_into_linear(nodes, constants, aliases, protected):
    while True:
        producer = {out: node for node in nodes for out in node.outputs}
        consumers: dict[str, list[Node]] = {}
        for node in nodes:
            for name in node.inputs:
                consumers.setdefault(name, []).append(node)
        for affine in nodes:
            linear = producer.get(_affine_source(affine, constants))
            if (linear is None or linear.outputs[0] in protected
                    or len(consumers.get(linear.outputs[0], ())) != 1):
                continue
            layout = _output_layout(linear, constants)
            scale_shift = layout and _per_channel_affine(affine, constants, *layout)
            folded = scale_shift and _folded_linear(linear, *scale_shift, affine.outputs[0], constants)
            if folded:
                aliases[linear.outputs[0]] = affine.outputs[0]
                nodes = [folded if n is linear else n for n in nodes if n is not affine]
                break
        else:
            return nodes


def _affine_source(affine: Node, constants) -> str | None:
    """The activation input of a candidate affine op (BN, or arithmetic with one constant)."""
    if affine.domain != "" or len(affine.outputs) != 1 or not affine.inputs:
        return None
    if affine.op_type == "BatchNormalization":
        return affine.inputs[0]
    if affine.op_type in ("Mul", "Add", "Sub", "Div") and affine.inputs[1] in constants:
        return affine.inputs[0]
    if affine.op_type in ("Mul", "Add") and affine.inputs[0] in constants:
        return affine.inputs[1]
    return None


def _output_layout(linear: Node, constants) -> tuple[int, int] | None:
    """(channels, rank) of the output of a Conv or Gemm whose weights are constant, else None."""
    if linear.domain != "" or len(linear.inputs) < 2 or linear.inputs[1] not in constants:
        return None
    weight = constants[linear.inputs[1]]
    if linear.op_type == "Conv":
        return weight.shape[0], weight.ndim
    if linear.op_type == "Gemm" and linear.inputs[0] not in constants and not linear.attrs["transA"]:
        return (weight.shape[0] if linear.attrs["transB"] else weight.shape[1]), 2
    return None


def _per_channel_affine(affine: Node, constants, channels: int, output_rank: int):
    """(scale, shift) per channel if ``affine`` is y = x·scale + shift per channel, else None."""
    if affine.op_type == "BatchNormalization":
        if affine.attrs.get("training_mode") or not all(n in constants for n in affine.inputs[1:5]):
            return None
        gamma, beta, mean, var = (constants[n].astype(np.float64) for n in affine.inputs[1:5])
        scale = gamma / np.sqrt(var + affine.attrs["epsilon"])
        return scale, beta - mean * scale
    constant = next(name for name in affine.inputs if name in constants)
    value = _per_channel_vector(constants[constant], channels, output_rank)
    if value is None:
        return None
    ones, zeros = np.ones(channels), np.zeros(channels)
    return {"Mul": (value, zeros), "Div": (1.0 / value, zeros),
            "Add": (ones, value), "Sub": (ones, -value)}[affine.op_type]


def _per_channel_vector(value: np.ndarray, channels: int, output_rank: int) -> np.ndarray | None:
    """The constant as one value per channel if it broadcasts against an output of shape
    (N, channels, ...) of rank ``output_rank`` without changing it, else None."""
    if value.dtype.kind != "f" or value.ndim > output_rank:
        return None
    dims = (1,) * (output_rank - value.ndim) + value.shape
    if dims[1] not in (1, channels) or any(d != 1 for i, d in enumerate(dims) if i != 1):
        return None
    return np.broadcast_to(value.reshape(-1).astype(np.float64), (channels,)).copy()


def _folded_linear(linear: Node, scale, shift, output: str, constants) -> Node | None:
    weight = constants[linear.inputs[1]].astype(np.float64)
    if linear.op_type == "Conv":
        weight = weight * scale.reshape((-1,) + (1,) * (weight.ndim - 1))
        bias_scale = 1.0
    else:  # Gemm: an output channel is a column of B, or a row when transB; the bias is beta·C
        weight = weight * (scale[:, None] if linear.attrs["transB"] else scale[None, :])
        bias_scale = linear.attrs["beta"]
    bias = _constant_bias(linear, constants, scale.shape[0], bias_scale)
    if bias is None:
        return None
    dtype = _folded_dtype(constants[linear.inputs[1]].dtype)
    weight_name = _unique(f"{linear.inputs[1]}::folded", constants)
    bias_name = _unique(f"{linear.name}::folded_bias", constants)
    constants[weight_name] = weight.astype(dtype)
    constants[bias_name] = (bias * scale + shift).astype(dtype)
    attrs = {**linear.attrs, "beta": 1.0} if linear.op_type == "Gemm" else linear.attrs
    return linear.with_changes(inputs=(linear.inputs[0], weight_name, bias_name),
                               outputs=(output,), attrs=attrs)


def _constant_bias(linear: Node, constants, channels: int, scale: float) -> np.ndarray | None:
    """The op's bias input (index 2) as one value per channel, zeros if absent, None if it is
    not a per-channel constant."""
    if len(linear.inputs) <= 2 or not linear.inputs[2]:
        return np.zeros(channels)
    bias = constants.get(linear.inputs[2])
    if bias is None or bias.size not in (1, channels) or (bias.size > 1 and bias.shape[-1] != channels):
        return None
    return np.broadcast_to(bias.astype(np.float64).reshape(-1) * scale, (channels,)).copy()


def _folded_dtype(dtype) -> np.dtype:
    """A folded weight's dtype: its source's, but at least float32 — a float16 model's folded
    weights serve only the walk, which computes in float32."""
    return np.promote_types(dtype, np.float32)


def _unique(name: str, taken) -> str:
    candidate, suffix = name, 1
    while candidate in taken:
        suffix += 1
        candidate = f"{name}{suffix}"
    return candidate
