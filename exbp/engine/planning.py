"""Which nodes the walk visits, in which order, and what the recording must provide.

The signal starts at the logits — the input of a final Softmax/LogSoftmax, else the first graph
output — and flows down through each rule's signal inputs. A node is on the path of a walk to
``layer`` when its output reaches the logits and one of its signal inputs descends from ``layer``;
only nodes on that path need a rule, so an unsupported op elsewhere never causes an error.

The classifier (REFERENCE §2) is the first op with weights below the logits, reached through a
chain of single-input ops; c-MWP subtracts its dual, the same op with the target's weights negated.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from ..errors import LayerError, MethodError, UnsupportedOpError
from ..graph_rules import Rule, rule_for, supported_ops
from .graph import Graph, Node

SHAPE_ONLY_OPS = {"Flatten", "Reshape", "Squeeze", "Unsqueeze", "Identity", "Dropout", "Cast"}


def find_logits(graph: Graph) -> str:
    name = graph.output_name
    while name in graph.producer:
        node = graph.producer[name]
        if node.op_type in ("Softmax", "LogSoftmax"):
            return node.inputs[0]
        if node.op_type not in SHAPE_ONLY_OPS:
            break
        name = node.inputs[0]
    return graph.output_name


def signal_inputs(node: Node, graph: Graph) -> tuple[int, ...]:
    """Inputs that can receive signal: the rule says; an op without a rule, or in a configuration
    its rule refuses, may use any input (so that it is found on the path and refused there)."""
    rule = rule_for(node)
    if rule is not None and rule.refusal(node, graph) is None:
        return tuple(rule.signal_inputs(node, graph))
    return tuple(i for i, name in enumerate(node.inputs) if name and not graph.is_constant(name))


def reaching_logits(graph: Graph, logits: str) -> set[str]:
    """Tensors from which the signal can reach the logits."""
    reached = {logits}
    for node in reversed(graph.nodes):
        if any(name in reached for name in node.outputs):
            reached.update(node.inputs[i] for i in signal_inputs(node, graph))
    return reached


def descendants(graph: Graph, tensor: str) -> set[str]:
    found = {tensor}
    for node in graph.nodes:
        if any(name in found for name in node.inputs):
            found.update(node.outputs)
    return found


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
    values: frozenset[str]               # activations the rules read
    shapes: frozenset[str]               # tensors whose shape the rules read


def unsupported_message(node: Node, reason: str, where: str) -> str:
    return (f"{reason}: {node.op_type} node {node.name!r}, {where}; supported ops: "
            f"{', '.join(supported_ops())}")


def refusal_of(node: Node, graph: Graph) -> Optional[str]:
    """Why the walk cannot pass ``node``, or None."""
    rule = rule_for(node)
    if rule is None:
        domain = f" (domain {node.domain})" if node.domain else ""
        return f"no Excitation Backprop rule for op {node.op_type}{domain}"
    return rule.refusal(node, graph)


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
        values.update(rule.reads_values(node, graph))
        shapes.update(rule.reads_shapes(node, graph))
    values -= set(graph.constants)
    classifier = _classifier_index(steps, logits)
    dual, dual_weight = None, None
    if classifier is not None:
        dual, dual_weight = _dual_step(steps[classifier], graph)
    return WalkPlan(layer=layer, logits=logits, steps=tuple(steps), classifier=classifier,
                    dual=dual, dual_weight=dual_weight, values=frozenset(values),
                    shapes=frozenset(shapes - set(graph.constants)))


def _classifier_index(steps: list[Step], logits: str) -> Optional[int]:
    """The classifier's step, if the logits reach it through a chain: every step on the way has
    one signal input, and no other step feeds signal into the chain."""
    index_of = {step.node.outputs[0]: i for i, step in enumerate(steps)}
    readers: dict[str, int] = {}
    for step in steps:
        for i in step.receivers:
            readers[step.node.inputs[i]] = readers.get(step.node.inputs[i], 0) + 1
    name = logits
    while name in index_of and readers.get(name, 0) <= 1:
        step = steps[index_of[name]]
        if step.rule.weight_input is not None:
            return index_of[name]
        if len(step.receivers) != 1:
            return None
        name = step.node.inputs[step.receivers[0]]
    return None


def _dual_step(step: Step, graph: Graph) -> tuple[Step, tuple[str, str]]:
    index = step.rule.weight_input(step.node, graph)
    weight = step.node.inputs[index]
    negated = f"{weight}::dual"
    inputs = list(step.node.inputs)
    inputs[index] = negated
    dual = Step(step.node.with_changes(inputs=tuple(inputs)), step.rule, step.receivers)
    return dual, (negated, weight)


def require_classifier(plan: WalkPlan) -> None:
    if plan.classifier is None:
        raise MethodError(
            f"c-MWP needs a classifier layer (Gemm, MatMul or Conv) between layer {plan.layer!r} "
            f"and the logits {plan.logits!r}, reached from the logits through single-input ops; "
            "use method 'mwp' or a lower layer")
