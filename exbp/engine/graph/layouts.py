"""Every tensor's layout, derived from the input's through the rules' ``layout`` declarations
(docs/method.md §5.1).

The input's own layout is read from what the graph does with it, not from its shape: each
candidate (channels first, channels last) is carried forward, and the one that every op reading
(N, C, spatial…) agrees with wins. A TensorFlow export's Transpose to channels first before its
first Conv, behind any number of element-wise preprocessing ops (a Keras Rescaling layer's Mul and
Add by (1, 1, 1, 3) constants), says the input is channels last. A graph with no such op falls
back to the input's declared shape (channels last when only the last axis has 1 or 3 entries).
"""

from __future__ import annotations

from typing import Optional

from ...graph_rules import Layout, entry_for
from ..inputs import looks_channels_last
from .model import Graph


def derive_layouts(graph: Graph) -> dict[str, Optional[Layout]]:
    """Every tensor's Layout (None where no rule derives one)."""
    shape = graph.shapes.get(graph.input_name) or ()
    if len(shape) < 3:
        return _propagated(graph, None)
    candidates = [Layout.channels_first(len(shape)), Layout.channels_last(len(shape))]
    scored = []
    for order, candidate in enumerate(candidates):
        layouts = _propagated(graph, candidate)
        agree, disagree = _readers_agreement(graph, layouts)
        scored.append(((disagree, -agree, order), layouts))
    (disagree, negative_agree, _), best = min(scored, key=lambda item: item[0])
    if disagree == 0 and negative_agree == 0:    # nothing in the graph reads channels
        return _propagated(graph, candidates[1] if looks_channels_last(shape) else candidates[0])
    return best


def _propagated(graph: Graph, input_layout: Optional[Layout]) -> dict[str, Optional[Layout]]:
    layouts: dict[str, Optional[Layout]] = {graph.input_name: input_layout}
    for node in graph.nodes:
        entry = entry_for(node)
        layout = (entry.layout(node, graph, layouts) if entry is not None
                  else _shape_preserving(node, graph, layouts))
        for name in node.outputs:
            shape = graph.shapes.get(name)
            fits = layout is not None and (shape is None or len(shape) == layout.rank)
            layouts[name] = layout if fits else None
    return layouts


def _shape_preserving(node, graph: Graph, layouts) -> Optional[Layout]:
    """An op exbp has no entry for (it is refused if the walk must pass it) keeps the layout of
    an input of its output's very shape, so that the layers above it still have theirs."""
    out = graph.shapes.get(node.outputs[0]) if node.outputs else None
    if out is None or None in out[1:]:
        return None
    return next((layouts.get(name) for name in node.inputs
                 if name and graph.shapes.get(name) == out and layouts.get(name) is not None), None)


def _readers_agreement(graph: Graph, layouts) -> tuple[int, int]:
    """(how many ops reading channels first get such an input, how many get another layout)."""
    agree = disagree = 0
    for node in graph.nodes:
        entry = entry_for(node)
        if entry is None or not entry.channels_first:
            continue
        layout = layouts.get(node.inputs[0])
        if layout is not None:
            agree += layout.is_channels_first
            disagree += not layout.is_channels_first
    return agree, disagree

