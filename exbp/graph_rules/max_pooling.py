"""MaxPool and GlobalMaxPool: each output's whole signal goes to the input that won its window.

Ties go to the first maximum in row-major order, as Caffe's and TorchRay's max pooling route.
The winners are a derived quantity of the recording (``Recorded.WINNERS``: a MaxPool twin's Indices
output, flat indices into the input) where it has them; otherwise they are found from the recorded
input, window by window. The
output shape comes from the signal, so ``ceil_mode``, ``pads``, ``auto_pad`` and ``dilations``
match the forward pass exactly.

The winner's routing is also max pooling's gradient, and LRP's winner-takes-all: the rule serves
every propagation kind (docs/method.md §9).
"""

from __future__ import annotations

from onnx import helper

from .geometry import window_geometry
from .layouts import CHANNELS_FIRST
from .onnx_form import listed
from .registry import Recorded, keeps_sign_of, rule, values_of


def _winner_nodes(node, input_non_negative: bool, out: str):
    """A MaxPool twin whose Indices output is the winners; None for the column-major
    ``storage_order``, whose indices the routing below does not read."""
    if node.attrs.get("storage_order", 0) != 0:
        return None
    attrs = listed({k: v for k, v in node.attrs.items() if k != "storage_order"})
    return [helper.make_node("MaxPool", [node.inputs[0]], [out + "_values", out], name=out, **attrs)]


def _indices_refusal(node, graph):
    if len(node.outputs) > 1 and graph.consumers_of(node.outputs[1]):
        return "MaxPool's Indices output is consumed by the graph; exbp routes only the values"
    return None


@rule("MaxPool", needs=values_of(0), refusal=_indices_refusal, sign=keeps_sign_of(0),
      derived={Recorded.WINNERS: _winner_nodes}, every_propagation=True, **CHANNELS_FIRST)
def max_pool_rule(node, tensors, signals, receivers):
    x = tensors.value(node.inputs[0])
    winners = tensors.recorded(node, Recorded.WINNERS)
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
        size = size * dim       # (a compiled graph's batch size is symbolic)
    flat = winners.reshape(-1)
    rows = [xp.bincount(flat, weights=row, minlength=size) for row in signal.reshape(signal.shape[0], -1)]
    return xp.stack(rows).astype(signal.dtype).reshape((signal.shape[0],) + tuple(input_shape))


@rule("GlobalMaxPool", needs=values_of(0), sign=keeps_sign_of(0), every_propagation=True,
      **CHANNELS_FIRST)
def global_max_pool_rule(node, tensors, signals, receivers):
    xp = tensors.xp
    x = tensors.value(node.inputs[0])
    flat = x.reshape(x.shape[:2] + (-1,))
    winner = xp.argmax(flat, axis=-1)[..., None]            # argmax returns the first maximum
    is_winner = xp.arange(flat.shape[-1]) == winner
    routed = xp.where(is_winner, signals[0].reshape(signals[0].shape[:3] + (1,)), 0)
    return [routed.reshape((signals[0].shape[0],) + x.shape).astype(signals[0].dtype)]
