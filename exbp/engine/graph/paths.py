"""Questions about the paths the signal takes: where it starts, which tensors it passes, which
nodes it cannot pass.

The signal starts at the logits — the input of a final output normalisation (Softmax), looked for
through ops that keep their input's values, else the first graph output — and flows down through
each rule's signal inputs. Only nodes on a walk's path need a rule, so an unsupported op elsewhere
never causes an error.

Which inputs take signal, and which configurations are refused, depend on the propagation kind
(docs/method.md §9: the gradient of a gate reaches both its operands); every question here takes
the kind, Excitation Backprop's by default.
"""

from __future__ import annotations

from typing import Optional

from ...graph_rules import Propagation, Role, entry_for, rule_for, supported_ops
from .model import Graph, Node


def find_logits(graph: Graph) -> str:
    name = graph.output_name
    while name in graph.producer:
        node = graph.producer[name]
        entry = entry_for(node)
        role = entry.role if entry is not None else None
        if role is Role.OUTPUT_NORMALISATION:
            return node.inputs[0]
        if role is not Role.SAME_VALUES:
            break
        name = node.inputs[0]
    return graph.output_name


EXCITATION = Propagation.EXCITATION


def variant_for(node: Node, kind: Propagation = EXCITATION):
    """The node's backward for ``kind`` (a :class:`~exbp.graph_rules.Variant`), or None."""
    rule = rule_for(node)
    return rule.variant(kind) if rule is not None else None


def signal_inputs(node: Node, graph: Graph, kind: Propagation = EXCITATION) -> tuple[int, ...]:
    """Inputs that can receive signal: the rule says; an op without a rule, or in a configuration
    its rule refuses, may use any input (so that it is found on the path and refused there)."""
    variant = variant_for(node, kind)
    if variant is not None and variant.backward is not None and variant.refusal(node, graph) is None:
        return tuple(variant.signal_inputs(node, graph))
    return tuple(i for i, name in enumerate(node.inputs) if name and not graph.is_constant(name))


def reaching_logits(graph: Graph, logits: str, kind: Propagation = EXCITATION) -> set[str]:
    """Tensors from which the signal can reach the logits."""
    reached = {logits}
    for node in reversed(graph.nodes):
        if any(name in reached for name in node.outputs):
            reached.update(node.inputs[i] for i in signal_inputs(node, graph, kind))
    return reached


def descendants(graph: Graph, tensor: str) -> set[str]:
    found = {tensor}
    for node in graph.nodes:
        if any(name in found for name in node.inputs):
            found.update(node.outputs)
    return found


def refusal_of(node: Node, graph: Graph, kind: Propagation = EXCITATION) -> Optional[str]:
    """Why a walk of ``kind`` cannot pass ``node``, or None."""
    if rule_for(node) is None:
        domain = f" (domain {node.domain})" if node.domain else ""
        return f"no Excitation Backprop rule for op {node.op_type}{domain}"
    variant = variant_for(node, kind)
    if variant is None:
        return f"no {kind.value} rule for op {node.op_type}"
    return variant.refusal(node, graph)


def unsupported_message(node: Node, reason: str, where: str, kind: Propagation = EXCITATION) -> str:
    return (f"{reason}: {node.op_type} node {node.name!r}, {where}; supported ops: "
            f"{', '.join(supported_ops(kind))}")


def cut_tensors(graph: Graph, on_path: set[str]) -> list[str]:
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


def classifier_of(graph: Graph, logits: str) -> Optional[Node]:
    """The classifier (docs/method.md §2): the first op with weights below the logits, reached
    through a chain of ops with one signal input each whose outputs no other op on the way to the
    logits reads; None where the logits are reached otherwise."""
    return _head(graph, logits)[1]


def head_tensors(graph: Graph, logits: str) -> frozenset[str]:
    """The logits and the tensors down to the classifier's output, where there is a classifier:
    the top signal starts at its class unit, whatever the sign of its value."""
    chain, classifier = _head(graph, logits)
    return frozenset(chain) if classifier is not None else frozenset()


def _head(graph: Graph, logits: str) -> tuple[list[str], Optional[Node]]:
    """(the tensors from the logits down to the classifier's output, the classifier or None)."""
    upward = reaching_logits(graph, logits)
    name, chain = logits, []
    while name in graph.producer:
        node = graph.producer[name]
        readers = [n for n in graph.consumers_of(name) if any(o in upward for o in n.outputs)]
        if name != logits and len(readers) > 1:
            return chain, None
        chain.append(name)
        rule = rule_for(node)
        if rule is not None and rule.weight_input is not None:
            return chain, node
        receivers = [i for i in signal_inputs(node, graph) if node.inputs[i] in upward]
        if len(receivers) != 1:
            return chain, None
        name = node.inputs[receivers[0]]
    return chain, None
