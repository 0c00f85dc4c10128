"""Which tensors can carry a map, their layout, and the default map layer (docs/method.md §5).

A map layer is a tensor on the path from the input to the logits whose layout
(:mod:`.layouts`) is known: the batch first, one channel axis and at least one spatial axis, all
derived from the input's. A tensor of rank ≥ 3 whose layout is not known (a Reshape mixed its
channels and positions) is offered as no layer, and asking for it says why. Outputs whose rule
says they carry no map (a Pad's border is padding rather than image) are no map layers either.

The default layer is the deepest *cut* tensor — one that every path from the input to the logits
goes through, so it carries the whole signal (VGG's conv5_3, ResNet's layer outputs, an Inception
block's concat) — below the classifier (c-MWP needs the classifier above the layer; SqueezeNet's
classifier is a 1×1 Conv), whose spatial size is about 1/8 to 1/16 of the input's: the input is 7
to 18 times larger along every spatial axis. A map needs more than one position, so 1×1 tensors
never qualify. A tensor that only moves another's values (a Transpose to channels first, a
Reshape) stands for the tensor it copies, so every exporter's graph of one network gets the same
default block. Failing that, the deepest such cut with more than one position; failing that, the
input.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping, NamedTuple, Optional

from ...graph_rules import Layout, Role, entry_for
from .layouts import derive_layouts
from .model import Graph
from .paths import classifier_of, cut_tensors, descendants, reaching_logits, signal_inputs

DOWNSCALE_RANGE = (7, 18)


class LayerInfo(NamedTuple):
    name: str
    op_type: str
    shape: Optional[tuple]
    layout: str = ""          # the axes' letters: "NCHW", "NHWC"...


@dataclass(frozen=True)
class LayerCatalogue:
    layers: tuple[LayerInfo, ...]             # map-capable tensors in topological order
    cuts: tuple[str, ...]                     # cut tensors in topological order, the input first
    layouts: Mapping[str, Layout]             # of the map-capable tensors and the input
    no_map: Mapping[str, str]                 # on-path tensors of rank ≥ 3 that carry no map: why
    above_classifier: frozenset[str] = frozenset()
    copies: Mapping[str, str] = field(default_factory=dict)   # a tensor moving another's values -> it

    def names(self) -> list[str]:
        return [layer.name for layer in self.layers]

    def layout(self, name: str) -> Optional[Layout]:
        return self.layouts.get(name)

    def spatial(self, name: str, shape) -> Optional[tuple]:
        layout = self.layouts.get(name)
        if shape is None or layout is None or len(shape) != layout.rank:
            return None
        return tuple(shape[axis] for axis in layout.spatial_axes)

    def default_layer(self, shapes: Mapping[str, tuple], input_name: str) -> str:
        input_spatial = self.spatial(input_name, shapes.get(input_name))
        map_capable = set(self.names())
        candidates = []
        for name in reversed(self.cuts):
            name = self.copies.get(name, name)
            if name in map_capable and name not in self.above_classifier and name not in candidates:
                candidates.append(name)
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
    derived = derive_layouts(graph)
    order = [graph.input_name] + [name for node in graph.nodes for name in node.outputs]
    layers, layouts, no_map, padded = [], {}, {}, set()
    for name in order:
        if name not in on_path or name == logits:
            continue
        shape = graph.shapes.get(name)
        layout = derived.get(name)
        rank = layout.rank if layout is not None else len(shape) if shape is not None else None
        if rank is not None and rank < 3:
            continue
        reason = layout.why_no_map() if layout is not None else (
            "exbp could not derive which of its axes hold the channels and which the positions")
        entry = entry_for(producer[name]) if name in producer else None
        # a copy of a padded tensor (a Transpose after a Pad) holds the same border
        copied = entry is not None and entry.role is Role.SAME_VALUES and producer[name].inputs[0] in padded
        if reason is None and entry is not None and (entry.role is Role.NO_MAP or copied):
            reason = (no_map[producer[name].inputs[0]] if copied else
                      f"it is the output of a {producer[name].op_type}, whose border holds no image")
            padded.add(name)
        if reason is not None:
            no_map[name] = reason
            continue
        layouts[name] = layout
        layers.append(LayerInfo(name, producer[name].op_type if name in producer else "Input", shape,
                                layout.letters))
    if graph.input_name in derived and derived[graph.input_name] is not None:
        layouts.setdefault(graph.input_name, derived[graph.input_name])
    return LayerCatalogue(layers=tuple(layers), cuts=tuple(cut_tensors(graph, on_path)),
                          layouts=layouts, no_map=no_map, above_classifier=_not_below_classifier(graph, logits),
                          copies=_copies(graph, layouts))


def _not_below_classifier(graph: Graph, logits: str) -> frozenset[str]:
    """The classifier's outputs and all above them, its input, and the tensors below it through
    element-wise ops (a ReLU): for a 1×1-Conv classifier MWP and the dual put the same mass on
    every position there, so c-MWP keeps only what one of them lost where its Z is 0."""
    classifier = classifier_of(graph, logits)
    if classifier is None:
        return frozenset()
    excluded = descendants(graph, classifier.outputs[0])
    receivers = [classifier.inputs[i] for i in signal_inputs(classifier, graph)]
    while len(receivers) == 1 and receivers[0] not in excluded:
        tensor = receivers[0]
        excluded.add(tensor)
        node = graph.producer.get(tensor)
        entry = entry_for(node) if node is not None else None
        if entry is None or entry.weight_input is not None:
            break
        receivers = [node.inputs[i] for i in signal_inputs(node, graph)]
        shape = graph.shapes.get(tensor)
        if shape is None or len(receivers) != 1 or graph.shapes.get(receivers[0]) != shape:
            break
    return frozenset(excluded)


def _copies(graph: Graph, layouts: Mapping[str, Layout]) -> dict[str, str]:
    """Map tensors that only hold another map tensor's values (through Transposes and reshapes
    that keep its spatial axes) -> the tensor computed first."""
    copies: dict[str, str] = {}
    for node in graph.nodes:
        entry = entry_for(node)
        if entry is None or entry.role is not Role.SAME_VALUES or len(node.outputs) != 1:
            continue
        source, out = node.inputs[0], node.outputs[0]
        if source in layouts and out in layouts:
            copies[out] = copies.get(source, source)
    return copies
