"""Which nodes the walk visits, in which order, and what the recording must provide.

A node is on the path of a walk to ``layer`` when its output reaches the logits and one of its
signal inputs descends from ``layer`` (:mod:`exbp.engine.graph.paths`); each such node's rule is
asked what it needs recorded.

The classifier (docs/method.md §2) is the first op with weights below the logits, reached through
a chain of single-input ops; c-MWP subtracts its dual, the same op with the target's weights
negated (§4).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from ...errors import LayerError, MethodError, UnsupportedOpError
from ...graph_rules import Recorded, Rule, rule_for
from ..graph.model import Graph, Node
from ..graph.paths import (classifier_of, descendants, reaching_logits, refusal_of, signal_inputs,
                           unsupported_message)


@dataclass(frozen=True)
class Step:
    node: Node
    rule: Rule
    receivers: tuple[int, ...]   # signal inputs on the path


@dataclass(frozen=True)
class WalkPlan:
    layer: str
    logits: str
    steps: tuple[Step, ...]              # from the logits down
    classifier: Optional[int]            # index in steps, when c-MWP is possible at this layer
    dual: Optional[Step]                 # the classifier with its weight input negated
    dual_weight: Optional[tuple[str, str]]   # (negated constant's name, original weight's name)
    values: frozenset[str]               # activations the rules read (Recorded.VALUE)
    shapes: frozenset[str]               # tensors whose shape alone they read (Recorded.SHAPE)


def plan_walk(graph: Graph, layer: str, logits: str) -> WalkPlan:
    upward = reaching_logits(graph, logits)
    if layer not in upward:
        raise LayerError(f"layer {layer!r} does not lead to the logits {logits!r}; "
                         "choose a tensor from Explainer.layers()")
    on_path = upward & descendants(graph, layer)
    steps, values, shapes = [], set(), set()
    for node in reversed(graph.nodes):
        if not any(name in on_path for name in node.outputs) or layer in node.outputs:
            continue
        receivers = tuple(i for i in signal_inputs(node, graph) if node.inputs[i] in on_path)
        if not receivers:
            continue
        reason = refusal_of(node, graph)
        if reason:
            raise UnsupportedOpError(unsupported_message(
                node, reason, f"on the path from layer {layer!r} to the logits"))
        rule = rule_for(node)
        steps.append(Step(node, rule, receivers))
        for need in rule.needs(node, graph):
            (values if need.kind is Recorded.VALUE else shapes).add(need.tensor)
    values -= set(graph.constants)
    found = classifier_of(graph, logits)
    classifier = next((i for i, step in enumerate(steps) if step.node is found), None)
    dual, dual_weight = None, None
    if classifier is not None:
        dual, dual_weight = _dual_step(steps[classifier], graph)
    return WalkPlan(layer=layer, logits=logits, steps=tuple(steps), classifier=classifier,
                    dual=dual, dual_weight=dual_weight, values=frozenset(values),
                    shapes=frozenset(shapes - set(graph.constants)))


def _dual_step(step: Step, graph: Graph) -> tuple[Step, tuple[str, str]]:
    index = step.rule.weight_input(step.node, graph)
    weight = step.node.inputs[index]
    negated = f"{weight}::dual"
    inputs = list(step.node.inputs)
    inputs[index] = negated
    dual = Step(step.node.with_changes(inputs=tuple(inputs)), step.rule, step.receivers)
    return dual, (negated, weight)


def require_classifier(plan: WalkPlan, method) -> None:
    """MethodError where ``method`` needs the classifier's dual and the plan has no classifier."""
    if method.contrastive and plan.classifier is None:
        raise MethodError(
            f"{method.title} needs a classifier layer (Gemm, MatMul or Conv) between layer {plan.layer!r} "
            f"and the logits {plan.logits!r}, reached from the logits through single-input ops; "
            "use method 'mwp' or a lower layer")
