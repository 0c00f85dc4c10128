"""The static sign analysis: tensors that are ≥ 0 for every input (docs/method.md §1.2).

A linear rule whose input is known to be ≥ 0 needs no x⁻ term, in its normaliser or its transpose;
the walk then skips those convolutions. Each op's entry in the rule table says how its output's
sign follows from its inputs'; an op it does not cover may be negative.
"""

from __future__ import annotations

from ...graph_rules import entry_for
from .model import Graph


def non_negative_tensors(graph: Graph) -> frozenset[str]:
    found = {name for name, value in graph.constants.items()
             if value.dtype.kind in "fiu" and (value.size == 0 or value.min() >= 0)}
    for node in graph.nodes:
        entry = entry_for(node)
        if entry is not None and entry.sign(node, graph, found):
            found.update(name for name in node.outputs if name)
    return frozenset(found)


def rectified_tensors(graph: Graph) -> frozenset[str]:
    """Tensors every consumer of which is a rectifier (a ReLU): their negative values become 0
    there, so no signal reaches them (docs/method.md §3.3)."""
    found = set()
    for name, consumers in graph.consumers.items():
        entries = [(node, entry_for(node)) for node in consumers]
        if name != graph.output_name and all(entry is not None and entry.rectifier(node, graph)
                                             for node, entry in entries):
            found.add(name)
    return frozenset(found)
