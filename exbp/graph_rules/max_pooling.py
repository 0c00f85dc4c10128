"""MaxPool and GlobalMaxPool: each output's whole signal goes to the input that won its window.

Ties go to the first maximum in row-major order, as Caffe's and TorchRay's max pooling route.
The winners are the recording's ("winners": onnxruntime's MaxPool Indices, flat indices into the
input) when it has them; otherwise they are found from the recorded input, window by window. The
output shape comes from the signal, so ``ceil_mode``, ``pads``, ``auto_pad`` and ``dilations``
match the forward pass exactly.
"""

from __future__ import annotations

from .geometry import window_geometry
from .registry import rule


def _input_value(node, graph):
    return (node.inputs[0],)


def _indices_refusal(node, graph):
    if len(node.outputs) > 1 and graph.consumers_of(node.outputs[1]):
        return "MaxPool's Indices output is consumed by the graph; exbp routes only the values"
    return None


@rule("MaxPool", reads_values=_input_value, refusal=_indices_refusal)
def max_pool_rule(node, tensors, signals, receivers):
    x = tensors.value(node.inputs[0])
    winners = tensors.precomputed(node, "winners")
    if winners is not None:
        return [_route_to_flat_indices(tensors.xp, signals[0], winners, x.shape)]
    kernel = node.attrs["kernel_shape"]
    n = len(kernel)
    in_spatial, out_spatial = tuple(x.shape[-n:]), tuple(signals[0].shape[-n:])
    geometry = window_geometry(node, kernel, in_spatial)
    kernels = tensors.kernels
    winner = kernels.window_argmax(x, geometry.kernel, out_spatial=out_spatial,
                                   **geometry.as_kwargs())
    return [kernels.route_to_winners(signals[0], winner, geometry.kernel, in_spatial=in_spatial,
                                     **geometry.as_kwargs())]


def _route_to_flat_indices(xp, signal, winners, input_shape):
    """Add each output's signal at its winner's flat index, one target row at a time."""
    size = 1
    for dim in input_shape:
        size *= int(dim)
    flat = winners.reshape(-1)
    rows = [xp.bincount(flat, weights=row, minlength=size) for row in signal.reshape(signal.shape[0], -1)]
    return xp.stack(rows).astype(signal.dtype).reshape((signal.shape[0],) + tuple(input_shape))


@rule("GlobalMaxPool", reads_values=_input_value)
def global_max_pool_rule(node, tensors, signals, receivers):
    xp = tensors.xp
    x = tensors.value(node.inputs[0])
    flat = x.reshape(x.shape[:2] + (-1,))
    winner = xp.argmax(flat, axis=-1)[..., None]            # argmax returns the first maximum
    is_winner = xp.arange(flat.shape[-1]) == winner
    routed = xp.where(is_winner, signals[0].reshape(signals[0].shape[:3] + (1,)), 0)
    return [routed.reshape((signals[0].shape[0],) + x.shape).astype(signals[0].dtype)]
