"""Which nodes the walk visits, in which order, and what the recording must provide.

A node is on the path of a walk to ``layer`` when its output reaches the logits and one of its
signal inputs descends from ``layer`` (:mod:`exbp.engine.graph.paths`); each such node's rule is
asked what it needs recorded.

The classifier (docs/method.md §2) is the first op with weights below the logits, reached through
a chain of single-input ops; c-MWP subtracts its dual, the same op with the target's weights
negated (§4).

A plan walks one propagation kind (docs/method.md §9): its steps hold that kind's variant of each
rule, and its path follows that kind's signal inputs. A plan whose methods read the layer's own
activation (Grad-CAM, CAM) records it too.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from ...errors import LayerError, MethodError, UnsupportedOpError
from ...graph_rules import Propagation, Recorded, Role, Rule, Variant, entry_for, rule_for
from ..graph.model import Graph, Node
from ..graph.paths import (classifier_of, descendants, reaching_logits, refusal_of, signal_inputs,
                           unsupported_message, variant_for)


@dataclass(frozen=True)
class Step:
    node: Node
    rule: Rule
    receivers: tuple[int, ...]   # signal inputs on the path
    variant: Variant             # the rule's backward for the plan's kind


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
    kind: Propagation = Propagation.EXCITATION

    @property
    def key(self) -> tuple:
        return (self.layer, self.kind, self.layer in self.values)


def plan_walk(graph: Graph, layer: str, logits: str, kind: Propagation = Propagation.EXCITATION,
              reads_layer: bool = False, purpose: str = "") -> WalkPlan:
    """The plan of a walk of ``kind`` from the logits to ``layer``; ``reads_layer``: the layer's
    activation is recorded too; ``purpose`` ends a refusal's message (which methods asked)."""
    upward = reaching_logits(graph, logits, kind)
    if layer not in upward:
        raise LayerError(f"layer {layer!r} does not lead to the logits {logits!r}; "
                         "choose a tensor from Explainer.layers()")
    on_path = upward & descendants(graph, layer)
    steps, values, shapes = [], set(), set()
    for node in reversed(graph.nodes):
        if not any(name in on_path for name in node.outputs) or layer in node.outputs:
            continue
        receivers = tuple(i for i in signal_inputs(node, graph, kind) if node.inputs[i] in on_path)
        if not receivers:
            continue
        reason = refusal_of(node, graph, kind)
        if reason:
            raise UnsupportedOpError(unsupported_message(
                node, reason, f"on the path from layer {layer!r} to the logits{purpose}", kind))
        variant = variant_for(node, kind)
        steps.append(Step(node, rule_for(node), receivers, variant))
        for need in variant.needs(node, graph):
            (values if need.kind is Recorded.VALUE else shapes).add(need.tensor)
    if reads_layer:
        values.add(layer)
    values -= set(graph.constants)
    found = classifier_of(graph, logits)
    classifier = next((i for i, step in enumerate(steps) if step.node is found), None)
    dual, dual_weight = None, None
    if classifier is not None:
        dual, dual_weight = _dual_step(steps[classifier], graph)
    return WalkPlan(layer=layer, logits=logits, steps=tuple(steps), classifier=classifier,
                    dual=dual, dual_weight=dual_weight, values=frozenset(values),
                    shapes=frozenset(shapes - set(graph.constants)), kind=kind)


def _dual_step(step: Step, graph: Graph) -> tuple[Step, tuple[str, str]]:
    index = step.rule.weight_input(step.node, graph)
    weight = step.node.inputs[index]
    negated = f"{weight}::dual"
    inputs = list(step.node.inputs)
    inputs[index] = negated
    dual = Step(step.node.with_changes(inputs=tuple(inputs)), step.rule, step.receivers, step.variant)
    return dual, (negated, weight)


def require_classifier(plan: WalkPlan, method) -> None:
    """MethodError where ``method`` needs the classifier's dual and the plan has no classifier."""
    if method.contrastive and plan.classifier is None:
        raise MethodError(
            f"{method.title} needs a classifier layer (Gemm, MatMul or Conv) between layer {plan.layer!r} "
            f"and the logits {plan.logits!r}, reached from the logits through single-input ops; "
            "use method 'mwp' or a lower layer")


def pooled_layer(graph: Graph, logits: str, layout_of) -> tuple[Optional[str], str]:
    """(the input of the global average pooling that feeds the classifier, or None; why there is
    none): CAM's layer (docs/method.md §9.6). The classifier (a Gemm, MatMul or 1×1 Conv) must
    produce the logits and read the pooling's output, with only ops that keep their input's values
    (Flatten, Reshape, Squeeze…) between them; the pooling must average over every spatial axis
    of its input (``layout_of(name)``: the tensor's Layout)."""
    classifier = classifier_of(graph, logits)
    if classifier is None:
        return None, f"the logits {logits!r} come from no classifier layer (Gemm, MatMul or Conv)"
    if _source_of_values(graph, logits) != classifier.outputs[0]:
        return None, (f"an op other than a reshape lies between the classifier {classifier.name!r} "
                      f"and the logits {logits!r}")
    weight = graph.constant(classifier.inputs[rule_for(classifier).weight_input(classifier, graph)])
    if weight is not None and weight.ndim > 2 and any(k != 1 for k in weight.shape[2:]):
        return None, f"the classifier {classifier.name!r} is a Conv with a kernel larger than 1×1"
    (receiver,) = signal_inputs(classifier, graph)
    pool = graph.producer.get(_source_of_values(graph, classifier.inputs[receiver]))
    entry = entry_for(pool) if pool is not None else None
    axes = entry.averaged_axes(pool, graph) if entry is not None and entry.averaged_axes else None
    layout = layout_of(pool.inputs[0]) if axes else None
    if layout is None or not layout.spatial_axes or set(axes) != set(layout.spatial_axes):
        return None, (f"the classifier {classifier.name!r} does not read a global average pooling "
                      "(GlobalAveragePool, or ReduceMean over every spatial axis)")
    return pool.inputs[0], ""


def _source_of_values(graph: Graph, name: str) -> str:
    """The tensor whose values ``name`` holds, looking back through ops that keep them."""
    while name in graph.producer:
        entry = entry_for(graph.producer[name])
        if entry is None or entry.role is not Role.SAME_VALUES:
            break
        name = graph.producer[name].inputs[0]
    return name
