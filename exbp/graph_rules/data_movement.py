"""Ops that only move values: the signal moves back the same way, and nothing is mixed.

Flatten/Reshape/Squeeze/Unsqueeze reshape back to the input's shape, Transpose applies the inverse
permutation, Concat splits along its axis and Split concatenates. Pad crops (other pad modes add a
border cell's signal to the cell it copies), Slice and Gather on constant indices scatter back with
zeros elsewhere (repeated indices add). The leading axis of a signal is the target axis, so an
ONNX axis ``a`` of a tensor is axis ``a + 1`` of its signal.

Moving a signal back the way the values came is the transpose of the move, which is also the
gradient of every comparison method (docs/method.md §9): each rule here serves every propagation
kind.
"""

from __future__ import annotations

import numpy as np

from .layouts import gathered_layout, reshaped_layout, transposed_layout
from .registry import (Need, Recorded, Role, activation_inputs, by_opset, constant_inputs_refusal,
                       keeps_sign_of, rule, shape_of_first_input)


def moves_values(node, graph) -> bool:
    """``shares_by_sign``: every input value's signal is its output position's."""
    return True


@rule("Flatten", "Reshape", "Squeeze", "Unsqueeze", needs=shape_of_first_input,
      role=Role.SAME_VALUES, shares_by_sign=moves_values, sign=keeps_sign_of(0), layout=reshaped_layout, every_propagation=True)
def reshape_rule(node, tensors, signals, receivers):
    signal = signals[0]
    return [signal.reshape((signal.shape[0],) + tuple(tensors.shape(node.inputs[0])))]


@rule("Transpose", role=Role.SAME_VALUES, sign=keeps_sign_of(0), layout=transposed_layout,
      shares_by_sign=moves_values, every_propagation=True)
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


def _ints(graph, name) -> tuple[int, ...] | None:
    """A constant input as ints; None where it is computed at run time."""
    value = graph.constant(name)
    return None if value is None else tuple(int(v) for v in value.reshape(-1))


def _pads_attribute(node, graph) -> dict:
    return {"pads": tuple(node.attrs["pads"]), "pad_axes": None}


def _pads_input(node, graph) -> dict | None:
    pads = _ints(graph, node.inputs[1])
    has_axes = len(node.inputs) > 3 and node.inputs[3]
    axes = _ints(graph, node.inputs[3]) if has_axes else None
    if pads is None or (has_axes and axes is None):
        return None
    return {"pads": pads, "pad_axes": axes}


def _pad_amounts(node, rank: int) -> tuple[list[int], list[int]]:
    """(before, after) per axis."""
    pads = node.attrs["pads"]
    axes = [a % rank for a in node.attrs["pad_axes"]] if node.attrs["pad_axes"] else list(range(rank))
    before, after = [0] * rank, [0] * rank
    for i, axis in enumerate(axes):
        before[axis], after[axis] = pads[i], pads[len(axes) + i]
    return before, after


def _pad_sign(node, graph, non_negative) -> bool:
    """≥ 0 when its input and its fill value are (an attribute before opset 11, an input since)."""
    fill = [node.inputs[2]] if len(node.inputs) > 2 and node.inputs[2] else []
    return (all(name in non_negative for name in node.inputs[:1] + tuple(fill))
            and (node.attrs.get("value") or 0) >= 0)


# a Pad's border is padding, not image: its output is no map layer
@rule("Pad", needs=shape_of_first_input, refusal=constant_inputs_refusal(1, 3), sign=_pad_sign,
      parameters=by_opset({2: _pads_attribute, 11: _pads_input}), role=Role.NO_MAP, every_propagation=True)
def pad_rule(node, tensors, signals, receivers):
    signal = signals[0]
    shape = tuple(tensors.shape(node.inputs[0]))
    before, after = _pad_amounts(node, len(shape))
    mode = node.attrs.get("mode", "constant")
    for axis, length in enumerate(shape):
        if before[axis] or after[axis]:
            sources = _pad_sources(mode, length, before[axis], after[axis])
            signal = scatter_along_axis(tensors.xp, signal, axis + 1, sources, length)
    return [signal]


def _slice_attributes(node, graph) -> dict:
    starts = node.attrs["starts"]
    return {"starts": tuple(starts), "ends": tuple(node.attrs["ends"]),
            "axes": tuple(node.attrs.get("axes") or range(len(starts))), "steps": (1,) * len(starts)}


def _slice_inputs(node, graph) -> dict | None:
    read = {key: _ints(graph, node.inputs[index]) if len(node.inputs) > index and node.inputs[index]
            else () for index, key in enumerate(("starts", "ends", "axes", "steps"), start=1)}
    if any(value is None for value in read.values()):
        return None
    count = len(read["starts"])
    return {**read, "axes": read["axes"] or tuple(range(count)), "steps": read["steps"] or (1,) * count}


def _python_slice(start: int, end: int, step: int, dim: int) -> slice:
    """ONNX Slice's clamping rules, as a Python slice."""
    start = start + dim if start < 0 else start
    end = end + dim if end < 0 else end
    if step > 0:
        start, end = min(max(start, 0), dim), min(max(end, 0), dim)
    else:
        start, end = min(max(start, 0), dim - 1), min(max(end, -1), dim - 1)
    return slice(start, end if end >= 0 else None, step)


@rule("Slice", shares_by_sign=moves_values, needs=shape_of_first_input, refusal=constant_inputs_refusal(1, 2, 3, 4),
      parameters=by_opset({1: _slice_attributes, 10: _slice_inputs}), sign=keeps_sign_of(0), every_propagation=True)
def slice_rule(node, tensors, signals, receivers):
    signal = signals[0]
    shape = tuple(tensors.shape(node.inputs[0]))
    index = [slice(None)] * (len(shape) + 1)
    attrs = node.attrs
    for axis, start, end, step in zip(attrs["axes"], attrs["starts"], attrs["ends"], attrs["steps"]):
        index[axis % len(shape) + 1] = _python_slice(start, end, step, shape[axis % len(shape)])
    result = tensors.xp.zeros((signal.shape[0],) + shape, dtype=signal.dtype)
    result[tuple(index)] = signal
    return [result]


@rule("Gather", needs=shape_of_first_input, refusal=constant_inputs_refusal(1), sign=keeps_sign_of(0),
      layout=gathered_layout, every_propagation=True)
def gather_rule(node, tensors, signals, receivers):
    signal = signals[0]
    shape = tuple(tensors.shape(node.inputs[0]))
    axis = node.attrs.get("axis", 0) % len(shape)
    indices = np.asarray(tensors.constant(node.inputs[1])).reshape(-1) % shape[axis]
    gathered = signal.reshape((signal.shape[0],) + shape[:axis] + (indices.size,) + shape[axis + 1:])
    return [scatter_along_axis(tensors.xp, gathered, axis + 1, indices, shape[axis])]


def _all_input_shapes(node, graph):
    return tuple(Need(Recorded.SHAPE, name) for name in node.inputs if name)


@rule("Concat", shares_by_sign=moves_values, signal_inputs=activation_inputs, needs=_all_input_shapes, sign=keeps_sign_of(), every_propagation=True)
def concat_rule(node, tensors, signals, receivers):
    signal = signals[0]
    axis = node.attrs["axis"] % (signal.ndim - 1)
    edges = np.cumsum([tensors.shape(name)[axis] for name in node.inputs])
    pieces = tensors.xp.split(signal, edges[:-1].tolist(), axis=axis + 1)
    return [pieces[i] for i in receivers]


def _output_shapes(node, graph):
    return tuple(Need(Recorded.SHAPE, name) for name in node.outputs if name)


@rule("Split", shares_by_sign=moves_values, needs=_output_shapes, refusal=constant_inputs_refusal(1), sign=keeps_sign_of(0), every_propagation=True)
def split_rule(node, tensors, signals, receivers):
    xp = tensors.xp
    present = next(s for s in signals if s is not None)
    targets = present.shape[0]
    axis = node.attrs.get("axis", 0) % (present.ndim - 1)
    pieces = [s if s is not None else xp.zeros((targets,) + tuple(tensors.shape(name)), present.dtype)
              for s, name in zip(signals, node.outputs)]
    return [xp.concatenate(pieces, axis=axis + 1)]
