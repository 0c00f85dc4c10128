"""Evaluating what does not depend on the input, once, when a model is loaded.

Constant nodes, and every node whose inputs are all constants, become constants. Exporters
compute pads, shapes or transposed weights that way (PyTorch's static "same" padding, TensorFlow's
weight transposes); onnxruntime folds them too. A node the reference evaluator cannot evaluate
stays in the graph and matters only if the walk needs it.

A quantised model's weights are DequantizeLinear of integer constants (and, in some exports,
QuantizeLinear of float ones before that); they become float constants here, so the linear rules
see float weights: ``scale · (q − zero_point)``, per tensor, per channel along ``axis`` or per
block. NumPy computes them, as the specification defines them, at every opset (onnx's reference
evaluator has these ops only from opset 19).

Shape arithmetic on statically known shapes is folded too (:func:`fold_static_shapes`, once shape
inference has run): a Shape whose input's dims are known, or the known dims a Gather or Slice picks
from a Shape whose batch dim is dynamic, become constants, and so does the arithmetic over them.
PyTorch's ``x.chunk(2, dim=1)`` exports that way: Slice bounds computed from ``Shape(x)[1]``.
"""

from __future__ import annotations

from typing import Optional

import numpy as np
import onnx
from onnx.reference import ReferenceEvaluator

NOT_FOLDED = {"RandomNormal", "RandomUniform", "RandomNormalLike", "RandomUniformLike",
              "Multinomial", "Bernoulli"}


def fold_constants(nodes: list, constants: dict, opset: int) -> list:
    """The nodes that stay; ``constants`` receives the values of the others."""
    kept = []
    for node in nodes:
        present = [name for name in node.inputs if name]
        foldable = (node.domain == "" and node.op_type not in NOT_FOLDED and node.proto is not None
                    and (node.op_type == "Constant" or present)
                    and all(name in constants for name in present))
        values = None
        if foldable and node.op_type in ("QuantizeLinear", "DequantizeLinear"):
            values = _quantization_values(node, constants)
        if foldable and values is None:
            values = _evaluate(node.proto, constants, opset)
        if values is None:
            kept.append(node)
        else:
            constants.update(values)
    return kept


def _evaluate(proto: onnx.NodeProto, constants: dict, opset: int) -> Optional[dict]:
    present = list(dict.fromkeys(name for name in proto.input if name))
    outputs = [name for name in proto.output if name]
    graph = onnx.helper.make_graph(
        [proto], "fold", [], [onnx.ValueInfoProto(name=name) for name in outputs],
        [onnx.numpy_helper.from_array(np.asarray(constants[name]), name) for name in present])
    model = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", opset)])
    try:
        values = ReferenceEvaluator(model).run(None, {})
    except Exception:  # an op the evaluator lacks, a string constant, invalid attributes
        return None
    return {name: np.asarray(value) for name, value in zip(outputs, values)}


def _quantization_values(node, constants: dict) -> Optional[dict]:
    """A QuantizeLinear's or DequantizeLinear's output for constant inputs, or None for a form
    left to the reference evaluator (float8 codes, a missing scale)."""
    x, scale, zero_point = ([constants[name] if name else None for name in node.inputs] + [None] * 3)[:3]
    if scale is None or scale.dtype.kind != "f":
        return None
    axis, block_size = node.attrs.get("axis", 1), node.attrs.get("block_size", 0)
    scale = _along_axis(scale, x.shape, axis, block_size)
    if scale is None:
        return None
    if node.op_type == "DequantizeLinear":
        if x.dtype.kind not in "iu":
            return None
        codes = x.astype(np.int64)
        if zero_point is not None:
            zero_point = _along_axis(zero_point, x.shape, axis, block_size)
            codes = codes - zero_point.astype(np.int64)
        return {node.outputs[0]: codes.astype(scale.dtype) * scale}
    code_type = zero_point.dtype if zero_point is not None else _QUANTIZED_TYPES.get(
        node.attrs.get("output_dtype", 0) or onnx.TensorProto.UINT8)
    if code_type is None or np.dtype(code_type).kind not in "iu" or x.dtype.kind != "f":
        return None
    codes = np.rint(x / scale)   # round half to even, as the specification says
    if zero_point is not None:
        codes = codes + _along_axis(zero_point, x.shape, axis, block_size)
    limits = np.iinfo(code_type)
    return {node.outputs[0]: np.clip(codes, limits.min, limits.max).astype(code_type)}


_QUANTIZED_TYPES = {onnx.TensorProto.UINT8: np.uint8, onnx.TensorProto.INT8: np.int8,
                    onnx.TensorProto.UINT16: np.uint16, onnx.TensorProto.INT16: np.int16}


def _along_axis(parameter: np.ndarray, shape: tuple, axis: int, block_size: int) -> Optional[np.ndarray]:
    """A scale or zero point broadcastable against a tensor of ``shape``: one value (per tensor),
    one per index of ``axis``, or, with ``block_size``, one per block of that axis."""
    if parameter.size == 1:
        return parameter.reshape(())
    axis = axis + len(shape) if axis < 0 else axis
    if not 0 <= axis < len(shape):
        return None
    if block_size:
        if parameter.ndim != len(shape):
            return None
        return np.repeat(parameter, block_size, axis=axis).take(range(shape[axis]), axis=axis)
    if parameter.ndim != 1 or parameter.shape[0] != shape[axis]:
        return None
    return parameter.reshape([-1 if i == axis else 1 for i in range(len(shape))])


# ---- shape arithmetic on statically known shapes ------------------------------------------------

def fold_static_shapes(nodes: list, constants: dict, shapes: dict, opset: int,
                       protected=frozenset()) -> list:
    """The nodes that stay once every Shape value that ``shapes`` (inferred, None for a dim
    unknown before run time) fixes is a constant, with the arithmetic over it; ``constants``
    receives the values. A Shape output with some unknown dims is followed as a list of known
    and unknown dims through Gather and Slice with constant indices, and becomes a constant where
    those pick known dims only (``Shape(x)[1]`` of an (N, C, H, W) tensor with a dynamic batch).
    Shape nodes that nothing reads any more are dropped (``protected`` tensors are kept)."""
    nodes = _folded_shapes(nodes, constants, shapes, opset)
    while True:
        read = {name for node in nodes for name in node.inputs} | set(protected)
        kept = [node for node in nodes if node.op_type != "Shape" or node.outputs[0] in read]
        if len(kept) == len(nodes):
            return nodes
        nodes = kept


def _folded_shapes(nodes: list, constants: dict, shapes: dict, opset: int) -> list:
    while True:
        partial: dict[str, list] = {}     # a Shape-derived int64 vector: its dims, None = unknown
        kept, folded = [], False
        for node in nodes:
            dims = _shape_dims(node, constants, shapes, partial)
            if dims is not None and all(d is not None for d in dims[0]):
                values, scalar = dims
                constants[node.outputs[0]] = np.asarray(values[0] if scalar else values, np.int64)
                folded = True
                continue
            if dims is not None and not dims[1]:
                partial[node.outputs[0]] = dims[0]
            kept.append(node)
        nodes = fold_constants(kept, constants, opset)
        if not folded:
            return nodes


def _shape_dims(node, constants: dict, shapes: dict, partial: dict):
    """(dims, is a scalar) of a Shape, or of a Gather or Slice of a Shape-derived vector with
    constant indices; None for any other node, or one whose dims cannot be known."""
    if node.domain != "" or len(node.outputs) != 1:
        return None
    if node.op_type == "Shape":
        shape = shapes.get(node.inputs[0])
        if shape is None:
            return None
        start, end = node.attrs.get("start", 0), node.attrs.get("end")
        return list(shape)[slice(start, end)], False
    source = partial.get(node.inputs[0]) if node.inputs else None
    if source is None:
        return None
    if node.op_type == "Gather" and node.attrs.get("axis", 0) == 0 and node.inputs[1] in constants:
        indices = np.asarray(constants[node.inputs[1]])
        if indices.ndim > 1 or not all(-len(source) <= int(i) < len(source) for i in indices.reshape(-1)):
            return None
        return [source[int(i)] for i in indices.reshape(-1)], indices.ndim == 0
    if node.op_type == "Slice" and node.attrs.get("starts") is None:   # opset 10 on: bounds as inputs
        bounds = [np.asarray(constants[name]).reshape(-1) if name in constants else None
                  for name in node.inputs[1:3]]
        extra = [name for name in node.inputs[3:] if name]
        if any(b is None or b.size != 1 for b in bounds) or not all(name in constants for name in extra):
            return None
        axes = np.asarray(constants[node.inputs[3]]).reshape(-1) if len(node.inputs) > 3 and node.inputs[3] else [0]
        steps = np.asarray(constants[node.inputs[4]]).reshape(-1) if len(node.inputs) > 4 and node.inputs[4] else [1]
        if [int(a) for a in axes] not in ([0], [-1]) or int(steps[0]) == 0:
            return None
        start, end, step = (max(min(int(v), 2 ** 62), -2 ** 62) for v in (bounds[0][0], bounds[1][0], steps[0]))
        return source[slice(start, end, step)], False
    return None
