"""Which tensors can carry a map, their layout, and the default map layer (docs/method.md §5).

A map layer is a tensor on the path from the input to the logits with at least one spatial axis
(rank ≥ 3). Its channel axis is 1, except for a tensor whose every consumer on the path says that
it reads its input's channels last (a Transpose from channels-last to channels-first, as after an
NHWC input of a TensorFlow export): there it is the last axis.

The default layer is the deepest *cut* tensor — one that every path from the input to the logits
goes through, so it carries the whole signal (VGG's conv5_3, ResNet's layer outputs, an Inception
block's concat) — whose spatial size is about 1/8 to 1/16 of the input's: the input is 7 to 18
times larger along every spatial axis. A map needs more than one position, so 1×1 tensors never
qualify. Outputs whose rule says they carry no map (a Pad's border is padding rather than image)
are no map layers at all. Failing that, the deepest cut tensor with more than one position; failing that, the input.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, NamedTuple, Optional

from ...graph_rules import Role, entry_for
from .model import Graph
from .paths import cut_tensors, descendants, reaching_logits

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
    no_map: frozenset[str] = frozenset()   # outputs of ops whose rule says they carry no map (not in layers)

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
        candidates = [name for name in reversed(self.cuts) if name in map_capable]
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
    channel_last = frozenset(layer.name for layer in layers
                             if _read_channels_last(graph, layer.name, on_path))
    no_map = frozenset(layer.name for layer in layers if layer.name in producer
                       and getattr(entry_for(producer[layer.name]), "role", None) is Role.NO_MAP)
    layers = [layer for layer in layers if layer.name not in no_map]
    return LayerCatalogue(layers=tuple(layers), cuts=tuple(cut_tensors(graph, on_path)),
                          channel_last=channel_last, no_map=no_map)


def _read_channels_last(graph: Graph, name: str, on_path: set[str]) -> bool:
    """Whether every consumer of ``name`` on the path says it reads the last axis as channels."""
    consumers = [node for node in graph.consumers_of(name) if any(o in on_path for o in node.outputs)]
    if not consumers:
        return False
    for node in consumers:
        entry = entry_for(node)
        if entry is None or entry.input_channel_axis is None or entry.input_channel_axis(node) != -1:
            return False
    return True
