"""The derived quantities a walk plan's recording session computes beside the activations.

Some quantities depend only on the activations, never on the target — a Conv's normaliser Z, a
MaxPool's winners. A rule declares them (its ``derived`` builders, docs/method.md §1.1); where the
backend records them, the walk plan's recording session gets their ONNX nodes, so onnxruntime
computes them at its own speed, on activations still in its own layouts, without a call per op.
A rule reads them with ``tensors.recorded(node, kind)`` and computes them itself where a recording
has none (the ``numpy`` backend, the classifier's dual).
"""

from __future__ import annotations

from typing import AbstractSet, Iterable

from ...graph_rules import Recorded
from ..graph.model import Node


def recorded_name(node: Node, kind: Recorded) -> str:
    return f"{node.outputs[0]}::exbp_{kind.value}"


def derived_nodes(steps: Iterable, non_negative: AbstractSet[str]) -> tuple[list, dict]:
    """(the ONNX nodes computing every derived quantity of the walks' steps, {output name: the
    node it belongs to}); ``non_negative``: the static sign analysis' tensors. A node that two
    walks of one recording visit has its quantities computed once."""
    built, owners = [], {}
    for step in steps:
        node = step.node
        for kind, build in step.variant.derived.items():
            name = recorded_name(node, kind)
            if name in owners:
                continue
            nodes = build(node, node.inputs[0] in non_negative, name)
            if nodes:
                built.extend(nodes)
                owners[name] = node
    return built, owners
