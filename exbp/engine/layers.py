"""Which tensors can carry a map, their layout, and the default map layer (REFERENCE §5).

A map layer is a tensor on the path from the input to the logits with at least one spatial axis
(rank ≥ 3). Its channel axis is 1, except for a tensor whose every consumer on the path is a
Transpose from channels-last to channels-first (an NHWC input of a TensorFlow export): there it
is the last axis.

The default layer is the deepest *cut* tensor — one that every path from the input to the logits
goes through, so it carries the whole signal (VGG's conv5_3, ResNet's layer outputs, an Inception
block's concat) — whose spatial size is about 1/8 to 1/16 of the input's: the input is 7 to 18
times larger along every spatial axis. A map needs more than one position, so 1×1 tensors never
qualify, nor do Pad outputs, whose border is padding rather than image. Failing that, the deepest cut tensor with more than one position; failing that, the input.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, NamedTuple, Optional

from .graph import Graph
from .planning import descendants, reaching_logits, signal_inputs

DOWNSCALE_RANGE = (7, 18)


class LayerInfo(NamedTuple):
    name: str
    op_type: str
    shape: Optional[tuple]


@dataclass(frozen=True)
class LayerCatalogue:
    layers: tuple[LayerInfo, ...]       # map-capable tensors in topological order
    cuts: tuple[str, ...]               # cut tensors in topological order, the input first
    channel_last: frozenset[str]        # tensors whose channel axis is the last one
    padded: frozenset[str] = frozenset()   # Pad outputs

    def names(self) -> list[str]:
        return [layer.name for layer in self.layers]

    def channel_axis(self, name: str) -> int:
        return -1 if name in self.channel_last else 1

    def spatial(self, name: str, shape) -> Optional[tuple]:
        if shape is None or len(shape) < 3:
            return None
        return tuple(shape[1:-1]) if name in self.channel_last else tuple(shape[2:])

    def default_layer(self, shapes: Mapping[str, tuple], input_name: str) -> str:
        input_spatial = self.spatial(input_name, shapes.get(input_name))
        map_capable = set(self.names())
        candidates = [name for name in reversed(self.cuts)
                      if name in map_capable and name not in self.padded]
        sized = [(name, self.spatial(name, shapes.get(name))) for name in candidates]
        known = [(name, dims) for name, dims in sized if dims and all(dims) and input_spatial
                 and all(input_spatial) and len(dims) == len(input_spatial)
                 and any(dim > 1 for dim in dims) and name != input_name]
        low, high = DOWNSCALE_RANGE
        for name, dims in known:
            if all(low <= size / dim <= high for size, dim in zip(input_spatial, dims)):
                return name
        return known[0][0] if known else input_name


def build_catalogue(graph: Graph, logits: str) -> LayerCatalogue:
    on_path = reaching_logits(graph, logits) & descendants(graph, graph.input_name)
    producer = graph.producer
    order = [graph.input_name] + [name for node in graph.nodes for name in node.outputs]
    layers = []
    for name in order:
        if name not in on_path or name == logits:
            continue
        shape = graph.shapes.get(name)
        if shape is not None and len(shape) < 3:
            continue
        op_type = producer[name].op_type if name in producer else "Input"
        layers.append(LayerInfo(name, op_type, shape))
    channel_last = frozenset(layer.name for layer in layers if _feeds_only_nchw_transposes(graph, layer.name, on_path))
    padded = frozenset(layer.name for layer in layers if layer.op_type == "Pad")
    return LayerCatalogue(layers=tuple(layers), cuts=tuple(_cut_tensors(graph, on_path)),
                          channel_last=channel_last, padded=padded)


def _feeds_only_nchw_transposes(graph: Graph, name: str, on_path: set[str]) -> bool:
    consumers = [node for node in graph.consumers_of(name) if any(o in on_path for o in node.outputs)]
    if not consumers:
        return False
    for node in consumers:
        perm = tuple(node.attrs.get("perm") or ())
        rank = len(perm)
        if node.op_type != "Transpose" or rank < 3 or perm != (0, rank - 1) + tuple(range(1, rank - 1)):
            return False
    return True


def _cut_tensors(graph: Graph, on_path: set[str]) -> list[str]:
    """Tensors every input-to-logits path goes through, in topological order. Walking the nodes
    in order, a tensor is a cut exactly when, right after it is produced, it is the only tensor
    produced so far that a later node on the path still reads."""
    readers: dict[str, int] = {}
    path_nodes = []
    for node in graph.nodes:
        receivers = [node.inputs[i] for i in signal_inputs(node, graph) if node.inputs[i] in on_path]
        if receivers and any(name in on_path for name in node.outputs):
            path_nodes.append((node, receivers))
            for name in receivers:
                readers[name] = readers.get(name, 0) + 1
    live = {graph.input_name}
    cuts = [graph.input_name]
    for node, receivers in path_nodes:
        for name in receivers:
            readers[name] -= 1
            if readers[name] == 0:
                live.discard(name)
        live.update(name for name in node.outputs if name in on_path and readers.get(name, 0) > 0)
        if len(live) == 1 and next(iter(live)) in node.outputs:
            cuts.append(next(iter(live)))
    return cuts
