"""The static sign analysis: tensors that are ≥ 0 for every input (docs/method.md §1.2).

A linear rule whose input is known to be ≥ 0 needs no x⁻ term, in its normaliser or its transpose;
the walk then skips those convolutions. Each op's entry in the rule table says how its output's
sign follows from its inputs'; an op it does not cover may be negative.
"""

from __future__ import annotations

from ...graph_rules import entry_for
from ...graph_rules.registry import negatives_carry_signal
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
    """Tensors whose negative values no signal reaches (``negatives_carry_signal``, §3.3)."""
    known: dict = {}
    return frozenset(name for node in reversed(graph.nodes) for name in node.outputs
                     if name and not negatives_carry_signal(graph, name, known))
