"""Ops that only move values: the signal moves back the same way, and nothing is mixed.

Flatten/Reshape/Squeeze/Unsqueeze reshape back to the input's shape, Transpose applies the inverse
permutation, Concat splits along its axis and Split concatenates. Pad crops (other pad modes add a
border cell's signal to the cell it copies), Slice and Gather on constant indices scatter back with
zeros elsewhere (repeated indices add). The leading axis of a signal is the target axis, so an
ONNX axis ``a`` of a tensor is axis ``a + 1`` of its signal.
"""

from __future__ import annotations

import numpy as np

from .registry import activation_inputs, rule


def _input_shape(node, graph):
    return (node.inputs[0],)


def _constant_inputs_refusal(*indices):
    def refusal(node, graph):
        for index in indices:
            if len(node.inputs) > index and node.inputs[index] and not graph.is_constant(node.inputs[index]):
                return (f"{node.op_type} with input {index} ({node.inputs[index]!r}) computed at run "
                        "time is not supported; it must be a constant")
        return None
    return refusal


@rule("Flatten", "Reshape", "Squeeze", "Unsqueeze", reads_shapes=_input_shape)
def reshape_rule(node, tensors, signals, receivers):
    signal = signals[0]
    return [signal.reshape((signal.shape[0],) + tuple(tensors.shape(node.inputs[0])))]


@rule("Transpose")
def transpose_rule(node, tensors, signals, receivers):
    signal = signals[0]
    rank = signal.ndim - 1
    perm = node.attrs.get("perm") or tuple(reversed(range(rank)))
    inverse = np.argsort(perm)
    return [tensors.xp.transpose(signal, (0,) + tuple(int(a) + 1 for a in inverse))]


def scatter_along_axis(xp, signal, axis: int, source, length: int):
    """An array like ``signal`` with ``axis`` of size ``length``, where position ``source[o]``
    receives ``signal``'s position ``o`` (summed where sources repeat; -1 sends nowhere).
    Consecutive runs of sources are moved as one slice each."""
    moved = xp.moveaxis(signal, axis, 0)
    result = xp.zeros((length,) + moved.shape[1:], dtype=signal.dtype)
    source = [int(s) for s in source]
    start = 0
    while start < len(source):
        if source[start] < 0:
            start += 1
            continue
        end = start + 1
        while end < len(source) and source[end] == source[end - 1] + 1:
            end += 1
        result[source[start]:source[start] + end - start] += moved[start:end]
        start = end
    return xp.moveaxis(result, 0, axis)


def _pad_sources(mode: str, length: int, before: int, after: int) -> np.ndarray:
    """For each output position along one axis, the input position it copies (-1: a constant)."""
    position = np.arange(-before, length + after)
    if mode == "edge":
        return np.clip(position, 0, length - 1)
    if mode == "wrap":
        return position % length
    if mode == "reflect":
        period = 2 * (length - 1) if length > 1 else 1
        folded = position % period
        return np.where(folded < length, folded, period - folded) if length > 1 else folded * 0
    return np.where((position >= 0) & (position < length), position, -1)


def _pad_amounts(node, source, rank: int) -> tuple[list[int], list[int]]:
    """(before, after) per axis from the attribute (opset < 11) or the pads/axes inputs."""
    if "pads" in node.attrs:
        pads = list(node.attrs["pads"])
        axes = list(range(rank))
    else:
        pads = [int(p) for p in source.constant(node.inputs[1]).reshape(-1)]
        has_axes = len(node.inputs) > 3 and node.inputs[3]
        axes = ([int(a) % rank for a in source.constant(node.inputs[3]).reshape(-1)]
                if has_axes else list(range(rank)))
    before, after = [0] * rank, [0] * rank
    for i, axis in enumerate(axes):
        before[axis], after[axis] = pads[i], pads[len(axes) + i]
    return before, after


@rule("Pad", reads_shapes=_input_shape, refusal=_constant_inputs_refusal(1, 3))
def pad_rule(node, tensors, signals, receivers):
    signal = signals[0]
    shape = tuple(tensors.shape(node.inputs[0]))
    before, after = _pad_amounts(node, tensors, len(shape))
    mode = node.attrs.get("mode", "constant")
    for axis, length in enumerate(shape):
        if before[axis] or after[axis]:
            sources = _pad_sources(mode, length, before[axis], after[axis])
            signal = scatter_along_axis(tensors.xp, signal, axis + 1, sources, length)
    return [signal]


def _slice_parameters(node, source, rank: int):
    if "starts" in node.attrs:  # opset < 10
        starts, ends = node.attrs["starts"], node.attrs["ends"]
        axes = node.attrs.get("axes") or range(len(starts))
        steps = [1] * len(starts)
    else:
        def read(index):
            has = len(node.inputs) > index and node.inputs[index]
            return [int(v) for v in source.constant(node.inputs[index]).reshape(-1)] if has else None
        starts, ends = read(1), read(2)
        axes = read(3) or range(len(starts))
        steps = read(4) or [1] * len(starts)
    return [(int(a) % rank, int(s), int(e), int(t)) for a, s, e, t in zip(axes, starts, ends, steps)]


def _python_slice(start: int, end: int, step: int, dim: int) -> slice:
    """ONNX Slice's clamping rules, as a Python slice."""
    start = start + dim if start < 0 else start
    end = end + dim if end < 0 else end
    if step > 0:
        start, end = min(max(start, 0), dim), min(max(end, 0), dim)
    else:
        start, end = min(max(start, 0), dim - 1), min(max(end, -1), dim - 1)
    return slice(start, end if end >= 0 else None, step)


@rule("Slice", reads_shapes=_input_shape, refusal=_constant_inputs_refusal(1, 2, 3, 4))
def slice_rule(node, tensors, signals, receivers):
    signal = signals[0]
    shape = tuple(tensors.shape(node.inputs[0]))
    index = [slice(None)] * (len(shape) + 1)
    for axis, start, end, step in _slice_parameters(node, tensors, len(shape)):
        index[axis + 1] = _python_slice(start, end, step, shape[axis])
    result = tensors.xp.zeros((signal.shape[0],) + shape, dtype=signal.dtype)
    result[tuple(index)] = signal
    return [result]


@rule("Gather", reads_shapes=_input_shape, refusal=_constant_inputs_refusal(1))
def gather_rule(node, tensors, signals, receivers):
    signal = signals[0]
    shape = tuple(tensors.shape(node.inputs[0]))
    axis = node.attrs.get("axis", 0) % len(shape)
    indices = np.asarray(tensors.constant(node.inputs[1])).reshape(-1) % shape[axis]
    gathered = signal.reshape((signal.shape[0],) + shape[:axis] + (indices.size,) + shape[axis + 1:])
    return [scatter_along_axis(tensors.xp, gathered, axis + 1, indices, shape[axis])]


def _all_input_shapes(node, graph):
    return tuple(name for name in node.inputs if name)


@rule("Concat", signal_inputs=activation_inputs, reads_shapes=_all_input_shapes)
def concat_rule(node, tensors, signals, receivers):
    signal = signals[0]
    axis = node.attrs["axis"] % (signal.ndim - 1)
    edges = np.cumsum([tensors.shape(name)[axis] for name in node.inputs])
    pieces = tensors.xp.split(signal, edges[:-1].tolist(), axis=axis + 1)
    return [pieces[i] for i in receivers]


def _output_shapes(node, graph):
    return tuple(name for name in node.outputs if name)


@rule("Split", reads_shapes=_output_shapes, refusal=_constant_inputs_refusal(1))
def split_rule(node, tensors, signals, receivers):
    xp = tensors.xp
    present = next(s for s in signals if s is not None)
    targets = present.shape[0]
    axis = node.attrs.get("axis", 0) % (present.ndim - 1)
    pieces = [s if s is not None else xp.zeros((targets,) + tuple(tensors.shape(name)), present.dtype)
              for s, name in zip(signals, node.outputs)]
    return [xp.concatenate(pieces, axis=axis + 1)]
